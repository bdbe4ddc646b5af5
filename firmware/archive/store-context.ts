import assert from 'node:assert/strict'
import { createHash, randomBytes as cryptoRandomBytes } from 'node:crypto'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { ArchiveError } from './errors.js'
import type { Databases } from './store-databases.js'
import { createSpaceGuard, type SpaceGuard } from './store-space.js'
import type { ArchiveDatabaseHook, ArchiveIndexer, DigestSnapshot, ReadOnlyStatus, WriteActivity } from './types.js'

/**
 * What every part of one archive store shares (store.ts is the façade and has the design):
 * its options with their defaults, its state (created → starting → open, or failed after a
 * disk failure → stopping → stopped), whether it is read-only because its volume is full
 * (store-read-only.ts), the databases while open, what it tracks (writes in flight, digest
 * snapshots, write activity), and the guards every operation passes through
 * (requireWritable, requireReadable, track). The store-*.ts units are plain functions of
 * this context, so each can be read, and driven, without the others.
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
  /** The search index's hook, called in each message's transaction (see ArchiveIndexer). */
  indexer?: ArchiveIndexer
  /** Other owners of databases in the environment (retention and the audit log), opened after the indexer's. Default none. */
  databaseHooks?: readonly ArchiveDatabaseHook[]
  /** How long a free-space reading is trusted, in ms. Default 1000. */
  freeSpaceCacheMs?: number
  /** Bound on stop(): how long it waits for writes in flight and for the close, in ms. Default 10000. */
  stopTimeoutMs?: number
  /** Maximum age of a digest snapshot, in ms: past it its read transaction is released. Default 60000. */
  digestSnapshotAgeMsMax?: number
  /** While read-only, how often the volume's free space is read to return to read-write, in ms. Default 10000. */
  readOnlyRecheckMs?: number
  /**
   * Free space above `freeBytesMin` the volume needs before a read-only store takes writes
   * again, in bytes (hysteresis, so that a volume hovering at the guard does not flap).
   * Default 64 MiB.
   */
  readOnlyMarginBytes?: number
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
/** Default for ArchiveStoreOptions.readOnlyRecheckMs, in ms: one statfs every 10 s costs nothing, and mail waits at most that long after space returns. */
export const readOnlyRecheckMsDefault = 10_000
/** Default for ArchiveStoreOptions.readOnlyMarginBytes: a quarter of the default freeBytesMin (256 MiB). */
export const readOnlyMarginBytesDefault = 64 * 1024 * 1024

export type StoreState = 'created' | 'starting' | 'open' | 'failed' | 'stopping' | 'stopped'

/** The options with their defaults applied (the indexer and the database hooks are on the context). */
export type ResolvedStoreOptions = Readonly<Required<Omit<ArchiveStoreOptions, 'indexer' | 'databaseHooks'>>>

/** One store's shared state; see the module comment. */
export interface StoreContext {
  readonly options: ResolvedStoreOptions
  /** The store's logger (namespace `archive`). */
  readonly logger: Logger
  readonly clock: Clock
  readonly indexer: ArchiveIndexer | undefined
  readonly databaseHooks: readonly ArchiveDatabaseHook[]
  readonly randomBytes: (size: number) => Buffer
  readonly space: SpaceGuard
  state: StoreState
  /** Why the store refuses writes, while `failed`. */
  failure: string | null
  /** Set while the store is read-only because its volume is full (store-read-only.ts); reads go on. */
  readOnly: ReadOnlyStatus | null
  /**
   * The read-only watcher (store-read-only.ts): its timer, the check in progress, when the
   * volume was last read for it (monotonic ms), and `reopen`, which it sets at start for
   * enterReadOnly to ask for the environment to be reopened at once.
   */
  readonly watch: { timer: NodeJS.Timeout | undefined; checking: Promise<ReadOnlyStatus | null> | undefined; checkedAtMs: number; reopen?: () => void }
  /** The open databases; undefined unless starting succeeded and stop() has not closed them. */
  dbs: Databases | undefined
  storeId: string | undefined
  /** The start() and stop() in progress, which a second call joins. */
  starting: Promise<void> | undefined
  stopping: Promise<void> | undefined
  /** Digest snapshots open now; stop() closes them. */
  readonly snapshots: Set<DigestSnapshot>
  readonly activity: WriteActivity
  /** Failed commits already counted: lmdb-js rejects every transaction of one failed commit. */
  readonly countedFailures: WeakSet<object>
  /** Ingests and purges in flight, which stop() waits for. */
  readonly operations: Set<Promise<unknown>>
}

