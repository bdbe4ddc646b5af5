import type { Delivery, IngestResult } from '../archive/types.js'
import { MirrorError } from './errors.js'
import type { PeerSender } from './sender.js'
import type { Completeness, MirrorStatus, PeerAddress, PeerStatus } from './types.js'
import type { SignedVerifyReport } from './verify-protocol.js'
import type { AcceptResult, MirrorServiceDeps, MirrorServiceOptions } from './mirror-service-options.js'
import { completenessOf } from './mirror-health.js'
import { createPeerOperations } from './peer-operations.js'
import { createMirrorAdmission } from './mirror-admission.js'
import { createServiceContext } from './mirror-service-context.js'
import { createServiceReceiver, createServiceVerifier } from './mirror-service-wiring.js'
import { retainBacklog, startSender } from './mirror-senders.js'
import { startService, stopService, type MirrorServiceParts } from './mirror-service-lifecycle.js'
import { lowestAcknowledgedSequence, peerStatus, peerUnreachableForMs, serviceHealth, serviceStatus } from './mirror-service-status.js'

// The service's parts live beside it; importers keep using this module's names.
export {
  admissionPinWaitMsMax,
  inboundRefusalsRememberedMax,
  ineligibleModelWarning,
  mirrorServiceDefaults,
  noLocalSourceWarning,
  type AcceptResult,
  type MirrorAuditEntry,
  type MirrorServiceDeps,
  type MirrorServiceOptions,
} from './mirror-service-options.js'

/** The mirror service, as createMirrorService makes it. */
export interface MirrorService {
  /**
   * Derives the secret, loads the queue state, listens and starts a sender per peer.
   * @throws MirrorError SECRET_WEAK, MODEL_NOT_ELIGIBLE (this model may not mirror),
   *   LISTEN_FAILED; fs errors reading stateDir
   */
  start(): Promise<void>
  /**
   * New local mail was archived: wake every sender now (steady-state lag is then one round
   * trip, not a poll interval). Fits the ingest pipeline's listener signature; copies received
   * from peers are ignored, as they are never forwarded.
   */
  notify(result?: IngestResult, delivery?: Delivery): void
  /**
   * Adds a peer (saved durably; it gets the whole archive: backfill from sequence 0).
   * @returns its status
   * @throws MirrorError PEER_INVALID, PEER_EXISTS, STATE_FAILED, STOPPED
   */
  addPeer(peer: PeerAddress): Promise<PeerStatus>
  /**
   * Removes a peer: stops copying to it and forgets its cursor (added again later, it is
   * backfilled from 0 and deduplicates). A configured peer stays removed across restarts.
   * @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED
   */
  removePeer(peer: PeerAddress): Promise<void>
  /**
   * A technician accepts what waits at `peer` (HOST:PORT): the changed identity of a peer
   * (pinned from now on; a new store id is backfilled from sequence 0), or a pending join
   * whose address and listening port it names (added as a peer, pinned, backfilled). Saved
   * durably and audited before it returns.
   * @throws MirrorError PEER_INVALID, NOTHING_PENDING, PEER_EXISTS, STATE_FAILED, STOPPED
   */
  acceptPeer(peer: PeerAddress): Promise<AcceptResult>
  /**
   * Proves agreement with a peer now (`mirror verify HOST:PORT`): compares both archives'
   * id digests at a cut both acknowledged, classifies every difference, re-queues the
   * unexplained ones on the side that holds them, and returns the report both sides signed
   * (also in both audit logs). Runs beside copying, on its own channel.
   * @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STOPPED, VERIFY_BUSY, VERIFY_FAILED, and
   *   connection errors (CONNECT_FAILED, IDENTITY_CHANGED, …) when the peer cannot be reached as pinned
   */
  verifyPeer(peer: PeerAddress, actor?: string): Promise<SignedVerifyReport>
  /** Pauses copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
  pausePeer(peer: PeerAddress): Promise<PeerStatus>
  /** Resumes copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
  resumePeer(peer: PeerAddress): Promise<PeerStatus>
  /**
   * The peer's sender, for `mirror verify`: pendingRanges(), requeue(ids), requeuedIds(),
   * rejectedCopies() (see sender.ts). The sender stays the service's: do not start or stop it.
   * @throws MirrorError PEER_INVALID, PEER_UNKNOWN
   */
  peerSender(peer: PeerAddress): PeerSender
  /**
   * The change-log sequence every peer (configured or added, paused ones included) has
   * acknowledged: retention must not purge a message with a higher sequence, or a peer would
   * never receive it. Null when there is no peer. Before start() the cursors (and peers added
   * by a technician) are not loaded: 0, nothing is known to be copied.
   */
  lowestAcknowledgedSequence(): number | null
  /**
   * How long a peer has not answered at all, in milliseconds (see PeerStatus.unreachableSinceMs);
   * null while it answers, while paused, when it is not a peer, or when the service is not
   * running. Source takeover pulls a peer's journal sources while this passes a threshold.
   */
  peerUnreachableForMs(peer: PeerAddress): number | null
  /** The bound listener address (port resolved when 0 was configured); null when not listening. */
  address(): { host: string; port: number } | null
  /** Everything `mailkeep show mirror --json` and `/api/v1/status` show. Cheap: no I/O. */
  status(): MirrorStatus
  /**
   * How far behind its peers this system is, as they last said (QUEUE_STATUS): complete when
   * every peer that reported has nothing queued for it. Cheap: no I/O.
   */
  completeness(): Completeness
  /**
   * For boot's health evaluation (`show status`): not ok — the system degraded, with the
   * reasons in the detail — while not listening, while any peer is refused (an identity
   * change included) or unreachable for longer than unreachableAlertMs, and while an
   * appliance waits as a pending join.
   */
  healthcheck(): { ok: boolean; detail: string }
  /**
   * Stops the senders (acknowledgements in flight awaited briefly, cursors saved) and the
   * listener. Idempotent; bounded by senderStopTimeoutMs and listenerStopTimeoutMs, which run
   * side by side.
   */
  stop(): Promise<void>
}

