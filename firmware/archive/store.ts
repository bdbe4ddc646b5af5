import type { ArchiveStore } from './types.js'
import { createStoreContext, type ArchiveStoreDeps, type ArchiveStoreOptions } from './store-context.js'
import { ingest } from './store-ingest.js'
import { purge } from './store-purge.js'
import { changes, digestSnapshot, getMeta, getRaw, hasMessage, lastSequence, listIds, purgedAt, stats, storeId, verify } from './store-reads.js'
import { storeHealth } from './store-lifecycle.js'
import { recheckReadOnly, startWatchedStore, stopWatchedStore } from './store-read-only.js'

/**
 * The archive store: every message the appliance is given, in one LMDB environment.
 *
 * This file is the façade and the design; the code is in units named for what they do, each
 * a set of plain functions of one shared StoreContext (store-context.ts: options, state,
 * guards), so that each can be read alone:
 *   store-databases.ts     the LMDB handles and the counters record
 *   store-space.ts         the free-space and map-size check before each ingest
 *   store-transactions.ts  one message's durable transaction, commit failures, the change
 *                          log, the indexer hook and its retry, the digest leaf
 *   store-ingest.ts        ingest: compress, then blob, record, delivery, counters
 *   store-purge.ts         delete: the purge primitive
 *   store-reads.ts         metadata, raw bytes, stats, change log, ids, snapshots, verify
 *   store-lifecycle.ts     start (file check, open, create or validate, identity, digest),
 *                          stop, reopen, healthcheck
 *   store-read-only.ts     read-only mode while the data volume is full: entering, the
 *                          watcher, returning to read-write (reopening after a failed commit)
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
 * Failures. A commit that fails rejects its ingests. When the volume is full (an errno that
 * says so, or any errno — ext4 gives EIO — with the volume below `freeBytesMin +
 * readOnlyMarginBytes`) they get STORE_FULL and the store turns read-only until the volume
 * has room again, then reopens the environment and takes writes, without a restart
 * (store-read-only.ts has the design and why that is safe with LMDB). Any other failed
 * commit (EIO from a sync with room on the volume) rejects with STORE_UNAVAILABLE and the
 * store then refuses every write until restarted, failing its healthcheck: a disk that fails
 * syncs with room to spare is failing, and after a failed fsync the kernel may have dropped
 * the dirty pages, so a later successful sync would prove nothing about them (the
 * "fsyncgate" lesson); a technician looks at the disk before it is trusted again. Reads go
 * on. Ordinary space shortage is caught before writing: ingest is refused with STORE_FULL
 * when the volume's free space (read at most once per `freeSpaceCacheMs`) would fall below
 * `freeBytesMin`, or the environment would pass `mapSizeBytes`; a reading below
 * `freeBytesMin` makes the store read-only, as does starting on such a volume.
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

export {
  digestSnapshotAgeMsMaxDefault,
  freeSpaceCacheMsDefault,
  readOnlyMarginBytesDefault,
  readOnlyRecheckMsDefault,
  stopTimeoutMsDefault,
  type ArchiveStoreDeps,
  type ArchiveStoreOptions,
} from './store-context.js'
export { corruptIdsMax, digestSnapshotsOpenMax, pageEntriesMax } from './store-reads.js'
export { pageSizeBytes } from './store-lifecycle.js'

/**
 * Creates the archive store. Pure: opens nothing until start(). Each method is one
 * function of the unit named above; its doc there has its units and the errors it throws.
 *
 * @throws AssertionError on invalid options (a programmer error)
 */
export function createArchiveStore(deps: ArchiveStoreDeps, options: ArchiveStoreOptions): ArchiveStore {
  const context = createStoreContext(deps, options)
  return {
    start: () => startWatchedStore(context),
    stop: () => stopWatchedStore(context),
    healthcheck: () => storeHealth(context),
    readOnly: () => (context.readOnly ? { ...context.readOnly } : null),
    recheckSpace: (force) => recheckReadOnly(context, force ?? true).then((status) => (status ? { ...status } : null)),
    ingest: (request) => ingest(context, request),
    has: (id) => hasMessage(context, id),
    getMeta: (id) => getMeta(context, id),
    getRaw: (id) => getRaw(context, id),
    stats: () => stats(context),
    changes: (afterSequence, limit) => changes(context, afterSequence, limit),
    lastSequence: () => lastSequence(context),
    listIds: (afterId, limit) => listIds(context, afterId, limit),
    verify: (verifyOptions) => verify(context, verifyOptions),
    writeActivity: () => ({ ...context.activity }),
    /** The purge primitive, for the retention module alone (store-purge.ts). */
    delete: (id) => purge(context, id),
    purgedAt: (id) => purgedAt(context, id),
    storeId: () => storeId(context),
    digestSnapshot: () => digestSnapshot(context),
  }
}
