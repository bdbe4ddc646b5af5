import type { BlobCodec } from './codec.js'
import type { RootDatabase } from 'lmdb'
import type { ParsedMessage } from '../mime/types.js'
import type { DigestView } from './digest-nodes.js'

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
  /**
   * True when a peer's copy was not stored because retention purged this message here after
   * the copy's delivery was received (see archive/purged); `duplicate` is true too.
   */
  purged?: boolean
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
  /**
   * The indexer's `prepare(parsed)` result, computed before the write transaction (possibly
   * on a worker thread); when absent the indexer prepares inside the transaction.
   */
  indexPrepared?: unknown
  /**
   * `raw` already compressed, e.g. on a worker thread (firmware/sources/parse-job.ts). The
   * store uses it only when `rawSha256` equals the SHA-256 it computes of `raw` itself (the
   * content address), and compresses `raw` on its own otherwise.
   */
  encoded?: EncodedRaw
}

/** Compressed bytes of a raw message, bound to the raw bytes by their SHA-256. */
export interface EncodedRaw {
  codec: BlobCodec
  bytes: Uint8Array
  /** Hex SHA-256 of the raw bytes that were compressed. */
  rawSha256: string
}

/** Health of the store for boot's health evaluation: `ok` false while not open, read-only, or after a disk failure. */
export interface ArchiveHealth {
  ok: boolean
  detail: string
}

/**
 * Why the store refuses writes while its data volume is full (firmware/archive/store-read-only.ts
 * has the design). Reads, search, export and copies to peers go on; writes get STORE_FULL.
 */
export interface ReadOnlyStatus {
  /**
   * `volume-full`: a reading of the volume's free space was below `freeBytesMin` (at start or
   * before an ingest); `commit-failed`: a commit failed while the volume was full (whatever
   * errno LMDB gave: ENOSPC, or EIO from ext4's delayed allocation).
   */
  cause: 'volume-full' | 'commit-failed'
  /** One sentence for status and logs. */
  reason: string
  /** Free bytes of the volume at the last reading; null when it could not be read. */
  freeBytes: number | null
  /** Free bytes the volume needs before writes resume (`freeBytesMin` + `readOnlyMarginBytes`). */
  resumeAtFreeBytes: number
  /** When the store became read-only, ms since the epoch. */
  sinceMs: number
  /** Whether the environment is closed and opened again before writes resume (after a failed commit). */
  reopen: boolean
}

/** What the store did since start(); kept in memory, not persisted. */
export interface WriteActivity {
  /** Ingests acknowledged (resolved) since start. */
  ingests: number
  /** LMDB write transactions committed since start; each is one sync to disk. Fewer than `ingests` when group commit works. */
  commits: number
  /** Write transactions that failed (I/O error, disk full). */
  failedCommits: number
}

/** Result of verify(): which stored messages failed their check. */
export interface VerifyReport {
  /** Messages checked: record decoded, blob read, restored and hashed (corrupt ones included). */
  checked: number
  /** Ids whose blob is missing, undecodable or does not hash to its id (at most `corruptIdsMax` listed). */
  corruptIds: string[]
  corrupt: number
  /** Whether the persistent counters agree with the messages checked; null when the check did not cover every message. */
  countersConsistent: boolean | null
}

/** Result of the purge primitive. */
export interface PurgeResult {
  id: string
  /** Change-log sequence of the `purge` entry. */
  sequence: number
}

/**
 * The hook through which the search index keeps its postings in step with the archive, in
 * the same LMDB environment and the same transaction as each message. (firmware/index's
 * `createArchiveIndexer` satisfies it structurally.)
 *
 * `messageStored` and `messageRemoved` are called synchronously from inside the write
 * transaction of one message (an lmdb-js asynchronous child transaction, so the commit and
 * its sync run off the event loop). They may read and write with the synchronous API
 * (`get`, `putSync`, `removeSync`); reads see the transaction's own writes. They must not
 * await and must not start transactions of their own with the asynchronous API. They run in
 * the message's transaction itself (no nested transaction: its begin and commit cost more
 * than the indexing); if a call throws, the store rolls that transaction back and writes
 * the message again without the indexer, flagged `index-failed`, and logs the error; mail
 * is never refused (nor a purge stopped) because indexing failed, and `listIds()` lets the
 * index catch up later.
 */
