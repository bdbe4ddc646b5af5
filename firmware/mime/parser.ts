import assert from 'node:assert'
import type { Logger } from '../common/logger.js'
import { systemClock, type Clock } from '../common/clock.js'
import { scanHeaders } from './header-scan.js'
import { createHtmlText } from './html-text.js'
import { cutJournalReport } from './journal.js'
import { metadataOf, parsedMessageOf } from './metadata.js'
import type { ParseContext } from './parse-context.js'
import { parseMessageAt } from './parse-message.js'
import { headerScanBytesMax, journalRecipientsMax, type MimeParserOptions } from './parser-options.js'
import { createPdfTextExtractor, type PdfTextExtractor } from './pdf-text.js'
import type { JournalUnwrapResult, MimeFlag, ParsedMessage } from './types.js'

export {
  addressesPerFieldMax,
  attachedMessageTextDepthMax,
  defaultMimeParserOptions,
  headerScanBytesMax,
  htmlInputCharsMax,
  inlineMessageDepthMax,
  journalRecipientsMax,
  messageIdCharsMax,
  nestingDepthMax,
  pdfTextBudgetMsPerMessage,
  postalHeadersBytesMax,
  subjectCharsMax,
  type MimeParserOptions,
} from './parser-options.js'

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
 *
 * The steps live beside this file: parser-options.ts (limits), parse-message.ts (one
 * parse, step by step), metadata.ts (header metadata and the result), attachments.ts
 * (attachment list, text and PDF text), html-text.ts (HTML converters).
 */

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

/**
 * Metadata-only result after an unexpected internal error: a bug of ours or of a
 * dependency. The bytes are still archived, with what the crude scan can read.
 */
function failedParse(raw: Uint8Array): ParsedMessage {
  try {
    const scan = scanHeaders(raw, headerScanBytesMax)
    return parsedMessageOf(metadataOf(scan.headers), new Set<MimeFlag>(['parse-failed']), '', [])
  } catch {
    return parsedMessageOf(metadataOf([]), new Set<MimeFlag>(['parse-failed', 'no-headers']), '', [])
  }
}

/** The journal report's original and envelope; null when `raw` is none or a malformed one. Never throws. */
function unwrapJournalReport(logger: Logger, raw: Uint8Array): JournalUnwrapResult | null {
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
  const context: ParseContext = {
    logger,
    clock: deps.clock ?? systemClock,
    pdf: deps.pdf ?? createPdfTextExtractor(),
    options,
    html: createHtmlText(logger, options),
  }
  return {
    async parse(raw) {
      try {
        return await parseMessageAt(context, raw, 0, context.clock.monotonicMs() + options.parseTimeoutMs)
      } catch (error) {
        logger.error('mime parse failed unexpectedly', { error, sizeBytes: raw.byteLength })
        return failedParse(raw)
      }
    },

    async unwrapJournal(raw) {
      return unwrapJournalReport(logger, raw)
    },
  }
}
