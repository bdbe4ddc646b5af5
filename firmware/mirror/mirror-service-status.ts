import type { PeerSender } from './sender.js'
import { peerKey, type EffectivePeer } from './peer-state.js'
import type { CopyReceiver } from './receiver.js'
import type { VerifyCoordinator } from './verify-service.js'
import type { MirrorStatus, PeerAddress, PeerStatus } from './types.js'
import { ineligibleModelWarning, noLocalSourceWarning } from './mirror-service-options.js'
import { describePeerStates, peerProblems, toPeerStatus } from './mirror-health.js'
import { checkAddress } from './peer-operations.js'
import { queueDepth } from './mirror-senders.js'
import type { MirrorServiceContext } from './mirror-service-context.js'

/** One peer's full status: its sender's, its queue figures and its last verify. */
export function peerStatus(context: MirrorServiceContext, verifier: VerifyCoordinator, peer: EffectivePeer, sender: PeerSender): PeerStatus {
  return toPeerStatus(peer, sender.status(), queueDepth(context, sender), context.deps.archive.lastSequence(), verifier.lastOf(peer))
}

/** Everything `mailkeep show mirror --json` and `/api/v1/status` show. Cheap: no I/O. */
export function serviceStatus(context: MirrorServiceContext, receiver: CopyReceiver, verifier: VerifyCoordinator): MirrorStatus {
  const { deps, options, peers } = context
  return {
    listening: context.listener?.address() ?? null,
    serial: deps.identity.serial,
    policyFingerprint: context.policySettings().fingerprint,
    localSourcesEnabled: options.localSourcesEnabled,
    warning: !context.eligible ? ineligibleModelWarning(deps.identity.model) : options.localSourcesEnabled ? null : noLocalSourceWarning,
    lastSequence: deps.archive.lastSequence(),
    peers: [...peers.senders.values()].map(({ peer, sender }) => peerStatus(context, verifier, peer, sender)),
    inbound: receiver.status(),
    inboundRefusals: context.auditing.inboundRefusals(),
    pendingJoins: peers.pendingJoins.map((seen) => ({ ...seen })),
    storeId: context.storeId,
  }
}

/**
 * For boot's health evaluation: not ok while not listening, while any peer is refused or
 * unreachable for longer than unreachableAlertMs, while verify found problems, and while an
 * appliance waits as a pending join; the reasons in the detail.
 */
export function serviceHealth(context: MirrorServiceContext, verifier: VerifyCoordinator): { ok: boolean; detail: string } {
  const { deps, peers, stopping } = context
  const listening = context.listener?.address() ?? null
  const statuses = [...peers.senders.values()].map(({ sender }) => sender.status())
  const states = describePeerStates(statuses)
  if (!context.eligible) return { ok: !stopping, detail: `${ineligibleModelWarning(deps.identity.model)}; ${states}` }
  if (!listening) return { ok: false, detail: 'not listening' }
  const problems = peerProblems(statuses, { nowMs: deps.clock.now(), unreachableAlertMs: context.unreachableAlertMs, verifyProblems: verifier.problems(), pendingJoins: peers.pendingJoins })
  if (problems.length > 0) return { ok: false, detail: problems.join('; ') }
  return { ok: !stopping, detail: `listening on ${listening.host}:${listening.port}; ${states}` }
}

/** The lowest cursor over every peer; null without peers, 0 before start() (nothing is known to be copied). */
export function lowestAcknowledgedSequence(context: MirrorServiceContext): number | null {
  if (!context.started) return 0
  const cursors = [...context.peers.senders.values()].map(({ sender }) => sender.cursor)
  return cursors.length > 0 ? Math.min(...cursors) : null
}

/** How long `peer` has not answered at all, in milliseconds; null while it answers, paused, unknown, or the service is not running. */
export function peerUnreachableForMs(context: MirrorServiceContext, peer: PeerAddress): number | null {
  if (!context.started || context.stopping) return null
  const entry = context.peers.senders.get(peerKey(checkAddress(peer)))
  const since = entry?.sender.status().unreachableSinceMs ?? null
  return since === null ? null : Math.max(0, context.deps.clock.now() - since)
}
