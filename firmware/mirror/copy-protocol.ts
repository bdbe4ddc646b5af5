import { deliveryFromValues, deliveryValues } from '../archive/delivery-fields.js'
import type { Delivery } from '../archive/types.js'
import { MirrorError } from './errors.js'
import type { PolicySettings } from './types.js'
import { encodeJson, parseJsonObject, sanitizePeerText, refusalMessageLengthMax } from './protocol.js'

/**
 * Application frames of the copy layer (types 16–255 of the mirror channel). The side that
 * connected (outbound) sends copies; the side that accepted (inbound) stores them and
 * acknowledges. Every message goes as one MESSAGE frame (a JSON header and the first chunk
 * of its raw bytes) plus MESSAGE_PART frames for the rest, so a message of any allowed size
 * fits frames of a few MiB. A batch is the run of messages before a BATCH_END, which names
 * the range of the sender's change log the batch covers; the receiver acknowledges batches
 * in order, each only after every message in it is durable.
 *
 *     both     → POLICY       {policyFingerprint, policies, holds}  once, right after the handshake
 *     outbound → MESSAGE      u32 BE header length | header JSON | first raw chunk
 *     outbound → MESSAGE_PART raw chunk (until header.sizeBytes have arrived)
 *     outbound → BATCH_END    {batch, afterSequence, throughSequence, messages}
 *     inbound  → ACK          {batch, throughSequence, stored, duplicates, rejected[]}
 *     inbound  → BATCH_FAILED {batch, code, message, retryable}   then a clean close
 */
export const CopyFrameType = {
  policy: 16,
  message: 17,
  messagePart: 18,
  batchEnd: 19,
  ack: 20,
  batchFailed: 21,
  queueStatus: 22,
} as const

/** QUEUE_STATUS: how much the sender still has queued for the receiver (the receiver's completeness). */
export interface QueueStatus {
  queuedMessages: number
  queuedBytes: number
  /** The sender's figures are partly estimated (see PeerStatus.queueEstimated). */
  estimated: boolean
}

/** Raw message bytes per MESSAGE / MESSAGE_PART frame, at most (4 MiB). */
export const messageChunkBytesMax = 4 * 1024 * 1024
/** Largest message header (deliveries and envelopes), in bytes (16 MiB). */
export const messageHeaderBytesMax = 16 * 1024 * 1024
/** Largest message the copy layer carries, in bytes (1 GiB, the schema's largest SMTP size). */
export const copyMessageBytesMax = 1024 * 1024 * 1024
/** Deliveries sent with one message, at most (the newest are kept; see selectDeliveries). */
export const deliveriesPerMessageMax = 32
/** Messages in one batch as the wire allows, at most (the service's batchMessagesMax is lower). */
export const batchMessagesWireMax = 100_000
/** Longest policy fingerprint accepted from a peer, in characters. */
export const policyFingerprintLengthMax = 256
/** Bytes of the header-length prefix of a MESSAGE frame. */
const headerLengthBytes = 4

/** A delivery as it travels: the original's fields, exactly as the origin recorded them. */
export type WireDelivery = Required<Omit<Delivery, 'deliveryKey'>> & { deliveryKey: string | null }

/** Header of one copied message. */
export interface MessageHeader {
  /** The origin's change-log sequence this copy is for. */
  sequence: number
  /** The archive id: hex SHA-256 of the raw bytes (the receiver checks it). */
  id: string
  kind: 'ingest' | 'delivery'
  /** Raw bytes that follow in this frame and the MESSAGE_PART frames after it. */
  sizeBytes: number
  /** The origin's deliveries to record with this copy (see selectDeliveries); may be empty. */
  deliveries: WireDelivery[]
}

/** End of a batch: it covers the sender's change log in (afterSequence, throughSequence]. */
export interface BatchEnd {
  batch: number
  afterSequence: number
  throughSequence: number
  /** MESSAGE frames (messages, not frames) sent since the previous BATCH_END. */
  messages: number
}

/** A message the receiver refused for good; the sender logs it and moves on. */
export interface RejectedCopy {
  sequence: number
  id: string
  code: string
  message: string
}

/** Acknowledgement of one batch: every message in it is durable (or rejected for good). */
export interface BatchAck {
  batch: number
  throughSequence: number
  stored: number
  duplicates: number
  rejected: RejectedCopy[]
}

