import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MirrorError } from './errors.js'
import type { AdmissionCandidate } from './handshake.js'
import { describeIdentity, type PeerSender } from './sender.js'
import { pendingJoinsMax, sameIdentity, type PeerStateStore, type SeenIdentity } from './peer-state.js'
import { admissionPinWaitMsMax, type MirrorAuditEntry } from './mirror-service-options.js'
import { hostMatches, identityOf, type MirrorPeerSet, type PeerOperations, type SenderEntry } from './peer-operations.js'

/** The sender an inbound appliance belongs to: pinned identity first, then pinned serial, then address (host and listening port). */
export async function senderForInbound(entries: readonly SenderEntry[], candidate: AdmissionCandidate): Promise<PeerSender | undefined> {
  const exact = entries.find(({ sender }) => sender.isPinned(candidate))
  if (exact) return exact.sender
  const bySerial = entries.find(({ sender }) => sender.pinned().serial === candidate.serial)
  if (bySerial) return bySerial.sender
  for (const { peer, sender } of entries) {
    if (peer.port === candidate.listenPort && (await hostMatches(peer.host, candidate.address))) return sender
  }
  return undefined
}

/** A join candidate as the pending-join list keeps it; `existing` is its earlier entry, if any. Pure. */
export function seenIdentityOf(candidate: AdmissionCandidate, existing: SeenIdentity | undefined, nowMs: number): SeenIdentity {
  return {
    serial: candidate.serial,
    storeId: candidate.storeId,
    fingerprint: candidate.fingerprint,
    model: candidate.model,
    firmwareVersion: candidate.firmwareVersion,
    address: candidate.address,
    listenPort: candidate.listenPort,
    firstSeenAtMs: existing?.firstSeenAtMs ?? nowMs,
    lastSeenAtMs: nowMs,
  }
}

/** What inbound admission works with. */
export interface MirrorAdmissionContext {
  logger: Logger
  clock: Clock
  /** This system's serial (said in a NOT_A_PEER refusal). */
  serial: string
  handshakeTimeoutMs: number
  /** Adds and pins an appliance that proves the secret at once (`mirror.acceptJoins`). */
  acceptJoins: boolean
  peers: MirrorPeerSet
  store: PeerStateStore
  /** True once the service is stopping. */
  stopping: () => boolean
  operations: Pick<PeerOperations, 'run' | 'addPinnedPeer'>
  writeAudit: (entry: MirrorAuditEntry) => void
}

/** Admission of inbound appliances that proved the secret: a peer's own sender decides, otherwise a join. */
export function createMirrorAdmission(context: MirrorAdmissionContext) {
  const { logger, peers } = context

  /** An appliance that matches no peer: refused NOT_A_PEER and listed, or with acceptJoins added and pinned. */
  async function join(candidate: AdmissionCandidate): Promise<MirrorError | undefined> {
    const existing = peers.pendingJoins.find((seen) => sameIdentity(seen, candidate))
    const seen = seenIdentityOf(candidate, existing, context.clock.now())
    if (context.acceptJoins && candidate.listenPort > 0) {
      const added = await context.operations.run(() => context.operations.addPinnedPeer(seen))
      context.writeAudit({
        action: 'mirror.join-accepted',
        actor: candidate.address,
        details: { peer: `${seen.address}:${seen.listenPort}`, by: 'mirror.acceptJoins', identity: identityOf(seen) },
      })
      logger.warn('an appliance that proved the mirror secret was added as a peer (mirror.acceptJoins)', { peer: `${seen.address}:${seen.listenPort}`, identity: describeIdentity(seen) })
      return added.admit(candidate)
    }
    peers.pendingJoins = [seen, ...peers.pendingJoins.filter((other) => !sameIdentity(other, candidate))].slice(0, pendingJoinsMax)
    void context.store.writeJoins(peers.pendingJoins).catch((error) => logger.error('cannot save the pending mirror joins', { error }))
    if (!existing) {
      logger.warn('an appliance proved the mirror secret but is not a peer: refused, listed as a pending join (mirror accept HOST:PORT)', {
        address: candidate.address,
        listenPort: candidate.listenPort,
        identity: describeIdentity(seen),
      })
      context.writeAudit({ action: 'mirror.join-requested', actor: candidate.address, details: { listenPort: candidate.listenPort, model: candidate.model, identity: identityOf(seen) } })
    }
    return new MirrorError('NOT_A_PEER', `this appliance (${context.serial}) does not have ${candidate.serial} as a mirror peer; a technician may accept the join`, {
      expected: 'a configured mirror peer',
      actual: describeIdentity(seen),
    })
  }

  /**
   * Admission of an inbound appliance that proved the secret. A peer's own sender decides
   * (pin, or IDENTITY_CHANGED). One that matches no peer may be a configured peer reached
   * through another address (NAT, a proxy) whose sender has not pinned it yet: the unpinned
   * senders try at once and it waits up to admissionPinWaitMsMax for a pin. Otherwise it is
   * a join: refused NOT_A_PEER and listed (or, with acceptJoins, added and pinned).
   */
  async function admitInbound(candidate: AdmissionCandidate): Promise<MirrorError | undefined> {
    let sender = await senderForInbound([...peers.senders.values()], candidate)
    const unpinned = [...peers.senders.values()].filter(({ sender }) => sender.pinned().serial === null)
    if (!sender && unpinned.length > 0) {
      for (const entry of unpinned) entry.sender.retryNow()
      const deadline = context.clock.monotonicMs() + Math.min(admissionPinWaitMsMax, context.handshakeTimeoutMs / 2)
      while (!sender && context.clock.monotonicMs() < deadline && !context.stopping()) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        sender = [...peers.senders.values()].find((entry) => entry.sender.isPinned(candidate))?.sender
      }
    }
    if (sender) return sender.admit(candidate)
    return join(candidate)
  }

  return { admitInbound }
}
