import type { SMTPServerEnvelope } from 'smtp-server'
import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { IngestPipeline } from '../types.js'
import type { ArchiveSmtpServer } from './immediate-greeting.js'
import { UntrustedConnections } from './connection-admission.js'
import { InFlightMessages } from './in-flight.js'
import type { RecipientPolicy } from './recipient-policy.js'
import { SessionDeadlines } from './session-deadlines.js'
import { createSmtpCounters, type SmtpCounters } from './smtp-counters.js'
import type { ResolvedSmtpOptions } from './smtp-options.js'
import type { SmtpSourceDeps } from './types.js'

/** Where the listener is in its lifecycle. */
export type ListenerPhase = 'created' | 'starting' | 'listening' | 'stopping' | 'stopped'

/** What the listener remembers per session (keyed by smtp-server's session id). */
export interface SessionState {
  trusted: boolean
  /** The key its connection is counted under when untrusted (connection-admission.ts clientAddressKey). */
  addressKey: string
  /** The envelope object the `recipients` set belongs to; smtp-server replaces it on RSET, EHLO, STARTTLS and after DATA. */
  envelope: SMTPServerEnvelope | null
  /** Lower-cased recipients accepted in the current transaction. */
  recipients: Set<string>
}

/**
 * Everything the SMTP listener keeps from create to stop, shared by its units: the command
 * handlers read it and count into it, the lifecycle moves `phase`. Each unit takes a `Pick`
 * of exactly the fields it uses, so a test can hand it just those.
 */
export interface ListenerState {
  readonly logger: Logger
  readonly clock: Clock
  readonly pipeline: IngestPipeline
  /** SmtpSourceDeps.archiveReadOnly; absent: every MAIL FROM is accepted and DATA decides. */
  readonly archiveReadOnly: SmtpSourceDeps['archiveReadOnly']
  readonly options: ResolvedSmtpOptions
  readonly counters: SmtpCounters
  readonly sessions: Map<string, SessionState>
  readonly inFlight: InFlightMessages
  /** Connections of clients outside the trusted networks, per address, for admission. */
  readonly untrusted: UntrustedConnections
  /** The absolute deadlines of every open session. */
  readonly deadlines: SessionDeadlines
  /** Message bytes held in memory across all sessions now, bounded by `bufferedBytesMax`. */
  bufferedBytes: number
  phase: ListenerPhase
  server: ArchiveSmtpServer | null
  /** Set by start() once the options are valid. */
  policy: RecipientPolicy | null
  bound: { host: string; port: number } | null
  starting: Promise<void> | null
  stopping: Promise<void> | null
  lastArchiveFailure: { code: string; atMs: number } | null
}

/** A listener that has not started: no server, no sessions, counters at zero. */
export function createListenerState(deps: Pick<SmtpSourceDeps, 'logger' | 'clock' | 'pipeline' | 'archiveReadOnly'>, options: ResolvedSmtpOptions): ListenerState {
  const counters = createSmtpCounters()
  return {
    logger: deps.logger,
    clock: deps.clock,
    pipeline: deps.pipeline,
    archiveReadOnly: deps.archiveReadOnly,
    options,
    counters,
    sessions: new Map(),
    inFlight: new InFlightMessages(),
    untrusted: new UntrustedConnections(),
    deadlines: new SessionDeadlines({ clock: deps.clock, logger: deps.logger, options, counters }),
    bufferedBytes: 0,
    phase: 'created',
    server: null,
    policy: null,
    bound: null,
    starting: null,
    stopping: null,
    lastArchiveFailure: null,
  }
}
