import { mkdir, access, constants } from 'node:fs/promises'
import { JournalError } from './errors.js'
import { stoppedError, type JournalSourceContext } from './source-context.js'
import { assertValidJournalOptions } from './source-options.js'
import { cancelSchedule, schedule } from './source-schedule.js'

/** start() and stop() of a journal source: see JournalSource for what each promises. */

/** After abandoning a pass, how long `stop()` waits for its connection to close, in milliseconds. */
export const abandonWaitMs = 1_000

/**
 * Validates, prepares the state directory and schedules the first pass (when enabled).
 *
 * @throws JournalError INVALID_OPTIONS, STATE_FILE_FAILED, STOPPED after stop()
 */
export async function startSource(context: JournalSourceContext): Promise<void> {
  const { options, logger } = context
  if (context.phase === 'stopped') throw stoppedError(context)
  if (context.phase === 'started') return
  assertValidJournalOptions(options)
  try {
    await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
    await access(options.stateDir, constants.W_OK)
  } catch (error) {
    throw new JournalError('STATE_FILE_FAILED', `state directory ${options.stateDir} is not writable: ${(error as Error).message}`, { fields: { path: options.stateDir } })
  }
  context.phase = 'started'
  if (options.tls === 'none') logger.warn('tls is none: the password crosses the network in cleartext', { host: options.host })
  if (!options.enabled) {
    logger.info('journal source disabled: not scheduled')
    return
  }
  const firstDelayMs = Math.round(context.random.next() * options.firstPullDelayMsMax)
  logger.info('journal source started', {
    protocol: options.protocol,
    host: options.host,
    port: options.port,
    tls: options.tls,
    afterArchive: options.afterArchive,
    firstPullInMs: firstDelayMs,
  })
  schedule(context, firstDelayMs)
}

/** Stops the schedule and ends the pass in flight, abandoning it after `stopTimeoutMs`. Idempotent; never throws. */
export function stopSource(context: JournalSourceContext): Promise<void> {
  context.stopping ??= endPassInFlight(context)
  return context.stopping
}

async function endPassInFlight(context: JournalSourceContext): Promise<void> {
  const { stopTimeoutMs } = context.options
  context.phase = 'stopped'
  cancelSchedule(context)
  const inFlight = context.current
  if (!inFlight) return
  inFlight.control.requestStop()
  const settled = inFlight.done.then(
    () => true,
    () => true,
  )
  if (await settledWithin(settled, stopTimeoutMs)) return
  context.logger.warn('in-flight message did not finish in time: pass abandoned, nothing acknowledged', { stopTimeoutMs })
  inFlight.control.abandon()
  // The connection is dropped; a pipeline submit may still be running and finishes on
  // its own, unacknowledged. Wait a little for the pass to notice, not for the submit.
  await settledWithin(settled, abandonWaitMs)
}

/** Resolves true when `promise` settles within `timeoutMs`, false otherwise; the timer is unref'ed and cleared. */
async function settledWithin(promise: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), timeoutMs)
    timer.unref()
  })
  try {
    return await Promise.race([promise.then(() => true), expired])
  } finally {
    clearTimeout(timer)
  }
}
