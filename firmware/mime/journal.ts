/**
 * Exchange envelope journal reports (Exchange 2007 and later, Exchange Online).
 *
 * A report is a message with the header `X-MS-Journal-Report` (inside an Exchange
 * organisation also `X-MS-Exchange-Organization-Journal-Report`), `multipart/mixed`, whose
 * first part is `text/plain` holding the envelope, one field a line:
 *
 *     Sender: sender@contoso.com
 *     Subject: Quarterly figures
 *     Message-Id: <abc@contoso.com>
 *     On-Behalf-Of: boss@contoso.com            (when sent on behalf of someone)
 *     To: user@contoso.com
 *     Cc: user2@contoso.com
 *     Bcc: hidden@contoso.com
 *     Recipient: user3@contoso.com              (addressing could not be verified)
 *     To: member@contoso.com, Expanded: dl@contoso.com     (dl expanded to member)
 *     Cc: fwd@contoso.com, Forwarded: user@contoso.com     (user redirected to fwd)
 *
 * and a `message/rfc822` part holding the original message unaltered (Microsoft,
 * "Understanding Journal Reports" and the journal report ABNF). Exchange 2003 wrote
 * `Recipients: a, b, …` on one line; that is read too.
 *
 * The original is cut out of the raw bytes here, byte for byte: postal-mime rewrites CRLF
 * to LF inside attached messages (NOTES.md), so it is not used for this.
 */
import { headerValue, parseContentType, scanHeaders, decodeTextBytes, type ScannedHeader } from './header-scan.js'
import type { JournalEnvelope } from './types.js'

/** Header names that mark a message as a journal report (lower-case). */
export const journalReportHeaderKeys = ['x-ms-journal-report', 'x-ms-exchange-organization-journal-report'] as const
/** Parts of a report looked at; a real report has two. */
export const journalPartsMax = 16
/** Bytes of one part's header section scanned. */
const partHeaderBytesMax = 64 * 1024
/** Characters of envelope text kept and parsed. */
export const envelopeTextCharsMax = 4 * 1024 * 1024
/** Characters of one envelope address kept. */
const addressCharsMax = 320

/** Bounds on what cutJournalReport keeps. */
export interface JournalCutLimits {
  /** Envelope recipients kept; more are dropped and `recipientsTruncated` is set. */
  recipientsMax: number
}

/** The outcome of cutJournalReport (see there). */
export type JournalCut = { kind: 'not-journal' } | { kind: 'malformed'; reason: string } | { kind: 'journal'; original: Uint8Array; envelope: JournalEnvelope }

/** True when the outer headers mark the message as an Exchange journal report. */
export function isJournalReport(headers: readonly ScannedHeader[]): boolean {
  return headers.some((header) => (journalReportHeaderKeys as readonly string[]).includes(header.key))
}

interface PartRange {
  /** Offset of the part's first byte (its headers). */
  start: number
  /** Offset just past the part's last byte (before the line break that precedes the next delimiter). */
  end: number
}

/**
 * Splits the body of a multipart message into part byte ranges. A delimiter line is
 * `--boundary` (or `--boundary--` to close) followed only by blanks; the line break before
 * a delimiter belongs to the delimiter (RFC 2046 5.1.1), so it is not part of the range.
 * Returns null when the closing delimiter is missing (a truncated report) or when there are
 * more than `journalPartsMax` parts.
 */
function splitParts(raw: Uint8Array, bodyOffset: number, boundary: string): PartRange[] | null {
  const marker = new TextEncoder().encode(`--${boundary}`)
  const parts: PartRange[] = []
  let current: number | null = null
  let position = bodyOffset
  while (position < raw.byteLength) {
    let newline = raw.indexOf(0x0a, position)
    if (newline === -1) newline = raw.byteLength
    const lineEnd = newline > position && raw[newline - 1] === 0x0d ? newline - 1 : newline
    const kind = delimiterKind(raw, position, lineEnd, marker)
    if (kind !== null) {
      if (current !== null) {
        // Drop the CRLF (or bare LF) that precedes this delimiter line.
        let end = position
        if (end > current && raw[end - 1] === 0x0a) end--
        if (end > current && raw[end - 1] === 0x0d) end--
        parts.push({ start: current, end })
        if (parts.length > journalPartsMax) return null
      }
      if (kind === 'close') return parts
      current = newline + 1
    }
    position = newline + 1
  }
  return null
}

function delimiterKind(raw: Uint8Array, start: number, end: number, marker: Uint8Array): 'open' | 'close' | null {
  if (end - start < marker.byteLength) return null
  for (let index = 0; index < marker.byteLength; index++) if (raw[start + index] !== marker[index]) return null
  let cursor = start + marker.byteLength
  let kind: 'open' | 'close' = 'open'
  if (raw[cursor] === 0x2d && raw[cursor + 1] === 0x2d && cursor + 1 < end) {
    kind = 'close'
    cursor += 2
  }
  for (; cursor < end; cursor++) if (raw[cursor] !== 0x20 && raw[cursor] !== 0x09) return null
  return kind
}

