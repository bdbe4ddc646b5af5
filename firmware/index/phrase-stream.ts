/**
 * Phrase streams: a document's body tokens (body text and attachment texts, as the body
 * stream has them) as their 32-bit tokenHash, in order, a 0 between two texts. Stored per
 * docid in `index-phrases` (4 bytes a token, native byte order, little-endian on every
 * target), they let a phrase query check a candidate's body with one read and one byte search
 * instead of inflating and scanning its text (60–650 µs a candidate, see docs/index-layout.md).
 *
 * A hash stands for its token: a phrase matches where the hashes of its tokens follow each
 * other within one text. A different token of the same document with the same 32-bit hash
 * as a phrase token, at the right place, would make a false hit (never a miss); the
 * estimate is in docs/index-layout.md ("Phrases").
 */

import { tokenHash } from './term-table.js'

/** The value between two texts; no token's stream value is 0 (streamValue). */
const separator = 0

/** A token's value in a stream: its tokenHash, 1 standing for 0 (the separator). */
export function streamValue(hash: number): number {
  return hash === separator ? 1 : hash
}

/** Builds a phrase stream token by token (see createPhraseStreamWriter). */
export interface PhraseStreamWriter {
  /** Appends a token by its tokenHash. */
  push(hash: number): void
  /** Ends the current text: the next token starts a new one. */
  endText(): void
  /** The stream's bytes (a separator alone when there was no token, so a stored stream is never empty). */
  finish(): Uint8Array
}

/**
 * A writer of one document's stream. Separators stand only between two texts that have tokens,
 * so a stream made token by token (prepareDocument, through the term table) and one made from
 * token arrays (phraseStreamOf) are the same bytes.
 */
export function createPhraseStreamWriter(): PhraseStreamWriter {
  let values = new Int32Array(256)
  let length = 0
  let textStarted = false
  let separatorPending = false
  const append = (value: number): void => {
    if (length === values.length) {
      const grown = new Int32Array(2 * length)
      grown.set(values)
      values = grown
    }
    values[length++] = value
  }
  return {
    push(hash) {
      if (separatorPending) {
        append(separator)
        separatorPending = false
      }
      append(streamValue(hash))
      textStarted = true
    },
    endText() {
      if (textStarted) separatorPending = true
      textStarted = false
    },
    finish() {
      if (length === 0) append(separator)
      return new Uint8Array(values.buffer, 0, length * 4).slice()
    },
  }
}

/** The phrase stream of token arrays, one per text (the body segments of a one-pass analysis). */
export function phraseStreamOf(texts: readonly (readonly string[])[]): Uint8Array {
  const writer = createPhraseStreamWriter()
  for (const tokens of texts) {
    for (const token of tokens) writer.push(tokenHash(token, 0, token.length))
    writer.endText()
  }
  return writer.finish()
}

/** The bytes a phrase's tokens make in a stream, for phraseStreamHas. */
export function phraseStreamPattern(tokens: readonly string[]): Buffer {
  const values = Int32Array.from(tokens, (token) => streamValue(tokenHash(token, 0, token.length)))
  return Buffer.from(values.buffer, 0, values.byteLength)
}

/** True when a stored stream (by its `length`, see phraseStreamHas) holds the same bytes as `fresh`. */
export function samePhraseStream(stored: Uint8Array | undefined, fresh: Uint8Array): boolean {
  if (stored === undefined || stored.length !== fresh.byteLength) return false
  return Buffer.from(stored.buffer, stored.byteOffset, stored.length).equals(Buffer.from(fresh.buffer, fresh.byteOffset, fresh.byteLength))
}

/**
 * True when `pattern` (phraseStreamPattern) lies in `stream` at a token boundary: a native
 * byte search, and a hit that does not start at a multiple of 4 bytes is searched past.
 */
export function phraseStreamHas(stream: Uint8Array, pattern: Buffer): boolean {
  // `length`, not `byteLength`: under Bun, lmdb-js's getBinaryFast answers a view of its whole
  // shared read buffer whose `length` alone is the value's.
  const bytes = Buffer.from(stream.buffer, stream.byteOffset, stream.length)
  let from = 0
  for (;;) {
    const found = bytes.indexOf(pattern, from)
    if (found < 0) return false
    if (found % 4 === 0) return true
    from = found + 1
  }
}
