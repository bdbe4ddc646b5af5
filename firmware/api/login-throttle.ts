import assert from 'node:assert'
import type { Clock } from '../common/clock.js'
import { createAuditBudget, throttleEndedEvent, type AuditBudget, type LoginThrottleEvent } from './login-audit.js'
import { arrivalWaitMs, createInFlightTable, delayAfter } from './login-delay.js'
import { createPairTable, pairKey, type ForgetReason, type Pair, type PairTable } from './login-pairs.js'

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
 * minute at the default 30 s cap). Attempts of a pair in flight (held, or being checked:
 * scrypt takes tens of ms) count as failures for the pair's next arrivals, which wait the
 * delay those failures would give after the last of them is checked, capped at `delayMsMax`:
 * so C guesses sent at once are not all checked before the first failure is recorded; only
 * the free ones are checked at once, the next ones one delay step apart, the rest at the cap.
 * A guesser with C connections in parallel so gets at most C guesses per `delayMsMax`: each
 * held attempt costs it a connection, and the HTTP server's connection cap bounds C (with
 * 256 connections and a 30 s cap, at most ~8.5 guesses a second, while holding every
 * connection the API has). A stricter per-pair rate would have to refuse or
 * queue attempts beyond it, and the admin's attempt cannot be told apart from the
 * attacker's: that is exactly the lockout this design removes. The password hash (scrypt)
 * and, without one, the 144-bit generated password are what make guessing hopeless.
 *
 * Other keys. Failures of one address never delay another address; failures for one user
 * name never delay another user name. IPv6 clients are keyed by their /64 (one host
 * usually holds a whole /64, so its addresses are free to it), IPv4-mapped IPv6 by the
 * IPv4 address. A correct password clears the pair's pending delay (the admin who mistyped
 * is not slowed afterwards) but not its failure count: an attacker sharing the pair gets
 * no free guesses back each time the admin logs in. The pair's attempts held at that moment
 * are checked at once (http-login.ts): they were waiting (also) for attempts presumed to
 * fail, and a client that sends its right password on several connections at once is not
 * held by its own attempts; an attacker sharing the pair gets its held guesses checked
 * early, at most C once per login of the admin. A pair is forgotten `forgetAfterMs` after
 * its last failure; that is when its throttling ends.
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

/** How an attempt ended: a wrong or a right password, or not checked (the client left, the service stopped). */
export type LoginAttemptOutcome = 'failed' | 'succeeded' | 'unchecked'

/** One login attempt in flight: its wait, then its end, told once. */
export interface LoginAttempt {
  /** The key of its (address, user) pair. */
  readonly key: string
  /** How long it waits before its password is checked, in ms (0: at once); at most `delayMsMax`. */
  readonly waitMs: number
  /** Records the outcome and ends the attempt; later calls do nothing. */
  end(outcome: LoginAttemptOutcome): void
}

/**
 * The throttle's state and rules, without timers or sockets: the HTTP API begins an
 * attempt (`begin`), holds it its `waitMs`, checks the password and ends the attempt with
 * the outcome (`waitMs`, `recordFailure` and `recordSuccess` are the same steps one by one,
 * for attempts not in flight); `tick()` (every few seconds, or driven by a test) forgets
 * quiet pairs. Events go to `onEvent` (the log and the audit log).
 * The units: login-pairs.ts (the pair table), login-delay.ts (the delay schedule),
 * login-audit.ts (the events and their budget).
 */
