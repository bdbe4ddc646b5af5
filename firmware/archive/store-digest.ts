import assert from 'node:assert/strict'
import type { Database, RootDatabase, Transaction } from 'lmdb'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { ArchiveError } from './errors.js'
import { decodeMessageRecord } from './records.js'
import { digestBucketKey } from './layout.js'
import { bucketRange, checkIdsCallable, digestBucketCount, digestHashBytes, type DigestEntry, type DigestNode } from './digest-nodes.js'
import { addToLeaves, createDigestLeaves, createDigestTree, encodeLeafValue, setLeafValue, updatedLeafValue, type DigestLevel, type DigestTree } from './digest-tree.js'
import type { DigestSnapshot } from './types.js'

/**
 * The store's side of the id digest (id-digest.ts has the design, digest-tree.ts the tree): the
 * update in each message's transaction, the build at start, and snapshots. Keys and the
 * `digest` state record are described in layout.ts.
 *
 * Snapshots hold an lmdb-js read transaction (`useReadTransaction`, reads with
 * `{ transaction }`), checked to see neither later commits nor the shared read transaction's
 * renewals, on Node and on Bun. At creation the leaves are copied into memory and the tree
 * above them computed, so nodes and children cost no LMDB reads; the transaction is kept for
 * `idsInBucket`, which must list the ids of the same point in time. Copying only the leaves
 * would not do: a bucket's ids read later could include ids ingested after the leaves were
 * read, and the peer would be told of differences that are not. Holding a read transaction
 * keeps LMDB from reusing pages freed after it began (the file grows by what is written
 * meanwhile), so a snapshot has a maximum age and the store a bound on open ones.
 *
 * Reading 65,536 leaves through lmdb-js costs 1.5–14 µs a leaf here (throwaway scripts on a
 * digest of 1,000,000 ids under Bun, this 2-core machine at a load average of 13–17 from
 * other work: 240–920 ms in all; the tree above them 4–200 ms), so a snapshot reads them in
 * steps of snapshotLeavesPerStep buckets, yielding to the event loop between steps, all in
 * its one transaction: mail keeps being acknowledged while a snapshot opens. start() reads
 * them once, in one go, to check the digest's totals before the store opens.
 *
 * A leaf found damaged while the store runs (undecodable, or a removal it cannot hold) does
 * not refuse the ingest or purge: the leaf and the `digest` record are deleted in that
 * transaction, snapshots are refused (DIGEST_UNAVAILABLE), and the next start rebuilds the
 * digest. Mail is never refused over derived data.
 */

/** Version of the digest kept in `archive/digest`; a `digest` record of another version makes start() rebuild it. */
export const digestVersion = 1
/** Messages read per step of a digest build, between yields to the event loop. */
const buildPageEntries = 4096
/** Buckets a snapshot reads per step, between yields to the event loop (30–110 ms a step here, loaded). */
export const snapshotLeavesPerStep = 8192

/** The `digest` record in `archive/state`: the digest's last full build. */
export interface DigestRecord {
  version: number
  builtAtMs: number
  /** Messages the build counted. */
  messages: number
}

/** The databases the digest reads and writes. */
export interface DigestDatabases {
  root: RootDatabase
  /** Values: encodeMessageRecord arrays. */
  messages: Database<unknown, Buffer>
  digest: Database<Buffer, Buffer>
  state: Database<unknown, string>
}

/**
 * In a message's write transaction: adds (`sign` 1) or removes (−1) one id in its leaf, one
 * get and one put (or a delete when the bucket empties). A damaged leaf is set aside instead
 * (see the module comment).
 * @returns the damage found, for the store to log; null normally
 */
export function updateDigestLeaf(databases: Pick<DigestDatabases, 'digest' | 'state'>, id: Buffer, sizeBytes: number, sign: 1 | -1): ArchiveError | null {
  const key = id.subarray(0, 2)
  let value: Buffer | null
  try {
    value = updatedLeafValue(databases.digest.get(key), id, sizeBytes, sign)
  } catch (error) {
    if (!(error instanceof ArchiveError)) throw error
    databases.digest.removeSync(key)
    databases.state.removeSync('digest')
    return error
  }
  if (value === null) databases.digest.removeSync(key)
  else databases.digest.putSync(key, value)
  return null
}

