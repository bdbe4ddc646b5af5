import { createSourceContext, stoppedError } from './source-context.js'
import { startSource, stopSource } from './source-lifecycle.js'
import { assertValidJournalOptions, type JournalSourceDeps } from './source-options.js'
import { runSerialized } from './source-schedule.js'
import { sourceHealth, sourceStatus } from './source-status.js'
import type { JournalSourceHealth, JournalSourceOptions, JournalSourceStatus, PullReport } from './types.js'

export { resolveJournalOptions, validateJournalOptions, type JournalSourceDeps } from './source-options.js'
export { nextPullDelayMs, retryJitterRatio } from './source-schedule.js'
export { unhealthyAfterFailures } from './source-status.js'
export { abandonWaitMs } from './source-lifecycle.js'

/** One configured journal source: a puller with its schedule. */
export interface JournalSource {
  /** `journal:<name>`, the service name in health and status. */
  readonly name: string
  /**
   * Validates the options, prepares the state directory and, when `enabled`, schedules the
   * first pass after a random delay up to `firstPullDelayMsMax`, then one every
   * `intervalMs` (or the backoff delay after failures). Timers are unref'ed.
   *
   * @throws JournalError INVALID_OPTIONS (every problem listed), STATE_FILE_FAILED (stateDir not writable), STOPPED after stop()
   */
  start(): Promise<void>
  /**
   * Stops the schedule and lets the in-flight message finish within `stopTimeoutMs`; past
   * that the pass is abandoned (connection dropped, nothing acknowledged). Idempotent; never
   * throws. Nothing is ever removed at the server without a durable archive.
   */
  stop(): Promise<void>
  /** Last success, last error, consecutive failures and held messages; `ok` is false after an auth/TLS/config failure, after `unhealthyAfterFailures` failures of other kinds, or while messages are held. */
  healthcheck(): JournalSourceHealth
  /**
   * Runs one full pass now (after any pass in flight) and resolves with its report; a failed
   * pass resolves too, with `report.error` set. Works whether or not the source was started.
   *
   * @throws JournalError INVALID_OPTIONS, STOPPED after stop()
   */
  pullOnce(): Promise<PullReport>
  /** Everything `mailkeep show journal` prints. Never contains the password. */
  status(): JournalSourceStatus
}

/**
 * Creates the puller of one `journal.sources[]` entry (IMAP via imapflow, POP3 via our own
 * client). Pure: opens nothing until start() or pullOnce().
 *
 * A message is removed at the server ('delete') or marked ('flag') only after
 * `pipeline.submit` resolved, i.e. after its archive is durable. A crash in between makes
 * the next pass fetch it again; the archive absorbs it (content hash, delivery key).
 *
 * The parts: source-context.ts (shared state), source-schedule.ts (poll loop, backoff),
 * source-waits.ts (takeover standby, read-only archive), source-status.ts (outcomes,
 * health, status), source-lifecycle.ts (start, stop).
 */
export function createJournalSource(deps: JournalSourceDeps, options: JournalSourceOptions): JournalSource {
  const context = createSourceContext(deps, options)
  return {
    name: `journal:${context.options.name}`,
    start: () => startSource(context),
    stop: () => stopSource(context),
    healthcheck: () => sourceHealth(context),
    pullOnce() {
      if (context.phase === 'stopped') return Promise.reject(stoppedError(context))
      try {
        assertValidJournalOptions(context.options)
      } catch (error) {
        return Promise.reject(error)
      }
      return runSerialized(context)
    },
    status: () => sourceStatus(context),
  }
}
