/**
 * Pacing of a search: the evaluation is written as a generator that yields between units of
 * work (a posting set, 64 date blocks, a phrase candidate), and one of two drivers runs
 * it. `runToEnd` runs it in one go on the caller's turn (tests, benchmarks, tools);
 * `runInSlices` runs it in slices of `sliceMs` and lets the event loop run between them, so
 * SMTP replies, status requests and commits go on while a long query works. Both stop a
 * computation that runs over its budget with QUERY_TOO_EXPENSIVE; nothing keeps running
 * after that (the generator is simply dropped).
 */

import type { Clock } from '../common/clock.js'
import { IndexError } from './errors.js'

/** A computation that yields where it may be paused; its result is the generator's return value. */
export type Paced<T> = Generator<void, T, void>

/** The error of a search over its budget: the CLI and the API show its message as is. */
export function queryTooExpensive(budgetMs: number): IndexError {
  return new IndexError(
    'QUERY_TOO_EXPENSIVE',
    `the query was stopped after ${budgetMs} ms (search.queryTimeMsMax): it asks for too much work; narrow it with fields, dates or fewer phrases`,
    { retryable: true, fields: { queryTimeMsMax: budgetMs } },
  )
}

/**
 * Runs `computation` to its end on this turn, checking the budget at each of its yields.
 *
 * @throws IndexError QUERY_TOO_EXPENSIVE past `budgetMs` since `startedMs`
 */
export function runToEnd<T>(computation: Paced<T>, clock: Clock, startedMs: number, budgetMs: number): T {
  for (;;) {
    const step = computation.next()
    if (step.done) return step.value
    if (clock.monotonicMs() - startedMs > budgetMs) throw queryTooExpensive(budgetMs)
  }
}

/** What runInSlices needs besides the computation. */
export interface SliceOptions {
  clock: Clock
  /** When the budget started (the search's start), monotonic ms. */
  startedMs: number
  budgetMs: number
  /** Longest run before the event loop gets a turn, in ms. */
  sliceMs: number
  /**
   * Called after each pause, before the computation goes on: returns false when what the
   * computation read is no longer current (a flush, a removal), and it must start over.
   */
  stillCurrent(): boolean
}

/** The outcome of runInSlices: the value, or `stale` when stillCurrent() said to start over. */
export type SlicedOutcome<T> = { done: true; value: T } | { done: false }

/**
 * Runs `computation` in slices of at most `sliceMs` (measured at its yields), yielding to
 * the event loop between slices.
 *
 * @throws IndexError QUERY_TOO_EXPENSIVE past the budget
 */
export async function runInSlices<T>(computation: Paced<T>, options: SliceOptions): Promise<SlicedOutcome<T>> {
  const { clock, startedMs, budgetMs, sliceMs } = options
  let sliceStartedMs = clock.monotonicMs()
  for (;;) {
    const step = computation.next()
    if (step.done) return { done: true, value: step.value }
    const nowMs = clock.monotonicMs()
    if (nowMs - startedMs > budgetMs) throw queryTooExpensive(budgetMs)
    if (nowMs - sliceStartedMs < sliceMs) continue
    await new Promise((resolve) => setImmediate(resolve))
    if (clock.monotonicMs() - startedMs > budgetMs) throw queryTooExpensive(budgetMs)
    if (!options.stillCurrent()) return { done: false }
    sliceStartedMs = clock.monotonicMs()
  }
}
