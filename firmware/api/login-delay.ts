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

/**
 * How long an attempt of `pair` arriving at `nowMs` waits before its password is checked, in
 * whole ms: the pair's delay from its last failure, 0 for an unknown pair or one cleared by a
 * correct password.
 */
export function arrivalWaitMs(pair: Pair | undefined, nowMs: number, schedule: DelaySchedule): number {
  if (!pair || pair.cleared) return 0
  return Math.ceil(Math.max(0, pair.lastFailureMs + delayAfter(pair.failures, schedule) - nowMs))
}
