import type { Logger } from '../common/logger.js'
import { MirrorError } from './errors.js'
import type { MirrorChannel } from './channel.js'
import type { MirrorFrame } from './protocol.js'
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
import { storeCopy, type CopyOutcome } from './receiver-copy.js'
import { createWakeSignal, type WakeSignal } from './wake-signal.js'
import type { InboundPeerStatus } from './types.js'
import { VerifyFrameType } from './verify-protocol.js'
import type { VerifyResponder } from './verify-responder.js'
import type { CopyReceiverDeps } from './receiver.js'

/** How often a receiver waiting for room re-checks, in milliseconds (completions wake it at once). */
const roomRecheckMs = 1_000
/** How often an inbound channel looks whether this system's policy settings changed (then sends POLICY again), in milliseconds. */
const policyRecheckMs = 500

/** What one inbound channel's session needs of its receiver. */
export interface ReceiverSessionHost {
  deps: CopyReceiverDeps
  /** The receiver's logger. */
  logger: Logger
  /** Messages and raw bytes of one channel being stored at once, at most. */
  limits: { submitsInFlightMax: number; bytesInFlightMax: number }
}

/** The verify requests of one channel (see VerifyResponder.forChannel). */
type ChannelVerify = ReturnType<VerifyResponder['forChannel']>

/** The state of one inbound channel, shared by its frame handlers and its acknowledgements. */
interface ReceiverSession {
  host: ReceiverSessionHost
  channel: MirrorChannel
  /** The peer's status (updated in place). */
  status: InboundPeerStatus
  verify: ChannelVerify | undefined
  /** Notified when a store finishes: room for the next message. */
  room: WakeSignal
  submitsInFlight: number
  bytesInFlight: number
  /** The stores of the batch being received. */
  batch: Promise<CopyOutcome>[]
  /** The chain of acknowledgements, in batch order. */
  acks: Promise<void>
  /** Set once a batch failed (or could not be finished): the channel is closing. */
  broken: boolean
  /** The message whose bytes are arriving (MESSAGE, then MESSAGE_PART frames). */
  partial: { header: MessageHeader; parts: Buffer[]; receivedBytes: number } | undefined
}

/**
 * Starts storing one complete message. Waits while the channel is at its limits (backpressure:
 * while the store is behind, frames are not read and the peer's sends wait on TCP).
 */
async function accept(session: ReceiverSession, header: MessageHeader, raw: Buffer): Promise<void> {
  // No hash check here: TLS protects the bytes in transit, the sender's store checked them
  // against the id when reading, and this store hashes them again (storeCopy compares).
  const { submitsInFlightMax, bytesInFlightMax } = session.host.limits
  while (session.submitsInFlight >= submitsInFlightMax || (session.submitsInFlight > 0 && session.bytesInFlight + raw.length > bytesInFlightMax)) {
    await session.room.wait(roomRecheckMs)
  }
  session.submitsInFlight++
  session.bytesInFlight += raw.length
  const stored = storeCopy(session.host, session.channel, header, raw).finally(() => {
    session.submitsInFlight--
    session.bytesInFlight -= raw.length
    session.room.notify()
  })
  // Looked at when the batch ends; this only keeps an early failure from counting as unhandled.
  stored.catch(() => undefined)
  session.batch.push(stored)
}

/** A batch with a failed store: BATCH_FAILED to the peer (which sends it again later), then the channel closes. */
async function failBatch(session: ReceiverSession, end: BatchEnd, reason: unknown): Promise<void> {
  session.broken = true
  const error = reason as { code?: unknown; message?: unknown; retryable?: unknown }
  const code = typeof error?.code === 'string' ? error.code : 'STORE_FAILED'
  const retryable = typeof error?.retryable === 'boolean' ? error.retryable : true
  session.host.logger.error('cannot store a copied batch; the peer will send it again', { batch: end.batch, peerSerial: session.channel.peer.serial, error: reason })
  await session.channel.send(CopyFrameType.batchFailed, encodeBatchFailure({ batch: end.batch, code, message: String(error?.message ?? error), retryable })).catch(() => undefined)
  await session.channel.close()
}

