/**
 * What firmware/mime produces. Parsing never throws and never changes the raw bytes: a
 * message that cannot be parsed still yields a ParsedMessage with what could be read and
 * `flags` saying what was wrong (STYLE 10).
 */

export interface Address {
  name: string
  /** Lower-cased address, or the raw text when it is not an address. */
  address: string
}

export interface ParsedAttachment {
  filename: string | null
  contentType: string
  sizeBytes: number
  /** SHA-256 hex of the decoded content (for attachment dedup and audit). */
  sha256: string
  /** Extracted text (text/*, HTML; more formats later), bounded; null when none. */
  text: string | null
}

/**
 * Stable markers of malformed or unusual input, in the order `ParsedMessage.flags` lists
 * them. The parser (firmware/mime/parser.ts) documents what triggers each one.
 */
export const mimeFlagOrder = [
  'parse-failed',
  'parse-timeout',
  'no-headers',
  'no-from',
  'no-date',
  'bad-date',
  'no-message-id',
  'nul-bytes',
  'eight-bit-headers',
  'bare-line-feeds',
  'long-header-line',
  'deep-nesting',
  'too-many-parts',
  'unterminated-multipart',
  'bad-transfer-encoding',
  'oversize-for-parse',
  'journal-report',
  'journal-report-malformed',
] as const

export type MimeFlag = (typeof mimeFlagOrder)[number]

export interface ParsedMessage {
  messageId: string | null
  /** Date header in ms since epoch; null when missing or unparseable. */
  dateMs: number | null
  from: Address[]
  to: Address[]
  cc: Address[]
  bcc: Address[]
  subject: string | null
  /** Plain-text body (HTML converted to text), bounded by the parse options. */
  text: string
  attachments: ParsedAttachment[]
  flags: MimeFlag[]
}

/** The envelope of an Exchange envelope journal report (X-MS-Journal-Report). */
export interface JournalEnvelope {
  sender: string | null
  /** Every recipient named in the envelope: To, Cc, Bcc and expanded distribution lists, lower-cased, deduplicated. */
  recipients: string[]
  /** The subset of recipients that were BCC. */
  bcc: string[]
  messageId: string | null
  /** `On-Behalf-Of:` of the envelope (the mailbox the sender acted for); null when absent. */
  onBehalfOf: string | null
  /** True when the envelope named more recipients than the parser keeps (the rest are dropped, and logged). */
  recipientsTruncated: boolean
  /** The envelope part's text as found (transfer encoding and charset decoded), for the delivery record. */
  envelopeText: string
}

export interface JournalUnwrapResult {
  /** The original message, byte-exact as embedded in the report. */
  original: Uint8Array
  envelope: JournalEnvelope
}