export interface ArchiveIndexer {
  /** Named databases the indexer adds to the environment (they count against LMDB's `maxDbs`). */
  readonly databasesNeeded: number
  /** Opens the indexer's databases on the archive's root, once per start(). Names must not start with `archive/`. */
  open(root: RootDatabase): void
  /**
   * Work that needs no database (tokenizing, field analysis) done ahead of the write
   * transaction: pure, and its result structured-cloneable so it may run on a worker thread.
   * The store passes the result (IngestRequest.indexPrepared) back to `messageStored`.
   */
  prepare?(parsed: ParsedMessage): unknown
  /**
   * A message was stored, or a further delivery of a stored one recorded: `meta` holds every
   * delivery so far; `prepared` is `prepare(parsed)`'s result when the caller computed it.
   */
  messageStored(meta: MessageMeta, parsed: ParsedMessage, prepared?: unknown): void
  /** A message is being purged (retention): remove what the index holds for it. */
  messageRemoved(id: string): void
}

/**
 * A named user of the archive's LMDB environment with databases of its own (retention and
 * the audit log), so that its writes can share the archive's transactions. The store counts
 * its databases against LMDB's `maxDbs` and opens them at every start(), after the
 * indexer's, in the order given. Unlike the indexer it is not called per message.
 */
export interface ArchiveDatabaseHook {
  /** Who owns the databases, for errors and logs (e.g. `retention`); unique among the hooks. */
  readonly name: string
  /** Named databases it adds to the environment. */
  readonly databasesNeeded: number
  /** Opens its databases on the archive's root, once per start(). Names must not start with `archive/`. */
  open(root: RootDatabase): void
}

/**
 * The id digest of the archive at one point in time (store.digestSnapshot()): nodes, children
 * and the ids of any bucket all answer from one LMDB read transaction, so they agree with each
 * other and with `lastSequence` however many writes commit meanwhile. It holds that read
 * transaction (LMDB cannot reuse pages freed after it began) until close() or its maximum age
 * (ArchiveStoreOptions.digestSnapshotAgeMsMax), whichever comes first; store.stop() closes it
 * too. After that every call throws ArchiveError DIGEST_SNAPSHOT_CLOSED.
 */
export interface DigestSnapshot extends DigestView {
  /** The store's id (ArchiveStore.storeId()). */
  readonly storeId: string
  /** The change-log sequence the snapshot reflects: every change up to it, none after. */
  readonly lastSequence: number
  /** Releases the read transaction. Idempotent. */
  close(): void
}

/**
 * The archive store (firmware/archive/store.ts, a façade over the store-*.ts units, where
 * each method's doc has its errors). Writes are durable before they resolve; reads see
 * committed (and so durable) data only.
 */
export interface ArchiveStore {
  start(): Promise<void>
  stop(): Promise<void>
  healthcheck(): ArchiveHealth
  /** Why the store is read-only (its volume is full), or null while it takes writes. */
  readOnly(): ReadOnlyStatus | null
  /**
   * Reads the volume now (at most once per `freeSpaceCacheMs` unless `force`) and, when a
   * read-only store's volume has room again, returns it to read-write (reopening the
   * environment after a failed commit). The watcher calls it every `readOnlyRecheckMs`; SMTP
   * calls it before taking a message.
   * @returns what readOnly() says afterwards
   */
  recheckSpace(force?: boolean): Promise<ReadOnlyStatus | null>
  ingest(request: IngestRequest): Promise<IngestResult>
  has(id: string): boolean
  getMeta(id: string): MessageMeta | undefined
  getRaw(id: string): Promise<Uint8Array | undefined>
  stats(): StoreStats
  changes(afterSequence: number, limit: number): ChangeEntry[]
  lastSequence(): number
  listIds(afterId: string | null, limit: number): string[]
  verify(options?: { messagesMax?: number }): Promise<VerifyReport>
  writeActivity(): WriteActivity
  /** The ONLY way a stored message is ever removed; for the retention module (firmware/policy) alone. */
  delete(id: string): Promise<PurgeResult>
  /** When the retention purge removed `id` (purge-records.ts), or undefined. */
  purgedAt(id: string): { sequence: number; atMs: number } | undefined
  /** This archive's random id (32 lower-case hex digits), made when it was created. */
  storeId(): string
  /** A consistent, short-lived view of the id digest (see DigestSnapshot), opened in steps that yield to the event loop. */
  digestSnapshot(): Promise<DigestSnapshot>
}
