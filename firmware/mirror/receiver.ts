import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { IngestPipeline } from '../sources/types.js'
import type { MirrorChannel } from './channel.js'
import { createInboundPeers } from './inbound-peers.js'
import { runReceiverSession, type ReceiverSessionHost } from './receiver-session.js'
import type { InboundPeerStatus, PolicySettings } from './types.js'
import type { VerifyResponder } from './verify-responder.js'

export { inboundPeersRememberedMax } from './inbound-peers.js'
export { messageRejectionCodes } from './receiver-copy.js'

/** Messages of one inbound channel being stored at once, at most (the pipeline groups their commits). */
export const receiverSubmitsInFlightMaxDefault = 4_096
/** Raw bytes of one inbound channel being stored at once, at most (one larger message is always let through). */
export const receiverBytesInFlightMaxDefault = 256 * 1024 * 1024

/** Collaborators of the receiver. */
export interface CopyReceiverDeps {
  logger: Logger
  clock: Clock
  pipeline: IngestPipeline
  /** This system's retention and hold settings, sent once the channel is authenticated. */
  policySettings: () => PolicySettings
  /** Told of each inbound peer's settings; returns how they differ from ours (empty: same). */
  onPolicy?: (peer: { address: string; serial: string }, settings: PolicySettings) => string[]
  /** Answers `mirror verify` requests of the peer; without it they are a protocol error. */
  verify?: VerifyResponder
  /**
   * When this system's retention purged `id` (the store's purgedAt). A copy of a message purged
   * here whose deliveries are all older than the purge is acknowledged without storing it: a
   * resend after a lost acknowledgement must not bring back what retention removed. A delivery
   * newer than the purge is new mail and is archived.
   */
  purgedAt?: (id: string) => { atMs: number } | undefined
}

/** Limits of the receiver. */
export interface CopyReceiverOptions {
  submitsInFlightMax?: number
  bytesInFlightMax?: number
}

/**
 * Stores what peers copy to this system. Each inbound channel: send our POLICY, then take
 * MESSAGE/MESSAGE_PART frames, check each message against its content hash, submit it to
 * the ingest pipeline as a `mirror` delivery from the authenticated peer serial (the origin's
 * envelope kept), several at once, and on BATCH_END acknowledge the batch — in order, and only
 * after every submit of it resolved, i.e. the copies are durable. A store failure sends
 * BATCH_FAILED and closes the channel; the sender retries from its cursor. Receiving never
 * queues anything for other peers: the pipeline archives copies with origin = the peer serial,
 * and senders skip entries with an origin.
 */
export function createCopyReceiver(deps: CopyReceiverDeps, options: CopyReceiverOptions = {}) {
  const submitsInFlightMax = options.submitsInFlightMax ?? receiverSubmitsInFlightMaxDefault
  const bytesInFlightMax = options.bytesInFlightMax ?? receiverBytesInFlightMaxDefault
  assert.ok(Number.isInteger(submitsInFlightMax) && submitsInFlightMax >= 1, 'submitsInFlightMax must be a positive integer')
  assert.ok(bytesInFlightMax >= 1, 'bytesInFlightMax must be positive')
  const host: ReceiverSessionHost = { deps, logger: deps.logger.child('receiver'), limits: { submitsInFlightMax, bytesInFlightMax } }
  const peers = createInboundPeers(deps.clock)

  return {
    /**
     * Runs one authenticated inbound channel until it closes (receiver-session.ts). Resolves
     * (never rejects) once the channel has ended; stores under way finish on their own and are
     * acknowledged if the channel still stands.
     */
    async handle(channel: MirrorChannel): Promise<void> {
      assert.equal(channel.direction, 'inbound', 'the receiver serves inbound channels')
      await runReceiverSession(host, channel, peers.open(channel))
    },
    /** Inbound peers: connected now, or seen since start. */
    status(): InboundPeerStatus[] {
      return peers.list()
    },
  }
}

/** A receiver as createCopyReceiver makes it. */
export type CopyReceiver = ReturnType<typeof createCopyReceiver>
