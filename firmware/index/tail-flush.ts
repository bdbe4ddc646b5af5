/**
 * Flushes of the pending tail: its postings written as one chunk per distinct token,
 * either inside a write transaction (an ingest, `flush()`, a rebuild) or built in the
 * background between event-loop turns and written in a transaction of its own.
 */

import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { putNew, readState, writeState, type Databases, type IndexState } from './index-databases.js'
import type { IndexOptions } from './index-types.js'
import { getForward, postingKey, putPatch } from './record-io.js'
import { postingsOf } from './forward-record.js'
import type { PostingSizes } from './posting-sink.js'
import type { PendingTail } from './pending-tail.js'
import { buildFlush, buildFlushNow, type BuiltFlush } from './flush-build.js'

/** A flush built between event-loop turns (see IndexOptions.flushInBackground). */
interface BackgroundFlush {
  /** The index's epoch when it started. */
  epoch: number
  /** The chunk number it was built for (-1 until it read the state). */
  chunks: number
  /** Tail documents re-indexed since it started. */
  changed: Set<number>
  failed: boolean
  /** Settles when the build is written, dropped or failed. */
  done: Promise<void>
}

/** What the flusher needs of its index. */
export interface TailFlushDeps {
  logger: Logger
  clock: Clock
  limits: Pick<IndexOptions, 'pendingDocumentsMax' | 'flushInBackground' | 'flushSliceMs'>
  tail: PendingTail
  /** The index's open databases and epoch now: a build for others is stale. */
  current(): { databases: Databases | undefined; epoch: number }
}

/** The flusher of one index's pending tail: see createTailFlush. */
export type TailFlush = ReturnType<typeof createTailFlush>

