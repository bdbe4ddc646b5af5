/**
 * A flush built between event-loop turns: the ingest that fills the tail only starts it;
 * it reads the committed tail outside any transaction, builds in slices of at most
 * `flushSliceMs`, and writes itself in a transaction of its own (see
 * IndexOptions.flushInBackground). One at a time per index; tail-flush.ts decides when.
 */

import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { readState, type Databases, type IndexState } from './index-databases.js'
import type { IndexOptions } from './index-types.js'
import { getForward, putPatch } from './record-io.js'
import { postingsOf } from './forward-record.js'
import type { BuiltFlush } from './flush-build.js'

/** One build under way. */
interface BackgroundJob {
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

/** What a background flush needs of its index. */
export interface BackgroundFlushDeps {
  logger: Logger
  clock: Clock
  limits: Pick<IndexOptions, 'flushSliceMs'>
  /** The index's open databases and epoch now: a build for others is stale. */
  current(): { databases: Databases | undefined; epoch: number }
  /** The build of tail documents `first`..`last`, in steps (flush-build.ts). */
  build(db: Databases, first: number, last: number): Generator<void, BuiltFlush>
  /** Writes a built flush as chunk `state.chunks` and moves the tail past it (inside a write transaction). */
  writeFlush(db: Databases, state: IndexState, built: BuiltFlush): void
}

/** The background flush of one index: see createBackgroundFlush. */
export type BackgroundFlush = ReturnType<typeof createBackgroundFlush>

/**
 * Writes a background build. Documents of its range re-indexed while it was built (another
 * delivery's recipients) may have postings it lacks: each such document's postings are
 * written again as patches, as for a re-indexed flushed document (duplicates are merged
 * when read). A document removed meanwhile needs nothing: its date is NaN and its id
 * mapping gone, so its postings are garbage like any removed document's.
 */
function writeBuilt(writeFlush: BackgroundFlushDeps['writeFlush'], db: Databases, state: IndexState, job: BackgroundJob, built: BuiltFlush): void {
  for (const docid of job.changed) {
    if (docid < built.first || docid > built.last) continue
    const forward = getForward(db, docid)
    if (forward === undefined) continue
    for (const [token, mask] of postingsOf(forward)) putPatch(db, token, state.chunks, docid, mask)
    state.patched = (state.patched ?? 0) + 1
  }
  writeFlush(db, state, built)
}

/** Runs `steps` for one slice: at least one step, then more while under `sliceMs`. Returns the last step. */
function runSlice(clock: Clock, sliceMs: number, steps: Generator<void, BuiltFlush>): IteratorResult<void, BuiltFlush> {
  const sliceStartMs = clock.monotonicMs()
  let step = steps.next()
  while (!step.done && clock.monotonicMs() - sliceStartMs < sliceMs) step = steps.next()
  return step
}

/**
 * Writes `built` in a transaction of its own (lmdb-js batches it with the ingests of the
 * moment), so a build is written whether or not more mail comes; nothing when the job is no
 * longer live or the tail no longer starts where the build does.
 */
function writeIfStillTail(deps: BackgroundFlushDeps, db: Databases, job: BackgroundJob, built: BuiltFlush, live: () => boolean): Promise<unknown> {
  return db.root.childTransaction(() => {
    if (!live()) return
    const current = readState(db)
    // Built from what was committed then: still the start of the tail unless a flush or a rebuild came between.
    if (job.epoch !== deps.current().epoch || job.chunks !== current.chunks || built.first !== current.flushed + 1) return
    writeBuilt(deps.writeFlush, db, current, job, built)
  })
}

/**
 * One background job: reads the committed tail, builds it in slices (stopping quietly once
 * not `live`), writes it. A failure while live marks the job failed (logged); `finished`
 * runs last in every case.
 */
async function runJob(deps: BackgroundFlushDeps, db: Databases, job: BackgroundJob, live: () => boolean, finished: () => void): Promise<void> {
  let built: BuiltFlush | undefined
  try {
    if (!live()) return
    // Outside a transaction: reads see what is committed, so the range holds only committed documents.
    const state = readState(db)
    const first = state.flushed + 1
    const last = state.next - 1
    if (last < first) return
    job.chunks = state.chunks
    const steps = deps.build(db, first, last)
    for (;;) {
      const step = runSlice(deps.clock, deps.limits.flushSliceMs, steps)
      if (step.done) {
        built = step.value
        break
      }
      await new Promise((resolve) => setImmediate(resolve))
      if (!live()) return
    }
    await writeIfStillTail(deps, db, job, built, live)
  } catch (error) {
    if (!live()) return
    job.failed = true
    deps.logger.warn('building or writing a flush in the background failed; the next ingest flushes in its own transaction', { error })
  } finally {
    finished()
  }
}

/** Creates the background flusher (no build under way). */
export function createBackgroundFlush(deps: BackgroundFlushDeps) {
  /** The build under way or waiting to be written. */
  let background: BackgroundJob | undefined

  function start(db: Databases): void {
    let settle = (): void => undefined
    const done = new Promise<void>((resolve) => (settle = resolve))
    const job: BackgroundJob = { epoch: deps.current().epoch, chunks: -1, changed: new Set(), failed: false, done }
    background = job
    // Superseded (a flush in a transaction, a rebuild), or the environment closed: stop quietly.
    const live = (): boolean => {
      const now = deps.current()
      return background === job && now.databases === db && job.epoch === now.epoch && (db.root as { status?: string }).status === 'open'
    }
    const finished = (): void => {
      if (background === job && !job.failed) background = undefined
    }
    setImmediate(() => void runJob(deps, db, job, live, finished).finally(settle))
  }

  return {
    /** Starts a build of the whole committed tail, on the next event-loop turn. */
    start,
    /** A build is under way or waiting to be written (or failed and not yet dropped). */
    active: (): boolean => background !== undefined,
    /** The last build failed (logged): the next ingest flushes in its own transaction. */
    failed: (): boolean => background?.failed === true,
    /** Notes a tail document re-indexed inside a transaction (see writeBuilt). */
    noteChanged(docid: number): void {
      background?.changed.add(docid)
    },
    /** Forgets the build under way (a flush in a transaction, new data): it stops at its next look. */
    drop(): void {
      background = undefined
    },
    /** Resolves once no build is under way or waiting to be written (a failed one counts as settled). */
    async settled(): Promise<void> {
      while (background !== undefined && !background.failed) await background.done
    },
  }
}
