/**
 * The turns of paced searches: one search evaluates at a time, the others wait in a queue of
 * at most `searchesWaitingMax`, oldest first; and the counters of the paced searches that
 * status views show.
 */

import { IndexError } from './errors.js'
import type { IndexOptions } from './index-types.js'

/** Counters of the paced searches since start, for status views. */
export interface SearchCounters {
  /** Searches running now (at most one evaluates at a time) and waiting for their turn. */
  running: number
  waiting: number
  /** Searches stopped over their budget, refused because too many were waiting, and evaluations started over after a flush. */
  tooExpensive: number
  busy: number
  restarts: number
}

/** The turns of one index's searches: see createSearchTurns. */
export interface SearchTurns {
  /** The counters, updated in place: `tooExpensive` and `restarts` are the executor's to count. */
  counters: SearchCounters
  /** Waits for this search's turn. @throws IndexError SEARCH_BUSY when too many wait already */
  take(): Promise<void>
  /** Ends the turn taken: the oldest waiting search gets the next one. */
  release(): void
}

/** Creates the turns, none taken and none waiting. */
export function createSearchTurns(limits: Pick<IndexOptions, 'searchesWaitingMax'>): SearchTurns {
  const counters: SearchCounters = { running: 0, waiting: 0, tooExpensive: 0, busy: 0, restarts: 0 }
  /** Resolvers of the searches waiting for their turn, oldest first. */
  const queue: Array<() => void> = []

  async function take(): Promise<void> {
    if (counters.running === 0 && queue.length === 0) {
      counters.running = 1
      return
    }
    if (queue.length >= limits.searchesWaitingMax) {
      counters.busy += 1
      throw new IndexError('SEARCH_BUSY', `${queue.length} searches are already waiting (search.waitingMax); try again in a moment`, {
        retryable: true,
        fields: { waitingMax: limits.searchesWaitingMax },
      })
    }
    counters.waiting = queue.length + 1
    await new Promise<void>((resolve) => queue.push(resolve))
  }

  function release(): void {
    const next = queue.shift()
    counters.waiting = queue.length
    if (next) next()
    else counters.running = 0
  }

  return { counters, take, release }
}