/**
 * Reads the stored leaves of buckets `start` to `end` − 1 into `leaves`, in the given read
 * transaction or the current one.
 * @throws ArchiveError STORE_CORRUPT on a key or value that is not a leaf
 */
export function readDigestLeaves(digest: Database<Buffer, Buffer>, leaves: DigestLevel, range: { transaction?: Transaction; start?: number; end?: number } = {}): DigestLevel {
  const start = range.start ?? 0
  const end = range.end ?? digestBucketCount
  const bounds = end < digestBucketCount ? { start: digestBucketKey(start), end: digestBucketKey(end) } : { start: digestBucketKey(start) }
  for (const { key, value } of digest.getRange(range.transaction ? { ...bounds, transaction: range.transaction } : bounds)) {
    if (key.byteLength !== 2) throw new ArchiveError('STORE_CORRUPT', `archive/digest holds a key of ${key.byteLength} bytes`, { fields: { keyBytes: key.byteLength } })
    setLeafValue(leaves, key.readUInt16BE(0), value)
  }
  return leaves
}

/** Count and bytes of all leaves together. */
function leafTotals(leaves: DigestLevel): { count: number; bytes: number } {
  let count = 0
  let bytes = 0
  for (let bucket = 0; bucket < digestBucketCount; bucket++) {
    count += leaves.counts[bucket]!
    bytes += leaves.bytes[bucket]!
  }
  return { count, bytes }
}

/**
 * One pass over `archive/messages`, yielding to the event loop every buildPageEntries
 * messages: the leaves of every stored id. An undecodable message record counts with size 0
 * and is reported through `undecodable` (its bytes stay where they are; verify() reports it).
 */
async function scanMessages(messages: Database<unknown, Buffer>, undecodable: (id: string, error: unknown) => void): Promise<{ leaves: DigestLevel; messages: number }> {
  const leaves = createDigestLeaves()
  let count = 0
  let after: Buffer | undefined
  for (let read = buildPageEntries; read === buildPageEntries; ) {
    read = 0
    for (const { key, value } of messages.getRange(after === undefined ? { limit: buildPageEntries } : { start: after, exclusiveStart: true, limit: buildPageEntries })) {
      let sizeBytes = 0
      try {
        sizeBytes = decodeMessageRecord(value).sizeBytes
      } catch (error) {
        undecodable(key.toString('hex'), error)
      }
      addToLeaves(leaves, key, sizeBytes)
      // Copied: lmdb-js may reuse the key's buffer for the next entry.
      after = Buffer.from(key)
      read++
    }
    count += read
    await new Promise((resolve) => setImmediate(resolve))
  }
  return { leaves, messages: count }
}

/** In a write transaction: replaces the stored leaves with `leaves` and records the build. */
function writeDigest(databases: DigestDatabases, leaves: DigestLevel, record: DigestRecord): void {
  for (const key of [...databases.digest.getKeys()].map((stored) => Buffer.from(stored))) {
    if (key.byteLength !== 2 || leaves.counts[key.readUInt16BE(0)] === 0) databases.digest.removeSync(key)
  }
  for (let bucket = 0; bucket < digestBucketCount; bucket++) {
    const count = leaves.counts[bucket]!
    if (count === 0) continue
    const hash = leaves.hashes.subarray(bucket * digestHashBytes, (bucket + 1) * digestHashBytes)
    databases.digest.putSync(digestBucketKey(bucket), encodeLeafValue({ count, bytes: leaves.bytes[bucket]!, hash }))
  }
  databases.state.putSync('digest', record)
}

/** What ensureDigest needs from the store. */
export interface EnsureDigestContext {
  logger: Logger
  clock: Clock
  /** The store's counters: the digest's totals must equal them. */
  counters: { messages: number; rawBytes: number }
  /** Runs `body` in one durable write transaction (the store's inTransaction). */
  write(body: () => void): Promise<void>
}

