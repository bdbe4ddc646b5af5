import assert from 'node:assert'
import type { Clock } from '../common/clock.js'
import { createAuditBudget, type LoginThrottleEvent } from './login-audit.js'
import { delayAfter, arrivalWaitMs } from './login-delay.js'
import { createPairTable, pairKey, type ForgetReason, type Pair } from './login-pairs.js'

export { loginAuditEntry, loginAuditEventsPerMinuteMax, type LoginThrottleEvent } from './login-audit.js'
export { addressKey, loginUserCharsMax } from './login-pairs.js'

/*
 * Login throttling for the HTTP API, keyed by (client address, user name), that an attacker
 * cannot turn against the admin.
 *
 * Why the answer waits and nothing is refused. Refusing attempts (429) while a key is
 * locked lets anyone who shares the key keep the admin out: keyed by address alone, anyone
 * behind the same NAT, jump host or load balancer; keyed by (address, user), anyone there
 * who types the admin's user name. Whatever the key, the admin and such an attacker differ
 * only in the password, which is known only after the check. So no attempt is refused:
 * once a pair has had `failuresBeforeDelay` failures, each attempt of that pair waits the
 * pair's current delay (from its last failure, doubling per failure, at most `delayMsMax`)
 * *before* its password is checked, and is then answered on its merits, 200 or 401. A
 * correct password is therefore accepted as soon as its pair's delay has passed, at the
 * latest `delayMsMax` after it arrived, whatever the attacker does meanwhile (an
 * attempt's wait is fixed when it arrives; later failures do not push it back).
 * Delaying only the answer to *wrong* passwords would not slow anyone: a client that hears
 * nothing shortly after the check knows the guess was wrong and moves on.
 *
 * What that costs. A guesser on one connection gets one guess per delay (at most 2 a
 * minute at the default 30 s cap). A guesser with C connections in parallel gets C guesses
 * per delay: each held attempt costs it a connection, and the HTTP server's connection
 * cap bounds C (with 256 connections and a 30 s cap, at most ~8.5 guesses a second, while
 * holding every connection the API has). A stricter per-pair rate would have to refuse or
 * queue attempts beyond it, and the admin's attempt cannot be told apart from the
 * attacker's: that is exactly the lockout this design removes. The password hash (scrypt)
 * and, without one, the 144-bit generated password are what make guessing hopeless.
 *
 * Other keys. Failures of one address never delay another address; failures for one user
 * name never delay another user name. IPv6 clients are keyed by their /64 (one host
 * usually holds a whole /64, so its addresses are free to it), IPv4-mapped IPv6 by the
 * IPv4 address. A correct password clears the pair's pending delay (the admin who mistyped
 * is not slowed afterwards) but not its failure count: an attacker sharing the pair gets
 * no free guesses back each time the admin logs in. A pair is forgotten `forgetAfterMs`
 * after its last failure; that is when its throttling ends.
 *
 * Bounds. At most `pairsMax` pairs are tracked; beyond, the pair with the oldest failure
 * is forgotten, unthrottled pairs first, so a flood of new pairs does not erase a pair
 * being throttled before it erases every quiet one. Events for the audit log are bounded:
 * each failure before a pair is throttled, one event when it starts being throttled and
 * one summary with counts when it ends; across all pairs at most
 * `loginAuditEventsPerMinuteMax` a minute, the rest counted in one `audit-suppressed`
 * event. Never a password.
 */

/** Settings of the throttle (config `http.loginThrottle`). */
export interface LoginThrottleOptions {
  /** Failed logins of one (address, user) pair answered without any delay. */
  failuresBeforeDelay: number
  /** Delay after the first failure beyond the free ones, in ms; doubles per further failure. */
  delayMsMin: number
  /** Cap of the delay, in ms: the longest any attempt, a correct one too, waits. */
  delayMsMax: number
  /** A pair without a failure for this long is forgotten and its throttling ends, in ms. */
  forgetAfterMs: number
  /** Most (address, user) pairs tracked at once. */
  pairsMax: number
}

