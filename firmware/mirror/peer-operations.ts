import { lookup } from 'node:dns/promises'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MirrorError } from './errors.js'
import { describeIdentity, type PeerSender } from './sender.js'
import { freshPeerRecord, peerKey, sameIdentity, type EffectivePeer, type PeerOverlay, type PeerRecord, type PeerStateStore, type SeenIdentity } from './peer-state.js'
import type { PeerAddress, PeerStatus } from './types.js'
import type { AcceptResult, MirrorAuditEntry } from './mirror-service-options.js'

/** One peer the service copies to, and its sender. */
export interface SenderEntry {
  peer: EffectivePeer
  sender: PeerSender
}

/** The service's peers: the senders by peerKey, the technician's peer changes and the pending joins. */
export interface MirrorPeerSet {
  senders: Map<string, SenderEntry>
  overlay: PeerOverlay
  pendingJoins: SeenIdentity[]
}

/** What peer operations work on and with. */
export interface PeerOperationsContext {
  logger: Logger
  clock: Clock
  /** The configured peers (`mirror.peers[]`). */
  configuredPeers: readonly PeerAddress[]
  store: PeerStateStore
  peers: MirrorPeerSet
  /** True while the service runs (started, not stopping). */
  running: () => boolean
  startSender: (peer: EffectivePeer, record: PeerRecord) => void
  retainBacklog: () => void
  peerStatus: (peer: EffectivePeer, sender: PeerSender) => PeerStatus
  writeAudit: (entry: MirrorAuditEntry) => void
}

/** A peer address with its host trimmed. @throws MirrorError PEER_INVALID */
export function checkAddress(peer: PeerAddress): PeerAddress {
  if (typeof peer.host !== 'string' || peer.host.trim() === '' || !Number.isInteger(peer.port) || peer.port < 1 || peer.port > 65535) {
    throw new MirrorError('PEER_INVALID', `not a peer address: ${String(peer.host)}:${String(peer.port)}`, { actual: `${String(peer.host)}:${String(peer.port)}` })
  }
  return { host: peer.host.trim(), port: peer.port }
}

/** True when a peer's configured host names the connection's remote address (literally or through the resolver). */
export async function hostMatches(host: string, address: string): Promise<boolean> {
  if (host.toLowerCase() === address.toLowerCase()) return true
  try {
    const resolved = await lookup(host, { all: true })
    return resolved.some((entry) => entry.address === address)
  } catch {
    return false
  }
}

/** The identity parts of a seen appliance (for audit details and pinning). */
export const identityOf = (seen: { serial: string; storeId: string; fingerprint: string }) => ({ serial: seen.serial, storeId: seen.storeId, fingerprint: seen.fingerprint })

/** True when `key` (a peerKey) is a configured peer. */
function inConfig(context: PeerOperationsContext, key: string): boolean {
  return context.configuredPeers.some((configured) => peerKey(configured) === key)
}

/** The peer at `peer`. @throws MirrorError PEER_INVALID, PEER_UNKNOWN */
function senderOf(context: PeerOperationsContext, peer: PeerAddress): SenderEntry {
  const entry = context.peers.senders.get(peerKey(checkAddress(peer)))
  if (!entry) throw new MirrorError('PEER_UNKNOWN', `no mirror peer ${peer.host}:${peer.port}`, { actual: `${peer.host}:${peer.port}` })
  return entry
}

/** Adds the peer a join names, pinned to the join's identity; its cursor starts at 0 (backfill). Runs inside run(). */
async function addPinnedPeer(context: PeerOperationsContext, seen: SeenIdentity): Promise<PeerSender> {
  const { store, peers } = context
  const address = { host: seen.address, port: seen.listenPort }
  const key = peerKey(address)
  const existing = peers.senders.get(key)
  if (existing) throw new MirrorError('PEER_EXISTS', `mirror peer ${key} is already configured`, { actual: key })
  peers.overlay = { added: [...peers.overlay.added, address], removed: peers.overlay.removed.filter((removed) => peerKey(removed) !== key) }
  await store.writeOverlay(peers.overlay)
  const record: PeerRecord = { ...freshPeerRecord(address, context.clock.now()), ...identityOf(seen) }
  await store.write(record)
  const effective: EffectivePeer = { ...address, configuredBy: 'added' }
  context.startSender(effective, record)
  peers.pendingJoins = peers.pendingJoins.filter((other) => !sameIdentity(other, seen))
  await store.writeJoins(peers.pendingJoins)
  context.retainBacklog()
  return peers.senders.get(key)!.sender
}

