/**
 * The envelope-free part of indexing a message, run on a parse worker before the write
 * transaction (boot/services.ts loads this module there by path, so it imports no
 * database code); document-analysis.ts adds the envelope inside the transaction.
 */

import type { ParsedMessage } from '../mime/types.js'
import { createTermTable } from './term-table.js'
import { fieldBits, hasAttachmentToken } from './field-bits.js'
import type { DocumentLimits } from './index-input.js'
import { deflateText } from './display-record.js'
import { joinStreams, streamOf } from './forward-record.js'
import { addAddressTerms, addressLabel, addressTaker, exactTokensOf } from './taken-addresses.js'
import { tokenBudget } from './token-budget.js'
import { createPhraseStreamWriter } from './phrase-stream.js'

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
  subjectStream: string
  /** Attachment name streams. */
  attachmentNamesStream: string
  /** Dedup keys of the header senders (From): an envelope sender named there is not added again. */
  fromKeys: string[]
  /** Header addresses taken (senders and recipients, each de-duplicated). */
  addresses: number
  /** Sender and recipient streams and exact tokens of the header addresses (ForwardRecord from, to, fromExact, toExact). */
  fromStream: string
  toStream: string
  fromExact: string[]
  toExact: string[]
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
  /** ForwardRecord.hasAttachment. */
  hasAttachment: 0 | 1
  /** The body's phrase stream (phrase-stream.ts), as `index-phrases` stores it. */
  phraseStream: Uint8Array
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
const preparedKind = 'mailkeep.index.prepared.6'

/** True when `value` is a PreparedDocument (of this firmware's shape). */
export function isPreparedDocument(value: unknown): value is PreparedDocument {
  if (typeof value !== 'object' || value === null) return false
  const candidate = value as Partial<PreparedDocument>
  return (
    candidate.kind === preparedKind &&
    typeof candidate.subjectStream === 'string' &&
    typeof candidate.attachmentNamesStream === 'string' &&
    typeof candidate.fromStream === 'string' &&
    typeof candidate.toStream === 'string' &&
    Array.isArray(candidate.fromExact) &&
    Array.isArray(candidate.toExact) &&
    Array.isArray(candidate.fromKeys) &&
    typeof candidate.addresses === 'number' &&
    Array.isArray(candidate.toNamed) &&
    typeof candidate.tokens === 'number' &&
    typeof candidate.terms === 'string' &&
    candidate.masks instanceof Uint8Array &&
    candidate.hashes instanceof Int32Array &&
    candidate.textDeflated instanceof Uint8Array &&
    candidate.phraseStream instanceof Uint8Array &&
    Array.isArray(candidate.segments) &&
    typeof candidate.subject === 'string'
  )
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
  const hasAttachment = parsed.attachments.length > 0 ? 1 : 0
  // Subject, body, file names, marker: the order terms were always packed in.
  const terms = createTermTable()
  terms.addAll(subjectTokens, fieldBits.subject)
  const stream = createPhraseStreamWriter()
  const taken = budget.takeBody([parsed.text, ...parsed.attachments.map((attachment) => attachment.text ?? '')], terms, stream)
  for (const segment of nameSegments) terms.addAll(segment, fieldBits.attachment)
  if (hasAttachment === 1) terms.add(hasAttachmentToken, fieldBits.marker)
  addAddressTerms(terms, from, to)
  const packedTerms = terms.pack()
  return {
    kind: preparedKind,
    subjectStream: subject,
    attachmentNamesStream: names,
    fromKeys: from.map((address) => address.key),
    addresses: from.length + to.length,
    fromStream: joinStreams(from.map((address) => address.stream)),
    toStream: joinStreams(to.map((address) => address.stream)),
    fromExact: exactTokensOf(from),
    toExact: exactTokensOf(to),
    toNamed: headerRecipients.map((address) => address.address.toLowerCase()),
    tokens: budget.used(),
    truncated: truncated || budget.truncated(),
    dateMs: parsed.dateMs,
    sender: parsed.from[0] ? addressLabel(parsed.from[0]) : null,
    subject: parsed.subject ?? '',
    textDeflated: deflateText(taken.text),
    segments: taken.counts,
    hasAttachment,
    phraseStream: stream.finish(),
    terms: packedTerms.tokens,
    masks: packedTerms.masks,
    hashes: packedTerms.hashes,
  }
}