/** Counts a batch's outcomes into the peer's status; returns what the acknowledgement reports. */
function countOutcomes(status: InboundPeerStatus, outcomes: readonly CopyOutcome[]): { stored: number; duplicates: number; rejected: RejectedCopy[] } {
  const rejected: RejectedCopy[] = []
  let stored = 0
  let duplicates = 0
  for (const outcome of outcomes) {
    status.bytesReceived += outcome.bytes
    if (outcome.kind === 'stored') stored++
    else if (outcome.kind === 'duplicate') duplicates++
    else rejected.push({ sequence: outcome.sequence, id: outcome.id, code: outcome.code, message: outcome.message })
  }
  status.messagesStored += stored
  status.messagesDuplicate += duplicates
  status.messagesRejected += rejected.length
  return { stored, duplicates, rejected }
}

/** Acknowledges a batch once every store of it resolved (durable), or fails it. */
async function finishBatch(session: ReceiverSession, end: BatchEnd, outcomes: Promise<CopyOutcome>[]): Promise<void> {
  const settled = await Promise.allSettled(outcomes)
  if (session.broken) return
  const failed = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected')
  if (failed) return failBatch(session, end, failed.reason)
  const counts = countOutcomes(
    session.status,
    settled.map((result) => (result as PromiseFulfilledResult<CopyOutcome>).value),
  )
  session.status.lastBatchAtMs = session.host.deps.clock.now()
  // A failed send means the channel is gone; the peer sends the batch again on its next channel.
  await session.channel.send(CopyFrameType.ack, encodeAck({ batch: end.batch, throughSequence: end.throughSequence, ...counts })).catch(() => undefined)
}

/**
 * Takes a MESSAGE or MESSAGE_PART frame. @returns the message once all its bytes arrived
 * @throws MirrorError PROTOCOL for frames out of order or more bytes than announced
 */
function takeMessageBytes(session: ReceiverSession, frame: MirrorFrame): { header: MessageHeader; raw: Buffer } | undefined {
  if (frame.type === CopyFrameType.message) {
    if (session.partial) throw new MirrorError('PROTOCOL', 'MESSAGE before the previous message was complete')
    const { header, chunk } = decodeMessageFrame(frame.payload)
    session.partial = { header, parts: [chunk], receivedBytes: chunk.length }
  } else {
    const partial = session.partial
    if (!partial) throw new MirrorError('PROTOCOL', 'MESSAGE_PART without a MESSAGE')
    partial.parts.push(frame.payload)
    partial.receivedBytes += frame.payload.length
    if (partial.receivedBytes > partial.header.sizeBytes) throw new MirrorError('PROTOCOL', 'more message bytes than announced')
  }
  const partial = session.partial
  if (!partial || partial.receivedBytes < partial.header.sizeBytes) return undefined
  session.partial = undefined
  return { header: partial.header, raw: partial.parts.length === 1 ? partial.parts[0]! : Buffer.concat(partial.parts) }
}

/** Takes BATCH_END: the batch is acknowledged in order, after its own stores. @throws MirrorError PROTOCOL */
function endBatch(session: ReceiverSession, payload: Buffer): void {
  const end = decodeBatchEnd(payload)
  if (session.partial) throw new MirrorError('PROTOCOL', 'BATCH_END inside a message')
  if (end.messages !== session.batch.length) throw new MirrorError('PROTOCOL', 'BATCH_END message count differs', { expected: session.batch.length, actual: end.messages })
  const outcomes = session.batch
  session.batch = []
  // Acknowledgements go out in batch order, each after its own stores (and the previous ack).
  session.acks = session.acks
    .then(() => finishBatch(session, end, outcomes))
    .catch((error: unknown) => {
      // Not expected (finishBatch handles store and send failures); never leave it unhandled.
      session.broken = true
      session.host.logger.error('mirror receiver could not finish a batch; closing the channel', { peerSerial: session.channel.peer.serial, error })
      void session.channel.close()
    })
}

