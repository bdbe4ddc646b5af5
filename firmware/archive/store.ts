import assert from 'node:assert/strict'
import { createHash, randomBytes as cryptoRandomBytes } from 'node:crypto'
import { statSync } from 'node:fs'
import { mkdir, open as openFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { open, type Database, type RootDatabase } from 'lmdb'
import { putAppend } from '../common/lmdb-append.js'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { ArchiveError } from './errors.js'
import {
  RecordShapeError,
  decodeChange,
  decodeDelivery,
  decodeMessageRecord,
  encodeChange,
  encodeDelivery,
  encodeMessageRecord,
  type ChangeRecord,
  type MessageRecord,
} from './records.js'
import { decodeBlob, deflateCodecs, encodeBlob, type BlobCodec } from './codec.js'
import { emptyDigestRecord, ensureDigest, openDigestSnapshot, updateDigestLeaf } from './store-digest.js'
import { emptyPurgedRecord, ensurePurgeRecords, purgedStateKey, readPurgeRecord, writePurgeRecord, type PurgeRecord } from './purge-records.js'
import {
  blobPartKey,
  blobParts,
  databaseNames,
  deliveryKeyHash,
  deliveryRecordKey,
  formatName,
  idKey,
  isArchiveId,
  layoutVersion,
  readSequence,
  sequenceKey,
} from './layout.js'
import type {
  ArchiveHealth,
  ArchiveIndexer,
  ArchiveStore,
  ChangeEntry,
  Delivery,
  DigestSnapshot,
  EncodedRaw,
  IngestRequest,
  IngestResult,
  MessageMeta,
  PurgeResult,
  StoreStats,
  VerifyReport,
  WriteActivity,
} from './types.js'

/**
 * The archive store: every message the appliance is given, in one LMDB environment.
 *
 * Layout (layout.ts has the keys): raw messages content-addressed by SHA-256, compressed
 * with raw deflate (codec.ts) and stored once however often they arrive; metadata per
 * message; every delivery of a message (source, time, envelope including BCC); an
 * append-only change log keyed by a local sequence, which the mirror engine reads; counters
 * for stats(). Records are positional arrays (records.ts). Attachments are not deduplicated
 * separately: on the real corpus repeated attachments are 0.17% of the raw bytes (190
 * attachments, 56 KB repeated), too little to pay for storing parts apart from the message
 * and reassembling it byte-exactly; worth measuring again on customer mail.
 *
 * One transaction per message. Each ingest runs as an lmdb-js asynchronous child
 * transaction: its callback runs on the event loop inside the current write transaction,
 * reads its own writes (duplicate check, sequence, counters are read-modify-write in the
 * transaction, so concurrent ingests of the same bytes cannot both store them), and is
 * rolled back alone if it throws. The raw bytes are compressed before, outside the lock (or
 * arrive compressed from a parse worker, IngestRequest.encoded, bound to them by SHA-256).
 *
 * Group commit. lmdb-js collects every transaction callback queued while a commit is in
 * flight and runs them in the next write transaction, which is committed and synced once,
 * on its worker thread. Concurrent ingests therefore share syncs (writeActivity() counts
 * commits; the tests assert fewer commits than messages) and the event loop never waits for
 * the disk. `eventTurnBatching` is off: callbacks are batched anyway, and with it on lmdb-js
 * leaves an internal promise unhandled when a commit fails (seen with injected EIO), which
 * would crash Node.
 *
 * Durability. `ingest` resolves only once its transaction is on disk. The environment is
 * opened with `overlappingSync: false`: LMDB's commit writes the data pages, fdatasyncs
 * them, then writes the meta page through its O_DSYNC descriptor, and lmdb-js resolves the
 * transaction's promise after that commit returned. A commit is thus visible to readers
 * only once durable. We chose this over lmdb-js's default (`overlappingSync: true`, where a
 * commit may become visible before its sync and `db.flushed` signals durability) because
 * (1) readers — the mirror sender, the HTTP API, a duplicate ingest — never see data a power
 * cut could take back, so a peer's cursor never points past what survives; (2) a failed
 * sync rejects the transaction's promise (checked with strace fault injection), whereas
 * `flushed` has no rejection path; (3) measured here with 10 writers
 * (scripts/bench/store.ts), neither mode was consistently faster: this disk's run-to-run
 * variation (2–5x) was larger than the difference. We do not await `db.flushed` on top: in this mode it adds nothing, and it
 * would wait for writes queued after ours (measured: it doubled latency under load).
 *
 * Failures. A commit that fails (EIO from a sync, ENOSPC from a write) rejects its ingests
 * (STORE_UNAVAILABLE; STORE_FULL for ENOSPC/EDQUOT/MDB_MAP_FULL) and the store then refuses
 * every write until restarted, failing its healthcheck: after a failed fsync the kernel may
 * have dropped the dirty pages, so a later successful sync would prove nothing (the
 * "fsyncgate" lesson), and after a failed meta write LMDB itself panics the environment.
 * Reads go on. Ordinary space shortage is caught before writing: ingest is refused with
 * STORE_FULL when the volume's free space (read at most once per `freeSpaceCacheMs`) would
 * fall below `freeBytesMin`, or the environment would pass `mapSizeBytes`.
 *
 * Indexer: see ArchiveIndexer in types.ts — called inside the message's transaction; when
 * it throws, that transaction is rolled back and written again without it, the message
 * flagged `index-failed`.
 *
 * Deletion: `delete(id)` is the ONLY path that removes or alters a stored message, for the
 * retention module alone; it writes a `purge` change entry. Nothing else rewrites a blob.
 *
 * Store id: 128 random bits (`storeId()`, 32 hex digits) written with the format record when
 * the archive is created, or durably at the first start of firmware that knows it; a wiped or
 * replaced volume gets a new one, which tells a mirror peer that this is not the archive it
 * compared with before. An identity record of another shape refuses the start (STORE_CORRUPT)
 * rather than being replaced.
 *
 * Id digest (id-digest.ts, store-digest.ts): per bucket of ids sharing their first 2 bytes, a
 * count, a byte sum and an XOR of hashes, updated in the transaction of every ingest of a new
 * id and every purge (one get and one put of a 44-byte value; a duplicate changes nothing),
 * built at start in one pass when the archive has none. `digestSnapshot()` answers the tree's
 * nodes and any bucket's ids from one read transaction, for a mirror peer to prove that both
 * archives hold the same ids (compareDigests) in a few round trips and kilobytes. Snapshots
 * are bounded: at most digestSnapshotsOpenMax at once, each released after
 * digestSnapshotAgeMsMax and by stop().
 */

export interface ArchiveStoreDeps {
  logger: Logger
  clock: Clock
  /** Free space of the data volume (hal's volume usage); called at most once per `freeSpaceCacheMs`. */
  volume?: () => Promise<{ freeBytes: number }>
  /** Cryptographically secure random bytes, for the store id; node:crypto's by default. */
  randomBytes?: (size: number) => Buffer
}

export interface ArchiveStoreOptions {
  /** Directory of the LMDB environment; created when missing. */
  path: string
  /** Most bytes the environment may grow to; ingest beyond it is refused with STORE_FULL. */
  mapSizeBytes: number
  /** Below this free space on the volume, ingest is refused with STORE_FULL. */
  freeBytesMin: number
  /** Largest raw message accepted, in bytes; larger ones get MESSAGE_TOO_LARGE. */
  messageBytesMax: number
  indexer?: ArchiveIndexer
  /** How long a free-space reading is trusted, in ms. Default 1000. */
  freeSpaceCacheMs?: number
  /** Bound on stop(): how long it waits for writes in flight and for the close, in ms. Default 10000. */
  stopTimeoutMs?: number
  /** Maximum age of a digest snapshot, in ms: past it its read transaction is released. Default 60000. */
  digestSnapshotAgeMsMax?: number
}

/** Default for ArchiveStoreOptions.freeSpaceCacheMs, in ms. */
export const freeSpaceCacheMsDefault = 1000
/** Default for ArchiveStoreOptions.stopTimeoutMs, in ms. */
export const stopTimeoutMsDefault = 10_000
/**
 * Default for ArchiveStoreOptions.digestSnapshotAgeMsMax, in ms. A comparison takes a few
 * round trips (5 for one difference at a million ids), seconds even over a slow link; a
 * minute bounds how much the file can grow while the snapshot keeps LMDB from reusing pages.
 */
export const digestSnapshotAgeMsMaxDefault = 60_000
/** Most digest snapshots open at once (one per peer comparison in flight); more get DIGEST_SNAPSHOTS_BUSY. */
export const digestSnapshotsOpenMax = 8
/** Bytes of randomness in a store id (128 bits, 32 hex digits). */
const storeIdBytes = 16
const storeIdPattern = /^[0-9a-f]{32}$/
/** Page size of new environments, in bytes: the blob layout is tuned to it (layout.ts). */
export const pageSizeBytes = 4096
/** Most corrupt ids verify() lists (it counts them all). */
export const corruptIdsMax = 100
/** Most entries one changes() or listIds() call returns. */
export const pageEntriesMax = 10_000
/** Estimated bytes of metadata, delivery and change entry per ingest, for the space checks. */
const recordOverheadBytes = 2048
/** How long a failed commit's errno is awaited from lmdb-js, in ms. */
const commitErrorWaitMs = 1000
/** The store's own named databases, plus room for later ones. */
const storeDatabasesMax = 12

/** errno values and LMDB codes that mean "no space". */
const noSpaceCodes = new Set<unknown>([28 /* ENOSPC */, 122 /* EDQUOT */, -30792 /* MDB_MAP_FULL */, 'ENOSPC', 'EDQUOT'])
/** LMDB's magic number and its offset in the first meta page (after lmdb-js's 24-byte page header). */
const lmdbMagic = 0xbeefc0de
const lmdbMagicOffsetBytes = 24
/** LMDB codes for a file that is not an LMDB environment of a version we can read. */
const notLmdbCodes = new Set<unknown>([-30793 /* MDB_INVALID */, -30794 /* MDB_VERSION_MISMATCH */])

type StoreState = 'created' | 'starting' | 'open' | 'failed' | 'stopping' | 'stopped'

interface CounterRecord {
  messages: number
  deliveries: number
  rawBytes: number
  storedBytes: number
  lastSequence: number
  flaggedMessages: number
}

interface FormatRecord {
  name: string
  version: number
  pageSizeBytes: number
  createdAtMs: number
}

/** The `identity` record of `archive/state`. */
interface IdentityRecord {
  storeId: string
  createdAtMs: number
}

interface Databases {
  root: RootDatabase
  /** Values: encodeMessageRecord arrays. */
  messages: Database<unknown, Buffer>
  blobs: Database<Buffer, Buffer>
  /** Values: encodeDelivery arrays. */
  deliveries: Database<unknown, Buffer>
  deliveryKeys: Database<number, Buffer>
  /** Values: encodeChange arrays. */
  changes: Database<unknown, Buffer>
  /** Values: id digest leaves (id-digest.ts). */
  digest: Database<Buffer, Buffer>
  /** Values: purge records (purge-records.ts). */
  purged: Database<unknown, Buffer>
  state: Database<unknown, string>
  pageSizeBytes: number
}

/** Encoded bytes of a new message, made before its transaction. */
interface EncodedBlob {
  codec: BlobCodec
  bytes: Buffer
}

const zeroCounters: CounterRecord = { messages: 0, deliveries: 0, rawBytes: 0, storedBytes: 0, lastSequence: 0, flaggedMessages: 0 }
/** Returned from a transaction when the message vanished between the check and the transaction (a purge): compress and try again. */
const needsBlob = Symbol('needs-blob')

/** Thrown out of a message's transaction when the indexer failed, so the transaction rolls back (see runIndexer). */
class IndexerFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('the indexer failed')
  }
}

