import assert from 'node:assert'
import { createHash } from 'node:crypto'
import { compile as compileHtmlToText, type HtmlToTextOptions } from 'html-to-text'
import { addressParser, decodeWords, type Attachment as PostalAttachment, type Email } from 'postal-mime'
import type { Logger } from '../common/logger.js'
import { systemClock, type Clock } from '../common/clock.js'
import { cutToChars } from '../common/text.js'
import {
  decodeTextBytes,
  decodeWithCharset,
  headerValue,
  headerValueCharsMax,
  headerValues,
  parseContentType,
  scanHeaders,
  type HeaderScan,
  type ScannedHeader,
} from './header-scan.js'
import { cutJournalReport, isJournalReport } from './journal.js'
import { parseMailDate } from './mail-date.js'
import { ParseBudgetExceeded, parseWithBudget } from './postal-adapter.js'
import { scanStructure } from './structure-scan.js'
import { createPdfTextExtractor, looksLikePdf, type PdfTextExtractor } from './pdf-text.js'
import { mimeFlagOrder, type Address, type JournalUnwrapResult, type MimeFlag, type ParsedAttachment, type ParsedMessage } from './types.js'

/**
 * firmware/mime: turns raw message bytes into archive metadata and searchable text.
 *
 * `parse` never throws and never changes the bytes. What it could not read, or found
 * wrong, it says in `flags`:
 *
 * | flag | when |
 * |---|---|
 * | parse-failed | postal-mime threw (or an internal error): metadata from the crude header scan only |
 * | parse-timeout | the time budget ran out: in the line loop (metadata from the header scan only) or later, while extracting text (text and attachment text may be partial) |
 * | no-headers | no header field at the start of the message (empty input, binary, plain text) |
 * | no-from / no-date / no-message-id | that header is missing or empty |
 * | bad-date | a Date header that is not a date |
 * | nul-bytes | a 0x00 byte anywhere |
 * | eight-bit-headers | bytes ≥ 0x80 in the top-level header section (raw UTF-8 or Latin-1 instead of encoded words) |
 * | bare-line-feeds | a line ending in LF without CR (common in mbox/maildir copies; RFC 5322 wants CRLF) |
 * | long-header-line | a header line over 998 octets |
 * | deep-nesting | multipart nesting estimated over `nestingDepthMax` (or postal-mime's own depth limit hit): no deep parse |
 * | too-many-parts | more than `partsMax` MIME parts estimated before parsing: no deep parse |
 * | unterminated-multipart | a multipart with parts whose closing `--boundary--` never came |
 * | bad-transfer-encoding | a base64 part with characters outside the alphabet, or cut mid-unit |
 * | oversize-for-parse | input over `parseBytesMax`: only the crude header scan ran |
 * | journal-report | an Exchange envelope journal report that `unwrapJournal` can unwrap |
 * | journal-report-malformed | it claims to be one (X-MS-Journal-Report) but cannot be unwrapped; archived as is |
 *
 * The time budget: a parse is one long chain of microtasks, so no timer can interrupt it
 * while it runs (Node and Bun alike). The budget is checked inside postal-mime's line loop
 * every few hundred lines and between our own steps (HTML conversion, each attachment).
 * What runs between two checks — decoding one part at the end of the loop, converting
 * one bounded HTML body — is not interrupted; those steps are bounded by
 * `parseBytesMax`, `partsMax` and the character limits, which is what really bounds a
 * parse. Inline `message/rfc822` sub-messages are parsed by postal-mime's own sub-parser,
 * outside the line budget (their parts still count against `partsMax`).
 */

