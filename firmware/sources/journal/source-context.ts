import { randomInt } from 'node:crypto'
import { createRandom, type Random } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import { JournalError } from './errors.js'
import { ImapSourceState } from './imap-pass.js'
import { Pop3ArchivedState, pop3StatePath } from './pop3-archived-state.js'
import { HeldRegistry, type PassControl } from './pass.js'
import { resolveJournalOptions, type JournalSourceDeps } from './source-options.js'
import { createArchiveWait, createTakeoverWait, type ArchiveWait, type TakeoverWait } from './source-waits.js'
import type { JournalFailure, JournalSourceOptions, JournalSourceStatus, PullReport, ResolvedJournalOptions } from './types.js'

/** The pass running now: how to stop it, and its report once it ends. */
export interface PassInFlight {
  control: PassControl
  done: Promise<PullReport>
}

/**
 * What the parts of one journal source share: its options and collaborators, the state
 * its passes carry over, the schedule, and what status() reports (changed in place).
 */
export interface JournalSourceContext {
  readonly options: ResolvedJournalOptions
  readonly deps: JournalSourceDeps
  readonly logger: Logger
  readonly random: Random
  /** Messages left on the server, for the life of the source. */
  readonly held: HeldRegistry
  /** What IMAP passes carry over: the UIDVALIDITY and the UIDs awaiting EXPUNGE. */
  readonly imapState: ImapSourceState
  /** The archived UIDLs of POP3 'flag' mode (a state file under `stateDir`); null otherwise. */
  readonly pop3State: Pop3ArchivedState | null
  /** Null unless the source belongs to a mirror peer (`deps.takeover`). */
  readonly takeover: TakeoverWait | null
  readonly archiveWait: ArchiveWait
  phase: 'created' | 'started' | 'stopped'
  /** The one timer of the source; only a started, enabled source has one. */
  timer: NodeJS.Timeout | null
  nextPullAtMs: number | null
  /** The end of the chain that runs passes one after the other. */
  queue: Promise<unknown>
  current: PassInFlight | null
  /** Set once stop() began. */
  stopping: Promise<void> | null
  lastPullAtMs: number | null
  lastSuccessAtMs: number | null
  lastError: JournalFailure | null
  consecutiveFailures: number
  lastReport: PullReport | null
  readonly totals: JournalSourceStatus['totals']
}

/** Applies the defaults and builds the source's shared context. Pure: opens and reads nothing. */
export function createSourceContext(deps: JournalSourceDeps, options: JournalSourceOptions): JournalSourceContext {
  const resolved = resolveJournalOptions(options)
  const logger = deps.logger.child('journal', { source: resolved.name })
  return {
    options: resolved,
    deps,
    logger,
    random: deps.random ?? createRandom(randomInt(0, 2 ** 32)),
    held: new HeldRegistry(),
    imapState: new ImapSourceState(),
    pop3State: createPop3State(resolved, logger),
    takeover: createTakeoverWait(deps.takeover, logger),
    archiveWait: createArchiveWait(deps.archiveReadOnly, logger),
    phase: 'created',
    timer: null,
    nextPullAtMs: null,
    queue: Promise.resolve(),
    current: null,
    stopping: null,
    lastPullAtMs: null,
    lastSuccessAtMs: null,
    lastError: null,
    consecutiveFailures: 0,
    lastReport: null,
    totals: { passes: 0, archived: 0, duplicates: 0, acknowledged: 0 },
  }
}

/** POP3 'flag' mode keeps its archived UIDLs in a state file; every other mode keeps nothing on disk. */
function createPop3State(options: ResolvedJournalOptions, logger: Logger): Pop3ArchivedState | null {
  if (options.protocol !== 'pop3' || options.afterArchive !== 'flag') return null
  return new Pop3ArchivedState(pop3StatePath(options.stateDir, options.name), { source: options.name, host: options.host, user: options.user }, logger)
}

/** The error of start() and pullOnce() after stop(). */
export function stoppedError(context: JournalSourceContext): JournalError {
  return new JournalError('STOPPED', `journal source ${context.options.name} is stopped`)
}
