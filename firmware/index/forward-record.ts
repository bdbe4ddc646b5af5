/**
 * The forward record of a document: its token streams per field (see streamOf below),
 * which phrase checks search and from which postings are made again (a flush after a
 * restart, a re-index, verify). Stored in `index-forward` as the fields' UTF-8 joined by NUL.
 */

import { fieldBits, hasAttachmentToken } from './field-bits.js'

/**
 * The forward record of one document (field token streams, see `streamOf`). The body
 * stream is not stored with the others: it is the token stream of the body text the
 * display record keeps (see `bodyStreamOf`), so the index holds the body once, deflated.
 */
export interface ForwardRecord {
  /** Subject stream. */
  subject: string
  /** Body text and attachment texts (one segment each); '' as decodeForward returns it (see bodyStreamOf). */
  body: string
  /** Sender names and addresses (one segment per address). */
  from: string
  /** Recipient names and addresses (one segment per address). */
  to: string
  /** Attachment file names (one segment per attachment). */
  attachmentNames: string
  /** Exact address tokens of the sender. */
  fromExact: string[]
  /** Exact address tokens of the recipients. */
  toExact: string[]
  /** 1 when the message has an attachment. */
  hasAttachment: 0 | 1
}

/**
 * Binary form of a forward record: its fields joined by NUL, as UTF-8, the body stream left
 * empty (it is derived from the display record's text: bodyStreamOf). Plain strings encode
 * and decode several times faster than MessagePack objects holding long strings, and
 * phrase checks read many of them. Tokens never contain NUL or U+0001.
 */
export function encodeForward(forward: ForwardRecord): Buffer {
  return Buffer.from(
    [String(forward.hasAttachment), forward.subject, '', forward.from, forward.to, forward.attachmentNames, forward.fromExact.join('\u0001'), forward.toExact.join('\u0001')].join('\u0000'),
  )
}

/** Position of each field in `encodeForward`'s layout. */
export const forwardFieldIndex = { subject: 1, body: 2, from: 3, to: 4, attachmentNames: 5 } as const

/** Decodes `encodeForward`'s bytes; undefined when they are not a forward record. */
export function decodeForward(bytes: Uint8Array): ForwardRecord | undefined {
  const parts = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8').split('\u0000')
  if (parts.length !== 8 || (parts[0] !== '0' && parts[0] !== '1')) return undefined
  const list = (text: string): string[] => (text.length === 0 ? [] : text.split('\u0001'))
  return {
    hasAttachment: parts[0] === '1' ? 1 : 0,
    subject: parts[1]!,
    body: parts[2]!,
    from: parts[3]!,
    to: parts[4]!,
    attachmentNames: parts[5]!,
    fromExact: list(parts[6]!),
    toExact: list(parts[7]!),
  }
}

function addTerm(terms: Map<string, number>, token: string, bit: number): void {
  const bits = terms.get(token)
  // A repeated token (most of a body) costs one lookup, no write.
  if (bits === undefined) terms.set(token, bit)
  else if ((bits & bit) === 0) terms.set(token, bits | bit)
}

/** Adds the tokens of a stream (see streamOf) with `bit`; splits on the separators without building a token array. */
function addStreamTerms(terms: Map<string, number>, stream: string, bit: number): void {
  let start = 0
  for (let index = 0; index <= stream.length; index++) {
    const code = index < stream.length ? stream.charCodeAt(index) : 32
    if (code === 32 || code === 10) {
      if (index > start) addTerm(terms, stream.slice(start, index), bit)
      start = index + 1
    }
  }
}

/** Every distinct token of a forward record with the field bits it occurs in. */
export function postingsOf(forward: ForwardRecord): Map<string, number> {
  const masks = new Map<string, number>()
  addStreamTerms(masks, forward.subject, fieldBits.subject)
  addStreamTerms(masks, forward.body, fieldBits.body)
  addStreamTerms(masks, forward.from, fieldBits.from)
  addStreamTerms(masks, forward.to, fieldBits.to)
  addStreamTerms(masks, forward.attachmentNames, fieldBits.attachment)
  for (const token of forward.fromExact) addTerm(masks, token, fieldBits.from)
  for (const token of forward.toExact) addTerm(masks, token, fieldBits.to)
  if (forward.hasAttachment === 1) addTerm(masks, hasAttachmentToken, fieldBits.marker)
  return masks
}

/*
 * Token streams: a field's tokens as one string, so that a phrase is a substring search.
 */

/**
 * A field's tokens as one string: each segment (a body, one attachment, one address) is
 * ` tok tok tok ` and segments are joined by a newline. A phrase `a b` occurs in a field
 * exactly when ` a b ` is a substring: tokens never contain spaces or newlines, and the
 * newline between segments keeps a phrase from spanning two of them.
 */
export function streamOf(segments: readonly (readonly string[])[]): string {
  return segments
    .filter((tokens) => tokens.length > 0)
    .map((tokens) => ` ${tokens.join(' ')} `)
    .join('\n')
}

/** True when the tokens occur adjacent and in order in one segment of `stream`. */
export function streamHasPhrase(stream: string, tokens: readonly string[]): boolean {
  return stream.includes(` ${tokens.join(' ')} `)
}

/** The tokens of a stream (in order, with repeats). */
export function streamTokens(stream: string): string[] {
  const tokens: string[] = []
  for (const part of stream.split(' ')) if (part.length > 0 && part !== '\n') tokens.push(part)
  return tokens
}

/** Segment streams joined into a field stream (empty segments left out, as streamOf does). */
export function joinStreams(streams: readonly string[]): string {
  return streams.filter((stream) => stream.length > 0).join('\n')
}
