import type { Address, ParsedMessage } from '../mime/types.js'
import type { MessageMeta } from '../archive/types.js'
import { addressExactTokens, cutToChars, tokenize } from './tokenize.js'
import { fieldBits, hasAttachmentToken } from './postings.js'

/**
 * What the index keeps of one message, computed purely from the parsed message and its
 * envelope (no I/O): the token streams per field (the forward index, used to verify
 * phrases and to rebuild postings), the exact address tokens, the date used for ordering
 * and the few display fields a hit shows.
 */

/** What the index needs to index one message. */
export interface IndexInput {
  /** The archive id: 64 hex characters (SHA-256 of the raw bytes). */
  id: string
  parsed: ParsedMessage
  /** Envelope sender (SMTP MAIL FROM, journal sender); indexed under `from:`. */
  envelopeFrom?: string | null
  /** Envelope recipients of every delivery (SMTP RCPT TO, journal recipients, expanded lists); indexed under `to:`. */
  envelopeTo?: readonly string[]
  /** Envelope BCC recipients (journal reports); indexed under `to:`. */
  envelopeBcc?: readonly string[]
  /** When the archive first stored the message, in ms since the epoch; the date when the Date header is missing or implausible. */
  archivedAtMs: number
}

/** Limits of what is indexed per message. */
export interface DocumentLimits {
  /** Tokens indexed per message over all fields, in tokens; the rest is not searchable. */
  tokensPerDocumentMax: number
  /** Distinct addresses indexed per message (sender and recipients together). */
  addressesPerDocumentMax: number
  /** Characters of text kept per message for snippets. */
  snippetTextCharsMax: number
  /** A Date header later than the archive time by more than this (ms) is not believed for ordering. */
  futureDateSkewMsMax: number
}

/** The stored forward record of one document (field token streams, see `streamOf`). */
export interface ForwardRecord {
  /** Subject. */
  s: string
  /** Body text and attachment texts (one segment each). */
  b: string
  /** Sender names and addresses (one segment per address). */
  f: string
  /** Recipient names and addresses (one segment per address). */
  t: string
  /** Attachment file names (one segment per attachment). */
  n: string
  /** Exact address tokens of the sender. */
  xf: string[]
  /** Exact address tokens of the recipients. */
  xt: string[]
  /** 1 when the message has an attachment. */
  a: 0 | 1
}

/** The stored display record of one document: what a hit shows. */
export interface DocumentRecord {
  id: string
  dateMs: number
  from: string
  subject: string
  /** Body and attachment text, bounded, for snippets. */
  text: string
}

export interface AnalyzedDocument {
  forward: ForwardRecord
  record: DocumentRecord
  /** True when the token budget cut the document short. */
  truncated: boolean
}

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

/**
 * Binary form of a forward record: its fields joined by NUL, as UTF-8. Plain strings
 * encode and decode several times faster than MessagePack objects holding long strings,
 * and phrase checks read many of them. Tokens never contain NUL or U+0001.
 */
export function encodeForward(forward: ForwardRecord): Buffer {
  return Buffer.from([String(forward.a), forward.s, forward.b, forward.f, forward.t, forward.n, forward.xf.join('\u0001'), forward.xt.join('\u0001')].join('\u0000'))
}

/** Position of each field in `encodeForward`'s layout. */
export const forwardFieldIndex = { s: 1, b: 2, f: 3, t: 4, n: 5 } as const

/**
 * True when the encoded forward record has the phrase in fields `firstField` through
 * `lastField` (consecutive in the layout), searched in the stored bytes without decoding
 * them: the pattern ` a b ` holds no NUL and no newline, so a hit can span neither two
 * fields nor two segments.
 *
 * @param pattern UTF-8 of ` token token `
 */