/** Bytes of a message read by the crude header scan. */
export const headerScanBytesMax = 256 * 1024
/** Deepest multipart nesting parsed; deeper messages get `deep-nesting` and no deep parse. */
export const nestingDepthMax = 32
/** Header bytes postal-mime accepts across all parts before it refuses the message. */
export const postalHeadersBytesMax = 1024 * 1024
/** Inline message/rfc822 levels postal-mime parses; deeper ones stay attachments. */
export const inlineMessageDepthMax = 3
/** Attached messages (message/rfc822 attachments) parsed again for their text, in levels. */
export const attachedMessageTextDepthMax = 2
/** Addresses kept per address field (From, To, Cc, Bcc). */
export const addressesPerFieldMax = 1_000
/** Characters kept of the subject. */
export const subjectCharsMax = 4_096
/** Characters kept of the Message-ID. */
export const messageIdCharsMax = 998
/** Ceiling on characters of HTML handed to html-to-text in one call (its time is linear in them). */
export const htmlInputCharsMax = 4 * 1024 * 1024
/** Envelope recipients kept from one journal report. */
export const journalRecipientsMax = 10_000
/**
 * Time all PDF attachments of one message may take together, in ms (each one also has the
 * extractor's own `timeoutMs`). PDF text is extracted on worker threads, after the rest of
 * the parse, so it does not count against `parseTimeoutMs`, which bounds main-thread work.
 */
export const pdfTextBudgetMsPerMessage = 15_000

/** Bytes sampled to decide whether a message without headers is text worth indexing. */
const textSniffBytes = 4_096
/** Share of control bytes in that sample above which the input counts as binary. */
const binaryControlShareMax = 0.05

export interface MimeParserOptions {
  /** Largest input parsed in depth, in bytes; larger input gets only the crude header scan. */
  parseBytesMax: number
  /** Time budget of one parse, in ms (see the file comment for what it bounds). */
  parseTimeoutMs: number
  /** Most MIME parts parsed, counted crudely before parsing. */
  partsMax: number
  /** Characters of body text kept. */
  textCharsMax: number
  /** Characters of text kept per attachment. */
  attachmentTextCharsMax: number
}

/** Defaults for the composition root (an appliance with 64 MiB messages and 2 GiB RAM in mind). */
export const defaultMimeParserOptions: Readonly<MimeParserOptions> = Object.freeze({
  parseBytesMax: 32 * 1024 * 1024,
  parseTimeoutMs: 5_000,
  partsMax: 1_000,
  textCharsMax: 1024 * 1024,
  attachmentTextCharsMax: 256 * 1024,
})

