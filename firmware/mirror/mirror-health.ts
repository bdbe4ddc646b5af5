import type { BacklogDepth } from './backlog.js'
import type { PeerSenderStatus } from './sender.js'
import type { EffectivePeer, SeenIdentity } from './peer-state.js'
import type { Completeness, InboundPeerStatus, PeerStatus } from './types.js'

/** One peer's full status: the sender's view, its queue figures and last verification. Pure. */
export function toPeerStatus(peer: EffectivePeer, status: PeerSenderStatus, depth: BacklogDepth, lastSequence: number, lastVerify: PeerStatus['lastVerify']): PeerStatus {
  return {
    host: status.host,
    port: status.port,
    serial: status.serial,
    storeId: status.storeId,
    fingerprint: status.fingerprint,
    pendingIdentity: status.pendingIdentity,
    configuredBy: peer.configuredBy,
    state: status.state,
    reasonCode: status.reasonCode,
    expected: status.expected,
    actual: status.actual,
    queueMessages: depth.messages,
    queueBytes: depth.bytes,
    queueEstimated: depth.estimated,
    cursor: status.cursor,
    backfillThroughSequence: status.backfillThroughSequence,
    liveCursor: status.liveCursor,
    requeuedMessages: status.requeuedMessages,
    rejectedCopies: status.rejectedCopies,
    lastSequence,
    lastSuccessAtMs: status.lastSuccessAtMs,
    lastError: status.lastError,
    lastRecoveredAtMs: status.lastRecoveredAtMs,
    nextRetryAtMs: status.nextRetryAtMs,
    unreachableSinceMs: status.unreachableSinceMs,
    policyMismatch: status.policyMismatch,
    peerPolicyFingerprint: status.peerPolicyFingerprint,
    connectedSinceMs: status.connectedSinceMs,
    messagesSent: status.messagesSent,
    bytesSent: status.bytesSent,
    messagesRejected: status.messagesRejected,
    lastVerify,
  }
}

/** What peerProblems weighs besides the senders' statuses. */
export interface ProblemContext {
  nowMs: number
  /** A peer unreachable for longer than this is a problem, in milliseconds. */
  unreachableAlertMs: number
  /** The verifier's own problems (failed or unexplained verifications). */
  verifyProblems: string[]
  pendingJoins: readonly SeenIdentity[]
}

/** Why mirroring needs a technician, one sentence per peer or join; empty when nothing does. Pure. */
export function peerProblems(statuses: readonly PeerSenderStatus[], context: ProblemContext): string[] {
  const problems: string[] = []
  const now = context.nowMs
  for (const status of statuses) {
    const where = `peer ${status.host}:${status.port}`
    if (status.state === 'refused') {
      const detail = status.expected !== null || status.actual !== null ? ` (expected ${String(status.expected)}, got ${String(status.actual)})` : ''
      problems.push(`${where} refused ${status.reasonCode ?? ''}${detail}`)
    } else if (status.unreachableSinceMs !== null && now - status.unreachableSinceMs > context.unreachableAlertMs) {
      problems.push(`${where} unreachable for ${Math.round((now - status.unreachableSinceMs) / 60_000)} min (${status.reasonCode ?? 'no answer'})`)
    }
  }
  problems.push(...context.verifyProblems)
  for (const seen of context.pendingJoins) {
    problems.push(`pending mirror join from ${seen.address}:${seen.listenPort} (serial ${seen.serial}): mirror accept or ignore`)
  }
  return problems
}

/** How many senders are in each state, in one line for the health detail. Pure. */
export function describePeerStates(statuses: readonly PeerSenderStatus[]): string {
  const count = (state: string): number => statuses.filter((status) => status.state === state).length
  return `peers: ${count('connected')} connected, ${count('retrying')} retrying, ${count('refused')} refused, ${count('paused')} paused`
}

/**
 * How far behind its peers this system is, as they last said (QUEUE_STATUS) in the receiver's
 * status: complete when every peer that reported has nothing queued for it. Pure.
 */
export function completenessOf(inbound: readonly InboundPeerStatus[]): Completeness {
  const peers = inbound
    .filter((peer) => peer.queuedMessages !== null && peer.queueAsOfMs !== null)
    .map((peer) => ({ serial: peer.serial, queuedMessages: peer.queuedMessages!, queueEstimated: peer.queueEstimated, asOfMs: peer.queueAsOfMs!, connected: peer.connected }))
  return { complete: peers.every((peer) => peer.queuedMessages === 0), peers }
}
