/**
 * The one "wait until" of the tests: polls a probe until it answers, within a named timeout,
 * and on timeout says what it waited for and what it saw last. Tests wait for an observable
 * state (a status, a counter, an archived message), never for a fixed time.
 */
import { inspect } from 'node:util'
import { setTimeout as sleep } from 'node:timers/promises'

/** The probe's answers that mean "not yet": anything else ends the wait and is returned. */
export type NotYet = undefined | null | false

/** How long `waitUntil` waits when not told, in milliseconds. */
export const waitTimeoutMsDefault = 15_000
/** The pause between two probes when not told, in milliseconds. */
export const waitIntervalMsDefault = 10
/** The longest description of a value in a timeout message, in characters. */
const describedCharsMax = 2_000

export interface WaitOptions {
  /** What is awaited, in words ("B caught up"): the timeout error names it. */
  what: string
  /** Give up after this long, in milliseconds (default `waitTimeoutMsDefault`). */
  timeoutMs?: number
  /** Pause between probes, in milliseconds (default `waitIntervalMsDefault`). */
  intervalMs?: number
  /**
   * The state worth showing when the wait times out (e.g. a status object), for a probe
   * whose own answer (`false`) says little; may return a promise.
   */
  observe?: () => unknown
}

/** A wait that ran out of time; `lastSeen` is the probe's last answer. */
export class WaitTimeoutError extends Error {
  readonly code = 'WAIT_TIMEOUT'
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    readonly lastSeen: unknown,
    readonly observed: unknown,
  ) {
    super(`timed out after ${timeoutMs} ms waiting for ${what}; last seen: ${describe(lastSeen)}${observed === undefined ? '' : `; state: ${describe(observed)}`}`)
    this.name = 'WaitTimeoutError'
  }
}

/**
 * Calls `probe` at once, then every `intervalMs`, until it returns something other than
 * undefined, null or false, and resolves with that. An error thrown by the probe ends the
 * wait with that error.
 *
 * @throws WaitTimeoutError (code WAIT_TIMEOUT) after `timeoutMs` without an answer
 */
export async function waitUntil<T>(probe: () => T | NotYet | Promise<T | NotYet>, options: WaitOptions): Promise<T> {
  const timeoutMs = options.timeoutMs ?? waitTimeoutMsDefault
  const intervalMs = options.intervalMs ?? waitIntervalMsDefault
  const startedMs = performance.now()
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== null && value !== false) return value
    if (performance.now() - startedMs > timeoutMs) throw new WaitTimeoutError(options.what, timeoutMs, value, await options.observe?.())
    await sleep(intervalMs)
  }
}

function describe(value: unknown): string {
  const text = inspect(value, { depth: 4, breakLength: Infinity, maxArrayLength: 20, maxStringLength: 200 })
  return text.length > describedCharsMax ? `${text.slice(0, describedCharsMax)}…` : text
}