/** Creates the flusher. Pure: it works on the databases each call hands it. */
export function createTailFlush(deps: TailFlushDeps) {
  const { logger, limits, tail } = deps
  /** The background flush being built or waiting to be written (see maybeFlush). */
  let background: BackgroundFlush | undefined
  /** The sizes of the last flush's posting groups: the next one starts at them. */
  const lastFlushSizes: { last?: PostingSizes } = {}

  const build = (db: Databases, first: number, last: number): Generator<void, BuiltFlush> =>
    buildFlush(first, last, (docid, sink) => tail.addTerms(db, docid, sink), db.pageSizeBytes, lastFlushSizes)

  /**
   * Writes a built flush as chunk `state.chunks` — its blocks in key order, appended after
   * the previous flush's (MDB_APPEND: full pages) — and moves the tail past it. Runs inside
   * a write transaction.
   */
  function writeFlush(db: Databases, state: IndexState, built: BuiltFlush): void {
    for (const { firstToken, block } of built.blocks) putNew(db.postings, postingKey(state.chunks, firstToken), block)
    for (let docid = built.first; docid <= built.last; docid++) tail.forget(docid)
    state.flushed = built.last
    state.chunks++
    writeState(db, state)
    // Not "tokens": the logger redacts field names that look like secrets.
    logger.debug('flushed postings', { documents: built.last - built.first + 1, terms: built.tokens, chunk: state.chunks - 1 })
  }

  /** Writes one posting chunk per distinct token of the whole pending tail, now. Runs inside a write transaction. */
  function flushInTransaction(db: Databases, state: IndexState): number {
    // A background build under way would write what this flush writes: it is dropped.
    background = undefined
    const first = state.flushed + 1
    const last = state.next - 1
    if (last < first) return 0
    const built = buildFlushNow(build(db, first, last))
    writeFlush(db, state, built)
    return built.tokens
  }

  /**
   * After an ingest, inside its transaction: flushes the tail when it is full. In the
   * background mode the ingest that fills the tail starts a build (runBackgroundFlush),
   * which writes itself in a transaction of its own when done; a tail of twice the limit
   * (a build that cannot keep up, or failed) is flushed in the ingest's transaction.
   */
  function maybeFlush(db: Databases, state: IndexState): void {
    const pending = state.next - 1 - state.flushed
    if (pending < limits.pendingDocumentsMax) return
    if (!limits.flushInBackground || pending >= 2 * limits.pendingDocumentsMax || background?.failed === true) {
      flushInTransaction(db, state)
      return
    }
    if (background === undefined) startBackgroundFlush(db)
  }

  /**
   * Writes a background build. Documents of its range re-indexed while it was built (another
   * delivery's recipients) may have postings it lacks: each such document's postings are
   * written again as patches, as for a re-indexed flushed document (duplicates are merged
   * when read). A document removed meanwhile needs nothing: its date is NaN and its id
   * mapping gone, so its postings are garbage like any removed document's.
   */
  function writeBackgroundFlush(db: Databases, state: IndexState, job: BackgroundFlush, built: BuiltFlush): void {
    for (const docid of job.changed) {
      if (docid < built.first || docid > built.last) continue
      const forward = getForward(db, docid)
      if (forward === undefined) continue
      for (const [token, mask] of postingsOf(forward)) putPatch(db, token, state.chunks, docid, mask)
      state.patched = (state.patched ?? 0) + 1
    }
    writeFlush(db, state, built)
  }

  function startBackgroundFlush(db: Databases): void {
    let settle = (): void => undefined
    const done = new Promise<void>((resolve) => (settle = resolve))
    const job: BackgroundFlush = { epoch: deps.current().epoch, chunks: -1, changed: new Set(), failed: false, done }
    background = job
    // Superseded (a flush in a transaction, a rebuild), or the environment closed: stop quietly.
    const live = (): boolean => {
      const now = deps.current()
      return background === job && now.databases === db && job.epoch === now.epoch && (db.root as { status?: string }).status === 'open'
    }
    setImmediate(() => void runBackgroundFlush(db, job, live).finally(settle))
  }

  async function runBackgroundFlush(db: Databases, job: BackgroundFlush, live: () => boolean): Promise<void> {
    let built: BuiltFlush | undefined
    try {
      if (!live()) return
      // Outside a transaction: reads see what is committed, so the range holds only committed documents.
      const state = readState(db)
      const first = state.flushed + 1
      const last = state.next - 1
      if (last < first) return
      job.chunks = state.chunks
      const steps = build(db, first, last)
      for (;;) {
        const sliceStartMs = deps.clock.monotonicMs()
        let step = steps.next()
        while (!step.done && deps.clock.monotonicMs() - sliceStartMs < limits.flushSliceMs) step = steps.next()
        if (step.done) {
          built = step.value
          break
        }
        await new Promise((resolve) => setImmediate(resolve))
        if (!live()) return
      }
      const ready = built
      // Its own transaction (lmdb-js batches it with the ingests of the moment), so a build
      // is written whether or not more mail comes.
      await db.root.childTransaction(() => {
        if (!live()) return
        const current = readState(db)
        // Built from what was committed then: still the start of the tail unless a flush or a rebuild came between.
        if (job.epoch !== deps.current().epoch || job.chunks !== current.chunks || ready.first !== current.flushed + 1) return
        writeBackgroundFlush(db, current, job, ready)
      })
    } catch (error) {
      if (!live()) return
      job.failed = true
      logger.warn('building or writing a flush in the background failed; the next ingest flushes in its own transaction', { error })
    } finally {
      if (background === job && !job.failed) background = undefined
    }
  }

  return {
    flushInTransaction,
    maybeFlush,
    /**
     * Starts a background flush of the whole pending tail (see SearchIndex.flushPendingInBackground).
     *
     * @returns the documents it covers (0 when none started: a build under way, background flushes off, an empty tail)
     */
    startInBackground(db: Databases, state: IndexState): number {
      const pending = state.next - 1 - state.flushed
      if (!limits.flushInBackground || background !== undefined || pending <= 0) return 0
      startBackgroundFlush(db)
      return pending
    },
    /** Notes a tail document re-indexed inside a transaction, for a build under way (see writeBackgroundFlush). */
    noteChanged(docid: number): void {
      background?.changed.add(docid)
    },
    /** Forgets a build under way (its data was replaced: databases opened, rebuild); it stops at its next look. */
    drop(): void {
      background = undefined
    },
    /** Resolves once no build is under way or waiting to be written (a failed one counts as settled). */
    async settled(): Promise<void> {
      while (background !== undefined && !background.failed) await background.done
    },
  }
}