/** Takes any frame but the message bytes: BATCH_END, QUEUE_STATUS, VERIFY_REQUEST, POLICY. @throws MirrorError PROTOCOL */
function takeControlFrame(session: ReceiverSession, frame: MirrorFrame): void {
  const { status, channel } = session
  if (frame.type === CopyFrameType.batchEnd) {
    endBatch(session, frame.payload)
  } else if (frame.type === CopyFrameType.queueStatus) {
    const queue = decodeQueueStatus(frame.payload)
    status.queuedMessages = queue.queuedMessages
    status.queuedBytes = queue.queuedBytes
    status.queueEstimated = queue.estimated
    // This system's clock: "as of" compares with now here, whatever the peer's clock says.
    status.queueAsOfMs = session.host.deps.clock.now()
  } else if (frame.type === VerifyFrameType.request && session.verify) {
    session.verify.onRequest(frame.payload)
  } else if (frame.type === CopyFrameType.policy) {
    const settings = decodePolicy(frame.payload)
    status.peerPolicyFingerprint = settings.fingerprint
    status.policyMismatch = session.host.deps.onPolicy?.({ address: channel.peer.address, serial: channel.peer.serial }, settings) ?? []
  } else {
    throw new MirrorError('PROTOCOL', `unexpected frame type ${frame.type} on an inbound mirror channel`, { actual: frame.type })
  }
}

/**
 * This system's policy settings for the channel: the ones to send first, and a timer that
 * sends them again when a policy or hold changes here while the channel stands (the peer
 * compares again). The timer stops when the channel closes.
 */
function startPolicyUpdates(session: ReceiverSession): { initial: ReturnType<CopyReceiverDeps['policySettings']>; timer: NodeJS.Timeout } {
  const { deps } = session.host
  const { channel } = session
  let policySent = deps.policySettings()
  const timer = setInterval(() => {
    const settings = deps.policySettings()
    if (settings.fingerprint === policySent.fingerprint || !channel.isOpen) return
    policySent = settings
    channel.send(CopyFrameType.policy, encodePolicy(settings)).catch(() => undefined)
  }, policyRecheckMs).unref()
  void channel.closed.then(() => clearInterval(timer))
  return { initial: policySent, timer }
}

/** Reads frames until the peer closes the channel or a batch fails. @throws MirrorError from the channel or PROTOCOL */
async function readFrames(session: ReceiverSession): Promise<void> {
  for (;;) {
    const frame = await session.channel.receive()
    if (frame === null) break
    if (frame.type === CopyFrameType.message || frame.type === CopyFrameType.messagePart) {
      const complete = takeMessageBytes(session, frame)
      if (complete) await accept(session, complete.header, complete.raw)
    } else {
      takeControlFrame(session, frame)
    }
    if (session.broken) break
  }
}

/** Closes the channel after a failure: a protocol breach refused with its reason, anything unexpected logged. */
async function closeOnFailure(session: ReceiverSession, error: unknown): Promise<void> {
  const { logger } = session.host
  const serial = session.channel.peer.serial
  const failure = error as MirrorError
  if (failure instanceof MirrorError && failure.code === 'PROTOCOL' && failure.origin === 'local') {
    logger.warn('peer broke the copy protocol; channel refused', { peerSerial: serial, error: failure })
    await session.channel.close(failure)
  } else if (!(failure instanceof MirrorError)) {
    logger.error('mirror receiver failed', { peerSerial: serial, error })
    await session.channel.close()
  }
  // Other MirrorErrors are the channel's own end (timeout, reset); it has logged them.
}

/**
 * Runs one authenticated inbound channel until it closes: POLICY first, then the peer's
 * frames, the batches stored and acknowledged in order. Resolves (never rejects) once the
 * channel has ended; stores under way finish on their own and are acknowledged if the channel
 * still stands. `status` is the peer's entry, updated in place.
 */
export async function runReceiverSession(host: ReceiverSessionHost, channel: MirrorChannel, status: InboundPeerStatus): Promise<void> {
  const session: ReceiverSession = {
    host,
    channel,
    status,
    verify: host.deps.verify?.forChannel(channel),
    room: createWakeSignal(),
    submitsInFlight: 0,
    bytesInFlight: 0,
    batch: [],
    acks: Promise.resolve(),
    broken: false,
    partial: undefined,
  }
  const policy = startPolicyUpdates(session)
  try {
    // The listener hands over only authenticated channels: the settings are not for strangers.
    await channel.send(CopyFrameType.policy, encodePolicy(policy.initial))
    await readFrames(session)
  } catch (error) {
    await closeOnFailure(session, error)
  }
  await session.acks
  clearInterval(policy.timer)
  await channel.close()
  await session.verify?.close()
}
