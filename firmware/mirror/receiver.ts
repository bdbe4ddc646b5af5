import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MailkeepError } from '../common/errors.js'
import type { IngestPipeline } from '../sources/types.js'
import { MirrorError } from './errors.js'
import type { MirrorChannel } from './channel.js'
import {
  CopyFrameType,
  decodeBatchEnd,
  decodeMessageFrame,
  decodePolicy,
  decodeQueueStatus,
  encodeAck,
  encodeBatchFailure,
  encodePolicy,
  type BatchEnd,
  type MessageHeader,
  type RejectedCopy,
} from './copy-protocol.js'
import { bareCopiedDelivery, copiedDelivery } from './copy-plan.js'
import { createWakeSignal } from './wake-signal.js'
import type { InboundPeerStatus, PolicySettings } from './types.js'
import { VerifyFrameType } from './verify-protocol.js'
import type { VerifyResponder } from './verify-responder.js'

/** Messages of one inbound channel being stored at once, at most (the pipeline groups their commits). */
export const receiverSubmitsInFlightMaxDefault = 4_096
/** Raw bytes of one inbound channel being stored at once, at most (one larger message is always let through). */
export const receiverBytesInFlightMaxDefault = 256 * 1024 * 1024
/** Inbound peers remembered for status (the config allows 64 peers). */
export const inboundPeersRememberedMax = 128
/**
 * Store errors that concern one message only and will not change on a retry: such a copy is
 * reported in the acknowledgement as rejected (the sender logs it and moves on) instead of
 * failing the batch, so one message can never block a peer's queue. Every other error fails
 * the batch, and the sender retries it later.
 */
export const messageRejectionCodes: ReadonlySet<string> = new Set(['MESSAGE_TOO_LARGE'])
/** How often a receiver waiting for room re-checks, in milliseconds (completions wake it at once). */
const roomRecheckMs = 1_000
/** How often an inbound channel looks whether this system's policy settings changed (then sends POLICY again), in milliseconds. */
const policyRecheckMs = 500

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

