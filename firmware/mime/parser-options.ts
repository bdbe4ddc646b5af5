/**
 * The limits of firmware/mime's parser: the fixed ones, and the options the composition
 * root sets (`MimeParserOptions`). parser.ts re-exports all of them.
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

export interface MimeParserOptions {
  /** Largest input parsed in depth, in bytes; larger input gets only the crude header scan. */
  parseBytesMax: number
  /** Time budget of one parse, in ms (see parser.ts for what it bounds). */
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
