import { mkdir, access, constants } from 'node:fs/promises'
import { isAbsolute } from 'node:path'
import { randomInt } from 'node:crypto'
import { createRandom, type Clock, type Random } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import { hasCode, type MailkeepError } from '../../common/errors.js'
import type { IngestPipeline } from '../types.js'
import { JournalError } from './errors.js'
import { ImapSourceState, runImapPass } from './imap-pass.js'
import { runPop3Pass } from './pop3-pass.js'
import { Pop3ArchivedState, pop3StatePath } from './pop3-archived-state.js'
import { HeldRegistry, PassControl, emptyReport, type PassContext } from './pass.js'
import {
  journalCommandTimeoutMsDefault,
  journalConnectTimeoutMsDefault,
  journalFirstPullDelayMsMaxDefault,
  journalMessageBytesMaxDefault,
  journalRetryDelayMsMaxDefault,
  journalStopTimeoutMsDefault,
  type JournalFailure,
  type JournalSourceHealth,
  type JournalSourceOptions,
  type JournalSourceStatus,
  type PullReport,
  type ResolvedJournalOptions,
} from './types.js'

/** Fraction of a retry delay taken off at random, so appliances retrying one server spread out. */
export const retryJitterRatio = 0.5
/** Consecutive failed passes (of retryable kind) after which the source reports itself unhealthy. */
export const unhealthyAfterFailures = 3
/** After abandoning a pass, how long `stop()` waits for its connection to close, in milliseconds. */
export const abandonWaitMs = 1_000

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

function defaultPort(protocol: 'imap' | 'pop3', tls: 'implicit' | 'starttls' | 'none'): number {
  if (protocol === 'imap') return tls === 'implicit' ? 993 : 143
  return tls === 'implicit' ? 995 : 110
}

/** Applies defaults. Pure: validation happens in `validateOptions`, called by start() and pullOnce(). */
export function resolveJournalOptions(options: JournalSourceOptions): ResolvedJournalOptions {
  return {
    ...options,
    port: options.port ?? defaultPort(options.protocol, options.tls),
    messageBytesMax: options.messageBytesMax ?? journalMessageBytesMaxDefault,
    connectTimeoutMs: options.connectTimeoutMs ?? journalConnectTimeoutMsDefault,
    commandTimeoutMs: options.commandTimeoutMs ?? journalCommandTimeoutMsDefault,
    stopTimeoutMs: options.stopTimeoutMs ?? journalStopTimeoutMsDefault,
    retryDelayMsMax: options.retryDelayMsMax ?? journalRetryDelayMsMaxDefault,
    firstPullDelayMsMax: options.firstPullDelayMsMax ?? journalFirstPullDelayMsMaxDefault,
  }
}

/**
 * Checks resolved options (the config schema checks most of them already; the composition
 * root may build options by other means). Returns every problem, empty when valid.
 */
export function validateJournalOptions(options: ResolvedJournalOptions): string[] {
  const problems: string[] = []
  const positiveInteger = (value: number, name: string, minimum = 1): void => {
    if (!Number.isInteger(value) || value < minimum) problems.push(`${name}: must be an integer ≥ ${minimum} (got ${value})`)
  }
  if (!/^[a-z0-9][a-z0-9-]{0,63}$/.test(options.name)) problems.push(`name: must match ^[a-z0-9][a-z0-9-]{0,63}$ (got ${JSON.stringify(options.name)})`)
  if (options.protocol !== 'imap' && options.protocol !== 'pop3') problems.push(`protocol: must be imap or pop3 (got ${JSON.stringify(options.protocol)})`)
  if (!['implicit', 'starttls', 'none'].includes(options.tls)) problems.push(`tls: must be implicit, starttls or none (got ${JSON.stringify(options.tls)})`)
  if (!['delete', 'flag'].includes(options.afterArchive)) problems.push(`afterArchive: must be delete or flag (got ${JSON.stringify(options.afterArchive)})`)
  if (!options.host || /[\s/]/.test(options.host)) problems.push(`host: must be a host name or address (got ${JSON.stringify(options.host)})`)
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) problems.push(`port: must be 1–65535 (got ${options.port})`)
  // Line breaks in credentials would smuggle extra protocol commands.
  if (!options.user || /[\r\n\0]/.test(options.user)) problems.push('user: must be non-empty without line breaks')
  if (!options.password || /[\r\n\0]/.test(options.password)) problems.push('password: must be non-empty without line breaks (value not shown)')
  if (options.protocol === 'imap' && (!options.mailbox || /[\r\n\0]/.test(options.mailbox))) problems.push(`mailbox: must be non-empty without line breaks (got ${JSON.stringify(options.mailbox)})`)
  positiveInteger(options.intervalMs, 'intervalMs', 1000)
  positiveInteger(options.batchMessagesMax, 'batchMessagesMax')
  positiveInteger(options.messageBytesMax, 'messageBytesMax')
  positiveInteger(options.connectTimeoutMs, 'connectTimeoutMs')
  positiveInteger(options.commandTimeoutMs, 'commandTimeoutMs')
  positiveInteger(options.stopTimeoutMs, 'stopTimeoutMs')
  positiveInteger(options.retryDelayMsMax, 'retryDelayMsMax')
  positiveInteger(options.firstPullDelayMsMax, 'firstPullDelayMsMax', 0)
  if (!options.stateDir || !isAbsolute(options.stateDir)) problems.push(`stateDir: must be an absolute path (got ${JSON.stringify(options.stateDir)})`)
  return problems
}