type CopyOutcome = { kind: 'stored'; bytes: number } | { kind: 'duplicate'; bytes: number } | ({ kind: 'rejected'; bytes: number } & RejectedCopy)

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
  const logger = deps.logger.child('receiver')
  const peers = new Map<string, InboundPeerStatus & { openChannels: number }>()

  function peerStatus(channel: MirrorChannel) {
    const serial = channel.peer.serial
    let status = peers.get(serial)
    if (!status) {
      status = {
        serial,
        address: channel.peer.address,
        connected: false,
        connectedSinceMs: deps.clock.now(),
        messagesStored: 0,
        messagesDuplicate: 0,
        messagesRejected: 0,
        bytesReceived: 0,
        lastBatchAtMs: null,
        policyMismatch: [],
        peerPolicyFingerprint: null,
        queuedMessages: null,
        queuedBytes: null,
        queueEstimated: false,
        queueAsOfMs: null,
        openChannels: 0,
      }
      peers.set(serial, status)
      if (peers.size > inboundPeersRememberedMax) {
        const oldest = [...peers.values()].find((candidate) => candidate.openChannels === 0)
        if (oldest) peers.delete(oldest.serial)
      }
    }
    return status
  }

  async function storeCopy(channel: MirrorChannel, header: MessageHeader, raw: Buffer): Promise<CopyOutcome> {
    const serial = channel.peer.serial
    const purged = deps.purgedAt?.(header.id)
    if (purged && header.deliveries.every((delivery) => delivery.receivedAtMs <= purged.atMs)) {
      logger.debug('a copy of a message purged here by retention; not archived again', { id: header.id, peerSerial: serial, purgedAtMs: purged.atMs })
      return { kind: 'duplicate', bytes: raw.length }
    }
    const deliveries =
      header.deliveries.length > 0
        ? header.deliveries.map((delivery) => copiedDelivery(serial, delivery))
        : [bareCopiedDelivery(serial, header.id, channel.peer.address, deps.clock.now())]
    let duplicate = true
    try {
      // One submit per delivery, in order: the first stores the bytes, the others only record a delivery.
      for (const delivery of deliveries) {
        const result = await deps.pipeline.submit(raw, delivery)
        if (result.id !== header.id) {
          // Expected only when the pipeline unwrapped a journal report carried inside the copy: what
          // it stored is what a local delivery of these bytes would have stored.
          logger.warn('a copied message was stored under another id by the pipeline', { id: header.id, storedId: result.id, peerSerial: serial })
        }
        duplicate &&= result.duplicate
      }
    } catch (error) {
      if (error instanceof MailkeepError && !error.retryable && messageRejectionCodes.has(error.code)) {
        logger.error('a copied message was refused by this archive for good', { id: header.id, sequence: header.sequence, peerSerial: serial, error })
        return { kind: 'rejected', bytes: raw.length, sequence: header.sequence, id: header.id, code: error.code, message: error.message }
      }
      throw error
    }
    return duplicate ? { kind: 'duplicate', bytes: raw.length } : { kind: 'stored', bytes: raw.length }
  }

  /**
   * Runs one authenticated inbound channel until it closes. Resolves (never rejects) once the
   * channel has ended; stores under way finish on their own and are acknowledged if the channel
   * still stands.
   */
  async function handle(channel: MirrorChannel): Promise<void> {
    assert.equal(channel.direction, 'inbound', 'the receiver serves inbound channels')
    const serial = channel.peer.serial
    const status = peerStatus(channel)
    status.openChannels++
    status.connected = true
    status.address = channel.peer.address
    status.connectedSinceMs = deps.clock.now()
    void channel.closed.then(() => {
      status.openChannels--
      status.connected = status.openChannels > 0
    })

    const verify = deps.verify?.forChannel(channel)
    const room = createWakeSignal()
    let submitsInFlight = 0
    let bytesInFlight = 0
    let batch: Promise<CopyOutcome>[] = []
    let acks: Promise<void> = Promise.resolve()
    let broken = false
    let partial: { header: MessageHeader; parts: Buffer[]; receivedBytes: number } | undefined

    async function accept(header: MessageHeader, raw: Buffer): Promise<void> {
      // No hash check here: TLS protects the bytes in transit, the sender's store checked them
      // against the id when reading, and this store hashes them again (storeCopy compares).
      // Backpressure: while the store is behind, stop reading; the peer's sends then wait on TCP.
      while (submitsInFlight >= submitsInFlightMax || (submitsInFlight > 0 && bytesInFlight + raw.length > bytesInFlightMax)) {
        await room.wait(roomRecheckMs)
      }
      submitsInFlight++
      bytesInFlight += raw.length
      const stored = storeCopy(channel, header, raw).finally(() => {
        submitsInFlight--
        bytesInFlight -= raw.length
        room.notify()
      })
      // Looked at when the batch ends; this only keeps an early failure from counting as unhandled.
      stored.catch(() => undefined)
      batch.push(stored)
    }

    async function finishBatch(end: BatchEnd, outcomes: Promise<CopyOutcome>[]): Promise<void> {
      const settled = await Promise.allSettled(outcomes)
      if (broken) return
      const failed = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected')
      if (failed) {
        broken = true
        const error = failed.reason as { code?: unknown; message?: unknown; retryable?: unknown }
        const code = typeof error?.code === 'string' ? error.code : 'STORE_FAILED'
        const retryable = typeof error?.retryable === 'boolean' ? error.retryable : true
        logger.error('cannot store a copied batch; the peer will send it again', { batch: end.batch, peerSerial: serial, error: failed.reason })
        await channel.send(CopyFrameType.batchFailed, encodeBatchFailure({ batch: end.batch, code, message: String(error?.message ?? error), retryable })).catch(() => undefined)
        await channel.close()
        return
      }
      const rejected: RejectedCopy[] = []
      let stored = 0
      let duplicates = 0
      for (const result of settled) {
        const outcome = (result as PromiseFulfilledResult<CopyOutcome>).value
        status.bytesReceived += outcome.bytes
        if (outcome.kind === 'stored') stored++
        else if (outcome.kind === 'duplicate') duplicates++
        else rejected.push({ sequence: outcome.sequence, id: outcome.id, code: outcome.code, message: outcome.message })
      }
      status.messagesStored += stored
      status.messagesDuplicate += duplicates
      status.messagesRejected += rejected.length
      status.lastBatchAtMs = deps.clock.now()
      // A failed send means the channel is gone; the peer sends the batch again on its next channel.
      await channel.send(CopyFrameType.ack, encodeAck({ batch: end.batch, throughSequence: end.throughSequence, stored, duplicates, rejected })).catch(() => undefined)
    }

    function onMessageBytes(): { header: MessageHeader; raw: Buffer } | undefined {
      if (!partial || partial.receivedBytes < partial.header.sizeBytes) return undefined
      const complete = { header: partial.header, raw: partial.parts.length === 1 ? partial.parts[0]! : Buffer.concat(partial.parts) }
      partial = undefined
      return complete
    }

    let policySent = deps.policySettings()
    // A policy or hold changed here while the channel stands: the peer compares again.
    const policyTimer = setInterval(() => {
      const settings = deps.policySettings()
      if (settings.fingerprint === policySent.fingerprint || !channel.isOpen) return
      policySent = settings
      channel.send(CopyFrameType.policy, encodePolicy(settings)).catch(() => undefined)
    }, policyRecheckMs).unref()
    void channel.closed.then(() => clearInterval(policyTimer))
    try {
      // The listener hands over only authenticated channels: the settings are not for strangers.
      await channel.send(CopyFrameType.policy, encodePolicy(policySent))
      for (;;) {
        const frame = await channel.receive()
        if (frame === null) break
        if (frame.type === CopyFrameType.message || frame.type === CopyFrameType.messagePart) {
          if (frame.type === CopyFrameType.message) {
            if (partial) throw new MirrorError('PROTOCOL', 'MESSAGE before the previous message was complete')
            const { header, chunk } = decodeMessageFrame(frame.payload)
            partial = { header, parts: [chunk], receivedBytes: chunk.length }
          } else {
            if (!partial) throw new MirrorError('PROTOCOL', 'MESSAGE_PART without a MESSAGE')
            partial.parts.push(frame.payload)
            partial.receivedBytes += frame.payload.length
            if (partial.receivedBytes > partial.header.sizeBytes) throw new MirrorError('PROTOCOL', 'more message bytes than announced')
          }
          const complete = onMessageBytes()
          if (complete) await accept(complete.header, complete.raw)
        } else if (frame.type === CopyFrameType.batchEnd) {
          const end = decodeBatchEnd(frame.payload)
          if (partial) throw new MirrorError('PROTOCOL', 'BATCH_END inside a message')
          if (end.messages !== batch.length) throw new MirrorError('PROTOCOL', 'BATCH_END message count differs', { expected: batch.length, actual: end.messages })
          const outcomes = batch
          batch = []
          // Acknowledgements go out in batch order, each after its own stores (and the previous ack).
          acks = acks
            .then(() => finishBatch(end, outcomes))
            .catch((error: unknown) => {
              // Not expected (finishBatch handles store and send failures); never leave it unhandled.
              broken = true
              logger.error('mirror receiver could not finish a batch; closing the channel', { peerSerial: serial, error })
              void channel.close()
            })
        } else if (frame.type === CopyFrameType.queueStatus) {
          const queue = decodeQueueStatus(frame.payload)
          status.queuedMessages = queue.queuedMessages
          status.queuedBytes = queue.queuedBytes
          status.queueEstimated = queue.estimated
          // This system's clock: "as of" compares with now here, whatever the peer's clock says.
          status.queueAsOfMs = deps.clock.now()
        } else if (frame.type === VerifyFrameType.request && verify) {
          verify.onRequest(frame.payload)
        } else if (frame.type === CopyFrameType.policy) {
          const settings = decodePolicy(frame.payload)
          status.peerPolicyFingerprint = settings.fingerprint
          status.policyMismatch = deps.onPolicy?.({ address: channel.peer.address, serial }, settings) ?? []
        } else {
          throw new MirrorError('PROTOCOL', `unexpected frame type ${frame.type} on an inbound mirror channel`, { actual: frame.type })
        }
        if (broken) break
      }
    } catch (error) {
      const failure = error as MirrorError
      if (failure instanceof MirrorError && failure.code === 'PROTOCOL' && failure.origin === 'local') {
        logger.warn('peer broke the copy protocol; channel refused', { peerSerial: serial, error: failure })
        await channel.close(failure)
      } else if (!(failure instanceof MirrorError)) {
        logger.error('mirror receiver failed', { peerSerial: serial, error })
        await channel.close()
      }
      // Other MirrorErrors are the channel's own end (timeout, reset); it has logged them.
    }
    await acks
    clearInterval(policyTimer)
    await channel.close()
    await verify?.close()
  }

  return {
    handle,
    /** Inbound peers: connected now, or seen since start. */
    status(): InboundPeerStatus[] {
      return [...peers.values()].map(({ openChannels: _open, ...status }) => ({ ...status }))
    },
  }
}

/** A receiver as createCopyReceiver makes it. */
export type CopyReceiver = ReturnType<typeof createCopyReceiver>
