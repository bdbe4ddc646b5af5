import { addressParser, decodeWords, type Email } from 'postal-mime'
import { cutToChars } from '../common/text.js'
import { decodeWithCharset, headerValue, headerValueCharsMax, headerValues, parseContentType, type HeaderScan, type ScannedHeader } from './header-scan.js'
import { parseMailDate } from './mail-date.js'
import { addressesPerFieldMax, messageIdCharsMax, subjectCharsMax } from './parser-options.js'
import { mimeFlagOrder, type Address, type MimeFlag, type ParsedAttachment, type ParsedMessage } from './types.js'

/**
 * Archive metadata (From/To/Cc/Bcc, Subject, Date, Message-ID) read from the crude header
 * scan's fields, and the last step of every parse: metadata, flags, text and attachments
 * put together into a ParsedMessage. Pure; never throws.
 */

/** What the headers say about a message, before the metadata flags are set. */
export interface Metadata {
  messageId: string | null
  dateMs: number | null
  dateHeaderPresent: boolean
  from: Address[]
  to: Address[]
  cc: Address[]
  bcc: Address[]
  subject: string | null
}

/** Parsed addresses of every `key` header, groups flattened, lower-cased, bounded. */
function addressesOf(headers: readonly ScannedHeader[], key: string): Address[] {
  const result: Address[] = []
  for (const value of headerValues(headers, key)) {
    let parsed: ReturnType<typeof addressParser>
    try {
      parsed = addressParser(value, { flatten: true })
    } catch {
      parsed = [{ name: '', address: value }]
    }
    for (const entry of parsed) {
      if (result.length >= addressesPerFieldMax) return result
      const address = (entry.address ?? '').trim()
      const name = (entry.name ?? '').trim()
      if (address.length > 0) result.push({ name, address: address.toLowerCase() })
      else if (name.length > 0) result.push({ name: '', address: name })
    }
  }
  return result
}

function decodeHeaderText(value: string): string {
  try {
    return decodeWords(value)
  } catch {
    return value
  }
}

/**
 * Header values that are raw 8-bit text but not UTF-8 were read as windows-1252; when the
 * message declares a charset (mailers that put raw bytes in headers use the body's), read
 * them in that charset instead.
 */
function redecodeLegacyHeaders(headers: readonly ScannedHeader[]): readonly ScannedHeader[] {
  if (!headers.some((header) => header.legacyBytes !== undefined)) return headers
  const charset = parseContentType(headerValue(headers, 'content-type')).params.charset
  if (!charset || /^(us-ascii|utf-?8)$/i.test(charset.trim())) return headers
  return headers.map((header) => {
    if (header.legacyBytes === undefined) return header
    const value = decodeWithCharset(header.legacyBytes, charset)
    return value === null ? header : { ...header, value: cutToChars(value.trim(), headerValueCharsMax) }
  })
}

/** The metadata of a message from its scanned header fields. */
export function metadataOf(scanned: readonly ScannedHeader[]): Metadata {
  const headers = redecodeLegacyHeaders(scanned)
  const dateValue = headerValue(headers, 'date')
  const messageId = headerValue(headers, 'message-id')?.trim() ?? ''
  const subject = headerValue(headers, 'subject')
  return {
    messageId: messageId.length > 0 ? cutToChars(messageId, messageIdCharsMax) : null,
    dateMs: dateValue ? parseMailDate(dateValue) : null,
    dateHeaderPresent: dateValue !== null && dateValue.length > 0,
    from: addressesOf(headers, 'from'),
    to: addressesOf(headers, 'to'),
    cc: addressesOf(headers, 'cc'),
    bcc: addressesOf(headers, 'bcc'),
    subject: subject === null ? null : cutToChars(decodeHeaderText(subject), subjectCharsMax),
  }
}

/** Headers for metadata: the crude scan's (Latin-1 aware); postal-mime's fill in when the scan was cut short. */
export function mergedHeaders(scan: HeaderScan, email: Email | null): ScannedHeader[] {
  if (!scan.truncated || email === null) return scan.headers
  const seen = new Set(scan.headers.map((header) => header.key))
  const extra = email.headers.filter((header) => !seen.has(header.key)).map((header) => ({ name: header.originalKey, key: header.key, value: header.value }))
  return [...scan.headers, ...extra]
}

/**
 * NULs are kept in the archived bytes but not in text that goes to the index and the API,
 * where they end strings early in too many consumers.
 */
function withoutNul(flags: ReadonlySet<MimeFlag>, value: string): string {
  return flags.has('nul-bytes') ? value.replace(/\0/g, '') : value
}

/**
 * The parse result: adds the metadata flags (no-from, no-date, bad-date, no-message-id) to
 * `flags`, removes NULs from text when the message had any, and lists the flags in
 * `mimeFlagOrder`.
 */
export function parsedMessageOf(metadata: Metadata, flags: Set<MimeFlag>, text: string, attachments: ParsedAttachment[]): ParsedMessage {
  if (metadata.from.length === 0) flags.add('no-from')
  if (!metadata.dateHeaderPresent) flags.add('no-date')
  else if (metadata.dateMs === null) flags.add('bad-date')
  if (metadata.messageId === null) flags.add('no-message-id')
  return {
    messageId: metadata.messageId,
    dateMs: metadata.dateMs,
    from: metadata.from,
    to: metadata.to,
    cc: metadata.cc,
    bcc: metadata.bcc,
    subject: metadata.subject === null ? null : withoutNul(flags, metadata.subject),
    text: withoutNul(flags, text),
    attachments: flags.has('nul-bytes') ? attachments.map((attachment) => ({ ...attachment, text: attachment.text === null ? null : withoutNul(flags, attachment.text) })) : attachments,
    flags: mimeFlagOrder.filter((flag) => flags.has(flag)),
  }
}