/** What createJournalSource needs from the rest of the firmware. */
export interface JournalSourceDeps {
  logger: Logger
  clock: Clock
  pipeline: IngestPipeline
  /** Jitter of retry and first-pull delays; seeded from the OS when absent. */
  random?: Random
  /**
   * Source takeover: this source belongs to the mirror peer `peer` and is pulled here only
   * while `shouldPull()` says so (the peer has been unreachable long enough). Asked before each
   * scheduled pass; otherwise the source waits (state `standby`) and asks again after
   * `intervalMs`. A pass in flight when the peer returns finishes; dedup absorbs the overlap.
   * A manual `pullOnce()` is the technician's call and runs regardless.
   */
  takeover?: { peer: string; shouldPull: () => boolean }
  /**
   * Why the archive is read-only (its data volume is full), or null while it takes mail.
   * Asked before each scheduled pass: while read-only the source fetches and deletes nothing
   * (state `read-only`) and asks again after `intervalMs`, since every message would only be
   * refused. A manual `pullOnce()` runs regardless (the archive refuses, nothing is deleted).
   */
  archiveReadOnly?: () => string | null
}

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

function toFailure(error: MailkeepError, atMs: number): JournalFailure {
  return { code: error.code, message: error.message, retryable: error.retryable, atMs }
}

/**
 * Creates the puller of one `journal.sources[]` entry (IMAP via imapflow, POP3 via our own
 * client). Pure: opens nothing until start() or pullOnce().
 *
 * A message is removed at the server ('delete') or marked ('flag') only after
 * `pipeline.submit` resolved, i.e. after its archive is durable. A crash in between makes
 * the next pass fetch it again; the archive absorbs it (content hash, delivery key).
 */
