/** What the index is given to index one message, and the limits of what it keeps of it. */

import type { ParsedMessage } from '../mime/types.js'
import type { MessageMeta } from '../archive/types.js'

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
