import { deflateRawSync, inflateRawSync } from 'node:zlib'
import type { Address, ParsedMessage } from '../mime/types.js'
import type { MessageMeta } from '../archive/types.js'
import { cutToChars } from '../common/text.js'
import { addressExactTokens, hasTokens, tokenCharsMax, tokenize, tokenizeWithSpans } from './tokenize.js'
import { createTermTable, tokenHash, type TermTable } from './term-table.js'
import { fieldBits, hasAttachmentToken } from './field-bits.js'

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
  /** Characters of a message's text, from its start, a snippet is looked for in. */
  snippetTextCharsMax: number
  /**
   * Characters of body and attachment text indexed and kept per message (the display
   * record's text); text past it is not searchable. Bounds what a message of punctuation
   * (no tokens, so the token budget never binds) can put in the index.
   */
  textCharsPerDocumentMax: number
  /** A Date header later than the archive time by more than this (ms) is not believed for ordering. */
  futureDateSkewMsMax: number
}

/**
 * The forward record of one document (field token streams, see `streamOf`). The body
 * stream is not stored with the others: it is the token stream of the body text the
 * display record keeps (see `bodyStreamOf`), so the index holds the body once, deflated.
 */
export interface ForwardRecord {
  /** Subject. */
  s: string
  /** Body text and attachment texts (one segment each); '' as decodeForward returns it (see bodyStreamOf). */
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
 * Terms with their field bits, packed: the tokens space-separated in one string (a token
 * never holds a space), the bits one byte per token. The index keeps the terms of every
 * pending-tail document (thousands) in memory: two objects per document instead of a few
 * hundred keep the garbage collector's work on them small.
 */
export interface PackedTerms {
  tokens: string
  masks: Uint8Array
  /**
   * The tokens' tokenHash, token for token, when known (a prepared document brings them
   * from the worker): posting groups then need not hash them again (they still compare the
   * characters, and check a hash before a new token is taken on it).
   */
  hashes?: Int32Array
}

/** Packs terms (as a Map from token to field bits, in its order), with their hashes. */
export function packTerms(terms: ReadonlyMap<string, number>): PackedTerms {
  // One loop over the entries: Uint8Array.from over a Map iterator was several times slower under Bun.
  const tokens = new Array<string>(terms.size)
  const masks = new Uint8Array(terms.size)
  const hashes = new Int32Array(terms.size)
  let index = 0
  for (const [token, bits] of terms) {
    tokens[index] = token
    hashes[index] = tokenHash(token, 0, token.length)
    masks[index++] = bits
  }
  return { tokens: tokens.join(' '), masks, hashes }
}

/** Tokens in a space-separated string. */
function countTokens(tokens: string): number {
  if (tokens.length === 0) return 0
  let count = 1
  for (let at = tokens.indexOf(' '); at >= 0; at = tokens.indexOf(' ', at + 1)) count++
  return count
}

export interface AnalyzedDocument {
  /**
   * The forward record. Its body stream `b` is '' when the analysis came from a prepared
   * document (`terms` is then set): it is not stored (bodyStreamOf derives it from the
   * record's text), and a worker need not build and send it. Analyses that are compared
   * with a stored document (re-index, verify) are made by analyzeSequential.
   */
  forward: ForwardRecord
  record: DocumentRecord
  /**
   * The tokens with their field bits, when they came ready from a prepared document: the
   * prepared terms followed by the address terms, so a token may appear twice (its bits
   * are then the OR of both).
   */
  terms?: PackedTerms
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
 * Binary form of a forward record: its fields joined by NUL, as UTF-8, the body stream left
 * empty (it is derived from the display record's text: bodyStreamOf). Plain strings encode
 * and decode several times faster than MessagePack objects holding long strings, and
 * phrase checks read many of them. Tokens never contain NUL or U+0001.
 */
export function encodeForward(forward: ForwardRecord): Buffer {
  return Buffer.from([String(forward.a), forward.s, '', forward.f, forward.t, forward.n, forward.xf.join('\u0001'), forward.xt.join('\u0001')].join('\u0000'))
}

/** Position of each field in `encodeForward`'s layout. */
export const forwardFieldIndex = { s: 1, b: 2, f: 3, t: 4, n: 5 } as const

/**
 * True when the encoded forward record has the phrase in fields `firstField` through
 * `lastField` (consecutive in the layout), searched in the stored bytes without decoding
 * them: the pattern ` a b ` holds no NUL and no newline, so a hit can span neither two
 * fields nor two segments. The stored body field is empty: see bodyPhraseTest.
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
const bodySeparator = '\n\n'

/** The texts of a record's body text with the number of tokens indexed from each. */
function bodySegmentsOf(text: string, segments: readonly number[]): Array<{ text: string; tokens: number }> {
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
 * Computes the forward record and display record of a message, in the order of the token
 * budget: subject, sender, recipients, attachment names, body, attachment texts — so a
 * huge body cannot push the headers out of the index.
 *
 * The result is exactly that of analyzing the message in one pass; it is computed from
 * `prepareDocument` (the part that needs no envelope, which the ingest pipeline may run
 * ahead of the write transaction) when the budgets allow, which is nearly always.
 */
export function analyzeDocument(input: IndexInput, limits: DocumentLimits, prepared?: PreparedDocument): AnalyzedDocument {
  return completeDocument(prepared ?? prepareDocument(input.parsed, limits), input, limits) ?? analyzeSequential(input, limits)
}

/** One address as indexed. */
interface TakenAddress {
  /** Dedup key: lower-case address, newline, display name. */
  key: string
  /** Its word tokens (name and address) within the budget. */
  tokens: string[]
  /** The address's segment: ` tok tok ` of those tokens ('' when it has none). */
  stream: string
  /** Its exact address tokens (addressExactTokens). */
  exact: string[]
}

/**
 * What indexing a message needs that depends on the parsed message alone: tokens per
 * field, header addresses, the snippet text and the display fields. Plain data only
 * (strings, numbers, arrays, plain objects), so it can be computed on a worker thread and
 * passed by structured clone; `completeDocument` adds the envelope inside the transaction.
 */
export interface PreparedDocument {
  /** Marks the shape; a value of another shape is prepared again. */
  kind: typeof preparedKind
  /** Subject stream. (No body stream: the display record's text stands for it, see bodyStreamOf.) */
  s: string
  /** Attachment name streams. */
  n: string
  /** Dedup keys of the header senders (From): an envelope sender named there is not added again. */
  fromKeys: string[]
  /** Header addresses taken (senders and recipients, each de-duplicated). */
  addresses: number
  /** Sender and recipient streams and exact tokens of the header addresses (ForwardRecord f, t, xf, xt). */
  f: string
  t: string
  xf: string[]
  xt: string[]
  /** Lower-case addresses of every header recipient (envelope recipients named here are not added again). */
  toNamed: string[]
  /** Tokens taken from the budget. */
  tokens: number
  /** True when a budget cut the message short: the envelope then needs the one-pass analysis. */
  truncated: boolean
  /** The Date header, ms since the epoch, or null. */
  dateMs: number | null
  /** `Name <address>` of the first header sender, or null when there is none. */
  sender: string | null
  subject: string
  /** The body and attachment texts as indexed (DocumentRecord.text), compressed as the display record stores them. */
  textDeflated: Uint8Array
  /** DocumentRecord.segments. */
  segments: number[]
  attachment: 0 | 1
  /**
   * Distinct tokens of the subject, body, attachment names, the attachment marker and the
   * header addresses, space-separated (a token never holds a space)…
   */
  terms: string
  /** …their field bits (fieldBits fit a byte), token for token… */
  masks: Uint8Array
  /** …and their tokenHash. */
  hashes: Int32Array
}

/*
 * Why one string and a byte array rather than string[] and number[]: the prepared document
 * crosses from a parse worker to the event loop by structured clone, and ~150 small strings
 * per message cost more to clone than everything else in it (measured under Bun: 0.14 ms
 * per corpus message for the whole result with arrays, 0.06 ms packed; the split back is
 * 0.008 ms). The snippet text travels only deflated, as it is stored.
 */
const preparedKind = 'mailkeep.index.prepared.4'

/** True when `value` is a PreparedDocument (of this firmware's shape). */
export function isPreparedDocument(value: unknown): value is PreparedDocument {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Partial<PreparedDocument>
  return (
    candidate.kind === preparedKind &&
    typeof candidate.s === 'string' &&
    typeof candidate.n === 'string' &&
    typeof candidate.f === 'string' &&
    typeof candidate.t === 'string' &&
    Array.isArray(candidate.xf) &&
    Array.isArray(candidate.xt) &&
    Array.isArray(candidate.fromKeys) &&
    typeof candidate.addresses === 'number' &&
    Array.isArray(candidate.toNamed) &&
    typeof candidate.tokens === 'number' &&
    typeof candidate.terms === 'string' &&
    candidate.masks instanceof Uint8Array &&
    candidate.hashes instanceof Int32Array &&
    candidate.textDeflated instanceof Uint8Array &&
    Array.isArray(candidate.segments) &&
    typeof candidate.subject === 'string'
  )
}

/** Segment streams joined into a field stream (empty segments left out, as streamOf does). */
function joinStreams(streams: readonly string[]): string {
  return streams.filter((stream) => stream.length > 0).join('\n')
}

function exactTokensOf(addresses: readonly TakenAddress[]): string[] {
  return [...new Set(addresses.flatMap((address) => address.exact))]
}

/**
 * Takes addresses (de-duplicated by address and name) while `addressesMax` allows,
 * tokenizing each through `take`; calls `onTruncated` when the limit cuts the list.
 */
function addressTaker(addressesMax: number, take: (text: string) => string[], onTruncated: () => void): (list: readonly Address[]) => TakenAddress[] {
  let left = addressesMax
  return (list) => {
    const seen = new Set<string>()
    const out: TakenAddress[] = []
    for (const address of list) {
      const key = `${address.address.toLowerCase()}\n${address.name}`
      if (seen.has(key)) continue
      if (left <= 0) {
        onTruncated()
        break
      }
      seen.add(key)
      left--
      const tokens = take(`${address.name} ${address.address}`)
      out.push({ key, tokens, stream: streamOf([tokens]), exact: addressExactTokens(address.address) })
    }
    return out
  }
}

const wordStart = /^[\p{L}\p{N}\p{M}]/u
const trailingWord = /[\p{L}\p{N}\p{M}]+$/u

/** `text` cut to at most `charsMax` characters, never inside a word (a word the cut would split is left out whole). */
function cutBeforeWord(text: string, charsMax: number): string {
  if (text.length <= charsMax) return text
  const cut = cutToChars(text, Math.max(0, charsMax))
  return wordStart.test(text.slice(cut.length, cut.length + 2)) ? cut.replace(trailingWord, '') : cut
}

/**
 * Tokenizes texts one after another within a budget of `tokensMax` tokens; body texts also
 * within `textCharsMax` characters (what the display record keeps).
 */
function tokenBudget(
  tokensMax: number,
  textCharsMax: number,
): { take(text: string): string[]; takeBody(texts: readonly string[], into?: TermTable): BodyTaken; used(): number; truncated(): boolean } {
  let left = tokensMax
  let charsLeft = textCharsMax
  let truncated = false
  /** The tokens of `text` within the budget, and whether that is all of them. */
  const takeCounted = (text: string): { tokens: string[]; complete: boolean } => {
    if (left <= 0) {
      const complete = text.length === 0 || !hasTokens(text)
      if (!complete) truncated = true
      return { tokens: [], complete }
    }
    const tokens = tokenize(text, left + 1)
    const complete = tokens.length <= left
    if (!complete) {
      truncated = true
      tokens.length = left
    }
    left -= tokens.length
    return { tokens, complete }
  }
  /** As takeCounted, the tokens added to `table` with the body bit instead of returned in an array. */
  const takeInto = (text: string, table: TermTable): { count: number; complete: boolean } => {
    if (left <= 0) {
      const { complete } = takeCounted(text)
      return { count: 0, complete }
    }
    const added = table.addText(text, fieldBits.body, left)
    const complete = added <= left
    if (!complete) truncated = true
    const count = complete ? added : left
    left -= count
    return { count, complete }
  }
  return {
    take: (text) => takeCounted(text).tokens,
    takeBody(texts, into) {
      const segments: string[][] = []
      const kept: string[] = []
      const counts: number[] = []
      for (const whole of texts) {
        // Past the character budget a text is cut before a word, and the rest is not indexed.
        const text = cutBeforeWord(whole, charsLeft)
        if (text.length < whole.length && hasTokens(whole.slice(text.length))) truncated = true
        let count: number
        let complete: boolean
        if (into) ({ count, complete } = takeInto(text, into))
        else {
          const taken = takeCounted(text)
          segments.push(taken.tokens)
          count = taken.tokens.length
          complete = taken.complete
        }
        // A text cut by the budget is kept up to the end of its last indexed token.
        const stored = complete ? text : count === 0 ? '' : text.slice(0, tokenizeWithSpans(text, count)[count - 1]!.end)
        if (stored.length === 0) continue
        charsLeft -= stored.length + bodySeparator.length
        kept.push(stored)
        counts.push(stored.length, count)
      }
      return { segments, text: kept.join(bodySeparator), counts }
    },
    used: () => tokensMax - left,
    truncated: () => truncated,
  }
}

/** The body and attachment texts as indexed: token segments, and the text and segment list a display record keeps. */
interface BodyTaken {
  /** The tokens of each text; none when they went into a TermTable. */
  segments: string[][]
  text: string
  counts: number[]
}

/**
 * The envelope-free part of indexing a message: pure, no I/O, safe on a worker thread
 * (this module imports no database code). Pass the result to `indexMessage` (or the
 * archive's `indexPrepared`) to keep tokenizing out of the write transaction.
 */
export function prepareDocument(parsed: ParsedMessage, limits: DocumentLimits): PreparedDocument {
  const budget = tokenBudget(limits.tokensPerDocumentMax, limits.textCharsPerDocumentMax)
  const take = budget.take
  let truncated = false
  const addresses = addressTaker(limits.addressesPerDocumentMax, take, () => (truncated = true))
  const subjectTokens = take(parsed.subject ?? '')
  const subject = streamOf([subjectTokens])
  const from = addresses(parsed.from)
  const headerRecipients = [...parsed.to, ...parsed.cc, ...parsed.bcc]
  const to = addresses(headerRecipients)
  const nameSegments = parsed.attachments.map((attachment) => take(attachment.filename ?? ''))
  const names = streamOf(nameSegments)
  const attachment = parsed.attachments.length > 0 ? 1 : 0
  // Subject, body, file names, marker: the order terms were always packed in.
  const terms = createTermTable()
  terms.addAll(subjectTokens, fieldBits.subject)
  const taken = budget.takeBody([parsed.text, ...parsed.attachments.map((attachment) => attachment.text ?? '')], terms)
  for (const segment of nameSegments) terms.addAll(segment, fieldBits.attachment)
  if (attachment === 1) terms.add(hasAttachmentToken, fieldBits.marker)
  addAddressTerms(terms, from, to)
  const packedTerms = terms.pack()
  return {
    kind: preparedKind,
    s: subject,
    n: names,
    fromKeys: from.map((address) => address.key),
    addresses: from.length + to.length,
    f: joinStreams(from.map((address) => address.stream)),
    t: joinStreams(to.map((address) => address.stream)),
    xf: exactTokensOf(from),
    xt: exactTokensOf(to),
    toNamed: headerRecipients.map((address) => address.address.toLowerCase()),
    tokens: budget.used(),
    truncated: truncated || budget.truncated(),
    dateMs: parsed.dateMs,
    sender: parsed.from[0] ? addressLabel(parsed.from[0]) : null,
    subject: parsed.subject ?? '',
    textDeflated: deflateText(taken.text),
    segments: taken.counts,
    attachment,
    terms: packedTerms.tokens,
    masks: packedTerms.masks,
    hashes: packedTerms.hashes,
  }
}

/**
 * Adds the envelope (sender, recipients, archive time) to a prepared document.
 *
 * @returns the analysis, or undefined when a budget binds (then only the one-pass
 *   analysis gives the exact result, because envelope addresses come before the body)
 */
export function completeDocument(prepared: PreparedDocument, input: IndexInput, limits: DocumentLimits): AnalyzedDocument | undefined {
  if (prepared.truncated) return undefined
  // Damaged in transit (it never is): the one-pass analysis is always right.
  if (countTokens(prepared.terms) !== prepared.masks.length || prepared.hashes.length !== prepared.masks.length) return undefined
  let tokens = prepared.tokens
  const extraFrom: TakenAddress[] = []
  if (input.envelopeFrom && !prepared.fromKeys.includes(`${input.envelopeFrom.toLowerCase()}\n`)) extraFrom.push(envelopeAddress(input.envelopeFrom))
  const extraTo: TakenAddress[] = []
  const envelopeRecipients = [...(input.envelopeTo ?? []), ...(input.envelopeBcc ?? [])]
  if (envelopeRecipients.length > 0) {
    const named = new Set(prepared.toNamed)
    for (const address of envelopeRecipients) {
      const lower = address.toLowerCase()
      if (named.has(lower)) continue
      named.add(lower)
      extraTo.push(envelopeAddress(address))
    }
  }
  for (const address of extraFrom) tokens += address.tokens.length
  for (const address of extraTo) tokens += address.tokens.length
  if (tokens > limits.tokensPerDocumentMax || prepared.addresses + extraFrom.length + extraTo.length > limits.addressesPerDocumentMax) return undefined
  // The header addresses' terms came prepared; the envelope's follow them (a token may then appear twice).
  let terms: PackedTerms = { tokens: prepared.terms, masks: prepared.masks, hashes: prepared.hashes }
  let forwardAddresses = { f: prepared.f, t: prepared.t, xf: prepared.xf, xt: prepared.xt }
  if (extraFrom.length + extraTo.length > 0) {
    const envelopeTerms = createTermTable()
    addAddressTerms(envelopeTerms, extraFrom, extraTo)
    terms = joinTerms(terms, envelopeTerms.pack())
    forwardAddresses = {
      f: joinStreams([prepared.f, ...extraFrom.map((address) => address.stream)]),
      t: joinStreams([prepared.t, ...extraTo.map((address) => address.stream)]),
      xf: [...new Set([...prepared.xf, ...extraFrom.flatMap((address) => address.exact)])],
      xt: [...new Set([...prepared.xt, ...extraTo.flatMap((address) => address.exact)])],
    }
  }
  return {
    terms,
    // No body stream (see AnalyzedDocument.forward): the terms carry the body's tokens.
    forward: { s: prepared.s, b: '', f: forwardAddresses.f, t: forwardAddresses.t, n: prepared.n, xf: forwardAddresses.xf, xt: forwardAddresses.xt, a: prepared.attachment },
    record: {
      id: input.id,
      dateMs: orderingDateMs(prepared.dateMs, input.archivedAtMs, limits.futureDateSkewMsMax),
      from: prepared.sender ?? input.envelopeFrom ?? '',
      subject: prepared.subject,
      textDeflated: prepared.textDeflated,
      segments: prepared.segments,
    },
    truncated: false,
  }
}

/** Adds the word and exact tokens of sender and recipient addresses with the from and to bits. */
function addAddressTerms(table: TermTable, from: readonly TakenAddress[], to: readonly TakenAddress[]): void {
  for (const [list, bit] of [[from, fieldBits.from], [to, fieldBits.to]] as const) {
    for (const address of list) {
      table.addAll(address.tokens, bit)
      table.addAll(address.exact, bit)
    }
  }
}

function envelopeAddress(address: string): TakenAddress {
  const tokens = tokenize(` ${address}`)
  return { key: `${address.toLowerCase()}\n`, tokens, stream: streamOf([tokens]), exact: addressExactTokens(address) }
}

/**
 * The one-pass analysis (see analyzeDocument): for messages a budget cuts short, and where an
 * analysis is compared with a stored document (re-index, verify), since it builds the body
 * stream that analyses from a prepared document leave out.
 */
export function analyzeSequential(input: IndexInput, limits: DocumentLimits): AnalyzedDocument {
  const { parsed } = input
  const budget = tokenBudget(limits.tokensPerDocumentMax, limits.textCharsPerDocumentMax)
  const take = budget.take
  let truncated = false

  const takeAddresses = addressTaker(limits.addressesPerDocumentMax, take, () => (truncated = true))
  const addressSegments = (addresses: readonly Address[]): { segments: string[]; exact: string[] } => {
    const taken = takeAddresses(addresses)
    return { segments: taken.map((address) => address.stream), exact: exactTokensOf(taken) }
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
  const taken = budget.takeBody([parsed.text, ...parsed.attachments.map((attachment) => attachment.text ?? '')])
  const bodySegments = taken.segments
  const sender = parsed.from[0] ? addressLabel(parsed.from[0]) : (input.envelopeFrom ?? '')

  return {
    forward: {
      s: streamOf([subjectTokens]),
      b: streamOf(bodySegments),
      f: joinStreams(from.segments),
      t: joinStreams(to.segments),
      n: streamOf(nameSegments),
      xf: from.exact,
      xt: to.exact,
      a: parsed.attachments.length > 0 ? 1 : 0,
    },
    record: {
      id: input.id,
      dateMs: orderingDateMs(parsed.dateMs, input.archivedAtMs, limits.futureDateSkewMsMax),
      from: sender,
      subject: parsed.subject ?? '',
      text: taken.text,
      segments: taken.counts,
    },
    truncated: truncated || budget.truncated(),
  }
}

function joinTerms(first: PackedTerms, second: PackedTerms): PackedTerms {
  if (second.masks.length === 0) return first
  if (first.masks.length === 0) return second
  const masks = new Uint8Array(first.masks.length + second.masks.length)
  masks.set(first.masks)
  masks.set(second.masks, first.masks.length)
  let hashes: Int32Array | undefined
  if (first.hashes && second.hashes) {
    hashes = new Int32Array(masks.length)
    hashes.set(first.hashes)
    hashes.set(second.hashes, first.hashes.length)
  }
  return { tokens: `${first.tokens} ${second.tokens}`, masks, hashes }
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
  addStreamTerms(masks, forward.s, fieldBits.subject)
  addStreamTerms(masks, forward.b, fieldBits.body)
  addStreamTerms(masks, forward.f, fieldBits.from)
  addStreamTerms(masks, forward.t, fieldBits.to)
  addStreamTerms(masks, forward.n, fieldBits.attachment)
  for (const token of forward.xf) addTerm(masks, token, fieldBits.from)
  for (const token of forward.xt) addTerm(masks, token, fieldBits.to)
  if (forward.a === 1) addTerm(masks, hasAttachmentToken, fieldBits.marker)
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