interface Part {
  headers: ScannedHeader[]
  mediaType: string
  charset: string | null
  transferEncoding: string
  body: Uint8Array
}

function readPart(raw: Uint8Array, range: PartRange): Part | null {
  const bytes = raw.subarray(range.start, range.end)
  const scan = scanHeaders(bytes, partHeaderBytesMax)
  // A part with headers but no blank line has no body; an empty part has neither.
  const bodyOffset = scan.bodyOffset ?? (bytes.byteLength === 0 ? 0 : null)
  if (bodyOffset === null) return null
  const contentType = parseContentType(headerValue(scan.headers, 'content-type'))
  const transferEncoding = (headerValue(scan.headers, 'content-transfer-encoding') ?? '7bit').trim().toLowerCase()
  return {
    headers: scan.headers,
    mediaType: contentType.mediaType,
    charset: contentType.params.charset ?? null,
    transferEncoding,
    body: bytes.subarray(bodyOffset),
  }
}

/**
 * Strict base64: only the alphabet, padding at the end and line breaks/blanks are allowed.
 * Returns null on anything else, so a damaged original is reported, not silently repaired.
 */
export function decodeBase64Strict(body: Uint8Array): Uint8Array | null {
  const text = new TextDecoder('latin1').decode(body).replace(/[\r\n\t ]+/g, '')
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 === 1) return null
  const decoded = Buffer.from(text, 'base64')
  // Copy out of Buffer's shared pool so the result owns exactly its bytes.
  return new Uint8Array(decoded)
}

/** Quoted-printable (RFC 2045 6.7): `=XX` escapes and `=` soft line breaks; other bytes kept. */
export function decodeQuotedPrintable(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.byteLength)
  let length = 0
  const hex = (byte: number | undefined): number => {
    if (byte === undefined) return -1
    if (byte >= 0x30 && byte <= 0x39) return byte - 0x30
    if (byte >= 0x41 && byte <= 0x46) return byte - 0x37
    if (byte >= 0x61 && byte <= 0x66) return byte - 0x57
    return -1
  }
  for (let index = 0; index < body.byteLength; index++) {
    const byte = body[index]!
    if (byte !== 0x3d) {
      out[length++] = byte
      continue
    }
    const high = hex(body[index + 1])
    const low = hex(body[index + 2])
    if (high >= 0 && low >= 0) {
      out[length++] = (high << 4) | low
      index += 2
      continue
    }
    // `=` then optional blanks then a line break is a soft break: drop all of it.
    let cursor = index + 1
    while (body[cursor] === 0x20 || body[cursor] === 0x09) cursor++
    if (body[cursor] === 0x0d && body[cursor + 1] === 0x0a) {
      index = cursor + 1
      continue
    }
    if (body[cursor] === 0x0a || cursor >= body.byteLength) {
      index = cursor
      continue
    }
    out[length++] = byte
  }
  return out.slice(0, length)
}

/** Undoes a part's Content-Transfer-Encoding; null when it is unknown or the data is damaged. */
function decodeTransfer(part: Part): Uint8Array | null {
  switch (part.transferEncoding) {
    case '':
    case '7bit':
    case '8bit':
    case 'binary':
      return part.body
    case 'base64':
      return decodeBase64Strict(part.body)
    case 'quoted-printable':
      return decodeQuotedPrintable(part.body)
    default:
      return null
  }
}

function decodeCharset(bytes: Uint8Array, charset: string | null): string {
  if (charset) {
    try {
      return new TextDecoder(charset.trim().toLowerCase(), { fatal: true }).decode(bytes)
    } catch {
      // Unknown label or bytes not in that charset: fall through to the lenient decoder.
    }
  }
  return decodeTextBytes(bytes)
}

/** The SMTP address in an envelope field: inside `<…>` when present, `SMTP:` prefix dropped, lower-cased. */
function envelopeAddress(text: string): string | null {
  let value = text.trim()
  const open = value.indexOf('<')
  const close = value.lastIndexOf('>')
  if (open >= 0 && close > open) value = value.slice(open + 1, close).trim()
  value = value.replace(/^smtp:/i, '')
  // X.500 names and display-only entries are not deliverable addresses.
  if (!value.includes('@') || /\s/.test(value) || value.length > addressCharsMax) return null
  return value.toLowerCase()
}

const recipientKeys = new Set(['to', 'cc', 'bcc', 'recipient', 'recipients'])

