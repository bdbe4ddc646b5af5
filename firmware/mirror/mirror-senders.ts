import assert from 'node:assert/strict'
import type { BacklogDepth } from './backlog.js'
import { createPeerSender, type PeerSender, type PeerSenderOptions } from './sender.js'
import { peerKey, type EffectivePeer, type PeerRecord } from './peer-state.js'
import type { MirrorSecret } from './secret.js'
import type { MirrorServiceOptions } from './mirror-service-options.js'
import type { MirrorServiceContext } from './mirror-service-context.js'

/** Queue figures follow the lowest cursor; with no peer, nothing needs tracking. */
export function retainBacklog(context: MirrorServiceContext): void {
  const cursors = [...context.peers.senders.values()].map(({ sender }) => sender.cursor)
  context.tracker.retain(cursors.length > 0 ? Math.min(...cursors) : context.deps.archive.lastSequence())
  void context.tracker.refresh()
}

/**
 * What is still queued for a peer: the local ingest entries of every change-log range it has
 * not acknowledged (one, or two while a backlog is copied beside new mail) plus its requeued
 * messages (counted as messages; their bytes are not known without reading them).
 */
export function queueDepth(context: MirrorServiceContext, sender: PeerSender): BacklogDepth {
  const depth: BacklogDepth = { messages: sender.requeuedCount, bytes: 0, estimated: false }
  for (const range of sender.pendingRanges()) {
    const part = context.tracker.rangeDepth(range.afterSequence, range.throughSequence)
    depth.messages += part.messages
    depth.bytes += part.bytes
    depth.estimated ||= part.estimated
  }
  return depth
}

/** A sender's options from the service's: its peer, the derived secret and the copy limits. Pure. */
export function senderOptionsOf(options: MirrorServiceOptions, peer: EffectivePeer, secret: MirrorSecret, pollIntervalMs: number): PeerSenderOptions {
  return {
    peer,
    sharedSecret: secret,
    batchMessagesMax: options.batchMessagesMax,
    batchBytesMax: options.batchBytesMax,
    inflightBatchesMax: options.inflightBatchesMax,
    retryDelayMsMin: options.retryDelayMsMin,
    retryDelayMsMax: options.retryDelayMsMax,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    ackTimeoutMs: options.ackTimeoutMs,
    pollIntervalMs,
    ...(options.laneSplitThresholdEntries !== undefined ? { laneSplitThresholdEntries: options.laneSplitThresholdEntries } : {}),
    ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
  }
}

/** Creates, registers and starts the sender of `peer` from its record (after start(): the secret is derived). */
export function startSender(context: MirrorServiceContext, peer: EffectivePeer, record: PeerRecord): void {
  const { deps, logger, policies, peers } = context
  assert.ok(context.secret, 'started')
  const sender = createPeerSender(
    {
      logger,
      clock: deps.clock,
      random: deps.random,
      archive: deps.archive,
      transport: context.transport,
      state: context.store,
      policySettings: context.policySettings,
      onCursor: () => retainBacklog(context),
      onPolicy: (peer, settings) => policies.compare({ serial: peer.serial, direction: 'outbound' }, settings),
      onIdentity: context.auditing.identity,
      queueDepth: () => {
        const entry = peers.senders.get(peerKey(peer))
        return entry ? queueDepth(context, entry.sender) : context.tracker.depth(record.cursor)
      },
    },
    senderOptionsOf(context.options, peer, context.secret, context.pollIntervalMs),
    record,
  )
  peers.senders.set(peerKey(peer), { peer, sender })
  sender.start()
}