/** The receiver could not store a batch; the sender retries from its cursor later. */
export interface BatchFailure {
  batch: number
  code: string
  message: string
  retryable: boolean
}

const hexId = /^[0-9a-f]{64}$/

function protocolError(what: string): MirrorError {
  return new MirrorError('PROTOCOL', `malformed ${what}`)
}

function isCount(value: unknown, max = Number.MAX_SAFE_INTEGER): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && value <= max
}

/** Retention policies and holds accepted in a peer's POLICY frame, at most each. */
export const policyEntriesMax = 1_024
/** Longest name or criteria text accepted in a peer's POLICY frame, in characters. */
export const policyTextLengthMax = 1_024

/** The POLICY payload: this system's settings summary. */
export function encodePolicy(settings: PolicySettings): Buffer {
  return encodeJson({ policyFingerprint: settings.fingerprint, policies: settings.policies, holds: settings.holds })
}

function isBoundedText(value: unknown): value is string {
  return typeof value === 'string' && value.length <= policyTextLengthMax
}

/** The peer's settings summary (texts sanitised, everything bounded). @throws MirrorError PROTOCOL */
export function decodePolicy(payload: Buffer): PolicySettings {
  const { policyFingerprint, policies, holds } = parseJsonObject(payload, 'POLICY')
  if (typeof policyFingerprint !== 'string' || policyFingerprint.length > policyFingerprintLengthMax) throw protocolError('POLICY')
  if (!Array.isArray(policies) || policies.length > policyEntriesMax || !Array.isArray(holds) || holds.length > policyEntriesMax) throw protocolError('POLICY')
  const policyList = policies.map((policy: unknown) => {
    const { name, retentionDays, criteria } = (policy ?? {}) as Record<string, unknown>
    if (!isBoundedText(name) || !(retentionDays === null || isCount(retentionDays)) || !isBoundedText(criteria)) throw protocolError('POLICY')
    return { name: sanitizePeerText(name, policyTextLengthMax), retentionDays, criteria: sanitizePeerText(criteria, policyTextLengthMax) }
  })
  const holdList = holds.map((hold: unknown) => {
    const { name, active } = (hold ?? {}) as Record<string, unknown>
    if (!isBoundedText(name) || typeof active !== 'boolean') throw protocolError('POLICY')
    return { name: sanitizePeerText(name, policyTextLengthMax), active }
  })
  return { fingerprint: sanitizePeerText(policyFingerprint, policyFingerprintLengthMax), policies: policyList, holds: holdList }
}

/** A QUEUE_STATUS payload. */
export function encodeQueueStatus(status: QueueStatus): Buffer {
  return encodeJson({ queuedMessages: status.queuedMessages, queuedBytes: status.queuedBytes, estimated: status.estimated })
}

/** A peer's QUEUE_STATUS. @throws MirrorError PROTOCOL */
export function decodeQueueStatus(payload: Buffer): QueueStatus {
  const { queuedMessages, queuedBytes, estimated } = parseJsonObject(payload, 'QUEUE_STATUS')
  if (!isCount(queuedMessages) || !isCount(queuedBytes) || typeof estimated !== 'boolean') throw protocolError('QUEUE_STATUS')
  return { queuedMessages, queuedBytes, estimated }
}

/** A message header as it travels (UTF-8 JSON); keep it under messageHeaderBytesMax (see fitHeader). */
export function encodeMessageHeader(header: MessageHeader): Buffer {
  return encodeJson(header)
}

/** A MESSAGE frame: the encoded header and the first chunk of raw bytes (at most messageChunkBytesMax). */
export function encodeMessageFrame(headerJson: Uint8Array, firstChunk: Uint8Array): Buffer {
  const prefix = Buffer.allocUnsafe(headerLengthBytes)
  prefix.writeUInt32BE(headerJson.byteLength, 0)
  return Buffer.concat([prefix, headerJson, firstChunk])
}

/** Bytes of a header as encodeMessageHeader writes it (for fitting it under the limit). */
export function messageHeaderBytes(header: MessageHeader): number {
  return Buffer.byteLength(JSON.stringify(header), 'utf8')
}

function decodeDelivery(value: unknown): WireDelivery {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw protocolError('MESSAGE delivery')
  // The fields of delivery-fields.ts, checked as the store checks its records; an absent deliveryKey is null.
  const delivery = deliveryFromValues(deliveryValues(value as Delivery))
  if (!delivery) throw protocolError('MESSAGE delivery')
  return delivery
}