/**
 * The mirror service: the listener whose inbound channels run the receiver, one sender per
 * peer with a persistent cursor, queue figures, peer operations and status. Pure until
 * start(). See firmware/mirror/README.md for the protocol and the decisions. The parts:
 * mirror-service-context.ts (shared state), mirror-service-wiring.ts (verifier, receiver),
 * mirror-senders.ts (senders, queue figures), mirror-service-lifecycle.ts (start, stop),
 * mirror-service-status.ts (status, health), peer-operations.ts, mirror-admission.ts.
 */
export function createMirrorService(deps: MirrorServiceDeps, options: MirrorServiceOptions): MirrorService {
  const context = createServiceContext(deps, options)
  const { logger, peers } = context
  const verifier = createServiceVerifier(context)
  const receiver = createServiceReceiver(context, verifier)
  const operations = createPeerOperations({
    logger,
    clock: deps.clock,
    configuredPeers: options.peers,
    store: context.store,
    peers,
    running: () => context.started && !context.stopping,
    startSender: (peer, record) => startSender(context, peer, record),
    retainBacklog: () => retainBacklog(context),
    peerStatus: (peer, sender) => peerStatus(context, verifier, peer, sender),
    writeAudit: context.auditing.write,
  })
  const { senderOf } = operations
  const { admitInbound } = createMirrorAdmission({
    logger,
    clock: deps.clock,
    serial: deps.identity.serial,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    acceptJoins: options.acceptJoins === true,
    peers,
    store: context.store,
    stopping: () => context.stopping !== undefined,
    operations,
    writeAudit: context.auditing.write,
  })
  const parts: MirrorServiceParts = { receiver, verifier, operations, admitInbound }

  return {
    start: () => startService(context, parts),
    notify(_result?: IngestResult, delivery?: Delivery): void {
      if (!context.started || context.stopping || delivery?.source === 'mirror') return
      for (const { sender } of peers.senders.values()) sender.wake()
      void context.tracker.refresh()
    },
    addPeer: operations.addPeer,
    removePeer: operations.removePeer,
    acceptPeer: (peer) => operations.acceptPeer(peer),
    verifyPeer(peer, actor = 'technician') {
      if (!context.started || context.stopping) return Promise.reject(new MirrorError('STOPPED', 'the mirror service is not running'))
      let target
      try {
        target = senderOf(peer)
      } catch (error) {
        return Promise.reject(error)
      }
      return verifier.verify(target, actor)
    },
    pausePeer: (peer) => operations.setPaused(peer, true),
    resumePeer: (peer) => operations.setPaused(peer, false),
    peerSender: (peer) => senderOf(peer).sender,
    lowestAcknowledgedSequence: () => lowestAcknowledgedSequence(context),
    peerUnreachableForMs: (peer) => peerUnreachableForMs(context, peer),
    address: () => context.listener?.address() ?? null,
    status: () => serviceStatus(context, receiver, verifier),
    completeness: () => completenessOf(receiver.status()),
    healthcheck: () => serviceHealth(context, verifier),
    stop: () => (context.stopping ??= stopService(context, parts)),
  }
}