export function createJournalSource(deps: JournalSourceDeps, options: JournalSourceOptions): JournalSource {
  const resolved = resolveJournalOptions(options)
  const logger = deps.logger.child('journal', { source: resolved.name })
  const random = deps.random ?? createRandom(randomInt(0, 2 ** 32))
  const held = new HeldRegistry()
  const imapState = new ImapSourceState()
  const pop3State =
    resolved.protocol === 'pop3' && resolved.afterArchive === 'flag'
      ? new Pop3ArchivedState(pop3StatePath(resolved.stateDir, resolved.name), { source: resolved.name, host: resolved.host, user: resolved.user }, logger)
      : null

  let phase: 'created' | 'started' | 'stopped' = 'created'
  let timer: NodeJS.Timeout | null = null
  let nextPullAtMs: number | null = null
  let queue: Promise<unknown> = Promise.resolve()
  let current: { control: PassControl; done: Promise<PullReport> } | null = null
  let stopping: Promise<void> | null = null
  let lastPullAtMs: number | null = null
  let lastSuccessAtMs: number | null = null
  let lastError: JournalFailure | null = null
  let consecutiveFailures = 0
  let lastReport: PullReport | null = null
  let takingOver = false
  const archiveWait = createArchiveWait(deps.archiveReadOnly, logger)
  const totals = { passes: 0, archived: 0, duplicates: 0, acknowledged: 0 }

  function assertValid(): void {
    const problems = validateJournalOptions(resolved)
    if (problems.length > 0) {
      throw new JournalError('INVALID_OPTIONS', `journal source ${JSON.stringify(resolved.name)} is misconfigured: ${problems.join('; ')}`, { fields: { problems } })
    }
  }

  function cancelSchedule(): void {
    if (timer) clearTimeout(timer)
    timer = null
    nextPullAtMs = null
  }

  /** (Re)arms the one timer of this source; only a started, enabled source has one. */
  function schedule(delayMs: number): void {
    cancelSchedule()
    if (phase !== 'started' || !resolved.enabled) return
    nextPullAtMs = deps.clock.now() + delayMs
    timer = setTimeout(() => {
      timer = null
      nextPullAtMs = null
      // A pass in flight (a manual pull) reschedules when it ends: no second pass right after it.
      if (current) return
      if (!takeoverAllows() || !archiveWait.takesMail()) {
        schedule(resolved.intervalMs)
        return
      }
      // The pass records its own outcome and reschedules; nothing to handle here.
      runSerialized().catch(() => undefined)
    }, delayMs)
    timer.unref()
  }

  /** Whether a scheduled pass may run: always, unless this source is a takeover of a peer's that is up. */
  function takeoverAllows(): boolean {
    if (!deps.takeover) return true
    let pull: boolean
    try {
      pull = deps.takeover.shouldPull()
    } catch (error) {
      logger.error('cannot tell whether the mirror peer is offline; not pulling its journal source', { peer: deps.takeover.peer, error })
      pull = false
    }
    if (pull !== takingOver) {
      takingOver = pull
      if (pull) logger.warn('mirror peer offline: pulling its journal source here (takeover)', { peer: deps.takeover.peer })
      else logger.info('mirror peer back: its journal source is no longer pulled here', { peer: deps.takeover.peer })
    }
    return pull
  }

  function record(report: PullReport): void {
    lastReport = report
    totals.passes++
    totals.archived += report.archived
    totals.duplicates += report.duplicates
    totals.acknowledged += report.acknowledged
    if (report.error && !hasCode(report.error, 'STOPPED')) {
      consecutiveFailures++
      lastError = toFailure(report.error, report.finishedAtMs)
      logger.warn('journal pass failed', {
        error: report.error,
        consecutiveFailures,
        archived: report.archived,
        acknowledged: report.acknowledged,
      })
    } else if (!report.error && !report.stopped) {
      consecutiveFailures = 0
      lastSuccessAtMs = report.finishedAtMs
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

  async function pass(): Promise<PullReport> {
    const control = new PassControl()
    const report = emptyReport(resolved, deps.clock.now())
    lastPullAtMs = report.startedAtMs
    const context: PassContext = { options: resolved, pipeline: deps.pipeline, clock: deps.clock, logger, held, control, report }
    const run = resolved.protocol === 'imap' ? runImapPass(context, imapState) : runPop3Pass(context, pop3State)
    const done = run.then(() => {
      report.held = held.list()
      report.finishedAtMs = deps.clock.now()
      return report
    })
    current = { control, done }
    try {
      return await done
    } finally {
      current = null
    }
  }

  /** Runs one pass after any pass in flight; records it and reschedules the timer. */
  function runSerialized(): Promise<PullReport> {
    const next = queue.then(async () => {
      if (phase === 'stopped') throw new JournalError('STOPPED', `journal source ${resolved.name} is stopped`)
      try {
        const report = await pass()
        record(report)
        return report
      } finally {
        schedule(nextPullDelayMs(consecutiveFailures, resolved.intervalMs, resolved.retryDelayMsMax, random))
      }
    })
    queue = next.catch(() => undefined)
    return next
  }

  return {
    name: `journal:${resolved.name}`,

    async start() {
      if (phase === 'stopped') throw new JournalError('STOPPED', `journal source ${resolved.name} is stopped`)
      if (phase === 'started') return
      assertValid()
      try {
        await mkdir(resolved.stateDir, { recursive: true, mode: 0o700 })
        await access(resolved.stateDir, constants.W_OK)
      } catch (error) {
        throw new JournalError('STATE_FILE_FAILED', `state directory ${resolved.stateDir} is not writable: ${(error as Error).message}`, { fields: { path: resolved.stateDir } })
      }
      phase = 'started'
      if (resolved.tls === 'none') logger.warn('tls is none: the password crosses the network in cleartext', { host: resolved.host })
      if (!resolved.enabled) {
        logger.info('journal source disabled: not scheduled')
        return
      }
      const firstDelayMs = Math.round(random.next() * resolved.firstPullDelayMsMax)
      logger.info('journal source started', { protocol: resolved.protocol, host: resolved.host, port: resolved.port, tls: resolved.tls, afterArchive: resolved.afterArchive, firstPullInMs: firstDelayMs })
      schedule(firstDelayMs)
    },

    stop() {
      if (stopping) return stopping
      stopping = (async () => {
        phase = 'stopped'
        cancelSchedule()
        const inFlight = current
        if (!inFlight) return
        inFlight.control.requestStop()
        const settled = inFlight.done.then(
          () => true,
          () => true,
        )
        if (await settledWithin(settled, resolved.stopTimeoutMs)) return
        logger.warn('in-flight message did not finish in time: pass abandoned, nothing acknowledged', { stopTimeoutMs: resolved.stopTimeoutMs })
        inFlight.control.abandon()
        // The connection is dropped; a pipeline submit may still be running and finishes on
        // its own, unacknowledged. Wait a little for the pass to notice, not for the submit.
        await settledWithin(settled, abandonWaitMs)
      })()
      return stopping
    },

    healthcheck() {
      const heldMessages = held.size
      const base = { lastSuccessAtMs, lastError, consecutiveFailures, heldMessages }
      if (!resolved.enabled) return { ok: true, detail: 'disabled', ...base }
      if (lastError && consecutiveFailures > 0 && (!lastError.retryable || consecutiveFailures >= unhealthyAfterFailures)) {
        return { ok: false, detail: `${consecutiveFailures} failed pass(es): ${lastError.code}: ${lastError.message}`, ...base }
      }
      if (heldMessages > 0) return { ok: false, detail: `${heldMessages} message(s) left on the server (over the size limit or refused)`, ...base }
      if (lastSuccessAtMs === null) return { ok: true, detail: consecutiveFailures > 0 ? `retrying after ${lastError?.code}` : 'no pass yet', ...base }
      return { ok: true, detail: consecutiveFailures > 0 ? `retrying after ${lastError?.code}` : 'ok', ...base }
    },

    pullOnce() {
      if (phase === 'stopped') return Promise.reject(new JournalError('STOPPED', `journal source ${resolved.name} is stopped`))
      try {
        assertValid()
      } catch (error) {
        return Promise.reject(error)
      }
      return runSerialized()
    },

    status() {
      const state: JournalSourceStatus['state'] =
        phase === 'stopped'
          ? 'stopped'
          : current
            ? 'pulling'
            : phase === 'created'
              ? 'created'
              : !resolved.enabled
                ? 'disabled'
                : deps.takeover && !takingOver
                  ? 'standby'
                  : archiveWait.reason()
                    ? 'read-only'
                    : 'idle'
      return {
        name: resolved.name,
        protocol: resolved.protocol,
        host: resolved.host,
        port: resolved.port,
        tls: resolved.tls,
        user: resolved.user,
        mailbox: resolved.protocol === 'imap' ? resolved.mailbox : null,
        afterArchive: resolved.afterArchive,
        enabled: resolved.enabled,
        state,
        lastPullAtMs,
        lastSuccessAtMs,
        lastError,
        consecutiveFailures,
        nextPullAtMs,
        totals: { ...totals },
        held: held.list(),
        lastReport: lastReport ? summarize(lastReport) : null,
        takeover: deps.takeover ? { peer: deps.takeover.peer, active: takingOver } : null,
      }
    },
  }
}

/**
 * Whether scheduled passes may run as far as the archive is concerned: not while it is
 * read-only (JournalSourceDeps.archiveReadOnly). Logs when that changes, once each way.
 */
function createArchiveWait(archiveReadOnly: JournalSourceDeps['archiveReadOnly'], logger: Logger) {
  /** Why passes wait, or null. */
  let waitingFor: string | null = null
  return {
    reason: () => waitingFor,
    takesMail(): boolean {
      let reason: string | null = null
      try {
        reason = archiveReadOnly?.() ?? null
      } catch (error) {
        logger.warn('cannot tell whether the archive is read-only; pulling', { error })
      }
      if (reason !== waitingFor) {
        if (reason) logger.warn('archive read-only: journal pulls wait until it takes mail again', { reason })
        else logger.info('archive takes mail again: journal pulls resume')
        waitingFor = reason
      }
      return reason === null
    },
  }
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

/** A report without its bulky parts (ids, held list) and with its error as plain data. */
function summarize(report: PullReport): NonNullable<JournalSourceStatus['lastReport']> {
  const { error, ids, held, ...summary } = report
  void ids
  void held
  return { ...summary, error: error ? toFailure(error, report.finishedAtMs) : null }
}
