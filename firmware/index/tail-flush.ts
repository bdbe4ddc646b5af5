/**
 * Flushes of the pending tail: its postings written as one chunk per distinct token,
 * either inside a write transaction (an ingest, `flush()`, a rebuild) or built in the
 * background (background-flush.ts). This module decides which, and writes a built flush.
 */

import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { putNew, writeState, type Databases, type IndexState } from './index-databases.js'
import type { IndexOptions } from './index-types.js'
import { postingKey } from './record-io.js'
import type { PostingSizes } from './posting-sink.js'
import type { PendingTail } from './pending-tail.js'
import { buildFlush, buildFlushNow, type BuiltFlush } from './flush-build.js'
import { createBackgroundFlush } from './background-flush.js'

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
  /** The sizes of the last flush's posting groups: the next one starts at them. */
  const lastFlushSizes: { last?: PostingSizes } = {}

  const build = (db: Databases, first: number, last: number): Generator<void, BuiltFlush> =>
    buildFlush(first, last, (docid, sink) => tail.addTerms(db, docid, sink), db.pageSizeBytes, lastFlushSizes)
  /** The build in the background (see maybeFlush); it writes with writeFlush. */
  const background = createBackgroundFlush({ logger, clock: deps.clock, limits, current: deps.current, build, writeFlush })

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
    background.drop()
    const first = state.flushed + 1
    const last = state.next - 1
    if (last < first) return 0
    const built = buildFlushNow(build(db, first, last))
    writeFlush(db, state, built)
    return built.tokens
  }

  /**
   * After an ingest, inside its transaction: flushes the tail when it is full. In the
   * background mode the ingest that fills the tail starts a build (background-flush.ts),
   * which writes itself in a transaction of its own when done; a tail of twice the limit
   * (a build that cannot keep up, or failed) is flushed in the ingest's transaction.
   */
  function maybeFlush(db: Databases, state: IndexState): void {
    const pending = state.next - 1 - state.flushed
    if (pending < limits.pendingDocumentsMax) return
    if (!limits.flushInBackground || pending >= 2 * limits.pendingDocumentsMax || background.failed()) {
      flushInTransaction(db, state)
      return
    }
    if (!background.active()) background.start(db)
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
      if (!limits.flushInBackground || background.active() || pending <= 0) return 0
      background.start(db)
      return pending
    },
    /** Notes a tail document re-indexed inside a transaction, for a build under way (see background-flush.ts). */
    noteChanged: background.noteChanged,
    /** Forgets a build under way (its data was replaced: databases opened, rebuild); it stops at its next look. */
    drop: background.drop,
    /** Resolves once no build is under way or waiting to be written (a failed one counts as settled). */
    settled: background.settled,
  }
}