/** Why the stored digest cannot be trusted; null when it can. */
function staleReason(databases: DigestDatabases, counters: EnsureDigestContext['counters']): string | null {
  const record = databases.state.get('digest') as DigestRecord | undefined
  if (record === undefined) return 'the archive has no id digest yet'
  if (record === null || typeof record !== 'object' || record.version !== digestVersion)
    return `the id digest has another version (${String((record as DigestRecord | null)?.version)}, expected ${digestVersion})`
  let totals: { count: number; bytes: number }
  try {
    totals = leafTotals(readDigestLeaves(databases.digest, createDigestLeaves()))
  } catch (error) {
    return `the id digest is damaged: ${(error as Error).message}`
  }
  if (totals.count !== counters.messages || totals.bytes !== counters.rawBytes) {
    return `the id digest holds ${totals.count} ids and ${totals.bytes} bytes, the counters ${counters.messages} and ${counters.rawBytes} (written by firmware without the digest?)`
  }
  return null
}

/**
 * At start, before the store opens: keeps the digest when its `digest` record has this
 * version and its totals equal the counters; otherwise rebuilds it in one pass over the
 * messages and writes every leaf and the record in one transaction, so a build cut short
 * leaves no record and is done again at the next start.
 * @throws ArchiveError from the write (STORE_UNAVAILABLE, STORE_FULL)
 */
export async function ensureDigest(databases: DigestDatabases, context: EnsureDigestContext): Promise<void> {
  const reason = staleReason(databases, context.counters)
  if (reason === null) return
  context.logger.warn('building the id digest', { reason })
  const startedMs = context.clock.monotonicMs()
  const scanned = await scanMessages(databases.messages, (id, error) => context.logger.error('a message record is undecodable; its id enters the digest with size 0', { id, error }))
  await context.write(() => writeDigest(databases, scanned.leaves, { version: digestVersion, builtAtMs: context.clock.now(), messages: scanned.messages }))
  context.logger.info('id digest built', { messages: scanned.messages, durationMs: Math.round(context.clock.monotonicMs() - startedMs) })
}

/** The `digest` record of a new, empty archive, written with its format record. */
export function emptyDigestRecord(nowMs: number): DigestRecord {
  return { version: digestVersion, builtAtMs: nowMs, messages: 0 }
}

export interface DigestSnapshotOptions {
  storeId: string
  clock: Clock
  /** Maximum age, in ms: past it the read transaction is released. */
  ageMsMax: number
  /** Called at once with the snapshot being opened, so that stop() can close it while it opens. */
  onOpen(snapshot: DigestSnapshot): void
  /** Called once when the snapshot is released (closed, expired, failed to open). */
  onRelease(snapshot: DigestSnapshot): void
}

function closedError(reason: 'closed' | 'expired', ageMsMax: number): ArchiveError {
  return new ArchiveError('DIGEST_SNAPSHOT_CLOSED', `the digest snapshot is ${reason === 'closed' ? 'closed' : `older than its maximum age of ${ageMsMax} ms`}; take a new one`, {
    fields: { reason, ageMsMax },
  })
}

/**
 * In a snapshot's read transaction: the counters' last sequence, once the `digest` record
 * shows the digest is whole.
 * @throws ArchiveError DIGEST_UNAVAILABLE (the digest was set aside as damaged)
 */
function readSnapshotSequence(state: DigestDatabases['state'], transaction: Transaction): number {
  if (state.get('digest', { transaction }) === undefined) {
    throw new ArchiveError('DIGEST_UNAVAILABLE', 'the id digest was found damaged and is rebuilt at the next start of the store', { fields: {} })
  }
  const counters = state.get('counters', { transaction }) as { lastSequence: number } | undefined
  return counters?.lastSequence ?? 0
}

/**
 * Copies every leaf in the read transaction, snapshotLeavesPerStep buckets a step, yielding
 * to the event loop between steps and calling `stillOpen` after each (it throws to stop).
 * @throws ArchiveError STORE_CORRUPT (an undecodable leaf); what `stillOpen` throws
 */
