/**
 * The display record of a document: what a hit shows, and the indexed body and attachment
 * texts, deflated, from which the body's token stream is derived (stored once). Stored in
 * `index-documents` as JSON of the short fields, NUL, the deflated text.
 */

import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { tokenize } from './tokenize.js'
import { streamOf } from './forward-record.js'

/**
 * The stored display record of one document: what a hit shows, and the body text the body
 * field is searched in (its tokens are the forward record's body stream).
 */
export interface DocumentRecord {
  id: string
  dateMs: number
  from: string
  subject: string
  /**
   * The body text and the attachment texts that were indexed, joined by a blank line
   * (absent when only `textDeflated` is known). A text the token budget cut short is kept up
   * to its last indexed token; a text after the budget ran out is left out.
   */
  text?: string
  /** `text` compressed as stored (raw deflate), when it was compressed ahead of the transaction. */
  textDeflated?: Uint8Array
  /** Per text in `text`: its length in UTF-16 code units, then how many tokens were indexed from it. */
  segments: number[]
}

/** A display record as read back: the text is always there. */
export type StoredRecord = DocumentRecord & { text: string }

/**
 * Binary form of a display record: JSON of the short fields and the segment lengths, NUL,
 * then the text as raw deflate (JSON never holds a raw NUL). The text is most of the
 * record; deflate stores it in about a third of LZ4's bytes.
 */
export function encodeRecord(record: DocumentRecord): Buffer {
  const header = Buffer.from(JSON.stringify([record.id, record.dateMs, record.from, record.subject, record.segments]) + '\u0000')
  return Buffer.concat([header, record.textDeflated ?? deflateText(record.text ?? '')])
}

/** Bun's one-call raw deflate, when running on Bun (node:zlib builds a stream object per call there, several times slower). */
const bunZlib = (globalThis as { Bun?: { deflateSync(data: Uint8Array, options: { level: number }): Uint8Array; inflateSync(data: Uint8Array): Uint8Array } }).Bun

/** The stored (compressed) form of a record's text: raw DEFLATE, the same bytes on Bun and Node. */
export function deflateText(text: string): Uint8Array {
  return bunZlib ? bunZlib.deflateSync(Buffer.from(text), { level: 6 }) : deflateRawSync(Buffer.from(text), { level: 6 })
}

function inflateText(bytes: Uint8Array): string {
  const inflated = bunZlib ? bunZlib.inflateSync(bytes) : inflateRawSync(bytes)
  return Buffer.from(inflated.buffer, inflated.byteOffset, inflated.byteLength).toString('utf8')
}

/** True when `segments` describe `text` (lengths and separators add up, counts are whole). */
function segmentsFit(segments: unknown, text: string): segments is number[] {
  if (!Array.isArray(segments) || segments.length % 2 !== 0) return false
  let chars = 0
  for (let index = 0; index < segments.length; index++) {
    const value: unknown = segments[index]
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return false
    if (index % 2 === 0) chars += value + (index > 0 ? bodySeparator.length : 0)
  }
  return chars === text.length
}

/** Decodes `encodeRecord`'s bytes; undefined when they are not a display record. */
export function decodeRecord(bytes: Uint8Array): StoredRecord | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const split = buffer.indexOf(0)
  if (split < 0) return undefined
  try {
    const [id, dateMs, from, subject, segments] = JSON.parse(buffer.toString('utf8', 0, split)) as [string, number | null, string, string, unknown]
    const text = inflateText(buffer.subarray(split + 1))
    if (!segmentsFit(segments, text)) return undefined
    return { id, dateMs: dateMs ?? Number.NaN, from, subject, text, segments }
  } catch {
    return undefined
  }
}

/** Between two texts of a record's body text. */
export const bodySeparator = '\n\n'

/** The texts of a record's body text with the number of tokens indexed from each. */
export function bodySegmentsOf(text: string, segments: readonly number[]): Array<{ text: string; tokens: number }> {
  const out: Array<{ text: string; tokens: number }> = []
  let at = 0
  for (let index = 0; index < segments.length; index += 2) {
    const chars = segments[index]!
    out.push({ text: text.slice(at, at + chars), tokens: segments[index + 1]! })
    at += chars + bodySeparator.length
  }
  return out
}

/** The forward record's body stream of a display record: its texts tokenized again, each as far as it was indexed. */
export function bodyStreamOf(record: Pick<StoredRecord, 'text' | 'segments'>): string {
  return streamOf(bodySegmentsOf(record.text, record.segments).map((segment) => tokenize(segment.text, segment.tokens)))
}
