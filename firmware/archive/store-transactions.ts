import { putAppend } from '../common/lmdb-append.js'
import { ArchiveError } from './errors.js'
import { RecordShapeError, encodeChange, type ChangeRecord } from './records.js'
import { sequenceKey } from './layout.js'
import { updateDigestLeaf } from './store-digest.js'
import { delay, enterFailed, enterReadOnly, errorCode, resumeAtFreeBytes, unavailable, type StoreContext } from './store-context.js'
import type { CounterRecord, Databases } from './store-databases.js'
import type { ArchiveIndexer, ChangeEntry } from './types.js'

/**
 * One message's transaction (store.ts's module comment has the design: group commit,
 * durability, failures): running it and waiting until it is durable, telling an error of
 * the message from a failed commit (which fails the store), and what every ingest and purge
 * does inside it — the next change-log entry, the indexer hook with its retry without the
 * indexer, the id digest's leaf.
 */

/** How long a failed commit's errno is awaited from lmdb-js, in ms. */
const commitErrorWaitMs = 1000

/** errno values and LMDB codes that mean "no space". */
const noSpaceCodes = new Set<unknown>([28 /* ENOSPC */, 122 /* EDQUOT */, -30792 /* MDB_MAP_FULL */, 'ENOSPC', 'EDQUOT'])

/** Thrown out of a message's transaction when the indexer failed, so the transaction rolls back (see runIndexer). */
export class IndexerFailed extends Error {
  constructor(override readonly cause: unknown) {
    super('the indexer failed')
  }
}

/**
 * Runs `body` as one message's transaction and waits until it is durable. Errors thrown
 * by `body` abort only this message; a failed commit fails the store.
 * @throws ArchiveError from `body` as thrown; STORE_CORRUPT (an undecodable record), STORE_FULL (no space), STORE_UNAVAILABLE (another write error, a failed commit); IndexerFailed
 */
export async function inTransaction<T>(context: StoreContext, databases: Databases, body: () => T): Promise<T> {
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
      throw unavailable(context, 'the store failed a write', { errno: code }, error)
    }
    throw await commitFailed(context, error)
  }
}

/**
 * Counts a failed commit once, makes the store read-only (volume full) or failed (any other
 * failure), and makes the error its transactions reject with.
 */
async function commitFailed(context: StoreContext, error: unknown): Promise<ArchiveError> {
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
    if (!context.countedFailures.has(commitError)) {
      context.countedFailures.add(commitError)
      context.activity.failedCommits++
    }
  } else {
    context.activity.failedCommits++
  }
  const code = errorCode(cause)
  const reason = cause instanceof Error ? cause.message : String(cause)
  const freeBytes = await context.space.readVolume(context.dbs)
  if (noSpaceCodes.has(code) || (freeBytes !== null && freeBytes < resumeAtFreeBytes(context))) {
    // Out of space, whatever the errno: ext4 fails the sync of delayed allocation with EIO
    // on a full volume (measured on a loop-mounted ext4: every commit past the last free
    // block failed with errno 5, never ENOSPC). Read-only, not failed: store-read-only.ts
    // says why writing again after space returns is safe.
    enterReadOnly(context, { cause: 'commit-failed', reason: `a commit failed with the data volume full (${reason}; ${freeBytes ?? 'unknown'} bytes free)`, freeBytes, reopen: true })
    return new ArchiveError('STORE_FULL', 'the disk is full: the write was not stored', { fields: { path: context.options.path, errno: code, freeBytes }, cause })
  }
  enterFailed(context, `commit failed: ${reason}`)
  return unavailable(context, 'the disk failed to store the write', { errno: code, freeBytes }, cause)
}

/**
 * In a write transaction: appends the change-log entry with the next sequence and advances
 * `counters.lastSequence` (the caller puts the counters back).
 * @returns the entry's sequence
 * @throws ArchiveError STORE_CORRUPT when the sequence is not past the last entry
 */
export function nextChange(databases: Databases, counters: CounterRecord, kind: ChangeEntry['kind'], key: Buffer, origin: string | null, nowMs: number): number {
  const sequence = counters.lastSequence + 1
  const change: ChangeRecord = { kind, id: key, atMs: nowMs, origin }
  if (!putAppend(databases.changes, sequenceKey(sequence), encodeChange(change))) {
    throw new ArchiveError('STORE_CORRUPT', `change-log sequence ${sequence} is not past the last entry`, { fields: { sequence } })
  }
  counters.lastSequence = sequence
  return sequence
}

/**
 * Runs the indexer in the message's transaction. No nested transaction: measured, LMDB's
 * nested begin and commit took a third of the event loop's time per ingest. When it
 * throws, IndexerFailed aborts the message's transaction, which `withoutIndexerOnFailure`
 * writes again without the indexer.
 */
export function runIndexer(context: StoreContext, indexing: boolean, call: (indexer: ArchiveIndexer) => void): void {
  if (!context.indexer || !indexing) return
  try {
    call(context.indexer)
  } catch (error) {
    throw new IndexerFailed(error)
  }
}

/**
 * Runs one message's transaction with the indexer; when the indexer fails, that
 * transaction is rolled back (the indexer's writes with it) and run again without the
 * indexer: mail is never refused, and a purge never stopped, because indexing failed.
 */
export async function withoutIndexerOnFailure<T>(context: StoreContext, id: string, run: (indexing: boolean) => Promise<T>): Promise<T> {
  try {
    return await run(true)
  } catch (error) {
    if (!(error instanceof IndexerFailed)) throw error
    context.logger.error('the indexer failed; the message is archived without its postings', { id, error: error.cause })
    return await run(false)
  }
}

/** Adds or removes one id in the id digest, in the message's transaction; damage is set aside and logged, never refuses the write. */
export function updateDigest(context: StoreContext, databases: Databases, id: string, key: Buffer, sizeBytes: number, sign: 1 | -1): void {
  const damage = updateDigestLeaf(databases, key, sizeBytes, sign)
  if (damage) context.logger.error('the id digest is damaged; it is set aside until the next start rebuilds it', { id, error: damage })
}
