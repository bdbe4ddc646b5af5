import type { Random } from '../../common/clock.js'
import { runImapPass } from './imap-pass.js'
import { runPop3Pass } from './pop3-pass.js'
import { PassControl, emptyReport, type PassContext } from './pass.js'
import { stoppedError, type JournalSourceContext } from './source-context.js'
import { recordPass } from './source-status.js'
import type { PullReport } from './types.js'

/**
 * The poll loop of a journal source: one timer, armed after every pass with the delay the
 * outcome calls for, and a queue that runs passes (scheduled or manual) one at a time.
 */

/** Fraction of a retry delay taken off at random, so appliances retrying one server spread out. */
export const retryJitterRatio = 0.5

/**
 * Delay before the next pass, in milliseconds: `intervalMs` after a success; after
 * `consecutiveFailures` failures, `intervalMs · 2^(failures−1)` capped at
 * max(`intervalMs`, `retryDelayMsMax`), minus a random part of up to `retryJitterRatio`.
 * Pure apart from the injected random source.
 */
export function nextPullDelayMs(consecutiveFailures: number, intervalMs: number, retryDelayMsMax: number, random: Random): number {
  if (consecutiveFailures <= 0) return intervalMs
  const cap = Math.max(intervalMs, retryDelayMsMax)
  const exponential = Math.min(cap, intervalMs * 2 ** Math.min(consecutiveFailures - 1, 30))
  return Math.round(exponential * (1 - retryJitterRatio * random.next()))
}

/** Clears the timer; no pass is scheduled afterwards. */
export function cancelSchedule(context: JournalSourceContext): void {
  if (context.timer) clearTimeout(context.timer)
  context.timer = null
  context.nextPullAtMs = null
}

/** (Re)arms the one timer of this source, unref'ed; only a started, enabled source has one. */
export function schedule(context: JournalSourceContext, delayMs: number): void {
  cancelSchedule(context)
  if (context.phase !== 'started' || !context.options.enabled) return
  context.nextPullAtMs = context.deps.clock.now() + delayMs
  context.timer = setTimeout(() => {
    context.timer = null
    context.nextPullAtMs = null
    onTimer(context)
  }, delayMs)
  context.timer.unref()
}

/** A scheduled pass is due: run it, unless one is in flight or the source has to wait. */
function onTimer(context: JournalSourceContext): void {
  // A pass in flight (a manual pull) reschedules when it ends: no second pass right after it.
  if (context.current) return
  const takeoverAllows = context.takeover?.allows() ?? true
  if (!takeoverAllows || !context.archiveWait.takesMail()) {
    schedule(context, context.options.intervalMs)
    return
  }
  // The pass records its own outcome and reschedules; nothing to handle here.
  runSerialized(context).catch(() => undefined)
}

/**
 * Runs one pass after any pass in flight; records it and reschedules the timer.
 *
 * @throws JournalError STOPPED when the source was stopped before the pass began
 */
export function runSerialized(context: JournalSourceContext): Promise<PullReport> {
  const next = context.queue.then(async () => {
    if (context.phase === 'stopped') throw stoppedError(context)
    try {
      const report = await runPass(context)
      recordPass(context, report)
      return report
    } finally {
      const { intervalMs, retryDelayMsMax } = context.options
      schedule(context, nextPullDelayMs(context.consecutiveFailures, intervalMs, retryDelayMsMax, context.random))
    }
  })
  context.queue = next.catch(() => undefined)
  return next
}

/** One IMAP or POP3 pass, visible as `context.current` while it runs (for stop() and status()). */
async function runPass(context: JournalSourceContext): Promise<PullReport> {
  const { options, deps, held } = context
  const control = new PassControl()
  const report = emptyReport(options, deps.clock.now())
  context.lastPullAtMs = report.startedAtMs
  const passContext: PassContext = { options, pipeline: deps.pipeline, clock: deps.clock, logger: context.logger, held, control, report }
  const run = options.protocol === 'imap' ? runImapPass(passContext, context.imapState) : runPop3Pass(passContext, context.pop3State)
  const done = run.then(() => {
    report.held = held.list()
    report.finishedAtMs = deps.clock.now()
    return report
  })
  context.current = { control, done }
  try {
    return await done
  } finally {
    context.current = null
  }
}