/** Adds a peer (backfilled from sequence 0). Runs inside run(). @throws MirrorError PEER_INVALID, PEER_EXISTS, STATE_FAILED */
async function addPeer(context: PeerOperationsContext, peer: PeerAddress): Promise<PeerStatus> {
  const { store, peers } = context
  const address = checkAddress(peer)
  const key = peerKey(address)
  if (peers.senders.has(key)) throw new MirrorError('PEER_EXISTS', `mirror peer ${address.host}:${address.port} is already configured`, { actual: key })
  const configured = inConfig(context, key)
  peers.overlay = {
    added: configured ? peers.overlay.added : [...peers.overlay.added, address],
    removed: peers.overlay.removed.filter((removed) => peerKey(removed) !== key),
  }
  await store.writeOverlay(peers.overlay)
  const effective: EffectivePeer = { ...address, configuredBy: configured ? 'config' : 'added' }
  context.startSender(effective, await store.read(address))
  context.retainBacklog()
  context.logger.info('mirror peer added', { peer: key })
  return context.peerStatus(effective, peers.senders.get(key)!.sender)
}

/** Removes a peer and forgets its cursor. Runs inside run(). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED */
async function removePeer(context: PeerOperationsContext, peer: PeerAddress): Promise<void> {
  const { store, peers } = context
  const { peer: effective, sender } = senderOf(context, peer)
  const key = peerKey(effective)
  peers.overlay = {
    added: peers.overlay.added.filter((added) => peerKey(added) !== key),
    removed: inConfig(context, key) ? [...peers.overlay.removed, { host: effective.host, port: effective.port }] : peers.overlay.removed,
  }
  await store.writeOverlay(peers.overlay)
  peers.senders.delete(key)
  await sender.stop()
  await store.delete(effective)
  context.retainBacklog()
  context.logger.info('mirror peer removed', { peer: key })
}

/** Pauses (true) or resumes (false) a peer. Runs inside run(). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED */
async function setPaused(context: PeerOperationsContext, peer: PeerAddress, paused: boolean): Promise<PeerStatus> {
  const entry = senderOf(context, peer)
  await entry.sender.setPaused(paused)
  context.logger.info(paused ? 'mirror peer paused' : 'mirror peer resumed', { peer: peerKey(entry.peer) })
  return context.peerStatus(entry.peer, entry.sender)
}

/** The pending join whose listening port and address `address` names, if any. */
async function pendingJoinAt(peers: MirrorPeerSet, address: PeerAddress): Promise<SeenIdentity | undefined> {
  for (const seen of peers.pendingJoins) {
    if (seen.listenPort === address.port && (await hostMatches(address.host, seen.address))) return seen
  }
  return undefined
}

/** Pins the changed identity the sender of `entry` keeps pending. @throws MirrorError STATE_FAILED */
async function acceptIdentity(context: PeerOperationsContext, entry: SenderEntry): Promise<AcceptResult> {
  const { previous, accepted, cursorReset } = await entry.sender.acceptIdentity()
  context.peers.pendingJoins = context.peers.pendingJoins.filter((other) => !sameIdentity(other, accepted))
  await context.store.writeJoins(context.peers.pendingJoins)
  context.retainBacklog()
  return { peer: context.peerStatus(entry.peer, entry.sender), kind: 'identity' as const, previous, accepted, backfill: cursorReset }
}