export interface MimeParser {
  /** Parses a message; never throws, never changes `raw`. Resolves to what could be read, with flags. */
  parse(raw: Uint8Array): Promise<ParsedMessage>
  /**
   * Unwraps an Exchange envelope journal report: the original message byte-exact (a copy)
   * and the envelope. Resolves to null when `raw` is not a journal report, and also when
   * it claims to be one but is malformed (then `parse` flags it `journal-report-malformed`
   * and the report is archived as received). Never throws.
   */
  unwrapJournal(raw: Uint8Array): Promise<JournalUnwrapResult | null>
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

interface Metadata {
  messageId: string | null
  dateMs: number | null
  dateHeaderPresent: boolean
  from: Address[]
  to: Address[]
  cc: Address[]
  bcc: Address[]
  subject: string | null
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

function metadataOf(scanned: readonly ScannedHeader[]): Metadata {
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
function mergedHeaders(scan: HeaderScan, email: Email | null): ScannedHeader[] {
  if (!scan.truncated || email === null) return scan.headers
  const seen = new Set(scan.headers.map((header) => header.key))
  const extra = email.headers
    .filter((header) => !seen.has(header.key))
    .map((header) => ({ name: header.originalKey, key: header.key, value: header.value }))
  return [...scan.headers, ...extra]
}

/** Text of input without headers, when it looks like text (few control bytes); '' for binary. */
function plainTextOf(raw: Uint8Array, charsMax: number): string {
  const sample = raw.subarray(0, textSniffBytes)
  let control = 0
  for (const byte of sample) if ((byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) || byte === 0x7f) control++
  if (sample.byteLength === 0 || control / sample.byteLength > binaryControlShareMax) return ''
  // Four bytes per character at most in UTF-8, so this many bytes always fill charsMax.
  return cutToChars(decodeTextBytes(raw.subarray(0, charsMax * 4)).replace(/\r\n/g, '\n'), charsMax)
}

function bytesOf(content: PostalAttachment['content']): Uint8Array {
  if (content instanceof Uint8Array) return content
  if (content instanceof ArrayBuffer) return new Uint8Array(content)
  return new TextEncoder().encode(content)
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * Creates the MIME parser service. Pure: compiles the HTML converters, opens nothing.
 *
 * @param deps.logger structured logger (parse problems are logged at debug/warn, with sizes and flags, never content)
 * @param deps.clock monotonic time for the parse budget; the system clock by default
 * @param deps.pdf PDF text extractor (bounded worker threads); one with default limits when absent
 * @param options limits, each a positive integer (see MimeParserOptions)
 * @throws AssertionError when an option is not a positive integer (a programmer error)
 */
export function createMimeParser(deps: { logger: Logger; clock?: Clock; pdf?: PdfTextExtractor }, options: MimeParserOptions): MimeParser {
  for (const [name, value] of Object.entries(options)) {
    assert.ok(Number.isSafeInteger(value) && value > 0, `mime option ${name} must be a positive integer (got ${String(value)})`)
  }
  const { logger } = deps
  const clock = deps.clock ?? systemClock
  const pdf = deps.pdf ?? createPdfTextExtractor()
  const htmlConverterOptions = (inputCharsMax: number): HtmlToTextOptions => ({
      wordwrap: false,
      // html-to-text writes to stderr when its own input limit cuts; we cut before it.
      limits: { maxInputLength: inputCharsMax + 1, maxDepth: 256, maxChildNodes: 20_000, ellipsis: ' ' },
      selectors: [
        { selector: 'a', options: { ignoreHref: true } },
        { selector: 'img', format: 'skip' },
        // Table cells on their own lines, so words of neighbouring cells stay apart.
        { selector: 'td', format: 'block' },
        { selector: 'th', format: 'block' },
      ],
    })
  const bodyHtmlCharsMax = Math.min(options.textCharsMax * 4, htmlInputCharsMax)
  const attachmentHtmlCharsMax = Math.min(options.attachmentTextCharsMax * 4, htmlInputCharsMax)
  const bodyHtmlToText = compileHtmlToText(htmlConverterOptions(bodyHtmlCharsMax))
  const attachmentHtmlToText = compileHtmlToText(htmlConverterOptions(attachmentHtmlCharsMax))

  const htmlToText = (html: string, converter: (html: string) => string, inputCharsMax: number): string => {
    try {
      return converter(cutToChars(html, inputCharsMax))
    } catch (error) {
      logger.debug('html to text failed', { error, htmlChars: html.length })
      return ''
    }
  }

  const finish = (metadata: Metadata, flags: Set<MimeFlag>, text: string, attachments: ParsedAttachment[]): ParsedMessage => {
    if (metadata.from.length === 0) flags.add('no-from')
    if (!metadata.dateHeaderPresent) flags.add('no-date')
    else if (metadata.dateMs === null) flags.add('bad-date')
    if (metadata.messageId === null) flags.add('no-message-id')
    // NULs are kept in the archived bytes but not in text that goes to the index and
    // the API, where they end strings early in too many consumers.
    const withoutNul = (value: string): string => (flags.has('nul-bytes') ? value.replace(/\0/g, '') : value)
    return {
      messageId: metadata.messageId,
      dateMs: metadata.dateMs,
      from: metadata.from,
      to: metadata.to,
      cc: metadata.cc,
      bcc: metadata.bcc,
      subject: metadata.subject === null ? null : withoutNul(metadata.subject),
      text: withoutNul(text),
      attachments: flags.has('nul-bytes') ? attachments.map((attachment) => ({ ...attachment, text: attachment.text === null ? null : withoutNul(attachment.text) })) : attachments,
      flags: mimeFlagOrder.filter((flag) => flags.has(flag)),
    }
  }

  const attachmentText = async (attachment: PostalAttachment, bytes: Uint8Array, depth: number, deadlineMs: number): Promise<string | null> => {
    const type = attachment.mimeType.toLowerCase()
    const charsMax = options.attachmentTextCharsMax
    if (type === 'text/html' || type === 'application/xhtml+xml') {
      const html = decodeTextBytes(bytes.subarray(0, attachmentHtmlCharsMax * 4))
      return cutToChars(htmlToText(html, attachmentHtmlToText, attachmentHtmlCharsMax), charsMax)
    }
    if (type.startsWith('text/')) return cutToChars(decodeTextBytes(bytes.subarray(0, charsMax * 4)), charsMax)
    if (type === 'message/rfc822' && depth < attachedMessageTextDepthMax) {
      const inner = await parseAt(bytes, depth + 1, deadlineMs)
      const heading = [
        inner.from.length > 0 ? `From: ${inner.from.map((address) => address.address).join(', ')}` : null,
        inner.subject !== null ? `Subject: ${inner.subject}` : null,
      ].filter((line): line is string => line !== null)
      return cutToChars([...heading, '', inner.text].join('\n'), charsMax)
    }
    return null
  }

  const parseAt = async (raw: Uint8Array, depth: number, deadlineMs: number): Promise<ParsedMessage> => {
    const flags = new Set<MimeFlag>()
    const scan = scanHeaders(raw, headerScanBytesMax)
    const crude = (text = ''): ParsedMessage => finish(metadataOf(scan.headers), flags, text, [])
    if (scan.headers.length === 0) flags.add('no-headers')
    else {
      // Without a header section these would describe lines that are not headers.
      if (scan.eightBit) flags.add('eight-bit-headers')
      if (scan.longLine) flags.add('long-header-line')
    }
    if (scan.bareLineFeeds) flags.add('bare-line-feeds')

    if (depth === 0 && isJournalReport(scan.headers)) {
      const cut = cutJournalReport(raw, scan, { recipientsMax: journalRecipientsMax })
      flags.add(cut.kind === 'journal' ? 'journal-report' : 'journal-report-malformed')
      if (cut.kind === 'malformed') logger.warn('journal report malformed', { reason: cut.reason, sizeBytes: raw.byteLength })
    }

    if (raw.byteLength > options.parseBytesMax) {
      // memchr-fast even for large input; the line-by-line scan is not run on it.
      if (raw.indexOf(0) !== -1) flags.add('nul-bytes')
      flags.add('oversize-for-parse')
      return crude()
    }
    const structure = scanStructure(raw)
    if (structure.nulBytes) flags.add('nul-bytes')
    if (structure.bareLineFeeds) flags.add('bare-line-feeds')
    if (structure.unterminatedMultipart) flags.add('unterminated-multipart')
    if (scan.headers.length === 0) return crude(plainTextOf(raw, options.textCharsMax))
    if (structure.partCount > options.partsMax) flags.add('too-many-parts')
    if (structure.nestingDepth > nestingDepthMax) flags.add('deep-nesting')
    if (flags.has('too-many-parts') || flags.has('deep-nesting')) {
      logger.debug('deep parse skipped', { partCount: structure.partCount, nestingDepth: structure.nestingDepth, sizeBytes: raw.byteLength })
      return crude()
    }

    let email: Email
    try {
      const result = await parseWithBudget(raw, {
        postal: {
          maxNestingDepth: nestingDepthMax + 1,
          maxHeadersSize: postalHeadersBytesMax,
          maxRfc822NestingDepth: inlineMessageDepthMax,
        },
        monotonicMs: () => clock.monotonicMs(),
        deadlineMs,
        budgetMs: options.parseTimeoutMs,
      })
      email = result.email
      if (result.badBase64) flags.add('bad-transfer-encoding')
    } catch (error) {
      if (error instanceof ParseBudgetExceeded) {
        flags.add('parse-timeout')
        logger.warn('parse over its time budget', { budgetMs: options.parseTimeoutMs, sizeBytes: raw.byteLength })
      } else {
        flags.add('parse-failed')
        if (error instanceof Error && /nesting depth/i.test(error.message)) flags.add('deep-nesting')
        logger.debug('postal-mime rejected a message', { error, sizeBytes: raw.byteLength })
      }
      return crude()
    }

    const overBudget = (): boolean => {
      if (clock.monotonicMs() <= deadlineMs) return false
      flags.add('parse-timeout')
      return true
    }
    let text = email.text ?? ''
    if (text.trim().length === 0 && email.html && !overBudget()) text = htmlToText(email.html, bodyHtmlToText, bodyHtmlCharsMax)
    text = cutToChars(text, options.textCharsMax)

    const attachments: ParsedAttachment[] = []
    const pdfs: Array<{ at: number; bytes: Uint8Array }> = []
    for (const attachment of email.attachments) {
      const bytes = bytesOf(attachment.content)
      let attachmentTextValue: string | null = null
      // Only the message's own PDFs: an attached message's text is its body (see attachmentText).
      if (depth === 0 && looksLikePdf(attachment.mimeType, bytes)) pdfs.push({ at: attachments.length, bytes })
      else if (!overBudget()) {
        try {
          attachmentTextValue = await attachmentText(attachment, bytes, depth, deadlineMs)
        } catch (error) {
          // One attachment's text is not worth the rest of the message.
          logger.error('attachment text extraction failed', { error, contentType: attachment.mimeType, sizeBytes: bytes.byteLength })
        }
      }
      attachments.push({
        filename: attachment.filename,
        contentType: attachment.mimeType,
        sizeBytes: bytes.byteLength,
        sha256: sha256Hex(bytes),
        text: attachmentTextValue,
      })
    }
    await addPdfTexts(attachments, pdfs)
    return finish(metadataOf(mergedHeaders(scan, email)), flags, text, attachments)
  }

  /** Fills in the text of the message's PDF attachments, one at a time, within the per-message budget. */
  const addPdfTexts = async (attachments: ParsedAttachment[], pdfs: Array<{ at: number; bytes: Uint8Array }>): Promise<void> => {
    const budgetEndMs = clock.monotonicMs() + pdfTextBudgetMsPerMessage
    for (const { at, bytes } of pdfs) {
      const attachment = attachments[at]!
      const remainingMs = Math.floor(budgetEndMs - clock.monotonicMs())
      if (remainingMs <= 0) {
        logger.warn('pdf text skipped: the message used its pdf time budget', { budgetMs: pdfTextBudgetMsPerMessage, sizeBytes: bytes.byteLength })
        continue
      }
      const result = await pdf.extract(bytes, remainingMs)
      if (result.outcome === 'ok') attachments[at] = { ...attachment, text: cutToChars(result.text ?? '', options.attachmentTextCharsMax) }
      else logger.warn('pdf text not extracted', { outcome: result.outcome, detail: result.detail, sizeBytes: bytes.byteLength })
    }
  }

  return {
    async parse(raw) {
      try {
        return await parseAt(raw, 0, clock.monotonicMs() + options.parseTimeoutMs)
      } catch (error) {
        // A bug of ours or of a dependency: the bytes are still archived, with what the
        // crude scan can read.
        logger.error('mime parse failed unexpectedly', { error, sizeBytes: raw.byteLength })
        try {
          const scan = scanHeaders(raw, headerScanBytesMax)
          return finish(metadataOf(scan.headers), new Set<MimeFlag>(['parse-failed']), '', [])
        } catch {
          return finish(metadataOf([]), new Set<MimeFlag>(['parse-failed', 'no-headers']), '', [])
        }
      }
    },

    async unwrapJournal(raw) {
      try {
        const scan = scanHeaders(raw, headerScanBytesMax)
        const cut = cutJournalReport(raw, scan, { recipientsMax: journalRecipientsMax })
        if (cut.kind !== 'journal') return null
        if (cut.envelope.recipientsTruncated) {
          logger.warn('journal envelope recipients truncated', { recipientsMax: journalRecipientsMax, sizeBytes: raw.byteLength })
        }
        return { original: cut.original, envelope: cut.envelope }
      } catch (error) {
        logger.error('journal unwrap failed unexpectedly', { error, sizeBytes: raw.byteLength })
        return null
      }
    },
  }
}