/**
 * Checks the options and applies their defaults. Pure: opens nothing.
 * @throws AssertionError on invalid options (a programmer error)
 */
export function createStoreContext(deps: ArchiveStoreDeps, options: ArchiveStoreOptions): StoreContext {
  assert.ok(typeof options.path === 'string' && options.path.length > 0, 'options.path is required')
  assert.ok(Number.isSafeInteger(options.mapSizeBytes) && options.mapSizeBytes >= 1024 * 1024, 'options.mapSizeBytes must be at least 1 MiB')
  assert.ok(Number.isSafeInteger(options.freeBytesMin) && options.freeBytesMin >= 0, 'options.freeBytesMin must be a non-negative integer')
  assert.ok(Number.isSafeInteger(options.messageBytesMax) && options.messageBytesMax > 0, 'options.messageBytesMax must be a positive integer')
  const resolved: ResolvedStoreOptions = {
    path: options.path,
    mapSizeBytes: options.mapSizeBytes,
    freeBytesMin: options.freeBytesMin,
    messageBytesMax: options.messageBytesMax,
    freeSpaceCacheMs: options.freeSpaceCacheMs ?? freeSpaceCacheMsDefault,
    stopTimeoutMs: options.stopTimeoutMs ?? stopTimeoutMsDefault,
    digestSnapshotAgeMsMax: options.digestSnapshotAgeMsMax ?? digestSnapshotAgeMsMaxDefault,
    readOnlyRecheckMs: options.readOnlyRecheckMs ?? readOnlyRecheckMsDefault,
    readOnlyMarginBytes: options.readOnlyMarginBytes ?? readOnlyMarginBytesDefault,
  }
  assert.ok(Number.isSafeInteger(resolved.digestSnapshotAgeMsMax) && resolved.digestSnapshotAgeMsMax > 0, 'options.digestSnapshotAgeMsMax must be a positive integer')
  assert.ok(Number.isSafeInteger(resolved.readOnlyRecheckMs) && resolved.readOnlyRecheckMs > 0, 'options.readOnlyRecheckMs must be a positive integer')
  assert.ok(Number.isSafeInteger(resolved.readOnlyMarginBytes) && resolved.readOnlyMarginBytes >= 0, 'options.readOnlyMarginBytes must be a non-negative integer')
  const hookNames = (options.databaseHooks ?? []).map((hook) => hook.name)
  assert.ok(hookNames.every((name) => name.length > 0) && new Set(hookNames).size === hookNames.length, 'options.databaseHooks need unique, non-empty names')
  const logger = deps.logger.child('archive')
  return {
    options: resolved,
    logger,
    clock: deps.clock,
    indexer: options.indexer,
    databaseHooks: [...(options.databaseHooks ?? [])],
    randomBytes: deps.randomBytes ?? cryptoRandomBytes,
    space: createSpaceGuard({ logger, clock: deps.clock, volume: deps.volume }, resolved),
    state: 'created',
    failure: null,
    readOnly: null,
    watch: { timer: undefined, checking: undefined, checkedAtMs: Number.NEGATIVE_INFINITY },
    dbs: undefined,
    storeId: undefined,
    starting: undefined,
    stopping: undefined,
    snapshots: new Set(),
    activity: { ingests: 0, commits: 0, failedCommits: 0 },
    countedFailures: new WeakSet(),
    operations: new Set(),
  }
}

// ---- guards -----------------------------------------------------------------------------

