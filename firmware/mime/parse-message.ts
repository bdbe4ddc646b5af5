import type { Email } from 'postal-mime'
import { cutToChars } from '../common/text.js'
import { readAttachments } from './attachments.js'
import { decodeTextBytes, scanHeaders, type HeaderScan } from './header-scan.js'
import { cutJournalReport, isJournalReport } from './journal.js'
import { mergedHeaders, metadataOf, parsedMessageOf } from './metadata.js'
import { overBudget, type ParseContext } from './parse-context.js'
import { headerScanBytesMax, inlineMessageDepthMax, journalRecipientsMax, nestingDepthMax, postalHeadersBytesMax } from './parser-options.js'
import { ParseBudgetExceeded, parseWithBudget } from './postal-adapter.js'
import { scanStructure } from './structure-scan.js'
import type { Logger } from '../common/logger.js'
import type { MimeFlag, ParsedMessage } from './types.js'

/**
 * One parse, step by step: the crude header scan and its flags, the journal-report check,
 * the pre-checks that decide whether postal-mime runs, postal-mime within the time budget,
 * the body text, and the attachments. parser.ts documents the flags and the budget.
 */

/** Bytes sampled to decide whether a message without headers is text worth indexing. */
const textSniffBytes = 4_096
/** Share of control bytes in that sample above which the input counts as binary. */
const binaryControlShareMax = 0.05

/** Text of input without headers, when it looks like text (few control bytes); '' for binary. */
function plainTextOf(raw: Uint8Array, charsMax: number): string {
  const sample = raw.subarray(0, textSniffBytes)
  let control = 0
  for (const byte of sample) if ((byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) || byte === 0x7f) control++
  if (sample.byteLength === 0 || control / sample.byteLength > binaryControlShareMax) return ''
  // Four bytes per character at most in UTF-8, so this many bytes always fill charsMax.
  return cutToChars(decodeTextBytes(raw.subarray(0, charsMax * 4)).replace(/\r\n/g, '\n'), charsMax)
}

/** The flags the header scan alone decides. */
function addHeaderFlags(scan: HeaderScan, flags: Set<MimeFlag>): void {
  if (scan.headers.length === 0) flags.add('no-headers')
  else {
    // Without a header section these would describe lines that are not headers.
    if (scan.eightBit) flags.add('eight-bit-headers')
    if (scan.longLine) flags.add('long-header-line')
  }
  if (scan.bareLineFeeds) flags.add('bare-line-feeds')
}

/** Flags an Exchange journal report `journal-report`, or `journal-report-malformed` (logged) when it cannot be unwrapped. */
function addJournalFlag(logger: Logger, raw: Uint8Array, scan: HeaderScan, flags: Set<MimeFlag>): void {
  if (!isJournalReport(scan.headers)) return
  const cut = cutJournalReport(raw, scan, { recipientsMax: journalRecipientsMax })
  flags.add(cut.kind === 'journal' ? 'journal-report' : 'journal-report-malformed')
  if (cut.kind === 'malformed') logger.warn('journal report malformed', { reason: cut.reason, sizeBytes: raw.byteLength })
}

/**
 * The checks before postal-mime: size, then the crude structure scan (NULs, bare LFs,
 * unterminated multiparts, part count, nesting). Returns the text of a metadata-only
 * result when postal-mime is not to run ('' or, without headers, the input as plain
 * text), null when it is.
 */
function preCheck(context: ParseContext, raw: Uint8Array, scan: HeaderScan, flags: Set<MimeFlag>): string | null {
  const { options } = context
  if (raw.byteLength > options.parseBytesMax) {
    // memchr-fast even for large input; the line-by-line scan is not run on it.
    if (raw.indexOf(0) !== -1) flags.add('nul-bytes')
    flags.add('oversize-for-parse')
    return ''
  }
  const structure = scanStructure(raw)
  if (structure.nulBytes) flags.add('nul-bytes')
  if (structure.bareLineFeeds) flags.add('bare-line-feeds')
  if (structure.unterminatedMultipart) flags.add('unterminated-multipart')
  if (scan.headers.length === 0) return plainTextOf(raw, options.textCharsMax)
  if (structure.partCount > options.partsMax) flags.add('too-many-parts')
  if (structure.nestingDepth > nestingDepthMax) flags.add('deep-nesting')
  if (flags.has('too-many-parts') || flags.has('deep-nesting')) {
    context.logger.debug('deep parse skipped', { partCount: structure.partCount, nestingDepth: structure.nestingDepth, sizeBytes: raw.byteLength })
    return ''
  }
  return null
}

/** postal-mime within the time budget; null (with `parse-timeout` or `parse-failed` flagged) when it did not finish. */
async function runPostal(context: ParseContext, raw: Uint8Array, deadlineMs: number, flags: Set<MimeFlag>): Promise<Email | null> {
  const { clock, logger, options } = context
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
    if (result.badBase64) flags.add('bad-transfer-encoding')
    return result.email
  } catch (error) {
    if (error instanceof ParseBudgetExceeded) {
      flags.add('parse-timeout')
      logger.warn('parse over its time budget', { budgetMs: options.parseTimeoutMs, sizeBytes: raw.byteLength })
    } else {
      flags.add('parse-failed')
      if (error instanceof Error && /nesting depth/i.test(error.message)) flags.add('deep-nesting')
      logger.debug('postal-mime rejected a message', { error, sizeBytes: raw.byteLength })
    }
    return null
  }
}

/** The plain body, else the HTML body as text (while the budget lasts), capped at `textCharsMax`. */
function bodyTextOf(context: ParseContext, email: Email, deadlineMs: number, flags: Set<MimeFlag>): string {
  let text = email.text ?? ''
  if (text.trim().length === 0 && email.html && !overBudget(context, deadlineMs, flags)) text = context.html.body(email.html)
  return cutToChars(text, context.options.textCharsMax)
}

/**
 * Parses one message: the message itself at depth 0, an attached message at depth 1 and
 * deeper (then the journal check and PDF text are left out). Never changes `raw`; may
 * throw only on a bug (parser.ts turns that into `parse-failed`).
 *
 * @param deadlineMs the monotonic time at which the parse budget ends
 */
export async function parseMessageAt(context: ParseContext, raw: Uint8Array, depth: number, deadlineMs: number): Promise<ParsedMessage> {
  const flags = new Set<MimeFlag>()
  const scan = scanHeaders(raw, headerScanBytesMax)
  addHeaderFlags(scan, flags)
  if (depth === 0) addJournalFlag(context.logger, raw, scan, flags)
  const metadataOnlyText = preCheck(context, raw, scan, flags)
  if (metadataOnlyText !== null) return parsedMessageOf(metadataOf(scan.headers), flags, metadataOnlyText, [])
  const email = await runPostal(context, raw, deadlineMs, flags)
  if (email === null) return parsedMessageOf(metadataOf(scan.headers), flags, '', [])
  const text = bodyTextOf(context, email, deadlineMs, flags)
  const attachments = await readAttachments(context, email.attachments, depth, deadlineMs, flags, parseMessageAt)
  return parsedMessageOf(metadataOf(mergedHeaders(scan, email)), flags, text, attachments)
}