/** Adds the pending join at `address` as a peer pinned to its identity. @throws MirrorError PEER_EXISTS, STATE_FAILED */
async function acceptJoin(context: PeerOperationsContext, address: PeerAddress, joining: SeenIdentity): Promise<AcceptResult> {
  const key = peerKey(address)
  const sender = await addPinnedPeer(context, { ...joining, address: address.host })
  context.writeAudit({ action: 'mirror.join-accepted', actor: 'technician', details: { peer: key, by: 'mirror accept', identity: identityOf(joining) } })
  context.logger.warn('a pending mirror join was accepted by a technician', { peer: key, identity: describeIdentity(joining) })
  const added = context.peers.senders.get(key)!
  return {
    peer: context.peerStatus(added.peer, sender),
    kind: 'join' as const,
    previous: { serial: null, storeId: null, fingerprint: null },
    accepted: { ...joining },
    backfill: true,
  }
}

/** Accepts a peer's changed identity, or a pending join. Runs inside run(). @throws MirrorError PEER_INVALID, NOTHING_PENDING, PEER_EXISTS, STATE_FAILED */
async function acceptPeer(context: PeerOperationsContext, peer: PeerAddress): Promise<AcceptResult> {
  const address = checkAddress(peer)
  const key = peerKey(address)
  const entry = context.peers.senders.get(key)
  if (entry?.sender.pendingIdentity()) return acceptIdentity(context, entry)
  const joining = await pendingJoinAt(context.peers, address)
  if (!joining) {
    throw new MirrorError('NOTHING_PENDING', `nothing waits for acceptance at ${key}: no changed peer identity and no pending join`, { actual: key })
  }
  if (entry) throw new MirrorError('PEER_EXISTS', `mirror peer ${key} is already configured`, { actual: key })
  return acceptJoin(context, address, joining)
}

/**
 * The technician's peer operations (add, remove, pause, resume, accept), run one at a time
 * and only while the service runs, each saved durably before it returns.
 */
export function createPeerOperations(context: PeerOperationsContext) {
  let operations: Promise<unknown> = Promise.resolve()

  /** Runs peer operations one at a time, and only while the service runs. @throws MirrorError STOPPED */
  function run<T>(operation: () => Promise<T>): Promise<T> {
    const next = operations.then(() => {
      if (!context.running()) throw new MirrorError('STOPPED', 'the mirror service is not running')
      return operation()
    })
    operations = next.catch(() => undefined)
    return next
  }

  return {
    run,
    /** Resolves when the operations queued so far have finished (stop() waits for them). */
    settled: (): Promise<unknown> => operations,
    /** The peer at `peer`. @throws MirrorError PEER_INVALID, PEER_UNKNOWN */
    senderOf: (peer: PeerAddress): SenderEntry => senderOf(context, peer),
    /** Adds the peer a join names, pinned to its identity (backfilled). Call inside run(). @throws MirrorError PEER_EXISTS, STATE_FAILED */
    addPinnedPeer: (seen: SeenIdentity): Promise<PeerSender> => addPinnedPeer(context, seen),
    /** Adds a peer (backfilled from sequence 0). @throws MirrorError PEER_INVALID, PEER_EXISTS, STATE_FAILED, STOPPED */
    addPeer: (peer: PeerAddress): Promise<PeerStatus> => run(() => addPeer(context, peer)),
    /** Removes a peer and forgets its cursor. @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    removePeer: (peer: PeerAddress): Promise<void> => run(() => removePeer(context, peer)),
    /** Pauses (true) or resumes (false) a peer. @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    setPaused: (peer: PeerAddress, paused: boolean): Promise<PeerStatus> => run(() => setPaused(context, peer, paused)),
    /** Accepts a peer's changed identity, or a pending join. @throws MirrorError PEER_INVALID, NOTHING_PENDING, PEER_EXISTS, STATE_FAILED, STOPPED */
    acceptPeer: (peer: PeerAddress): Promise<AcceptResult> => run(() => acceptPeer(context, peer)),
  }
}

/** Peer operations as createPeerOperations makes them. */
export type PeerOperations = ReturnType<typeof createPeerOperations>
