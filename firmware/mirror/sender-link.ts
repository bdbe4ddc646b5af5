import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import { MirrorError, type RefusalValue } from './errors.js'
import { refusalStateCodes, retryDelayMs } from './copy-plan.js'
import type { EffectivePeer, PeerRecord } from './peer-state.js'
import { describeIdentity, pinnedIdentityOf } from './sender-identity.js'
import type { PeerSenderStatus } from './sender-types.js'
import type { PeerFailure, PeerState } from './types.js'

/** Why the peer is retrying or refused: its code and, for refusals, the expected and actual values. */
export interface LinkReason {
  code: string
  expected: RefusalValue
  actual: RefusalValue
}

/**
 * A sender's view of its link to the peer: state, why, when it failed, recovered and retries,
 * what went over it and the peer's policy. Changed in place by the functions below; the status
 * (senderStatus) is read from it.
 */
export interface SenderLink {
  state: PeerState
  reason: LinkReason | null
  lastError: PeerFailure | null
  /** When the last failure cleared (a healthy channel after it); lastError is then null. */
  lastRecoveredAtMs: number | null
  lastSuccessAtMs: number | null
  nextRetryAtMs: number | null
  connectedSinceMs: number | null
  /**
   * Since when the peer has not answered at all (no connection, no handshake): the signal for
   * source takeover. Not reached yet at start; a refusal is an answer (the peer is up).
   */
  unreachableSinceMs: number | null
  peerPolicyFingerprint: string | null
  policyMismatch: string[]
  messagesSent: number
  bytesSent: number
  messagesRejected: number
  consecutiveFailures: number
}

/** The link of a sender that has not connected yet (`paused` when its record says so). */
export function createSenderLink(paused: boolean, nowMs: number): SenderLink {
  return {
    state: paused ? 'paused' : 'idle',
    reason: null,
    lastError: null,
    lastRecoveredAtMs: null,
    lastSuccessAtMs: null,
    nextRetryAtMs: null,
    connectedSinceMs: null,
    unreachableSinceMs: nowMs,
    peerPolicyFingerprint: null,
    policyMismatch: [],
    messagesSent: 0,
    bytesSent: 0,
    messagesRejected: 0,
    consecutiveFailures: 0,
  }
}

/** What recording a failure reads: the clock, the jitter, where to log and the retry delay limits. */
export interface LinkFailureDeps {
  clock: Clock
  random: Random
  logger: Logger
  limits: { retryDelayMsMin: number; retryDelayMsMax: number }
}

/**
 * A connection attempt or session failed: the link goes to `refused` (a refusal code, retried at
 * the longest delay) or `retrying`. A new kind of failure is logged as a warning, a repeat at
 * debug level, so retrying forever does not flood the log.
 * @returns how long to wait before the next attempt, in milliseconds
 */
export function recordFailure(link: SenderLink, error: unknown, deps: LinkFailureDeps): number {
  link.consecutiveFailures++
  const mirrorError = error instanceof MirrorError ? error : undefined
  const code = (error as { code?: unknown })?.code
  const codeText = typeof code === 'string' ? code : 'FAILED'
  const refused = refusalStateCodes.has(codeText)
  const previousState = link.state
  const previousCode = link.reason?.code
  link.state = refused ? 'refused' : 'retrying'
  if (refused) link.unreachableSinceMs = null
  else link.unreachableSinceMs ??= deps.clock.now()
  const reason = { code: codeText, expected: mirrorError?.expected ?? null, actual: mirrorError?.actual ?? null }
  link.reason = reason
  const lastError = { code: codeText, message: (error as Error)?.message ?? String(error), atMs: deps.clock.now() }
  link.lastError = lastError
  link.connectedSinceMs = null
  const delayMs = retryDelayMs(link.consecutiveFailures, deps.limits, deps.random, refused)
  link.nextRetryAtMs = deps.clock.now() + delayMs
  const fields = { code: codeText, expected: reason.expected, actual: reason.actual, error: lastError.message, retryInMs: delayMs, failures: link.consecutiveFailures }
  if (previousState !== link.state || previousCode !== codeText) deps.logger.warn(refused ? 'mirror peer refused; will retry' : 'mirror peer unavailable; will retry', fields)
  else deps.logger.debug('mirror peer still unavailable', fields)
  return delayMs
}