/** The defaults, equal to the config schema's (a test checks). */
export const loginThrottleDefaults: Readonly<LoginThrottleOptions> = Object.freeze({
  failuresBeforeDelay: 5,
  delayMsMin: 1_000,
  delayMsMax: 30_000,
  forgetAfterMs: 15 * 60_000,
  pairsMax: 10_000,
})

/**
 * The throttle's state and rules, without timers or sockets: the HTTP API asks `waitMs`
 * before it checks a password and reports the outcome; `tick()` (every few seconds, or
 * driven by a test) forgets quiet pairs. Events go to `onEvent` (the log and the audit log).
 * The units: login-pairs.ts (the pair table), login-delay.ts (the delay schedule),
 * login-audit.ts (the events and their budget).
 */
export function createLoginThrottle(deps: { clock: Clock; onEvent?: (event: LoginThrottleEvent) => void }, options: LoginThrottleOptions) {
  assert.ok(options.failuresBeforeDelay >= 1 && options.delayMsMax >= 1 && options.pairsMax >= 1, 'login throttle options out of range')
  const audit = createAuditBudget(deps)
  const pairs = createPairTable({ clock: deps.clock, onForget }, options)

  function onForget(pair: Pair, reason: ForgetReason): void {
    if (pair.throttledAtMs === null) return
    const { address, user, failures, delayedAttempts, successes } = pair
    const throttledMs = Math.round(deps.clock.monotonicMs() - pair.throttledAtMs)
    audit.emit({ kind: 'throttle-ended', address, user, reason, failures, delayedAttempts, successes, throttledMs })
  }

  return {
    /**
     * How long this attempt waits before its password is checked, in ms (0: check at once).
     * Fixed at arrival: later failures of the pair do not lengthen it, so it is at most
     * `delayMsMax`.
     */
    waitMs(address: string, user: string): number {
      const pair = pairs.lookup(pairKey(address, user))
      const waitMs = arrivalWaitMs(pair, deps.clock.monotonicMs(), options)
      if (pair && waitMs > 0) pair.delayedAttempts += 1
      return waitMs
    },
    /** A wrong user name or password from this address. */
    recordFailure(address: string, user: string): void {
      const key = pairKey(address, user)
      const pair = pairs.obtain(key, address, user)
      pair.failures += 1
      pair.lastFailureMs = deps.clock.monotonicMs()
      pair.cleared = false
      const isThrottled = pair.failures >= options.failuresBeforeDelay
      pairs.place(key, pair, isThrottled)
      if (!isThrottled) {
        audit.emit({ kind: 'failed', address: pair.address, user: pair.user, failures: pair.failures })
      } else if (pair.throttledAtMs === null) {
        pair.throttledAtMs = pair.lastFailureMs
        audit.emit({ kind: 'throttled', address: pair.address, user: pair.user, failures: pair.failures, delayMs: delayAfter(pair.failures, options) })
      }
    },
    /** A correct password: the pair's next attempt is checked at once; its failures are kept. */
    recordSuccess(address: string, user: string): void {
      const pair = pairs.lookup(pairKey(address, user))
      if (!pair) return
      pair.cleared = true
      if (pair.throttledAtMs !== null) pair.successes += 1
    },
    /** Forgets pairs quiet for `forgetAfterMs` (summaries for the throttled ones) and reports suppressed events. */
    tick(): void {
      pairs.sweep()
      audit.flush()
    },
    /** The service stops: a summary for each throttled pair, then everything is forgotten. */
    close(): void {
      pairs.forgetAll()
      audit.flush({ now: true })
    },
    /** Pairs tracked and pairs throttled now. */
    stats(): { pairs: number; throttled: number } {
      return pairs.stats()
    },
  }
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>
