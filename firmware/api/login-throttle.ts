import assert from 'node:assert'
import type { Clock } from '../common/clock.js'

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

/** Events given to the audit log, across all pairs, per minute; the rest are counted. */
export const loginAuditEventsPerMinuteMax = 30
/** Longest user name kept, in characters (longer names are cut for the key, the log and the audit). */
export const loginUserCharsMax = 64

/** What the throttle tells the audit log and the log. Counts and names, never a password. */
export type LoginThrottleEvent =
  /** A failure before the pair is throttled. */
  | { kind: 'failed'; address: string; user: string; failures: number }
  /** The pair's failures reached `failuresBeforeDelay`: its attempts wait from now on. */
  | { kind: 'throttled'; address: string; user: string; failures: number; delayMs: number }
  /** A throttled pair was forgotten: quiet for `forgetAfterMs`, evicted by `pairsMax`, or the service stopped. */
  | {
      kind: 'throttle-ended'
      address: string
      user: string
      reason: 'quiet' | 'evicted' | 'stopped'
      failures: number
      delayedAttempts: number
      successes: number
      throttledMs: number
    }
  /** Events not passed on in the last minute (over `loginAuditEventsPerMinuteMax`). */
  | { kind: 'audit-suppressed'; events: number }

interface Pair {
  address: string
  user: string
  failures: number
  lastFailureMs: number
  /** A correct password since the last failure: the next attempt is checked at once. */
  cleared: boolean
  throttledAtMs: number | null
  /** Attempts that waited while throttled. */
  delayedAttempts: number
  /** Correct passwords while throttled. */
  successes: number
}

/** The key of a client address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 as its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (mapped) return mapped[1]!
  if (!address.includes(':')) return address
  const bare = address.split('%')[0]!.toLowerCase()
  const [head = '', tail] = bare.split('::')
  const groups = (text: string) => (text ? text.split(':').flatMap((group) => (group.includes('.') ? ['0', '0'] : [group])) : [])
  const front = groups(head)
  const back = tail === undefined ? [] : groups(tail)
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back]
  return `${all.slice(0, 4).map((group) => (parseInt(group, 16) || 0).toString(16)).join(':')}::/64`
}

/**
 * The throttle's state and rules, without timers or sockets: the HTTP API asks `waitMs`
 * before it checks a password and reports the outcome; `tick()` (every few seconds, or
 * driven by a test) forgets quiet pairs. Events go to `onEvent` (the log and the audit log).
 */
