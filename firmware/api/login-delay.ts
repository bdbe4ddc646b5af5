import type { Pair } from './login-pairs.js'

/** The delay schedule's settings (LoginThrottleOptions' share). */
export interface DelaySchedule {
  failuresBeforeDelay: number
  delayMsMin: number
  delayMsMax: number
}

/** The wait a pair's attempts have after `failures` failures, in ms: 0, then doubling from `delayMsMin`, at most `delayMsMax`. */
export function delayAfter(failures: number, schedule: DelaySchedule): number {
  if (failures < schedule.failuresBeforeDelay) return 0
  const delayMsMin = Math.min(schedule.delayMsMin, schedule.delayMsMax)
  return Math.min(delayMsMin * 2 ** Math.min(failures - schedule.failuresBeforeDelay, 30), schedule.delayMsMax)
}

/** The attempts of one pair in flight: held or being checked, their outcome not yet recorded. */
export interface InFlight {
  attempts: number
  /** When the last of them to be checked is checked (monotonic ms). */
  checkAtMs: number
}

/**
 * How long an attempt of `pair` arriving at `nowMs` waits before its password is checked, in
 * whole ms. The attempts of the pair in flight count as failures: the wait is the delay after
 * the recorded failures and those attempts, from the last failure or the time the last of
 * them is checked, whichever is later, and at most `delayMsMax`. Without attempts in flight:
 * the pair's delay from its last failure, 0 for an unknown pair or one cleared by a correct
 * password.
 */
export function arrivalWaitMs(pair: Pair | undefined, inFlight: InFlight | undefined, nowMs: number, schedule: DelaySchedule): number {
  const attempts = inFlight?.attempts ?? 0
  if (attempts === 0 && (!pair || pair.cleared)) return 0
  const delayMs = delayAfter((pair?.failures ?? 0) + attempts, schedule)
  if (delayMs === 0) return 0
  const sinceMs = Math.max(pair?.lastFailureMs ?? -Infinity, inFlight && attempts > 0 ? inFlight.checkAtMs : -Infinity)
  return Math.ceil(Math.min(schedule.delayMsMax, Math.max(0, sinceMs + delayMs - nowMs)))
}

/**
 * The attempts in flight per pair key. An entry lives while one of its attempts does, so the
 * table holds at most one entry per request being served (bounded by the server's connections).
 */
export function createInFlightTable() {
  const table = new Map<string, InFlight>()
  return {
    get(key: string): InFlight | undefined {
      return table.get(key)
    },
    /** Counts an attempt of `key` to be checked at `checkAtMs`; the function returned ends it (once). */
    add(key: string, checkAtMs: number): () => void {
      const entry = table.get(key) ?? { attempts: 0, checkAtMs }
      entry.attempts += 1
      entry.checkAtMs = Math.max(entry.checkAtMs, checkAtMs)
      table.set(key, entry)
      let ended = false
      return () => {
        if (ended) return
        ended = true
        entry.attempts -= 1
        if (entry.attempts === 0 && table.get(key) === entry) table.delete(key)
      }
    },
  }
}