export function encodedForwardHasPhrase(bytes: Uint8Array, firstField: number, lastField: number, pattern: Uint8Array): boolean {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
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

/** Decodes `encodeForward`'s bytes; undefined when they are not a forward record. */
export function decodeForward(bytes: Uint8Array): ForwardRecord | undefined {
  const parts = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8').split('\u0000')
  if (parts.length !== 8 || (parts[0] !== '0' && parts[0] !== '1')) return undefined
  const list = (text: string): string[] => (text.length === 0 ? [] : text.split('\u0001'))
  return { a: parts[0] === '1' ? 1 : 0, s: parts[1]!, b: parts[2]!, f: parts[3]!, t: parts[4]!, n: parts[5]!, xf: list(parts[6]!), xt: list(parts[7]!) }
}

/** Binary form of a display record: JSON of the short fields, NUL, then the text. */
export function encodeRecord(record: DocumentRecord): Buffer {
  return Buffer.from(JSON.stringify([record.id, record.dateMs, record.from, record.subject]) + '\u0000' + record.text)
}

/** Decodes `encodeRecord`'s bytes; undefined when they are not a display record. */
export function decodeRecord(bytes: Uint8Array): DocumentRecord | undefined {
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')
  const split = text.indexOf('\u0000')
  if (split < 0) return undefined
  try {
    const [id, dateMs, from, subject] = JSON.parse(text.slice(0, split)) as [string, number | null, string, string]
    return { id, dateMs: dateMs ?? Number.NaN, from, subject, text: text.slice(split + 1) }
  } catch {
    return undefined
  }
}

/** The tokens of a stream (in order, with repeats). */
export function streamTokens(stream: string): string[] {
  const tokens: string[] = []
  for (const part of stream.split(' ')) if (part.length > 0 && part !== '\n') tokens.push(part)
  return tokens
}

function addressLabel(address: Address): string {
  if (address.name && address.address) return `${address.name} <${address.address}>`
  return address.name || address.address
}

/** The date a message is ordered and filtered by (see DocumentLimits.futureDateSkewMsMax). */
export function orderingDateMs(parsedDateMs: number | null, archivedAtMs: number, futureDateSkewMsMax: number): number {
  if (parsedDateMs === null || !Number.isFinite(parsedDateMs)) return archivedAtMs
  if (parsedDateMs > archivedAtMs + futureDateSkewMsMax) return archivedAtMs
  return parsedDateMs
}

/**
 * Computes the forward record and display record of a message.
 *
 * Token budget order: subject, sender, recipients, attachment names, body, attachment
 * texts — so a huge body cannot push the headers out of the index.
 */
export function analyzeDocument(input: IndexInput, limits: DocumentLimits): AnalyzedDocument {
  const { parsed } = input
  let budget = limits.tokensPerDocumentMax
  let truncated = false
  const take = (text: string): string[] => {
    if (budget <= 0) {
      if (text.length > 0) truncated = truncated || tokenize(text, 1).length > 0
      return []
    }
    const tokens = tokenize(text, budget + 1)
    if (tokens.length > budget) {
      truncated = true
      tokens.length = budget
    }
    budget -= tokens.length
    return tokens
  }

  let addressesLeft = limits.addressesPerDocumentMax
  const addressSegments = (addresses: readonly Address[]): { segments: string[][]; exact: Set<string> } => {
    const seen = new Set<string>()
    const segments: string[][] = []
    const exact = new Set<string>()
    for (const address of addresses) {
      const key = `${address.address.toLowerCase()}\n${address.name}`
      if (seen.has(key)) continue
      if (addressesLeft <= 0) {
        truncated = true
        break
      }
      seen.add(key)
      addressesLeft--
      segments.push(take(`${address.name} ${address.address}`))
      for (const token of addressExactTokens(address.address)) exact.add(token)
    }
    return { segments, exact }
  }

  const envelope = (addresses: readonly string[] | undefined): Address[] => (addresses ?? []).map((address) => ({ name: '', address }))
  const subjectTokens = take(parsed.subject ?? '')
  const fromAddresses = [...parsed.from, ...(input.envelopeFrom ? [{ name: '', address: input.envelopeFrom }] : [])]
  // Header addresses first (they carry names), then envelope ones the headers did not name.
  const headerRecipients = [...parsed.to, ...parsed.cc, ...parsed.bcc]
  const named = new Set(headerRecipients.map((address) => address.address.toLowerCase()))
  const envelopeRecipients = [...envelope(input.envelopeTo), ...envelope(input.envelopeBcc)].filter((address) => {
    const lower = address.address.toLowerCase()
    if (named.has(lower)) return false
    named.add(lower)
    return true
  })
  const from = addressSegments(fromAddresses)
  const to = addressSegments([...headerRecipients, ...envelopeRecipients])
  const nameSegments = parsed.attachments.map((attachment) => take(attachment.filename ?? ''))
  const bodySegments = [take(parsed.text)]
  for (const attachment of parsed.attachments) bodySegments.push(take(attachment.text ?? ''))

  const texts = [parsed.text, ...parsed.attachments.map((attachment) => attachment.text ?? '')].filter((text) => text.length > 0)
  const text = cutToChars(texts.join('\n\n'), limits.snippetTextCharsMax)
  const sender = parsed.from[0] ? addressLabel(parsed.from[0]) : (input.envelopeFrom ?? '')

  return {
    forward: {
      s: streamOf([subjectTokens]),
      b: streamOf(bodySegments),
      f: streamOf(from.segments),
      t: streamOf(to.segments),
      n: streamOf(nameSegments),
      xf: [...from.exact],
      xt: [...to.exact],
      a: parsed.attachments.length > 0 ? 1 : 0,
    },
    record: {
      id: input.id,
      dateMs: orderingDateMs(parsed.dateMs, input.archivedAtMs, limits.futureDateSkewMsMax),
      from: sender,
      subject: parsed.subject ?? '',
      text,
    },
    truncated,
  }
}

/** Every distinct token of a forward record with the field bits it occurs in. */
export function postingsOf(forward: ForwardRecord): Map<string, number> {
  const masks = new Map<string, number>()
  const add = (token: string, bit: number): void => {
    masks.set(token, (masks.get(token) ?? 0) | bit)
  }
  const addStream = (stream: string, bit: number): void => {
    for (const token of streamTokens(stream)) add(token, bit)
  }
  addStream(forward.s, fieldBits.subject)
  addStream(forward.b, fieldBits.body)
  addStream(forward.f, fieldBits.from)
  addStream(forward.t, fieldBits.to)
  addStream(forward.n, fieldBits.attachment)
  for (const token of forward.xf) add(token, fieldBits.from)
  for (const token of forward.xt) add(token, fieldBits.to)
  if (forward.a === 1) add(hasAttachmentToken, fieldBits.marker)
  return masks
}

/**
 * The index input of an archived message: its parsed form plus the envelope of every
 * delivery (so recipients known only from an envelope, BCC included, are searchable).
 */
export function indexInputFromMeta(meta: Pick<MessageMeta, 'id' | 'deliveries' | 'firstArchivedAtMs'>, parsed: ParsedMessage): IndexInput {
  const envelopeTo = new Set<string>()
  const envelopeBcc = new Set<string>()
  let envelopeFrom: string | null = null
  for (const delivery of meta.deliveries) {
    for (const address of delivery.envelopeTo) envelopeTo.add(address.toLowerCase())
    for (const address of delivery.envelopeBcc) envelopeBcc.add(address.toLowerCase())
    envelopeFrom ??= delivery.envelopeFrom
  }
  return { id: meta.id, parsed, envelopeFrom, envelopeTo: [...envelopeTo], envelopeBcc: [...envelopeBcc], archivedAtMs: meta.firstArchivedAtMs }
}