function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

function errorCode(error: unknown): unknown {
  return error !== null && typeof error === 'object' ? (error as { code?: unknown }).code : undefined
}

function entryCount(database: Database): number {
  return (database.getStats() as { entryCount: number }).entryCount
}

/** A timer that resolves after `ms` and does not keep the process alive. */
function delay(ms: number): { promise: Promise<'timeout'>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined
  const promise = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms)
    timer.unref()
  })
  return { promise, cancel: () => clearTimeout(timer) }
}

/**
 * Creates the archive store. Pure: opens nothing until start().
 *
 * @throws AssertionError on invalid options (a programmer error)
 */
export function createArchiveStore(deps: ArchiveStoreDeps, options: ArchiveStoreOptions): ArchiveStore {
  assert.ok(typeof options.path === 'string' && options.path.length > 0, 'options.path is required')
  assert.ok(Number.isSafeInteger(options.mapSizeBytes) && options.mapSizeBytes >= 1024 * 1024, 'options.mapSizeBytes must be at least 1 MiB')
  assert.ok(Number.isSafeInteger(options.freeBytesMin) && options.freeBytesMin >= 0, 'options.freeBytesMin must be a non-negative integer')
  assert.ok(Number.isSafeInteger(options.messageBytesMax) && options.messageBytesMax > 0, 'options.messageBytesMax must be a positive integer')
  const logger = deps.logger.child('archive')
  const clock = deps.clock
  const indexer = options.indexer
  const freeSpaceCacheMs = options.freeSpaceCacheMs ?? freeSpaceCacheMsDefault
  const stopTimeoutMs = options.stopTimeoutMs ?? stopTimeoutMsDefault
  const digestSnapshotAgeMsMax = options.digestSnapshotAgeMsMax ?? digestSnapshotAgeMsMaxDefault
  assert.ok(Number.isSafeInteger(digestSnapshotAgeMsMax) && digestSnapshotAgeMsMax > 0, 'options.digestSnapshotAgeMsMax must be a positive integer')
  const randomBytes = deps.randomBytes ?? cryptoRandomBytes

  let state: StoreState = 'created'
  let failure: string | null = null
  let dbs: Databases | undefined
  let startPromise: Promise<void> | undefined
  let stopPromise: Promise<void> | undefined
  let storeId: string | undefined
  /** Digest snapshots open now; stop() closes them. */
  const snapshots = new Set<DigestSnapshot>()
  const activity: WriteActivity = { ingests: 0, commits: 0, failedCommits: 0 }
  const countedFailures = new WeakSet<object>()
  /** Ingests and purges in flight, which stop() waits for. */
  const operations = new Set<Promise<unknown>>()

  // Free-space readings, refreshed at most every freeSpaceCacheMs.
  let spaceCheckedAtMs = Number.NEGATIVE_INFINITY
  let spaceRefresh: Promise<void> | undefined
  let volumeFreeBytes: number | null = null
  let environmentUsedBytes = 0
  let bytesQueuedSinceSpaceCheck = 0

  function unavailable(message: string, fields: Record<string, unknown> = {}, cause?: unknown): ArchiveError {
    return new ArchiveError('STORE_UNAVAILABLE', message, { fields: { path: options.path, state, ...fields }, cause })
  }

  /** @param accepted true for an operation accepted before stop() began: it may finish while stopping. */
  function requireWritable(accepted = false): Databases {
    if ((state === 'open' || (accepted && state === 'stopping')) && dbs) return dbs
    if (state === 'failed') throw unavailable(`the store refuses writes after a disk failure (${failure}); restart it after checking the disk`)
    throw unavailable(`the store is not open (${state})`)
  }

  function requireReadable(): Databases {
    if ((state === 'open' || state === 'failed' || state === 'stopping') && dbs) return dbs
    throw unavailable(`the store is not open (${state})`)
  }

  function corrupt(id: string, reason: string, cause?: unknown): ArchiveError {
    logger.error('stored message failed its integrity check', { id, reason, error: cause })
    return new ArchiveError('STORE_CORRUPT', `message ${id} is corrupt: ${reason}`, { fields: { id, reason }, cause })
  }

  function track<T>(operation: Promise<T>): Promise<T> {
    operations.add(operation)
    const forget = (): void => {
      operations.delete(operation)
    }
    operation.then(forget, forget)
    return operation
  }

  // ---- space ----------------------------------------------------------------------------

  async function refreshSpace(databases: Databases): Promise<void> {
    const environment = databases.root.getStats() as { lastPageNumber?: number; pageSize?: number }
    environmentUsedBytes = ((environment.lastPageNumber ?? 0) + 1) * (environment.pageSize ?? databases.pageSizeBytes)
    if (deps.volume) {
      try {
        volumeFreeBytes = (await deps.volume()).freeBytes
      } catch (error) {
        // Refusing all mail because statfs failed would turn a monitoring problem into an
        // outage; a disk that is really full still fails the commit with ENOSPC.
        logger.warn('cannot read the free space of the data volume; accepting mail without the free-space check', { error })
        volumeFreeBytes = null
      }
    }
    bytesQueuedSinceSpaceCheck = 0
    spaceCheckedAtMs = clock.monotonicMs()
  }

  async function ensureSpace(databases: Databases, incomingBytes: number): Promise<void> {
    if (clock.monotonicMs() - spaceCheckedAtMs >= freeSpaceCacheMs) {
      spaceRefresh ??= refreshSpace(databases).finally(() => {
        spaceRefresh = undefined
      })
      await spaceRefresh
    }
    const needBytes = incomingBytes + recordOverheadBytes
    const freeBytes = volumeFreeBytes === null ? null : volumeFreeBytes - bytesQueuedSinceSpaceCheck
    if (freeBytes !== null && freeBytes - needBytes < options.freeBytesMin) {
      throw new ArchiveError('STORE_FULL', `the data volume has ${freeBytes} bytes free, below the minimum of ${options.freeBytesMin} bytes`, {
        fields: { freeBytes, freeBytesMin: options.freeBytesMin },
      })
    }
    const usedBytes = environmentUsedBytes + bytesQueuedSinceSpaceCheck
    if (usedBytes + needBytes > options.mapSizeBytes) {
      throw new ArchiveError('STORE_FULL', `the archive uses ${usedBytes} of its ${options.mapSizeBytes} bytes`, {
        fields: { usedBytes, mapSizeBytes: options.mapSizeBytes },
      })
    }
    bytesQueuedSinceSpaceCheck += needBytes
  }

  // ---- transactions ---------------------------------------------------------------------

  /**
   * Runs `body` as one message's transaction and waits until it is durable. Errors thrown
   * by `body` abort only this message; a failed commit fails the store.
   */
  async function inTransaction<T>(databases: Databases, body: () => T): Promise<T> {
    let thrownInside = false
    try {
      return await databases.root.childTransaction(() => {
        try {
          return body()
        } catch (error) {
          thrownInside = true
          throw error
        }
      })
    } catch (error) {
      if (thrownInside) {
        if (error instanceof ArchiveError || error instanceof IndexerFailed) throw error
        if (error instanceof RecordShapeError) throw new ArchiveError('STORE_CORRUPT', `a stored record is undecodable: ${error.message}`, { cause: error })
        const code = errorCode(error)
        if (noSpaceCodes.has(code)) throw new ArchiveError('STORE_FULL', 'the archive ran out of space in a transaction', { fields: { errno: code }, cause: error })
        throw unavailable('the store failed a write', { errno: code }, error)
      }
      throw await commitFailed(error)
    }
  }

  async function commitFailed(error: unknown): Promise<ArchiveError> {
    // lmdb-js rejects each transaction of a failed commit with a generic error whose
    // `commitError` promise carries the errno; handling it also keeps it from becoming an
    // unhandled rejection.
    const commitError = (error as { commitError?: Promise<unknown> } | null)?.commitError
    let cause: unknown = error
    if (commitError && typeof commitError.then === 'function') {
      // lmdb-js settles it in the same callback that rejects the transaction; the bound only
      // guards against a version that does not.
      const bound = delay(commitErrorWaitMs)
      cause = await Promise.race([
        commitError.then(
          () => error,
          (reason: unknown) => reason,
        ),
        bound.promise.then(() => error),
      ])
      bound.cancel()
      if (!countedFailures.has(commitError)) {
        countedFailures.add(commitError)
        activity.failedCommits++
      }
    } else {
      activity.failedCommits++
    }
    const code = errorCode(cause)
    const reason = cause instanceof Error ? cause.message : String(cause)
    enterFailed(`commit failed: ${reason}`)
    if (noSpaceCodes.has(code)) {
      return new ArchiveError('STORE_FULL', 'the disk is full: the write was not stored', { fields: { path: options.path, errno: code }, cause })
    }
    return unavailable('the disk failed to store the write', { errno: code }, cause)
  }

  function enterFailed(reason: string): void {
    if (state !== 'open') return
    state = 'failed'
    failure = reason
    logger.error('archive store refuses writes until restarted', { reason })
  }

  function readCounters(databases: Databases): CounterRecord {
    const stored = databases.state.get('counters') as CounterRecord | undefined
    return stored ? { ...stored } : { ...zeroCounters }
  }

  function nextChange(databases: Databases, counters: CounterRecord, kind: ChangeEntry['kind'], key: Buffer, origin: string | null, nowMs: number): number {
    const sequence = counters.lastSequence + 1
    const change: ChangeRecord = { kind, id: key, atMs: nowMs, origin }
    if (!putAppend(databases.changes, sequenceKey(sequence), encodeChange(change))) {
      throw new ArchiveError('STORE_CORRUPT', `change-log sequence ${sequence} is not past the last entry`, { fields: { sequence } })
    }
    counters.lastSequence = sequence
    return sequence
  }

  // ---- ingest ---------------------------------------------------------------------------

  function recordOf(request: IngestRequest, sequence: number, blob: EncodedBlob, parts: number, nowMs: number): MessageRecord {
    const addresses = (list: { address: string }[]): string[] => list.map((entry) => entry.address)
    const parsed = request.parsed
    return {
      sequence,
      codec: blob.codec,
      storedBytes: blob.bytes.byteLength,
      parts,
      sizeBytes: request.raw.byteLength,
      messageId: parsed.messageId,
      dateMs: parsed.dateMs,
      from: addresses(parsed.from),
      to: addresses(parsed.to),
      cc: addresses(parsed.cc),
      bcc: addresses(parsed.bcc),
      subject: parsed.subject,
      attachments: parsed.attachments.map(({ filename, contentType, sizeBytes, sha256 }) => ({ filename, contentType, sizeBytes, sha256 })),
      flags: [...parsed.flags],
      firstArchivedAtMs: nowMs,
      origin: request.origin ?? null,
    }
  }

  function metaOf(id: string, record: MessageRecord, deliveries: Delivery[]): MessageMeta {
    return {
      id,
      sizeBytes: record.sizeBytes,
      messageId: record.messageId,
      dateMs: record.dateMs,
      from: record.from,
      to: record.to,
      cc: record.cc,
      bcc: record.bcc,
      subject: record.subject,
      attachments: record.attachments,
      flags: record.flags,
      deliveries,
      firstArchivedAtMs: record.firstArchivedAtMs,
      origin: record.origin,
    }
  }

  function deliveriesOf(databases: Databases, id: string): Delivery[] {
    const key = idKey(id)
    const deliveries: Delivery[] = []
    for (const { value } of databases.deliveries.getRange({ start: deliveryRecordKey(key, 0), end: deliveryRecordKey(key, Number.MAX_SAFE_INTEGER) })) {
      try {
        deliveries.push(decodeDelivery(value))
      } catch (error) {
        throw corrupt(id, 'undecodable delivery record', error)
      }
    }
    return deliveries
  }

  function deliveryOf(delivery: Delivery): Delivery {
    return {
      source: delivery.source,
      sourceName: delivery.sourceName,
      receivedAtMs: delivery.receivedAtMs,
      envelopeFrom: delivery.envelopeFrom,
      envelopeTo: [...delivery.envelopeTo],
      envelopeBcc: [...delivery.envelopeBcc],
      remoteAddress: delivery.remoteAddress,
      journalEnvelopeText: delivery.journalEnvelopeText,
      deliveryKey: delivery.deliveryKey ?? null,
    }
  }

  /**
   * Runs the indexer in the message's transaction. No nested transaction: measured, LMDB's
   * nested begin and commit took a third of the event loop's time per ingest. When it
   * throws, IndexerFailed aborts the message's transaction, which `withoutIndexerOnFailure`
   * writes again without the indexer.
   */
  function runIndexer(indexing: boolean, call: (indexer: ArchiveIndexer) => void): void {
    if (!indexer || !indexing) return
    try {
      call(indexer)
    } catch (error) {
      throw new IndexerFailed(error)
    }
  }

  /**
   * Runs one message's transaction with the indexer; when the indexer fails, that
   * transaction is rolled back (the indexer's writes with it) and run again without the
   * indexer: mail is never refused, and a purge never stopped, because indexing failed.
   */
  async function withoutIndexerOnFailure<T>(id: string, run: (indexing: boolean) => Promise<T>): Promise<T> {
    try {
      return await run(true)
    } catch (error) {
      if (!(error instanceof IndexerFailed)) throw error
      logger.error('the indexer failed; the message is archived without its postings', { id, error: error.cause })
      return await run(false)
    }
  }

  /** Adds or removes one id in the id digest, in the message's transaction; damage is set aside and logged, never refuses the write. */
  function updateDigest(databases: Databases, id: string, key: Buffer, sizeBytes: number, sign: 1 | -1): void {
    const damage = updateDigestLeaf(databases, key, sizeBytes, sign)
    if (damage) logger.error('the id digest is damaged; it is set aside until the next start rebuilds it', { id, error: damage })
  }

  /** The body of one ingest's transaction. Runs synchronously inside the write transaction. */
  function ingestInTransaction(databases: Databases, id: string, request: IngestRequest, blob: EncodedBlob | undefined, indexing: boolean): IngestResult | typeof needsBlob {
    const key = idKey(id)
    const delivery = deliveryOf(request.delivery)
    const storedValue = databases.messages.get(key)
    let record = storedValue === undefined ? undefined : decodeMessageRecord(storedValue)
    if (record && delivery.deliveryKey) {
      const recorded = databases.deliveryKeys.get(deliveryKeyHash(id, delivery.deliveryKey))
      if (recorded !== undefined) return { id, duplicate: true, sequence: recorded }
    }
    if (!record && !blob) return needsBlob
    const nowMs = clock.now()
    const counters = readCounters(databases)
    const existing = record !== undefined
    const sequence = nextChange(databases, counters, existing ? 'delivery' : 'ingest', key, request.origin ?? null, nowMs)
    if (!record) {
      assert.ok(blob)
      const ranges = blobParts(blob.bytes.byteLength, databases.pageSizeBytes)
      ranges.forEach(([start, end], index) => {
        if (!putAppend(databases.blobs, blobPartKey(sequence, index), blob.bytes.subarray(start, end))) {
          throw new ArchiveError('STORE_CORRUPT', `blob key ${sequence}/${index} is not past the last blob`, { fields: { id, sequence } })
        }
      })
      record = recordOf(request, sequence, blob, ranges.length, nowMs)
      updateDigest(databases, id, key, record.sizeBytes, 1)
      counters.messages++
      counters.rawBytes += record.sizeBytes
      counters.storedBytes += record.storedBytes
    }
    databases.deliveries.putSync(deliveryRecordKey(key, sequence), encodeDelivery(delivery))
    if (delivery.deliveryKey) databases.deliveryKeys.putSync(deliveryKeyHash(id, delivery.deliveryKey), sequence)
    counters.deliveries++
    const wasFlagged = existing && record.flags.length > 0
    const stored = record
    runIndexer(indexing, (hook) => hook.messageStored(metaOf(id, stored, existing ? deliveriesOf(databases, id) : [delivery]), request.parsed, request.indexPrepared))
    if (indexer && !indexing && !record.flags.includes('index-failed')) record = { ...record, flags: [...record.flags, 'index-failed'] }
    if (!existing || record !== stored) databases.messages.putSync(key, encodeMessageRecord(record))
    if (record.flags.length > 0 && !wasFlagged) counters.flaggedMessages++
    databases.state.putSync('counters', counters)
    return { id, duplicate: existing, sequence }
  }

  async function ingestOnce(id: string, request: IngestRequest): Promise<IngestResult> {
    let databases = requireWritable(true)
    await ensureSpace(databases, request.raw.byteLength)
    // Compress outside the write transaction, and only when the bytes are new: the check is
    // repeated inside the transaction, which alone decides.
    let blob: EncodedBlob | undefined
    for (let attempt = 0; attempt < 2; attempt++) {
      if (!blob && (attempt > 0 || !databases.messages.doesExist(idKey(id)))) {
        const encoded = usableEncoding(id, request) ?? (await encodeBlob(request.raw))
        blob = { codec: encoded.codec, bytes: Buffer.from(encoded.bytes.buffer, encoded.bytes.byteOffset, encoded.bytes.byteLength) }
        databases = requireWritable(true)
      }
      const current = databases
      const currentBlob = blob
      const result = await withoutIndexerOnFailure(id, (indexing) => inTransaction(current, () => ingestInTransaction(current, id, request, currentBlob, indexing)))
      if (result !== needsBlob) {
        activity.ingests++
        return result
      }
    }
    // Only a purge racing twice with the same ingest gets here.
    throw unavailable(`message ${id} changed while it was being stored; try again`)
  }

  /**
   * The caller's compressed bytes (made on a parse worker) when they are bound to these raw
   * bytes by their SHA-256; anything else is ignored and the store compresses `raw` itself.
   */
  function usableEncoding(id: string, request: IngestRequest): EncodedRaw | undefined {
    const encoded = request.encoded
    if (encoded === undefined) return undefined
    if (encoded.rawSha256 === id && (deflateCodecs.includes(encoded.codec) || (encoded.codec === 'identity' && encoded.bytes.byteLength === request.raw.byteLength))) return encoded
    logger.warn('ignoring precompressed bytes that do not belong to the message; compressing it again', { id, codec: encoded.codec })
    return undefined
  }

  function assertRequest(request: IngestRequest): void {
    assert.ok(request && request.raw instanceof Uint8Array, 'ingest needs raw bytes')
    assert.ok(request.parsed && Array.isArray(request.parsed.flags), 'ingest needs the parser result')
    const delivery = request.delivery
    assert.ok(delivery && Array.isArray(delivery.envelopeTo) && Array.isArray(delivery.envelopeBcc), 'ingest needs a delivery with envelope lists')
    assert.ok(Number.isFinite(delivery.receivedAtMs), 'delivery.receivedAtMs must be a number')
  }

  // ---- purge ----------------------------------------------------------------------------

  function purgeInTransaction(databases: Databases, id: string, indexing: boolean): PurgeResult {
    const key = idKey(id)
    const record = readRecord(databases, id)
    if (!record) throw new ArchiveError('NOT_FOUND', `no message ${id}`, { fields: { id } })
    // Postings left behind would point at a message that is gone (search drops such hits);
    // refusing the purge would keep mail past its retention, so an index failure is logged only.
    runIndexer(indexing, (hook) => hook.messageRemoved(id))
    for (let index = 0; index < record.parts; index++) databases.blobs.removeSync(blobPartKey(record.sequence, index))
    const deliveryKeys: Buffer[] = []
    for (const { key: deliveryKey, value } of databases.deliveries.getRange({ start: deliveryRecordKey(key, 0), end: deliveryRecordKey(key, Number.MAX_SAFE_INTEGER) })) {
      deliveryKeys.push(Buffer.from(deliveryKey))
      const delivery = decodeDelivery(value)
      if (delivery.deliveryKey) databases.deliveryKeys.removeSync(deliveryKeyHash(id, delivery.deliveryKey))
    }
    for (const deliveryKey of deliveryKeys) databases.deliveries.removeSync(deliveryKey)
    databases.messages.removeSync(key)
    updateDigest(databases, id, key, record.sizeBytes, -1)
    const counters = readCounters(databases)
    const atMs = clock.now()
    const sequence = nextChange(databases, counters, 'purge', key, null, atMs)
    writePurgeRecord(databases.purged, key, { sequence, atMs })
    counters.messages--
    counters.deliveries -= deliveryKeys.length
    counters.rawBytes -= record.sizeBytes
    counters.storedBytes -= record.storedBytes
    if (record.flags.length > 0) counters.flaggedMessages--
    databases.state.putSync('counters', counters)
    return { id, sequence }
  }

  // ---- reads ----------------------------------------------------------------------------

  function readRecord(databases: Databases, id: string): MessageRecord | undefined {
    const value = databases.messages.get(idKey(id))
    if (value === undefined) return undefined
    try {
      return decodeMessageRecord(value)
    } catch (error) {
      throw corrupt(id, 'undecodable message record', error)
    }
  }

  async function readRaw(databases: Databases, id: string, record: MessageRecord): Promise<Uint8Array> {
    const chunks: Buffer[] = []
    let storedBytes = 0
    for (const { value } of databases.blobs.getRange({ start: blobPartKey(record.sequence, 0), end: blobPartKey(record.sequence + 1, 0) })) {
      // Copied, because lmdb-js may reuse the buffer it hands out for the next entry.
      const chunk = Buffer.from(value)
      chunks.push(chunk)
      storedBytes += chunk.byteLength
    }
    if (chunks.length !== record.parts || storedBytes !== record.storedBytes) {
      throw corrupt(id, `blob has ${chunks.length} parts and ${storedBytes} bytes, expected ${record.parts} and ${record.storedBytes}`)
    }
    let raw: Uint8Array
    try {
      raw = await decodeBlob(record.codec, Buffer.concat(chunks, storedBytes), record.sizeBytes)
    } catch (error) {
      throw corrupt(id, 'blob does not decode', error)
    }
    if (raw.byteLength !== record.sizeBytes) throw corrupt(id, `blob restores to ${raw.byteLength} bytes, expected ${record.sizeBytes}`)
    if (sha256Hex(raw) !== id) throw corrupt(id, 'restored bytes do not hash to the id')
    return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)
  }

  function fileBytes(): number {
    let total = 0
    for (const name of ['data.mdb', 'lock.mdb']) {
      try {
        total += statSync(join(options.path, name)).size
      } catch {
        // A missing file counts as empty: stats() must not fail over a monitoring figure.
      }
    }
    return total
  }

  function listIds(afterId: string | null, limit: number): string[] {
    assert.ok(Number.isSafeInteger(limit) && limit > 0 && limit <= pageEntriesMax, `limit must be 1…${pageEntriesMax}`)
    const databases = requireReadable()
    const range = afterId === null ? { limit } : { start: idKey(afterId), exclusiveStart: true, limit }
    const ids: string[] = []
    for (const key of databases.messages.getKeys(range)) ids.push(hexOf(key))
    return ids
  }

  // ---- lifecycle ------------------------------------------------------------------------

  /**
   * LMDB trusts its file: opening a file that is not an LMDB environment can crash the
   * process (seen: SIGSEGV on a file of junk). So the meta page's magic number is checked first.
   */
  async function checkEnvironmentFile(): Promise<void> {
    let handle: FileHandle | undefined
    try {
      handle = await openFile(join(options.path, 'data.mdb'), 'r')
      const header = Buffer.alloc(lmdbMagicOffsetBytes + 4)
      const { bytesRead } = await handle.read(header, 0, header.length, 0)
      if (bytesRead === 0) return
      if (bytesRead < header.length || header.readUInt32LE(lmdbMagicOffsetBytes) !== lmdbMagic) {
        throw new ArchiveError('STORE_CORRUPT', `${options.path}/data.mdb is not an LMDB environment`, { fields: { path: options.path } })
      }
    } catch (error) {
      if (error instanceof ArchiveError) throw error
      if (errorCode(error) === 'ENOENT') return
      throw unavailable(`cannot read the archive at ${options.path}`, { errno: errorCode(error) }, error)
    } finally {
      await handle?.close()
    }
  }

  function openDatabases(): Databases {
    let root: RootDatabase
    try {
      root = open({
        path: options.path,
        mapSize: options.mapSizeBytes,
        pageSize: pageSizeBytes,
        maxDbs: storeDatabasesMax + (indexer?.databasesNeeded ?? 0),
        // See the module comment: a commit is visible only once synced, and a failed sync
        // rejects the transaction.
        overlappingSync: false,
        noSync: false,
        noMetaSync: false,
        useWritemap: false,
        // See the module comment: off, to avoid an unhandled rejection inside lmdb-js.
        eventTurnBatching: false,
      })
    } catch (error) {
      const code = errorCode(error)
      if (notLmdbCodes.has(code)) throw new ArchiveError('STORE_CORRUPT', `${options.path} does not hold an archive LMDB environment`, { fields: { path: options.path, errno: code }, cause: error })
      throw unavailable(`cannot open the archive at ${options.path}`, { errno: code }, error)
    }
    const binaryKeys = { keyEncoding: 'binary' as const }
    return {
      root,
      messages: root.openDB<unknown, Buffer>(databaseNames.messages, binaryKeys),
      blobs: root.openDB<Buffer, Buffer>(databaseNames.blobs, { ...binaryKeys, encoding: 'binary' }),
      deliveries: root.openDB<unknown, Buffer>(databaseNames.deliveries, binaryKeys),
      deliveryKeys: root.openDB<number, Buffer>(databaseNames.deliveryKeys, binaryKeys),
      changes: root.openDB<unknown, Buffer>(databaseNames.changes, binaryKeys),
      digest: root.openDB<Buffer, Buffer>(databaseNames.digest, { ...binaryKeys, encoding: 'binary' }),
      purged: root.openDB<unknown, Buffer>(databaseNames.purged, binaryKeys),
      state: root.openDB<unknown, string>(databaseNames.state, {}),
      pageSizeBytes: (root.getStats() as { pageSize: number }).pageSize,
    }
  }

  async function validate(databases: Databases): Promise<void> {
    const format = databases.state.get('format') as FormatRecord | undefined
    if (format === undefined) {
      const messages = entryCount(databases.messages)
      const changes = entryCount(databases.changes)
      if (messages > 0 || changes > 0) {
        throw new ArchiveError('STORE_CORRUPT', `the archive at ${options.path} holds data but no format record`, { fields: { path: options.path, messages, changes } })
      }
      const nowMs = clock.now()
      const record: FormatRecord = { name: formatName, version: layoutVersion, pageSizeBytes: databases.pageSizeBytes, createdAtMs: nowMs }
      const identity = newIdentity(nowMs)
      await databases.root.childTransaction(() => {
        databases.state.putSync('format', record)
        databases.state.putSync('identity', identity)
        databases.state.putSync('digest', emptyDigestRecord(nowMs))
        databases.state.putSync(purgedStateKey, emptyPurgedRecord(nowMs))
      })
      logger.info('created a new archive', { path: options.path, pageSizeBytes: databases.pageSizeBytes, storeId: identity.storeId })
      return
    }
    if (format === null || typeof format !== 'object' || format.name !== formatName || format.version !== layoutVersion) {
      const actual = format && typeof format === 'object' ? `${String(format.name)} v${String(format.version)}` : String(format)
      throw new ArchiveError('STORE_CORRUPT', `archive format mismatch: expected ${formatName} v${layoutVersion}, got ${actual}`, {
        fields: { path: options.path, expected: `${formatName} v${layoutVersion}`, actual },
      })
    }
    // The counters are written in the same transaction as every change entry, so they
    // agree with the log unless the file was damaged or edited.
    const counters = readCounters(databases)
    let lastSequence = 0
    for (const key of databases.changes.getKeys({ reverse: true, limit: 1 })) lastSequence = readSequence(key)
    let lastBlobSequence = 0
    for (const key of databases.blobs.getKeys({ reverse: true, limit: 1 })) lastBlobSequence = readSequence(key)
    if (counters.lastSequence !== lastSequence || lastBlobSequence > lastSequence || counters.messages !== entryCount(databases.messages)) {
      throw new ArchiveError('STORE_CORRUPT', `the archive's counters disagree with its contents (sequence ${counters.lastSequence} vs log ${lastSequence}, last blob ${lastBlobSequence}, messages ${counters.messages} vs ${entryCount(databases.messages)})`, {
        fields: { path: options.path, countersLastSequence: counters.lastSequence, lastSequence, lastBlobSequence },
      })
    }
  }

  function newIdentity(nowMs: number): IdentityRecord {
    const bytes = randomBytes(storeIdBytes)
    assert.ok(bytes.byteLength === storeIdBytes, `randomBytes gave ${bytes.byteLength} bytes, expected ${storeIdBytes}`)
    return { storeId: bytes.toString('hex'), createdAtMs: nowMs }
  }

  /**
   * The store id, made and written durably (before the store opens) when an archive created
   * by earlier firmware has none.
   * @throws ArchiveError STORE_CORRUPT (an identity record of another shape), STORE_UNAVAILABLE or STORE_FULL (the write)
   */
  async function ensureIdentity(databases: Databases): Promise<string> {
    const stored = databases.state.get('identity') as IdentityRecord | undefined
    if (stored !== undefined) {
      if (stored === null || typeof stored !== 'object' || typeof stored.storeId !== 'string' || !storeIdPattern.test(stored.storeId)) {
        // Making a new id would make peers take this archive for another one: refuse instead.
        throw new ArchiveError('STORE_CORRUPT', `the archive's identity record is undecodable`, { fields: { path: options.path } })
      }
      return stored.storeId
    }
    const identity = newIdentity(clock.now())
    await inTransaction(databases, () => databases.state.putSync('identity', identity))
    logger.info('gave the archive a store id', { storeId: identity.storeId })
    return identity.storeId
  }

  async function doStart(): Promise<void> {
    state = 'starting'
    failure = null
    let databases: Databases | undefined
    try {
      try {
        await mkdir(options.path, { recursive: true })
      } catch (error) {
        throw unavailable(`cannot create the archive directory ${options.path}`, { errno: errorCode(error) }, error)
      }
      await checkEnvironmentFile()
      databases = openDatabases()
      await validate(databases)
      const opening = databases
      storeId = await ensureIdentity(opening)
      await ensureDigest(opening, { logger, clock, counters: readCounters(opening), write: (body) => inTransaction(opening, body) })
      await ensurePurgeRecords(opening, { logger, clock, write: (body) => inTransaction(opening, body) })
      // lmdb-js also calls this after a failed commit, without a transaction id.
      databases.root.on('aftercommit', (event: { txnId?: number }) => {
        if (event?.txnId !== undefined) activity.commits++
      })
      indexer?.open(databases.root)
      dbs = databases
      spaceCheckedAtMs = Number.NEGATIVE_INFINITY
      state = 'open'
      const counters = readCounters(databases)
      logger.info('archive store open', { path: options.path, messages: counters.messages, lastSequence: counters.lastSequence })
    } catch (error) {
      state = 'stopped'
      dbs = undefined
      if (databases) await databases.root.close().catch(() => undefined)
      if (error instanceof ArchiveError) throw error
      throw unavailable(`cannot start the archive at ${options.path}`, { errno: errorCode(error) }, error)
    }
  }

  async function doStop(): Promise<void> {
    if (startPromise) await startPromise.catch(() => undefined)
    if (!dbs) {
      if (state !== 'created') state = 'stopped'
      return
    }
    const databases = dbs
    state = 'stopping'
    // Open snapshots hold read transactions, which must end before the environment closes.
    for (const snapshot of [...snapshots]) snapshot.close()
    const deadlineMs = clock.monotonicMs() + stopTimeoutMs
    const drain = delay(stopTimeoutMs)
    const drained = await Promise.race([Promise.allSettled([...operations]).then(() => 'drained' as const), drain.promise])
    drain.cancel()
    if (drained === 'timeout') logger.warn('stop timed out waiting for writes in flight', { operations: operations.size, stopTimeoutMs })
    const closing = delay(Math.max(0, deadlineMs - clock.monotonicMs()))
    const closed = await Promise.race([databases.root.close().then(() => 'closed' as const), closing.promise]).catch((error: unknown) => {
      logger.error('closing the archive failed', { error })
      return 'failed' as const
    })
    closing.cancel()
    if (closed === 'timeout') logger.error('closing the archive timed out; leaving it to process exit', { stopTimeoutMs })
    dbs = undefined
    state = 'stopped'
    logger.info('archive store stopped')
  }

  return {
    /**
     * Opens (or creates) the environment, checks its format and counters, opens the
     * indexer's databases. Idempotent while open.
     * @throws ArchiveError STORE_UNAVAILABLE (cannot create or open), STORE_CORRUPT (not an archive, another format, counters that disagree with the contents)
     */
    start() {
      if (state === 'open' || state === 'failed') return Promise.resolve()
      if (startPromise) return startPromise
      assert.ok(state === 'created' || state === 'stopped', `cannot start while ${state}`)
      startPromise = doStart().finally(() => {
        startPromise = undefined
      })
      return startPromise
    },

    /** Refuses new work, waits (bounded by stopTimeoutMs) for writes in flight, closes. Idempotent; never throws. */
    stop() {
      stopPromise ??= doStop().finally(() => {
        stopPromise = undefined
      })
      return stopPromise
    },

    /** Whether the store accepts mail, with a one-line reason. */
    healthcheck(): ArchiveHealth {
      if (state === 'open' && dbs) {
        const counters = readCounters(dbs)
        return { ok: true, detail: `open, ${counters.messages} messages, sequence ${counters.lastSequence}` }
      }
      if (state === 'failed') return { ok: false, detail: `refusing writes after a disk failure: ${failure}` }
      return { ok: false, detail: state }
    },

    /**
     * Archives one message: the raw bytes once (content-addressed), its metadata, this
     * delivery, a change-log entry, counters and the indexer's postings, in one transaction;
     * resolves only once that transaction is durable. Idempotent on the content: a message
     * already held only gains a delivery, and a delivery whose `deliveryKey` is already
     * recorded gains nothing (the earlier sequence is returned).
     * @throws ArchiveError MESSAGE_TOO_LARGE (over messageBytesMax), STORE_FULL (volume below freeBytesMin, archive at mapSizeBytes, disk full; retryable), STORE_UNAVAILABLE (not open, disk failure; retryable), STORE_CORRUPT (keys out of order)
     */
    ingest(request) {
      assertRequest(request)
      if (request.raw.byteLength > options.messageBytesMax) {
        return Promise.reject(
          new ArchiveError('MESSAGE_TOO_LARGE', `message of ${request.raw.byteLength} bytes is over the limit of ${options.messageBytesMax} bytes`, {
            fields: { sizeBytes: request.raw.byteLength, sizeBytesMax: options.messageBytesMax },
          }),
        )
      }
      try {
        requireWritable()
      } catch (error) {
        return Promise.reject(error)
      }
      return track(ingestOnce(sha256Hex(request.raw), request))
    },

    /** True when a message with this id is stored. @throws ArchiveError STORE_UNAVAILABLE when not open */
    has(id) {
      const databases = requireReadable()
      return isArchiveId(id) && databases.messages.doesExist(idKey(id))
    },

    /**
     * Metadata of a stored message with every delivery, oldest first; undefined when absent.
     * @throws ArchiveError STORE_UNAVAILABLE (not open), STORE_CORRUPT (undecodable record)
     */
    getMeta(id) {
      const databases = requireReadable()
      if (!isArchiveId(id)) return undefined
      const record = readRecord(databases, id)
      if (!record) return undefined
      return metaOf(id, record, deliveriesOf(databases, id))
    },

    /**
     * The original bytes of a stored message, byte-identical, checked against their SHA-256;
     * undefined when absent.
     * @throws ArchiveError STORE_UNAVAILABLE (not open), STORE_CORRUPT (missing parts, undecodable, hash mismatch)
     */
    async getRaw(id) {
      const databases = requireReadable()
      if (!isArchiveId(id)) return undefined
      const record = readRecord(databases, id)
      if (!record) return undefined
      return readRaw(databases, id, record)
    },

    /** The persistent counters (durable state) and the size of the LMDB files. @throws ArchiveError STORE_UNAVAILABLE when not open */
    stats(): StoreStats {
      const { messages, deliveries, rawBytes, storedBytes, lastSequence, flaggedMessages } = readCounters(requireReadable())
      return { messages, deliveries, rawBytes, storedBytes, fileBytes: fileBytes(), lastSequence, flaggedMessages }
    },

    /**
     * Change-log entries with a sequence above `afterSequence`, oldest first, at most `limit`
     * (≤ pageEntriesMax). Only durable entries are visible. Sequences only grow and have no
     * gaps (each is taken inside the transaction that writes it).
     * @throws ArchiveError STORE_UNAVAILABLE when not open
     */
    changes(afterSequence, limit) {
      assert.ok(Number.isSafeInteger(afterSequence) && afterSequence >= 0, 'afterSequence must be a non-negative integer')
      assert.ok(Number.isSafeInteger(limit) && limit > 0 && limit <= pageEntriesMax, `limit must be 1…${pageEntriesMax}`)
      const databases = requireReadable()
      const entries: ChangeEntry[] = []
      for (const { key, value } of databases.changes.getRange({ start: sequenceKey(afterSequence + 1), limit })) {
        const sequence = readSequence(key)
        let change: ChangeRecord
        try {
          change = decodeChange(value)
        } catch (error) {
          logger.error('change-log entry is undecodable', { sequence, error })
          throw new ArchiveError('STORE_CORRUPT', `change-log entry ${sequence} is undecodable`, { fields: { sequence }, cause: error })
        }
        entries.push({ sequence, kind: change.kind, id: hexOf(change.id), atMs: change.atMs, origin: change.origin })
      }
      return entries
    },

    /** Sequence of the last durable change-log entry (0 for an empty archive). @throws ArchiveError STORE_UNAVAILABLE when not open */
    lastSequence() {
      return readCounters(requireReadable()).lastSequence
    },

    /**
     * Ids of stored messages in id order, after `afterId` (exclusive; null to begin), at most
     * `limit` (≤ pageEntriesMax): for index rebuilds, backfill of a new peer, verification.
     * @throws ArchiveError STORE_UNAVAILABLE when not open
     */
    listIds,

    /**
     * Self-test: restores and hashes stored messages (all, or the first `messagesMax` in id
     * order) and, when it covered all of them, checks the counters against what it saw.
     * Yields to the event loop between pages. Corrupt messages are logged and listed.
     * @throws ArchiveError STORE_UNAVAILABLE when not open
     */
    async verify(verifyOptions = {}) {
      const messagesMax = verifyOptions.messagesMax ?? Number.POSITIVE_INFINITY
      const report: VerifyReport = { checked: 0, corruptIds: [], corrupt: 0, countersConsistent: null }
      const before = readCounters(requireReadable())
      let afterId: string | null = null
      let rawBytes = 0
      let rawBytesKnown = true
      let complete = false
      while (report.checked < messagesMax) {
        const ids = listIds(afterId, Math.min(256, messagesMax - report.checked))
        if (ids.length === 0) {
          complete = true
          break
        }
        for (const id of ids) {
          const databases = requireReadable()
          report.checked++
          try {
            const record = readRecord(databases, id)
            if (!record) {
              // Purged since it was listed.
              report.checked--
              continue
            }
            rawBytes += record.sizeBytes
            await readRaw(databases, id, record)
          } catch (error) {
            if (!(error instanceof ArchiveError) || error.code !== 'STORE_CORRUPT') throw error
            if (error.fields.reason === 'undecodable message record') rawBytesKnown = false
            report.corrupt++
            if (report.corruptIds.length < corruptIdsMax) report.corruptIds.push(id)
          }
        }
        afterId = ids[ids.length - 1]!
        await new Promise((resolve) => setImmediate(resolve))
      }
      const after = readCounters(requireReadable())
      // Only a pass over an archive that did not change meanwhile can judge the counters.
      if (complete && after.lastSequence === before.lastSequence) {
        report.countersConsistent = report.checked === after.messages && (!rawBytesKnown || rawBytes === after.rawBytes)
      }
      logger.info('archive verified', { checked: report.checked, corrupt: report.corrupt, countersConsistent: report.countersConsistent, corruptIds: report.corruptIds.slice(0, 10) })
      return report
    },

    /** What the store did since start: acknowledged ingests, LMDB commits, failed commits. */
    writeActivity() {
      return { ...activity }
    },

    /**
     * Purge primitive — the ONLY deletion path of the archive, for the retention module
     * (firmware/policy) alone: removes the message's blob, metadata, deliveries and the
     * indexer's postings, writes a `purge` change entry and adjusts the counters, in one
     * durable transaction.
     * @throws ArchiveError NOT_FOUND, STORE_UNAVAILABLE (not open, disk failure), STORE_FULL (disk full)
     */
    delete(id) {
      assert.ok(isArchiveId(id), 'delete needs an archive id')
      let databases: Databases
      try {
        databases = requireWritable()
      } catch (error) {
        return Promise.reject(error)
      }
      return track(withoutIndexerOnFailure(id, (indexing) => inTransaction(databases, () => purgeInTransaction(databases, id, indexing))))
    },

    /**
     * When the retention purge removed `id` (the purge's change-log sequence and time), or
     * undefined when it never did. A message archived again after its purge is held AND has
     * this record: check has() first. @throws ArchiveError STORE_UNAVAILABLE when not open
     */
    purgedAt(id): PurgeRecord | undefined {
      const databases = requireReadable()
      return isArchiveId(id) ? readPurgeRecord(databases.purged, idKey(id)) : undefined
    },

    /** This archive's random id (32 lower-case hex digits). @throws ArchiveError STORE_UNAVAILABLE when not open */
    storeId() {
      requireReadable()
      assert.ok(storeId !== undefined)
      return storeId
    },

    /**
     * A consistent, short-lived view of the id digest (DigestSnapshot in types.ts), opened
     * in steps that yield to the event loop: close it when done; it is released anyway after
     * digestSnapshotAgeMsMax and by stop().
     * @throws ArchiveError STORE_UNAVAILABLE (not open), DIGEST_SNAPSHOTS_BUSY (digestSnapshotsOpenMax open), DIGEST_UNAVAILABLE (the digest was set aside as damaged until the next start), DIGEST_SNAPSHOT_CLOSED (stop() while it opened), STORE_CORRUPT (an undecodable leaf)
     */
    async digestSnapshot() {
      const databases = requireReadable()
      if (snapshots.size >= digestSnapshotsOpenMax) {
        throw new ArchiveError('DIGEST_SNAPSHOTS_BUSY', `${snapshots.size} digest snapshots are open, the most allowed; close one or wait for it to expire`, {
          fields: { open: snapshots.size, openMax: digestSnapshotsOpenMax },
        })
      }
      assert.ok(storeId !== undefined)
      return openDigestSnapshot(databases, {
        storeId,
        clock,
        ageMsMax: digestSnapshotAgeMsMax,
        onOpen: (snapshot) => snapshots.add(snapshot),
        onRelease: (snapshot) => snapshots.delete(snapshot),
      })
    },
  }
}
