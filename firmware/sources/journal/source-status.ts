import { hasCode, type MailkeepError } from '../../common/errors.js'
import type { JournalSourceContext } from './source-context.js'
import type { JournalFailure, JournalSourceHealth, JournalSourceStatus, PullReport } from './types.js'

/**
 * What a journal source reports: the outcome of each pass folded into its counters,
 * healthcheck() and status().
 */

/** Consecutive failed passes (of retryable kind) after which the source reports itself unhealthy. */
export const unhealthyAfterFailures = 3

function toFailure(error: MailkeepError, atMs: number): JournalFailure {
  return { code: error.code, message: error.message, retryable: error.retryable, atMs }
}

/**
 * Folds a finished pass into the totals, the failure count, the last error and the last
 * success; logs a failure, and a pass that archived or acknowledged anything. A pass ended
 * by stop() counts as neither failure nor success.
 */
export function recordPass(context: JournalSourceContext, report: PullReport): void {
  const { totals, logger } = context
  context.lastReport = report
  totals.passes++
  totals.archived += report.archived
  totals.duplicates += report.duplicates
  totals.acknowledged += report.acknowledged
  if (report.error && !hasCode(report.error, 'STOPPED')) {
    context.consecutiveFailures++
    context.lastError = toFailure(report.error, report.finishedAtMs)
    logger.warn('journal pass failed', {
      error: report.error,
      consecutiveFailures: context.consecutiveFailures,
      archived: report.archived,
      acknowledged: report.acknowledged,
    })
  } else if (!report.error && !report.stopped) {
    context.consecutiveFailures = 0
    context.lastSuccessAtMs = report.finishedAtMs
  }
  // Empty passes stay quiet; held messages were warned about when first held.
  if (report.archived > 0 || report.acknowledged > 0) {
    logger.info('journal pass', {
      archived: report.archived,
      duplicates: report.duplicates,
      acknowledged: report.acknowledged,
      held: report.held.length,
      remaining: report.remaining,
    })
  }
}

/** JournalSource.healthcheck(): see there for when `ok` is false. */
export function sourceHealth(context: JournalSourceContext): JournalSourceHealth {
  const { lastSuccessAtMs, lastError, consecutiveFailures } = context
  const heldMessages = context.held.size
  const base = { lastSuccessAtMs, lastError, consecutiveFailures, heldMessages }
  if (!context.options.enabled) return { ok: true, detail: 'disabled', ...base }
  if (lastError && consecutiveFailures > 0 && (!lastError.retryable || consecutiveFailures >= unhealthyAfterFailures)) {
    return { ok: false, detail: `${consecutiveFailures} failed pass(es): ${lastError.code}: ${lastError.message}`, ...base }
  }
  if (heldMessages > 0) return { ok: false, detail: `${heldMessages} message(s) left on the server (over the size limit or refused)`, ...base }
  if (lastSuccessAtMs === null) return { ok: true, detail: consecutiveFailures > 0 ? `retrying after ${lastError?.code}` : 'no pass yet', ...base }
  return { ok: true, detail: consecutiveFailures > 0 ? `retrying after ${lastError?.code}` : 'ok', ...base }
}

/** What the source is doing now; the first that applies wins. */
function sourceState(context: JournalSourceContext): JournalSourceStatus['state'] {
  if (context.phase === 'stopped') return 'stopped'
  if (context.current) return 'pulling'
  if (context.phase === 'created') return 'created'
  if (!context.options.enabled) return 'disabled'
  if (context.takeover && !context.takeover.active()) return 'standby'
  if (context.archiveWait.reason()) return 'read-only'
  return 'idle'
}

/** JournalSource.status(): everything `mailkeep show journal` prints, never the password. */
export function sourceStatus(context: JournalSourceContext): JournalSourceStatus {
  const { options, takeover, lastReport } = context
  return {
    name: options.name,
    protocol: options.protocol,
    host: options.host,
    port: options.port,
    tls: options.tls,
    user: options.user,
    mailbox: options.protocol === 'imap' ? options.mailbox : null,
    afterArchive: options.afterArchive,
    enabled: options.enabled,
    state: sourceState(context),
    lastPullAtMs: context.lastPullAtMs,
    lastSuccessAtMs: context.lastSuccessAtMs,
    lastError: context.lastError,
    consecutiveFailures: context.consecutiveFailures,
    nextPullAtMs: context.nextPullAtMs,
    totals: { ...context.totals },
    held: context.held.list(),
    lastReport: lastReport ? summarize(lastReport) : null,
    takeover: takeover ? { peer: takeover.peer, active: takeover.active() } : null,
  }
}

/** A report without its bulky parts (ids, held list) and with its error as plain data. */
function summarize(report: PullReport): NonNullable<JournalSourceStatus['lastReport']> {
  const { error, ids, held, ...summary } = report
  void ids
  void held
  return { ...summary, error: error ? toFailure(error, report.finishedAtMs) : null }
}
