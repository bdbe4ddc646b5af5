import type { Clock } from '../common/clock.js'
import type { ForgetReason, Pair } from './login-pairs.js'

/** Events given to the audit log, across all pairs, per minute; the rest are counted. */
export const loginAuditEventsPerMinuteMax = 30
/** The window of that bound, in ms. */
const auditWindowMs = 60_000

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

/** The summary of a throttled pair that is forgotten at `nowMs` (monotonic). */
export function throttleEndedEvent(pair: Pair & { throttledAtMs: number }, reason: ForgetReason, nowMs: number): LoginThrottleEvent {
  const { address, user, failures, delayedAttempts, successes } = pair
  return { kind: 'throttle-ended', address, user, reason, failures, delayedAttempts, successes, throttledMs: Math.round(nowMs - pair.throttledAtMs) }
}

/**
 * Passes events on, at most `loginAuditEventsPerMinuteMax` a minute across all pairs; the
 * rest are counted and reported in one `audit-suppressed` event when the minute is over
 * (at the next event or `flush`).
 */
export function createAuditBudget(deps: { clock: Clock; onEvent?: (event: LoginThrottleEvent) => void }) {
  const budget = { windowStartMs: deps.clock.monotonicMs(), passed: 0, suppressed: 0 }

  function startWindow(now: number): void {
    const suppressed = budget.suppressed
    budget.windowStartMs = now
    budget.passed = 0
    budget.suppressed = 0
    if (suppressed > 0) deps.onEvent?.({ kind: 'audit-suppressed', events: suppressed })
  }

  return {
    /** Passes `event` on, or counts it when this minute's budget is spent. */
    emit(event: LoginThrottleEvent): void {
      const now = deps.clock.monotonicMs()
      if (now - budget.windowStartMs >= auditWindowMs) startWindow(now)
      if (budget.passed >= loginAuditEventsPerMinuteMax) {
        budget.suppressed += 1
        return
      }
      budget.passed += 1
      deps.onEvent?.(event)
    },
    /** Reports the suppressed count when the minute is over, or at once with `now: true` (the service stops). */
    flush(options: { now?: boolean } = {}): void {
      const now = deps.clock.monotonicMs()
      if (options.now || now - budget.windowStartMs >= auditWindowMs) startWindow(now)
    },
  }
}

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

export type AuditBudget = ReturnType<typeof createAuditBudget>