/**
 * Splits a MESSAGE frame into its header and first raw chunk (a view, not a copy).
 * @throws MirrorError PROTOCOL when the header is malformed, over messageHeaderBytesMax, or
 *   announces more than copyMessageBytesMax, or the chunk is longer than announced
 */
export function decodeMessageFrame(payload: Buffer): { header: MessageHeader; chunk: Buffer } {
  if (payload.length < headerLengthBytes) throw protocolError('MESSAGE')
  const headerBytes = payload.readUInt32BE(0)
  if (headerBytes > messageHeaderBytesMax || headerLengthBytes + headerBytes > payload.length) throw protocolError('MESSAGE header length')
  const body = parseJsonObject(payload.subarray(headerLengthBytes, headerLengthBytes + headerBytes), 'MESSAGE header')
  const { sequence, id, kind, sizeBytes, deliveries } = body
  if (
    !isCount(sequence) ||
    sequence === 0 ||
    typeof id !== 'string' ||
    !hexId.test(id) ||
    (kind !== 'ingest' && kind !== 'delivery') ||
    !isCount(sizeBytes, copyMessageBytesMax) ||
    !Array.isArray(deliveries) ||
    deliveries.length > deliveriesPerMessageMax
  ) {
    throw protocolError('MESSAGE header')
  }
  const chunk = payload.subarray(headerLengthBytes + headerBytes)
  if (chunk.length > sizeBytes) throw protocolError('MESSAGE: more bytes than announced')
  return { header: { sequence, id, kind, sizeBytes, deliveries: deliveries.map(decodeDelivery) }, chunk }
}

/** The BATCH_END payload. */
export function encodeBatchEnd(end: BatchEnd): Buffer {
  return encodeJson(end)
}

/** @throws MirrorError PROTOCOL when malformed or the range runs backwards */
export function decodeBatchEnd(payload: Buffer): BatchEnd {
  const { batch, afterSequence, throughSequence, messages } = parseJsonObject(payload, 'BATCH_END')
  if (!isCount(batch) || !isCount(afterSequence) || !isCount(throughSequence) || throughSequence < afterSequence || !isCount(messages, batchMessagesWireMax)) {
    throw protocolError('BATCH_END')
  }
  return { batch, afterSequence, throughSequence, messages }
}

/** The ACK payload. */
export function encodeAck(ack: BatchAck): Buffer {
  return encodeJson(ack)
}

/** @throws MirrorError PROTOCOL when malformed */
export function decodeAck(payload: Buffer): BatchAck {
  const { batch, throughSequence, stored, duplicates, rejected } = parseJsonObject(payload, 'ACK')
  if (!isCount(batch) || !isCount(throughSequence) || !isCount(stored) || !isCount(duplicates) || !Array.isArray(rejected) || rejected.length > batchMessagesWireMax) {
    throw protocolError('ACK')
  }
  return {
    batch,
    throughSequence,
    stored,
    duplicates,
    rejected: rejected.map((item: unknown) => {
      const r = (item ?? {}) as Record<string, unknown>
      if (!isCount(r.sequence) || typeof r.id !== 'string' || typeof r.code !== 'string' || typeof r.message !== 'string') throw protocolError('ACK rejected')
      return {
        sequence: r.sequence,
        id: sanitizePeerText(r.id, 64),
        code: sanitizePeerText(r.code, 64),
        message: sanitizePeerText(r.message, refusalMessageLengthMax),
      }
    }),
  }
}

/** The BATCH_FAILED payload. */
export function encodeBatchFailure(failure: BatchFailure): Buffer {
  return encodeJson({ ...failure, message: failure.message.slice(0, refusalMessageLengthMax) })
}

/** @throws MirrorError PROTOCOL when malformed */
export function decodeBatchFailure(payload: Buffer): BatchFailure {
  const { batch, code, message, retryable } = parseJsonObject(payload, 'BATCH_FAILED')
  if (!isCount(batch) || typeof code !== 'string' || typeof message !== 'string' || typeof retryable !== 'boolean') throw protocolError('BATCH_FAILED')
  return { batch, code: sanitizePeerText(code, 64), message: sanitizePeerText(message, refusalMessageLengthMax), retryable }
}
