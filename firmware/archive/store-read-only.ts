import { enterReadOnly, resumeAtFreeBytes, type StoreContext } from './store-context.js'
import { reopenStore, startStore, stopStore } from './store-lifecycle.js'
import type { ReadOnlyStatus } from './types.js'

/**
 * Read-only mode: what the store does when its data volume is full, so that a full disk
 * never makes the archive unreachable nor needs a restart.
 *
 * Entering. The store becomes read-only (context.readOnly; enterReadOnly in
 * store-context.ts) when
 *   - it starts on a volume whose free space is below `freeBytesMin`;
 *   - a reading before an ingest is below `freeBytesMin` (store-space.ts; one message that
 *     merely does not fit is refused alone, the store stays writable);
 *   - a commit fails with the volume full: an errno that says so (ENOSPC, EDQUOT,
 *     MDB_MAP_FULL), or any errno while the volume has less than `freeBytesMin +
 *     readOnlyMarginBytes` free (store-transactions.ts). The errno is not enough: on ext4 a
 *     full volume fails the commit's fdatasync with EIO (delayed allocation; measured on a
 *     32 MiB loop-mounted ext4, every failing commit gave errno 5). The threshold is the
 *     level at which writes would resume, so a failure called "full" by mistake costs
 *     nothing: the store refuses writes until there is room either way. A commit that fails
 *     with more room than that stays a disk failure (`failed` until restart; store.ts says why).
 *
 * While read-only, writes (ingest, purge) are refused with STORE_FULL (retryable: SMTP
 * answers 452 4.3.1, a mirror peer defers its batch, a journal pull waits) and reads go on:
 * search, raw messages, export, copies to peers. Purges wait too: their commit needs new
 * pages like any other, and the pages they free go to LMDB's free list, not to the volume.
 *
 * Leaving. recheckSpace() reads the volume — every `readOnlyRecheckMs` from a timer, and
 * before an ingest or an SMTP transaction at most once per `freeSpaceCacheMs` — and returns
 * the store to read-write once the volume has `freeBytesMin + readOnlyMarginBytes` free (the
 * margin keeps a volume hovering at the guard from flapping). A volume that cannot be read
 * counts as having room, as in store-space.ts: the next commit tells.
 *
 * Why writing again after a failed commit is safe, and why the environment is reopened
 * first. LMDB writes a transaction's pages copy-on-write, fdatasyncs them, and only then
 * writes the meta page that makes them reachable; pages of a failed commit are never
 * referenced, and the next commit writes whole pages again before its own sync. So the
 * fsyncgate hazard (a later sync succeeding over pages the kernel dropped) does not reach
 * committed data: every page a meta page references was synced before that meta was
 * written. The one failure LMDB cannot go on from is a failed meta-page write: it writes the
 * old meta back into the page cache and marks the environment MDB_FATAL_ERROR (mdb.c,
 * mdb_env_write_meta), and every later transaction, reads included, fails with MDB_PANIC
 * until the environment is opened again (seen with ENOSPC injected into every pwrite:
 * even the counters could not be read). lmdb-js does not tell which step failed, so after
 * any failed commit the store closes and opens the environment at once — the writes in
 * flight settle first, and no new one starts while read-only — so that reads go on; start's
 * checks (format, counters against the change log) then run on what the disk holds. If that
 * reopen fails (or another commit failed meanwhile), the store reopens again before it
 * takes writes. Measured on a full ext4: with space freed, every acknowledged message was
 * intact and the index answered for each (tests/firmware/archive/read-only.test.ts).
 */

/** Starts the store (store-lifecycle.ts), makes it read-only when its volume is already full, and starts the watcher. */
export async function startWatchedStore(context: StoreContext): Promise<void> {
  await startStore(context)
  if (context.state !== 'open') return
  // After the transactions of the failed commit have all been rejected, not in the middle.
  context.watch.reopen = () => setImmediate(() => void reopenWhileReadOnly(context))
  // Not kept as the cached reading: the first ingest reads the volume afresh, as it always did.
  const freeBytes = await context.space.readVolume()
  if (freeBytes !== null && freeBytes < context.options.freeBytesMin) {
    enterReadOnly(context, { cause: 'volume-full', reason: volumeFullReason(context, freeBytes), freeBytes, reopen: false })
  }
  armWatcher(context)
}