/** An authenticated channel is up: whatever failed before has recovered. Logs the connection once per change of state. */
export function markConnected(link: SenderLink, clock: Clock, logger: Logger, fields: { serial: string; cursor: number }): void {
  if (link.state !== 'connected') logger.info('mirror peer connected', fields)
  link.state = 'connected'
  link.reason = null
  if (link.lastError) {
    link.lastRecoveredAtMs = clock.now()
    link.lastError = null
  }
  link.nextRetryAtMs = null
  link.connectedSinceMs = clock.now()
  link.unreachableSinceMs = null
}

/** A batch was acknowledged: counters, and a healthy connection. */
export function recordAcknowledged(link: SenderLink, batch: { messages: number; bytes: number }, rejected: number, nowMs: number): void {
  link.messagesSent += batch.messages - rejected
  link.messagesRejected += rejected
  link.bytesSent += batch.bytes
  link.lastSuccessAtMs = nowMs
  link.consecutiveFailures = 0
}

/** Resumed by a technician: the next attempt starts afresh. */
export function markResumed(link: SenderLink, nowMs: number): void {
  link.state = 'idle'
  link.consecutiveFailures = 0
  // Whether the peer answered while paused is unknown: count from now.
  if (link.unreachableSinceMs !== null) link.unreachableSinceMs = nowMs
}

/** A technician accepted the peer's identity: a refusal of before no longer stands. */
export function markAccepted(link: SenderLink): void {
  link.consecutiveFailures = 0
  if (link.state === 'refused') link.state = 'idle'
  link.reason = null
}

/** Stopped: no connection, no retry planned. */
export function markStopped(link: SenderLink): void {
  link.state = 'idle'
  link.connectedSinceMs = null
  link.nextRetryAtMs = null
}

/** What a sender reports: its link and its record (lane positions, identity, paused). Pure. */
export function senderStatus(peer: EffectivePeer, record: PeerRecord, link: SenderLink): PeerSenderStatus {
  const pending = record.pendingIdentity
  const { state } = link
  // A changed identity stops copying whichever direction saw it: shown as the refusal it is.
  const shown = pending && state !== 'connected' ? { code: 'IDENTITY_CHANGED', expected: describeIdentity(pinnedIdentityOf(record)), actual: describeIdentity(pending) } : link.reason
  return {
    host: peer.host,
    port: peer.port,
    serial: record.serial,
    storeId: record.storeId,
    fingerprint: record.fingerprint,
    pendingIdentity: pending ? { ...pending } : null,
    // The flag is the truth at once; the loop closes its channel a moment later.
    state: record.paused ? 'paused' : pending && state !== 'connected' ? 'refused' : state,
    reasonCode: shown?.code ?? null,
    expected: shown?.expected ?? null,
    actual: shown?.actual ?? null,
    cursor: record.cursor,
    backfillThroughSequence: record.liveFrom,
    liveCursor: record.liveCursor,
    requeuedMessages: record.requeued.length,
    rejectedCopies: record.rejected.length,
    lastSuccessAtMs: link.lastSuccessAtMs,
    lastError: link.lastError,
    lastRecoveredAtMs: link.lastRecoveredAtMs,
    nextRetryAtMs: link.nextRetryAtMs,
    unreachableSinceMs: record.paused ? null : link.unreachableSinceMs,
    policyMismatch: [...link.policyMismatch],
    peerPolicyFingerprint: link.peerPolicyFingerprint,
    connectedSinceMs: link.connectedSinceMs,
    messagesSent: link.messagesSent,
    bytesSent: link.bytesSent,
    messagesRejected: link.messagesRejected,
  }
}