async function readLeavesInSteps(digest: Database<Buffer, Buffer>, transaction: Transaction, stillOpen: () => void): Promise<DigestLevel> {
  const leaves = createDigestLeaves()
  for (let start = 0; start < digestBucketCount; start += snapshotLeavesPerStep) {
    readDigestLeaves(digest, leaves, { transaction, start, end: start + snapshotLeavesPerStep })
    await new Promise((resolve) => setImmediate(resolve))
    stillOpen()
  }
  return leaves
}

/**
 * In a snapshot's read transaction: the ids under `prefixHex` with their raw sizes, checked
 * against the count the snapshot's `node` holds.
 * @throws ArchiveError DIGEST_INVALID (too many ids for one answer), STORE_CORRUPT (an undecodable record, a count that disagrees)
 */
function idsAt(messages: DigestDatabases['messages'], transaction: Transaction, prefixHex: string, node: DigestNode): DigestEntry[] {
  checkIdsCallable(prefixHex, node.count)
  const { start, end } = bucketRange(prefixHex)
  const range = end < digestBucketCount ? { start: digestBucketKey(start), end: digestBucketKey(end), transaction } : { start: digestBucketKey(start), transaction }
  const entries: DigestEntry[] = []
  for (const { key, value } of messages.getRange(range)) {
    const id = key.toString('hex')
    let sizeBytes: number
    try {
      sizeBytes = decodeMessageRecord(value).sizeBytes
    } catch (error) {
      throw new ArchiveError('STORE_CORRUPT', `message ${id} is corrupt: undecodable message record`, { fields: { id, reason: 'undecodable message record' }, cause: error })
    }
    entries.push({ id, sizeBytes })
  }
  if (entries.length !== node.count) {
    throw new ArchiveError('STORE_CORRUPT', `the id digest counts ${node.count} ids under '${prefixHex}', the archive holds ${entries.length}`, {
      fields: { prefix: prefixHex, digestCount: node.count, messages: entries.length },
    })
  }
  return entries
}

/**
 * Opens a snapshot: one read transaction; the `digest` record and the counters' last
 * sequence read in it; the leaves copied in steps (yielding between them) and the tree
 * computed from them.
 * @throws ArchiveError DIGEST_UNAVAILABLE (the digest was set aside as damaged), STORE_CORRUPT (an undecodable leaf), DIGEST_SNAPSHOT_CLOSED (closed while opening, e.g. by stop())
 */
export async function openDigestSnapshot(databases: DigestDatabases, options: DigestSnapshotOptions): Promise<DigestSnapshot> {
  const transaction = databases.root.useReadTransaction()
  const openedAtMs = options.clock.monotonicMs()
  let released: 'closed' | 'expired' | null = null
  let tree: DigestTree | undefined
  let lastSequence = 0
  const release = (why: 'closed' | 'expired'): void => {
    if (released) return
    released = why
    clearTimeout(timer)
    transaction.done()
    options.onRelease(snapshot)
  }
  const timer = setTimeout(() => release('expired'), options.ageMsMax)
  timer.unref()
  /** The tree, while the snapshot may still be read. */
  const usable = (): DigestTree => {
    if (!released && options.clock.monotonicMs() - openedAtMs > options.ageMsMax) release('expired')
    if (released) throw closedError(released, options.ageMsMax)
    assert.ok(tree, 'a snapshot is read only once it is open')
    return tree
  }

  const snapshot: DigestSnapshot = {
    storeId: options.storeId,
    get lastSequence() {
      return lastSequence
    },
    node(prefixHex) {
      return usable().node(prefixHex)
    },
    children(prefixHex) {
      return usable().children(prefixHex)
    },
    idsInBucket(prefixHex) {
      return idsAt(databases.messages, transaction, prefixHex, usable().node(prefixHex))
    },
    close() {
      release('closed')
    },
  }
  options.onOpen(snapshot)

  /** Stops the opening when the snapshot was closed meanwhile (by stop()) or expired. */
  const stillOpen = (): void => {
    if (released) throw closedError(released, options.ageMsMax)
  }
  try {
    lastSequence = readSnapshotSequence(databases.state, transaction)
    tree = createDigestTree(await readLeavesInSteps(databases.digest, transaction, stillOpen))
  } catch (error) {
    release('closed')
    throw error
  }
  return snapshot
}