/**
 * Reads the envelope lines of a journal report. Every address on a recipient line counts:
 * the recipient itself and the `Expanded:` distribution list or `Forwarded:` original
 * recipient it came from, so a search for the list or the redirected user finds the
 * message too; on a `Bcc:` line all of them are BCC. Unknown lines are ignored.
 * Pure; never throws.
 *
 * @param text the decoded envelope part
 * @param recipientsMax recipients kept (deduplicated); beyond that `recipientsTruncated` is set
 */
export function parseJournalEnvelope(text: string, recipientsMax: number): JournalEnvelope {
  const envelopeText = text.length > envelopeTextCharsMax ? text.slice(0, envelopeTextCharsMax) : text
  const recipients = new Set<string>()
  const bcc = new Set<string>()
  let sender: string | null = null
  let messageId: string | null = null
  let onBehalfOf: string | null = null
  let recipientsTruncated = false
  for (const line of envelopeText.split(/\r?\n/)) {
    const colon = line.indexOf(':')
    if (colon <= 0) continue
    const key = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    if (key === 'sender') sender ??= envelopeAddress(value)
    else if (key === 'message-id') messageId ??= value.length > 0 ? value.slice(0, 998) : null
    else if (key === 'on-behalf-of') onBehalfOf ??= envelopeAddress(value)
    else if (recipientKeys.has(key)) {
      for (const segment of value.split(',')) {
        const address = envelopeAddress(segment.replace(/^\s*(expanded|forwarded)\s*:/i, ''))
        if (address === null) continue
        if (!recipients.has(address)) {
          if (recipients.size >= recipientsMax) {
            recipientsTruncated = true
            continue
          }
          recipients.add(address)
        }
        if (key === 'bcc') bcc.add(address)
      }
    }
  }
  return { sender, recipients: [...recipients], bcc: [...bcc], messageId, onBehalfOf, recipientsTruncated, envelopeText }
}

/**
 * Cuts an Exchange envelope journal report apart. Pure; never throws; reads `raw` only.
 *
 * - `not-journal`: the outer headers carry no journal report header.
 * - `malformed`: the header is there but the report is not usable: not multipart, no
 *   boundary, no closing delimiter, first part not text/plain, no message/rfc822 part,
 *   an unknown or damaged transfer encoding, or an envelope with neither sender nor
 *   recipients. `reason` says which.
 * - `journal`: `original` holds the embedded message's bytes exactly (a copy; base64 and
 *   quoted-printable transfer encodings undone, 7bit/8bit/binary cut as they are).
 *
 * @param raw the report's bytes
 * @param outer the scan of its outer header section (scanHeaders)
 * @param limits bounds on the envelope
 */
export function cutJournalReport(raw: Uint8Array, outer: { headers: ScannedHeader[]; bodyOffset: number | null }, limits: JournalCutLimits): JournalCut {
  if (!isJournalReport(outer.headers)) return { kind: 'not-journal' }
  const contentType = parseContentType(headerValue(outer.headers, 'content-type'))
  if (!contentType.mediaType.startsWith('multipart/')) return { kind: 'malformed', reason: `outer content type is ${contentType.mediaType}, not multipart` }
  const boundary = contentType.params.boundary
  if (!boundary) return { kind: 'malformed', reason: 'multipart without boundary' }
  if (outer.bodyOffset === null) return { kind: 'malformed', reason: 'no body' }
  const ranges = splitParts(raw, outer.bodyOffset, boundary)
  if (ranges === null) return { kind: 'malformed', reason: 'unterminated multipart or too many parts' }
  const parts: Part[] = []
  for (const range of ranges) {
    const part = readPart(raw, range)
    if (part === null) return { kind: 'malformed', reason: 'part without header end' }
    parts.push(part)
  }
  const envelopePart = parts[0]
  if (!envelopePart || envelopePart.mediaType !== 'text/plain') return { kind: 'malformed', reason: 'first part is not the text/plain envelope' }
  const originalPart = parts.find((part) => part.mediaType === 'message/rfc822')
  if (!originalPart) return { kind: 'malformed', reason: 'no message/rfc822 part' }
  const envelopeBytes = decodeTransfer(envelopePart)
  if (envelopeBytes === null) return { kind: 'malformed', reason: `envelope transfer encoding ${envelopePart.transferEncoding} not decodable` }
  const envelope = parseJournalEnvelope(decodeCharset(envelopeBytes, envelopePart.charset), limits.recipientsMax)
  if (envelope.sender === null && envelope.recipients.length === 0) return { kind: 'malformed', reason: 'envelope names neither sender nor recipients' }
  const original = decodeTransfer(originalPart)
  if (original === null) return { kind: 'malformed', reason: `original transfer encoding ${originalPart.transferEncoding} not decodable` }
  if (original.byteLength === 0) return { kind: 'malformed', reason: 'empty original' }
  return { kind: 'journal', original: original === originalPart.body ? original.slice() : original, envelope }
}
