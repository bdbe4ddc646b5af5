import { createHash } from 'node:crypto'
import type { Attachment as PostalAttachment } from 'postal-mime'
import { cutToChars } from '../common/text.js'
import { decodeTextBytes } from './header-scan.js'
import { overBudget, type ParseContext } from './parse-context.js'
import { attachedMessageTextDepthMax, pdfTextBudgetMsPerMessage } from './parser-options.js'
import { looksLikePdf } from './pdf-text.js'
import type { MimeFlag, ParsedAttachment, ParsedMessage } from './types.js'

/**
 * The attachments of a parsed message: each one listed with its type, size and SHA-256,
 * and its text where we can read it (text/*, HTML, attached messages, PDF).
 */

/** Parses an attached message for its text (parse-message.ts; passed in to keep the modules apart). */
export type NestedParse = (context: ParseContext, raw: Uint8Array, depth: number, deadlineMs: number) => Promise<ParsedMessage>

/** A PDF attachment waiting for its text: its index in the attachment list and its bytes. */
interface PendingPdf {
  at: number
  bytes: Uint8Array
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
 * Text of one non-PDF attachment, capped at `attachmentTextCharsMax`: text/* (HTML
 * converted), or an attached message's `From:`/`Subject:` and body text, up to
 * `attachedMessageTextDepthMax` levels; null for other types.
 */
async function attachmentText(context: ParseContext, attachment: PostalAttachment, bytes: Uint8Array, depth: number, deadlineMs: number, parseNested: NestedParse): Promise<string | null> {
  const type = attachment.mimeType.toLowerCase()
  const charsMax = context.options.attachmentTextCharsMax
  if (type === 'text/html' || type === 'application/xhtml+xml') {
    const html = decodeTextBytes(bytes.subarray(0, context.html.attachmentHtmlCharsMax * 4))
    return cutToChars(context.html.attachment(html), charsMax)
  }
  if (type.startsWith('text/')) return cutToChars(decodeTextBytes(bytes.subarray(0, charsMax * 4)), charsMax)
  if (type === 'message/rfc822' && depth < attachedMessageTextDepthMax) {
    const inner = await parseNested(context, bytes, depth + 1, deadlineMs)
    const heading = [inner.from.length > 0 ? `From: ${inner.from.map((address) => address.address).join(', ')}` : null, inner.subject !== null ? `Subject: ${inner.subject}` : null].filter(
      (line): line is string => line !== null,
    )
    return cutToChars([...heading, '', inner.text].join('\n'), charsMax)
  }
  return null
}

/**
 * Lists postal-mime's attachments of a message at `depth` (0: the message itself), with
 * text while the parse budget lasts (`parse-timeout` in `flags` once it ran out), then the
 * text of the message's own PDFs within `pdfTextBudgetMsPerMessage`. An attachment whose
 * text extraction throws is listed without text and logged.
 */
export async function readAttachments(
  context: ParseContext,
  found: readonly PostalAttachment[],
  depth: number,
  deadlineMs: number,
  flags: Set<MimeFlag>,
  parseNested: NestedParse,
): Promise<ParsedAttachment[]> {
  const attachments: ParsedAttachment[] = []
  const pdfs: PendingPdf[] = []
  for (const attachment of found) {
    const bytes = bytesOf(attachment.content)
    let text: string | null = null
    // Only the message's own PDFs: an attached message's text is its body (see attachmentText).
    if (depth === 0 && looksLikePdf(attachment.mimeType, bytes)) pdfs.push({ at: attachments.length, bytes })
    else if (!overBudget(context, deadlineMs, flags)) {
      try {
        text = await attachmentText(context, attachment, bytes, depth, deadlineMs, parseNested)
      } catch (error) {
        // One attachment's text is not worth the rest of the message.
        context.logger.error('attachment text extraction failed', { error, contentType: attachment.mimeType, sizeBytes: bytes.byteLength })
      }
    }
    attachments.push({ filename: attachment.filename, contentType: attachment.mimeType, sizeBytes: bytes.byteLength, sha256: sha256Hex(bytes), text })
  }
  await addPdfTexts(context, attachments, pdfs)
  return attachments
}

/** Fills in the text of the message's PDF attachments, one at a time, within the per-message budget. */
async function addPdfTexts(context: ParseContext, attachments: ParsedAttachment[], pdfs: readonly PendingPdf[]): Promise<void> {
  const { clock, logger } = context
  const budgetEndMs = clock.monotonicMs() + pdfTextBudgetMsPerMessage
  for (const { at, bytes } of pdfs) {
    const attachment = attachments[at]!
    const remainingMs = Math.floor(budgetEndMs - clock.monotonicMs())
    if (remainingMs <= 0) {
      logger.warn('pdf text skipped: the message used its pdf time budget', { budgetMs: pdfTextBudgetMsPerMessage, sizeBytes: bytes.byteLength })
      continue
    }
    const result = await context.pdf.extract(bytes, remainingMs)
    if (result.outcome === 'ok') attachments[at] = { ...attachment, text: cutToChars(result.text ?? '', context.options.attachmentTextCharsMax) }
    else logger.warn('pdf text not extracted', { outcome: result.outcome, detail: result.detail, sizeBytes: bytes.byteLength })
  }
}
