/**
 * Phrase checks on one candidate document, on its stored bytes: the forward record's
 * fields (a byte search, no decoding) and the display record's body texts. Phrases are
 * verified on the candidates (the intersection of the phrase's tokens): no positions are stored.
 */

import { tokenCharsMax, tokenize } from './tokenize.js'
import { streamHasPhrase, streamOf } from './forward-record.js'
import { bodySegmentsOf, decodeRecord } from './display-record.js'

/**
 * True when the encoded forward record has the phrase in fields `firstField` through
 * `lastField` (consecutive in the layout), searched in the stored bytes without decoding
 * them: the pattern ` a b ` holds no NUL and no newline, so a hit can span neither two
 * fields nor two segments. The stored body field is empty: see bodyPhraseTest.
 *
 * @param pattern UTF-8 of ` token token `
 */
export function encodedForwardHasPhrase(bytes: Uint8Array, firstField: number, lastField: number, pattern: Uint8Array): boolean {
  // By `length`: under Bun, getBinaryFast's view runs on over lmdb-js's whole read buffer,
  // and a pattern not in the record was searched for through all of it (~2 µs a candidate).
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
  let start = 0
  for (let field = 0; field < firstField; field++) {
    start = buffer.indexOf(0, start) + 1
    if (start === 0) return false
  }
  let end = start - 1
  for (let field = firstField; field <= lastField; field++) {
    end = buffer.indexOf(0, end + 1)
    if (end < 0) return false
  }
  const found = buffer.indexOf(pattern, start)
  return found >= 0 && found + pattern.byteLength <= end
}

/** The byte pattern `encodedForwardHasPhrase` looks for. */
export function phrasePattern(tokens: readonly string[]): Buffer {
  return Buffer.from(` ${tokens.join(' ')} `)
}

const asciiTokenPattern = /^[a-z0-9]+$/
const nonAscii = /[^\x00-\x7f]/
/** A non-ASCII letter, digit or mark: a character that may fold into an ASCII token (`é` → `e`). */
const nonAsciiWordCharacter = /(?![\x00-\x7f])[\p{L}\p{N}\p{M}]/u

/**
 * A test of whether the body text of an encoded display record has the phrase: the tokens
 * adjacent and in order within one text, as in the body stream (bodyStreamOf). Built once
 * per phrase and run on every candidate.
 *
 * When the phrase's tokens are ASCII, one native case-insensitive pattern looks for them as
 * whole words separated by anything but letters, digits and marks. Its match is always a
 * phrase match (those words are runs the tokenizer lower-cases into exactly these tokens,
 * with nothing that makes a token between them). Its miss is exact when the text has no
 * non-ASCII letter, digit or mark, the usual case — only such a character can fold into
 * an ASCII token (`Clíck`) — and otherwise the text is tokenized.
 *
 * @param tokens the phrase's folded tokens
 */
export function bodyPhraseTest(tokens: readonly string[]): (recordBytes: Uint8Array) => boolean {
  // A token of tokenCharsMax characters may be the cut start of a longer run: tokenize then.
  const asciiPhrase = tokens.every((token) => token.length < tokenCharsMax && asciiTokenPattern.test(token))
  const pattern = asciiPhrase ? new RegExp(`(?<![\\p{L}\\p{N}\\p{M}])${tokens.join('[^\\p{L}\\p{N}\\p{M}]+')}(?![\\p{L}\\p{N}\\p{M}])`, 'iu') : null
  return (recordBytes) => {
    const record = decodeRecord(recordBytes)
    if (!record) return false
    for (const segment of bodySegmentsOf(record.text, record.segments)) {
      if (segment.tokens < tokens.length) continue
      // A cut text ends with its last indexed token, so a match in it is a match in the stream.
      if (pattern !== null) {
        if (pattern.test(segment.text)) return true
        if (!nonAscii.test(segment.text) || !nonAsciiWordCharacter.test(segment.text)) continue
      }
      if (streamHasPhrase(streamOf([tokenize(segment.text, segment.tokens)]), tokens)) return true
    }
    return false
  }
}