export function createLoginThrottle(deps: { clock: Clock; onEvent?: (event: LoginThrottleEvent) => void }, options: LoginThrottleOptions) {
  assert.ok(options.failuresBeforeDelay >= 1 && options.delayMsMax >= 1 && options.pairsMax >= 1, 'login throttle options out of range')
  const audit = createAuditBudget(deps)
  const pairs = createPairTable({ clock: deps.clock, onForget }, options)
  const inFlight = createInFlightTable()

  function onForget(pair: Pair, reason: ForgetReason): void {
    if (pair.throttledAtMs !== null) audit.emit(throttleEndedEvent({ ...pair, throttledAtMs: pair.throttledAtMs }, reason, deps.clock.monotonicMs()))
  }

  /** The wait of an attempt arriving now (arrivalWaitMs); counted on its pair when it waits. */
  function arrive(key: string): { waitMs: number; counted: boolean } {
    const pair = pairs.lookup(key)
    const waitMs = arrivalWaitMs(pair, inFlight.get(key), deps.clock.monotonicMs(), options)
    if (pair && waitMs > 0) pair.delayedAttempts += 1
    return { waitMs, counted: pair !== undefined }
  }

  const fail = (key: string, address: string, user: string) => recordFailureOf({ pairs, audit, clock: deps.clock, options }, key, address, user)

  return {
    /**
     * An attempt arrives: its wait counts the pair's attempts in flight as failures (so
     * parallel guesses are each delayed as if the ones before had failed), and it is in
     * flight until `end`. Fixed at arrival and at most `delayMsMax`, so a correct password
     * waits no longer than that whatever else arrives.
     */
    begin(address: string, user: string): LoginAttempt {
      const key = pairKey(address, user)
      const { waitMs, counted } = arrive(key)
      const release = inFlight.add(key, deps.clock.monotonicMs() + waitMs)
      let ended = false
      return {
        key,
        waitMs,
        end(outcome) {
          if (ended) return
          ended = true
          release()
          if (outcome === 'succeeded') recordSuccessOf(pairs, key)
          // A wait before the pair had a record (its failures were still in flight) is counted now.
          if (outcome === 'failed') fail(key, address, user).delayedAttempts += waitMs > 0 && !counted ? 1 : 0
        },
      }
    },
    /**
     * How long an attempt arriving now waits before its password is checked, in ms (0: check
     * at once), as `begin` without putting it in flight. Fixed at arrival: later failures of
     * the pair do not lengthen it, so it is at most `delayMsMax`.
     */
    waitMs(address: string, user: string): number {
      return arrive(pairKey(address, user)).waitMs
    },
    /** A wrong user name or password from this address. */
    recordFailure(address: string, user: string): void {
      fail(pairKey(address, user), address, user)
    },
    /** A correct password: the pair's next attempt is checked at once; its failures are kept. */
    recordSuccess(address: string, user: string): void {
      recordSuccessOf(pairs, pairKey(address, user))
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

/** Records a correct password: the pair's next attempt is checked at once; its failures are kept. */
function recordSuccessOf(pairs: PairTable, key: string): void {
  const pair = pairs.lookup(key)
  if (!pair) return
  pair.cleared = true
  if (pair.throttledAtMs !== null) pair.successes += 1
}

/**
 * Records a failure of the pair of `key` (created when new) and tells the audit: each failure
 * before the pair is throttled, and the start of its throttling.
 */
function recordFailureOf(context: { pairs: PairTable; audit: AuditBudget; clock: Clock; options: LoginThrottleOptions }, key: string, address: string, user: string): Pair {
  const { pairs, audit, options } = context
  const pair = pairs.obtain(key, address, user)
  pair.failures += 1
  pair.lastFailureMs = context.clock.monotonicMs()
  pair.cleared = false
  const isThrottled = pair.failures >= options.failuresBeforeDelay
  pairs.place(key, pair, isThrottled)
  if (!isThrottled) {
    audit.emit({ kind: 'failed', address: pair.address, user: pair.user, failures: pair.failures })
  } else if (pair.throttledAtMs === null) {
    pair.throttledAtMs = pair.lastFailureMs
    audit.emit({ kind: 'throttled', address: pair.address, user: pair.user, failures: pair.failures, delayMs: delayAfter(pair.failures, options) })
  }
  return pair
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>