export function createLoginThrottle(deps: { clock: Clock; onEvent?: (event: LoginThrottleEvent) => void }, options: LoginThrottleOptions) {
  assert.ok(options.failuresBeforeDelay >= 1 && options.delayMsMax >= 1 && options.pairsMax >= 1, 'login throttle options out of range')
  const delayMsMin = Math.min(options.delayMsMin, options.delayMsMax)
  // Both ordered by last failure, oldest first (a failure moves its pair to the end).
  const counting = new Map<string, Pair>()
  const throttled = new Map<string, Pair>()
  const budget = { windowStartMs: deps.clock.monotonicMs(), passed: 0, suppressed: 0 }

  const keyOf = (address: string, user: string) => `${addressKey(address)}\u0000${user.slice(0, loginUserCharsMax)}`

  function emit(event: LoginThrottleEvent): void {
    const now = deps.clock.monotonicMs()
    if (now - budget.windowStartMs >= 60_000) flushBudget(now)
    if (budget.passed >= loginAuditEventsPerMinuteMax) {
      budget.suppressed += 1
      return
    }
    budget.passed += 1
    deps.onEvent?.(event)
  }

  function flushBudget(now: number): void {
    const suppressed = budget.suppressed
    budget.windowStartMs = now
    budget.passed = 0
    budget.suppressed = 0
    if (suppressed > 0) deps.onEvent?.({ kind: 'audit-suppressed', events: suppressed })
  }

  /** The wait a pair's attempts have after `failures` failures, in ms. */
  function delayAfter(failures: number): number {
    if (failures < options.failuresBeforeDelay) return 0
    return Math.min(delayMsMin * 2 ** Math.min(failures - options.failuresBeforeDelay, 30), options.delayMsMax)
  }

  function forget(key: string, pair: Pair, reason: 'quiet' | 'evicted' | 'stopped'): void {
    counting.delete(key)
    throttled.delete(key)
    if (pair.throttledAtMs === null) return
    emit({
      kind: 'throttle-ended',
      address: pair.address,
      user: pair.user,
      reason,
      failures: pair.failures,
      delayedAttempts: pair.delayedAttempts,
      successes: pair.successes,
      throttledMs: Math.round(deps.clock.monotonicMs() - pair.throttledAtMs),
    })
  }

  function lookup(key: string): Pair | undefined {
    const pair = throttled.get(key) ?? counting.get(key)
    if (pair && deps.clock.monotonicMs() - pair.lastFailureMs >= options.forgetAfterMs) {
      forget(key, pair, 'quiet')
      return undefined
    }
    return pair
  }

  function makeRoom(): void {
    while (counting.size + throttled.size >= options.pairsMax) {
      const from = counting.size > 0 ? counting : throttled
      const [key, pair] = from.entries().next().value as [string, Pair]
      forget(key, pair, 'evicted')
    }
  }

  return {
    /**
     * How long this attempt waits before its password is checked, in ms (0: check at once).
     * Fixed at arrival: later failures of the pair do not lengthen it, so it is at most
     * `delayMsMax`.
     */
    waitMs(address: string, user: string): number {
      const pair = lookup(keyOf(address, user))
      if (!pair || pair.cleared) return 0
      const waitMs = Math.max(0, pair.lastFailureMs + delayAfter(pair.failures) - deps.clock.monotonicMs())
      if (waitMs > 0) pair.delayedAttempts += 1
      return Math.ceil(waitMs)
    },
    /** A wrong user name or password from this address. */
    recordFailure(address: string, user: string): void {
      const key = keyOf(address, user)
      let pair = lookup(key)
      if (!pair) {
        makeRoom()
        pair = { address: addressKey(address), user: user.slice(0, loginUserCharsMax), failures: 0, lastFailureMs: 0, cleared: false, throttledAtMs: null, delayedAttempts: 0, successes: 0 }
      }
      pair.failures += 1
      pair.lastFailureMs = deps.clock.monotonicMs()
      pair.cleared = false
      counting.delete(key)
      throttled.delete(key)
      if (pair.failures < options.failuresBeforeDelay) {
        counting.set(key, pair)
        emit({ kind: 'failed', address: pair.address, user: pair.user, failures: pair.failures })
        return
      }
      throttled.set(key, pair)
      if (pair.throttledAtMs === null) {
        pair.throttledAtMs = pair.lastFailureMs
        emit({ kind: 'throttled', address: pair.address, user: pair.user, failures: pair.failures, delayMs: delayAfter(pair.failures) })
      }
    },
    /** A correct password: the pair's next attempt is checked at once; its failures are kept. */
    recordSuccess(address: string, user: string): void {
      const pair = lookup(keyOf(address, user))
      if (!pair) return
      pair.cleared = true
      if (pair.throttledAtMs !== null) pair.successes += 1
    },
    /** Forgets pairs quiet for `forgetAfterMs` (summaries for the throttled ones) and reports suppressed events. */
    tick(): void {
      const now = deps.clock.monotonicMs()
      for (const map of [counting, throttled]) {
        for (const [key, pair] of map) {
          if (now - pair.lastFailureMs < options.forgetAfterMs) break
          forget(key, pair, 'quiet')
        }
      }
      if (now - budget.windowStartMs >= 60_000) flushBudget(now)
    },
    /** The service stops: a summary for each throttled pair, then everything is forgotten. */
    close(): void {
      for (const [key, pair] of [...throttled]) forget(key, pair, 'stopped')
      counting.clear()
      flushBudget(deps.clock.monotonicMs())
    },
    /** Pairs tracked and pairs throttled now. */
    stats(): { pairs: number; throttled: number } {
      return { pairs: counting.size + throttled.size, throttled: throttled.size }
    },
  }
}

export type LoginThrottle = ReturnType<typeof createLoginThrottle>

/**
 * A throttle event as an audit-log entry (`login.failed`, `login.throttled`,
 * `login.throttle-ended`, `login.audit-suppressed`), actor `http@ADDRESS`: addresses, user
 * names and counts, never a password.
 */
export function loginAuditEntry(event: LoginThrottleEvent): { actor: string; action: string; details: Record<string, unknown> } {
  if (event.kind === 'audit-suppressed') return { actor: 'http', action: 'login.audit-suppressed', details: { via: 'http', events: event.events } }
  const { kind, address, ...counts } = event
  return { actor: `http@${address}`, action: `login.${kind}`, details: { via: 'http', remoteAddress: address, ...counts } }
}