/** STORE_UNAVAILABLE, with the store's path and state among its fields. */
export function unavailable(context: StoreContext, message: string, fields: Record<string, unknown> = {}, cause?: unknown): ArchiveError {
  return new ArchiveError('STORE_UNAVAILABLE', message, { fields: { path: context.options.path, state: context.state, ...fields }, cause })
}

/**
 * The databases, for a write.
 * @param accepted true for an operation accepted before stop() began: it may finish while stopping.
 * @throws ArchiveError STORE_FULL while read-only; STORE_UNAVAILABLE when not open, or failed
 */
export function requireWritable(context: StoreContext, accepted = false): Databases {
  if (context.readOnly) {
    const { cause, freeBytes, resumeAtFreeBytes } = context.readOnly
    throw new ArchiveError('STORE_FULL', `the archive is read-only: ${context.readOnly.reason}`, { fields: { path: context.options.path, readOnly: cause, freeBytes, resumeAtFreeBytes } })
  }
  if ((context.state === 'open' || (accepted && context.state === 'stopping')) && context.dbs) return context.dbs
  if (context.state === 'failed') throw unavailable(context, `the store refuses writes after a disk failure (${context.failure}); restart it after checking the disk`)
  throw unavailable(context, `the store is not open (${context.state})`)
}

/**
 * The databases, for a read: reads go on after a disk failure and while stopping.
 * @throws ArchiveError STORE_UNAVAILABLE when not open
 */
export function requireReadable(context: StoreContext): Databases {
  if ((context.state === 'open' || context.state === 'failed' || context.state === 'stopping') && context.dbs) return context.dbs
  throw unavailable(context, `the store is not open (${context.state})`)
}

/** Moves an open store to `failed`: it refuses writes until restarted (store.ts's module comment says why). */
export function enterFailed(context: StoreContext, reason: string): void {
  if (context.state !== 'open') return
  // A disk failure outranks a full volume: free space no longer brings writes back.
  context.readOnly = null
  context.state = 'failed'
  context.failure = reason
  context.logger.error('archive store refuses writes until restarted', { reason })
}

/** Free bytes the volume needs before a read-only store takes writes again. */
export function resumeAtFreeBytes(context: StoreContext): number {
  return context.options.freeBytesMin + context.options.readOnlyMarginBytes
}

/**
 * Makes an open store read-only because its volume is full (store-read-only.ts has the
 * design): writes are refused with STORE_FULL, reads go on, and the watcher returns it to
 * read-write once the volume has room. A store already read-only keeps its first reason,
 * and is reopened before writing again if either entry asked for it.
 */
export function enterReadOnly(context: StoreContext, entry: Pick<ReadOnlyStatus, 'cause' | 'reason' | 'freeBytes' | 'reopen'>): void {
  if (context.state !== 'open') return
  if (context.readOnly) {
    context.readOnly.reopen ||= entry.reopen
  } else {
    context.readOnly = { ...entry, resumeAtFreeBytes: resumeAtFreeBytes(context), sinceMs: context.clock.now() }
    context.watch.checkedAtMs = context.clock.monotonicMs()
    context.logger.warn('archive store is read-only: the data volume is full', { ...context.readOnly })
  }
  if (entry.reopen) context.watch.reopen?.()
}

/** Counts a write among those stop() waits for, until it settles. */
export function track<T>(context: StoreContext, operation: Promise<T>): Promise<T> {
  context.operations.add(operation)
  const forget = (): void => {
    context.operations.delete(operation)
  }
  operation.then(forget, forget)
  return operation
}

// ---- small helpers ----------------------------------------------------------------------

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

export function hexOf(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

/** The `code` of an error (an errno name or number, an LMDB code), if it has one. */
export function errorCode(error: unknown): unknown {
  return error !== null && typeof error === 'object' ? (error as { code?: unknown }).code : undefined
}

/** A timer that resolves after `ms` and does not keep the process alive. */
export function delay(ms: number): { promise: Promise<'timeout'>; cancel: () => void } {
  let timer: NodeJS.Timeout | undefined
  const promise = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms)
    timer.unref()
  })
  return { promise, cancel: () => clearTimeout(timer) }
}
