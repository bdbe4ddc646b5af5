import type { ParsedMessage } from '../mime/types.js'

/** Where one delivery of a message came from. A message may have many deliveries. */
export interface Delivery {
  source: 'smtp' | 'journal' | 'import' | 'mirror'
  /** Source instance: journal source name, import path, peer serial, SMTP listener. */
  sourceName: string | null
  receivedAtMs: number
  /** SMTP MAIL FROM or journal envelope sender; null when none. */
  envelopeFrom: string | null
  /** SMTP RCPT TO or journal envelope recipients (incl. BCC and expanded lists), lower-cased. */
  envelopeTo: string[]
  /** Envelope BCC recipients where known (journal reports). */
  envelopeBcc: string[]
  /** Remote address of the sender (SMTP client, journal server, peer). */
  remoteAddress: string | null
  /** Text of the journal report envelope when the message arrived wrapped in one. */
  journalEnvelopeText: string | null
  /**
   * Identity of this delivery at its source, when the source has one (journal: server,
   * mailbox, UIDVALIDITY and UID, or the POP3 UIDL; import: file and offset). The store
   * records a delivery with a key only once, so a source that re-fetches after a crash
   * does not record the same delivery twice.
   */
  deliveryKey?: string | null
}

export interface IngestResult {
  /** The archive id: hex SHA-256 of the raw bytes (content address). */
  id: string
  /** True when the bytes were already archived; this delivery was recorded anyway. */
  duplicate: boolean
  /** Change-log sequence number of this ingest. */
  sequence: number
  /** What the parser flagged about the message (set by the ingest pipeline; empty when clean). */
  flags?: readonly string[]
}

export interface MessageMeta {
  id: string
  sizeBytes: number
  messageId: string | null
  dateMs: number | null
  from: string[]
  to: string[]
  cc: string[]
  bcc: string[]
  subject: string | null
  attachments: { filename: string | null; contentType: string; sizeBytes: number; sha256: string }[]
  flags: string[]
  /** Every delivery, oldest first. */
  deliveries: Delivery[]
  firstArchivedAtMs: number
  /** Peer serial when this copy came from a mirror peer (not forwarded again); null for local. */
  origin: string | null
}

export interface ChangeEntry {
  sequence: number
  kind: 'ingest' | 'delivery' | 'purge'
  id: string
  atMs: number
  /** Local when the message came from a local source; a peer serial when it came from a mirror. */
  origin: string | null
}

export interface StoreStats {
  messages: number
  deliveries: number
  /** Sum of raw message sizes, in bytes. */
  rawBytes: number
  /** Bytes of the stored (compressed) blobs. */
  storedBytes: number
  /** Size of the LMDB files on disk, in bytes. */
  fileBytes: number
  lastSequence: number
  flaggedMessages: number
}

/** Input to one ingest: bytes, what the parser found, and where it came from. */
export interface IngestRequest {
  raw: Uint8Array
  parsed: ParsedMessage
  delivery: Delivery
  /** Peer serial when received from a mirror peer. */
  origin?: string | null
}