/** Stops the watcher, then the store. Idempotent; never throws. */
export function stopWatchedStore(context: StoreContext): Promise<void> {
  clearTimeout(context.watch.timer)
  context.watch.timer = undefined
  context.watch.reopen = undefined
  return stopStore(context)
}

/** Reopens the environment of a store made read-only by a failed commit, so that reads go on (the module comment says why). */
async function reopenWhileReadOnly(context: StoreContext): Promise<void> {
  const readOnly = context.readOnly
  // `stopped` with a read-only status only after a reopen that failed (stop() clears it).
  if (!readOnly?.reopen || (context.state !== 'open' && context.state !== 'stopped')) return
  try {
    await reopenStore(context)
    if (context.readOnly === readOnly) readOnly.reopen = false
  } catch (error) {
    context.logger.error('cannot reopen the archive after a failed commit; trying again at the next check', { error })
  }
}

/** The sentence of a volume found below `freeBytesMin`. */
export function volumeFullReason(context: StoreContext, freeBytes: number): string {
  return `the data volume has ${freeBytes} bytes free, below the minimum of ${context.options.freeBytesMin} bytes`
}

/**
 * Returns a read-only store to read-write when its volume has room again (the module
 * comment has the rule); one check at a time, the others join it.
 * @param force read the volume even if it was read less than `freeSpaceCacheMs` ago
 * @returns the read-only status afterwards, null when writable
 */
export function recheckReadOnly(context: StoreContext, force = true): Promise<ReadOnlyStatus | null> {
  if (!context.readOnly) return Promise.resolve(null)
  if (context.watch.checking) return context.watch.checking
  if (!force && context.clock.monotonicMs() - context.watch.checkedAtMs < context.options.freeSpaceCacheMs) return Promise.resolve(context.readOnly)
  context.watch.checking = leaveIfRoom(context, context.readOnly).finally(() => {
    context.watch.checking = undefined
  })
  return context.watch.checking
}

async function leaveIfRoom(context: StoreContext, readOnly: ReadOnlyStatus): Promise<ReadOnlyStatus | null> {
  context.watch.checkedAtMs = context.clock.monotonicMs()
  const freeBytes = await context.space.readVolume(context.dbs)
  readOnly.freeBytes = freeBytes
  readOnly.resumeAtFreeBytes = resumeAtFreeBytes(context)
  if (freeBytes !== null && freeBytes < readOnly.resumeAtFreeBytes) return readOnly
  if (readOnly.reopen) {
    try {
      await reopenStore(context)
    } catch (error) {
      context.logger.error('cannot reopen the archive after the volume filled; trying again at the next check', { error })
      return context.readOnly
    }
  }
  if (context.readOnly !== readOnly || context.state !== 'open') return context.readOnly
  context.readOnly = null
  // After a reopen the reading is of the closed environment: read again at the next ingest.
  if (readOnly.reopen) context.space.forget()
  context.logger.info('archive store takes writes again: the data volume has room', { freeBytes, readOnlySinceMs: readOnly.sinceMs, reopened: readOnly.reopen })
  return null
}

/** The watcher's timer: every `readOnlyRecheckMs` while the store is not stopping; it reads the volume only while read-only. */
function armWatcher(context: StoreContext): void {
  clearTimeout(context.watch.timer)
  context.watch.timer = setTimeout(() => {
    context.watch.timer = undefined
    if (context.state === 'stopping' || (context.state === 'stopped' && !context.readOnly)) return
    reopenWhileReadOnly(context)
      .then(() => recheckReadOnly(context))
      .catch((error: unknown) => context.logger.error('the read-only check failed', { error }))
      .finally(() => {
        if (context.state !== 'stopping' && (context.state !== 'stopped' || context.readOnly)) armWatcher(context)
      })
  }, context.options.readOnlyRecheckMs)
  context.watch.timer.unref()
}
