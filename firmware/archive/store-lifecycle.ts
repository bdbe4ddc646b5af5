import assert from 'node:assert/strict'
import { mkdir, open as openFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { open, type RootDatabase } from 'lmdb'
import { ArchiveError } from './errors.js'
import { databaseNames, formatName, layoutVersion, readSequence } from './layout.js'
import { emptyDigestRecord, ensureDigest } from './store-digest.js'
import { emptyPurgedRecord, ensurePurgeRecords, purgedStateKey } from './purge-records.js'
import { delay, errorCode, unavailable, type StoreContext } from './store-context.js'
import { entryCount, readCounters, type Databases } from './store-databases.js'
import { inTransaction } from './store-transactions.js'
import type { ArchiveHealth } from './types.js'

/**
 * The archive store's start, stop and health (store.ts's module comment has the design).
 * start() checks that the file is an LMDB environment before LMDB opens it, opens the
 * databases with the durability settings the store relies on, creates a new archive or
 * checks an existing one's format and counters, makes sure it has a store id, an up-to-date
 * id digest and purge records, and opens the indexer's databases. stop() closes digest
 * snapshots, waits (bounded) for writes in flight, and closes the environment.
 */

/** Page size of new environments, in bytes: the blob layout is tuned to it (layout.ts). */
export const pageSizeBytes = 4096
/** The store's own named databases, plus room for later ones. */
const storeDatabasesMax = 12
/** Bytes of randomness in a store id (128 bits, 32 hex digits). */
const storeIdBytes = 16
const storeIdPattern = /^[0-9a-f]{32}$/
/** LMDB's magic number and its offset in the first meta page (after lmdb-js's 24-byte page header). */
const lmdbMagic = 0xbeefc0de
const lmdbMagicOffsetBytes = 24
/** LMDB codes for a file that is not an LMDB environment of a version we can read. */
const notLmdbCodes = new Set<unknown>([-30793 /* MDB_INVALID */, -30794 /* MDB_VERSION_MISMATCH */])

/** The `format` record of `archive/state`. */
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

/**
 * Opens (or creates) the environment, checks its format and counters, opens the
 * indexer's databases. Idempotent while open.
 * @throws AssertionError (synchronously) while stopping
 * @throws ArchiveError STORE_UNAVAILABLE (cannot create or open), STORE_CORRUPT (not an archive, another format, counters that disagree with the contents)
 */
export function startStore(context: StoreContext): Promise<void> {
  if (context.state === 'open' || context.state === 'failed') return Promise.resolve()
  if (context.starting) return context.starting
  assert.ok(context.state === 'created' || context.state === 'stopped', `cannot start while ${context.state}`)
  context.starting = openStore(context).finally(() => {
    context.starting = undefined
  })
  return context.starting
}

/** Refuses new work, waits (bounded by stopTimeoutMs) for writes in flight, closes. Idempotent; never throws. */
export function stopStore(context: StoreContext): Promise<void> {
  context.stopping ??= closeStore(context).finally(() => {
    context.stopping = undefined
  })
  return context.stopping
}

/** Whether the store accepts mail, with a one-line reason. */
export function storeHealth(context: StoreContext): ArchiveHealth {
  if (context.readOnly) return { ok: false, detail: `read-only: ${context.readOnly.reason}` }
  if (context.state === 'open' && context.dbs) {
    try {
      const counters = readCounters(context.dbs)
      return { ok: true, detail: `open, ${counters.messages} messages, sequence ${counters.lastSequence}` }
    } catch (error) {
      // LMDB refuses even reads after a failed meta write (MDB_PANIC); health must still answer.
      return { ok: false, detail: `open, but its counters cannot be read: ${error instanceof Error ? error.message : String(error)}` }
    }
  }
  if (context.state === 'failed') return { ok: false, detail: `refusing writes after a disk failure: ${context.failure}` }
  return { ok: false, detail: context.state }
}

async function openStore(context: StoreContext): Promise<void> {
  const { path } = context.options
  context.state = 'starting'
  context.failure = null
  let databases: Databases | undefined
  try {
    try {
      await mkdir(path, { recursive: true })
    } catch (error) {
      throw unavailable(context, `cannot create the archive directory ${path}`, { errno: errorCode(error) }, error)
    }
    await checkEnvironmentFile(context)
    databases = openDatabases(context)
    await validate(context, databases)
    const opening = databases
    context.storeId = await ensureIdentity(context, opening)
    const write = (body: () => void): Promise<void> => inTransaction(context, opening, body)
    await ensureDigest(opening, { logger: context.logger, clock: context.clock, counters: readCounters(opening), write })
    await ensurePurgeRecords(opening, { logger: context.logger, clock: context.clock, write })
    // lmdb-js also calls this after a failed commit, without a transaction id.
    databases.root.on('aftercommit', (event: { txnId?: number }) => {
      if (event?.txnId !== undefined) context.activity.commits++
    })
    context.indexer?.open(databases.root)
    for (const hook of context.databaseHooks) hook.open(databases.root)
    context.dbs = databases
    context.space.forget()
    context.state = 'open'
    const counters = readCounters(databases)
    context.logger.info('archive store open', { path, messages: counters.messages, lastSequence: counters.lastSequence })
  } catch (error) {
    context.state = 'stopped'
    context.dbs = undefined
    if (databases) await databases.root.close().catch(() => undefined)
    if (error instanceof ArchiveError) throw error
    throw unavailable(context, `cannot start the archive at ${path}`, { errno: errorCode(error) }, error)
  }
}

/**
 * Closes the environment and opens it again, for a read-only store whose volume has room
 * again after a failed commit (store-read-only.ts says why). Reads and writes are refused
 * (STORE_UNAVAILABLE, retryable) for the few milliseconds it takes; stop() waits for it.
 * @throws ArchiveError as start() does; the store is then `stopped`, and the watcher tries again
 */
export function reopenStore(context: StoreContext): Promise<void> {
  if (context.starting) return context.starting
  assert.ok(context.state === 'open' || context.state === 'stopped', `cannot reopen while ${context.state}`)
  context.starting = (async () => {
    if (context.dbs) {
      context.state = 'starting'
      await closeEnvironment(context, context.dbs)
    }
    await openStore(context)
    context.logger.info('archive environment reopened')
  })().finally(() => {
    context.starting = undefined
  })
  return context.starting
}

async function closeStore(context: StoreContext): Promise<void> {
  if (context.starting) await context.starting.catch(() => undefined)
  clearTimeout(context.watch.timer)
  context.watch.timer = undefined
  context.readOnly = null
  if (!context.dbs) {
    if (context.state !== 'created') context.state = 'stopped'
    return
  }
  context.state = 'stopping'
  await closeEnvironment(context, context.dbs)
  context.state = 'stopped'
  context.logger.info('archive store stopped')
}

/** Closes digest snapshots, waits (bounded by stopTimeoutMs) for writes in flight, closes the environment. */
async function closeEnvironment(context: StoreContext, databases: Databases): Promise<void> {
  const { logger, clock } = context
  const { stopTimeoutMs } = context.options
  // Open snapshots hold read transactions, which must end before the environment closes.
  for (const snapshot of [...context.snapshots]) snapshot.close()
  const deadlineMs = clock.monotonicMs() + stopTimeoutMs
  const drain = delay(stopTimeoutMs)
  const drained = await Promise.race([Promise.allSettled([...context.operations]).then(() => 'drained' as const), drain.promise])
  drain.cancel()
  if (drained === 'timeout') logger.warn('stop timed out waiting for writes in flight', { operations: context.operations.size, stopTimeoutMs })
  const closing = delay(Math.max(0, deadlineMs - clock.monotonicMs()))
  const closed = await Promise.race([databases.root.close().then(() => 'closed' as const), closing.promise]).catch((error: unknown) => {
    logger.error('closing the archive failed', { error })
    return 'failed' as const
  })
  closing.cancel()
  if (closed === 'timeout') logger.error('closing the archive timed out; leaving it to process exit', { stopTimeoutMs })
  context.dbs = undefined
}

/**
 * LMDB trusts its file: opening a file that is not an LMDB environment can crash the
 * process (seen: SIGSEGV on a file of junk). So the meta page's magic number is checked first.
 */
async function checkEnvironmentFile(context: StoreContext): Promise<void> {
  const { path } = context.options
  let handle: FileHandle | undefined
  try {
    handle = await openFile(join(path, 'data.mdb'), 'r')
    const header = Buffer.alloc(lmdbMagicOffsetBytes + 4)
    const { bytesRead } = await handle.read(header, 0, header.length, 0)
    if (bytesRead === 0) return
    if (bytesRead < header.length || header.readUInt32LE(lmdbMagicOffsetBytes) !== lmdbMagic) {
      throw new ArchiveError('STORE_CORRUPT', `${path}/data.mdb is not an LMDB environment`, { fields: { path } })
    }
  } catch (error) {
    if (error instanceof ArchiveError) throw error
    if (errorCode(error) === 'ENOENT') return
    throw unavailable(context, `cannot read the archive at ${path}`, { errno: errorCode(error) }, error)
  } finally {
    await handle?.close()
  }
}

function openDatabases(context: StoreContext): Databases {
  const { path, mapSizeBytes } = context.options
  let root: RootDatabase
  try {
    root = open({
      path,
      mapSize: mapSizeBytes,
      pageSize: pageSizeBytes,
      maxDbs: storeDatabasesMax + (context.indexer?.databasesNeeded ?? 0) + context.databaseHooks.reduce((sum, hook) => sum + hook.databasesNeeded, 0),
      // See store.ts's module comment: a commit is visible only once synced, and a failed
      // sync rejects the transaction.
      overlappingSync: false,
      noSync: false,
      noMetaSync: false,
      useWritemap: false,
      // See store.ts's module comment: off, to avoid an unhandled rejection inside lmdb-js.
      eventTurnBatching: false,
    })
  } catch (error) {
    const code = errorCode(error)
    if (notLmdbCodes.has(code)) throw new ArchiveError('STORE_CORRUPT', `${path} does not hold an archive LMDB environment`, { fields: { path, errno: code }, cause: error })
    throw unavailable(context, `cannot open the archive at ${path}`, { errno: code }, error)
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

/**
 * Creates a new archive's records in an empty environment, or checks an existing archive's
 * format and that its counters agree with its contents.
 * @throws ArchiveError STORE_CORRUPT (data without a format record, another format, counters that disagree)
 */
async function validate(context: StoreContext, databases: Databases): Promise<void> {
  const { path } = context.options
  const format = databases.state.get('format') as FormatRecord | undefined
  if (format === undefined) {
    await createArchive(context, databases)
    return
  }
  if (format === null || typeof format !== 'object' || format.name !== formatName || format.version !== layoutVersion) {
    const actual = format && typeof format === 'object' ? `${String(format.name)} v${String(format.version)}` : String(format)
    throw new ArchiveError('STORE_CORRUPT', `archive format mismatch: expected ${formatName} v${layoutVersion}, got ${actual}`, {
      fields: { path, expected: `${formatName} v${layoutVersion}`, actual },
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
    throw new ArchiveError(
      'STORE_CORRUPT',
      `the archive's counters disagree with its contents (sequence ${counters.lastSequence} vs log ${lastSequence}, last blob ${lastBlobSequence}, messages ${counters.messages} vs ${entryCount(databases.messages)})`,
      {
        fields: { path, countersLastSequence: counters.lastSequence, lastSequence, lastBlobSequence },
      },
    )
  }
}

/**
 * Writes a new archive's `format`, `identity`, `digest` and `purged` records in one
 * transaction, refusing an environment that holds data without a format record.
 * @throws ArchiveError STORE_CORRUPT
 */
async function createArchive(context: StoreContext, databases: Databases): Promise<void> {
  const { path } = context.options
  const messages = entryCount(databases.messages)
  const changes = entryCount(databases.changes)
  if (messages > 0 || changes > 0) {
    throw new ArchiveError('STORE_CORRUPT', `the archive at ${path} holds data but no format record`, { fields: { path, messages, changes } })
  }
  const nowMs = context.clock.now()
  const record: FormatRecord = { name: formatName, version: layoutVersion, pageSizeBytes: databases.pageSizeBytes, createdAtMs: nowMs }
  const identity = newIdentity(context, nowMs)
  await databases.root.childTransaction(() => {
    databases.state.putSync('format', record)
    databases.state.putSync('identity', identity)
    databases.state.putSync('digest', emptyDigestRecord(nowMs))
    databases.state.putSync(purgedStateKey, emptyPurgedRecord(nowMs))
  })
  context.logger.info('created a new archive', { path, pageSizeBytes: databases.pageSizeBytes, storeId: identity.storeId })
}

function newIdentity(context: StoreContext, nowMs: number): IdentityRecord {
  const bytes = context.randomBytes(storeIdBytes)
  assert.ok(bytes.byteLength === storeIdBytes, `randomBytes gave ${bytes.byteLength} bytes, expected ${storeIdBytes}`)
  return { storeId: bytes.toString('hex'), createdAtMs: nowMs }
}

/**
 * The store id, made and written durably (before the store opens) when an archive created
 * by earlier firmware has none.
 * @throws ArchiveError STORE_CORRUPT (an identity record of another shape), STORE_UNAVAILABLE or STORE_FULL (the write)
 */
async function ensureIdentity(context: StoreContext, databases: Databases): Promise<string> {
  const stored = databases.state.get('identity') as IdentityRecord | undefined
  if (stored !== undefined) {
    if (stored === null || typeof stored !== 'object' || typeof stored.storeId !== 'string' || !storeIdPattern.test(stored.storeId)) {
      // Making a new id would make peers take this archive for another one: refuse instead.
      throw new ArchiveError('STORE_CORRUPT', `the archive's identity record is undecodable`, { fields: { path: context.options.path } })
    }
    return stored.storeId
  }
  const identity = newIdentity(context, context.clock.now())
  await inTransaction(context, databases, () => databases.state.putSync('identity', identity))
  context.logger.info('gave the archive a store id', { storeId: identity.storeId })
  return identity.storeId
}
