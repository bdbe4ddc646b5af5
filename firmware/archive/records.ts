import type { BlobCodec } from './codec.js'
import { deliveryFields, deliveryFromValues, deliverySources, deliveryValues } from './delivery-fields.js'
import type { ChangeEntry, Delivery, MessageMeta } from './types.js'

/**
 * The archive's records as stored (msgpack via lmdb-js): positional arrays that start with
 * a format version, not objects. Objects would repeat every field name in every record;
 * on the real corpus arrays took metadata, deliveries and change log from 0.19 to 0.10
 * bytes of disk per raw byte (the whole archive from 0.65 to 0.56). Decoders check the shape and throw
 * RecordShapeError on anything else, so damage is reported, not passed on.
 */

/** Version of the record layouts below. */
export const recordVersion = 1

/** What `archive/messages` holds for each message: the metadata and where its blob is. */
export interface MessageRecord extends Omit<MessageMeta, 'id' | 'deliveries'> {
  /** Change-log sequence of the ingest that stored the blob: the blob's key. */
  sequence: number
  codec: BlobCodec
  storedBytes: number
  parts: number
}

/** What `archive/changes` holds for each sequence. */
export interface ChangeRecord {
  kind: ChangeEntry['kind']
  id: Uint8Array
  atMs: number
  origin: string | null
}

/** A stored record that does not have the shape its decoder expects. */
export class RecordShapeError extends Error {
  constructor(what: string) {
    super(`undecodable ${what} record`)
    this.name = 'RecordShapeError'
  }
}

// Positions are stored: new codecs are appended, never inserted.
const codecs: readonly BlobCodec[] = ['identity', 'deflate-raw', 'deflate-raw-mail1']
const changeKinds: readonly ChangeEntry['kind'][] = ['ingest', 'delivery', 'purge']

const isString = (value: unknown): value is string => typeof value === 'string'
const isNumber = (value: unknown): value is number => typeof value === 'number' && Number.isFinite(value)
const isNullableString = (value: unknown): value is string | null => value === null || typeof value === 'string'
const isStrings = (value: unknown): value is string[] => Array.isArray(value) && value.every(isString)

function fields(value: unknown, what: string, length: number): unknown[] {
  if (!Array.isArray(value) || value[0] !== recordVersion || value.length !== length) throw new RecordShapeError(what)
  return value
}

export function encodeMessageRecord(record: MessageRecord): unknown[] {
  return [
    recordVersion,
    record.sequence,
    codecs.indexOf(record.codec),
    record.storedBytes,
    record.parts,
    record.sizeBytes,
    record.messageId,
    record.dateMs,
    record.from,
    record.to,
    record.cc,
    record.bcc,
    record.subject,
    record.attachments.map((attachment) => [attachment.filename, attachment.contentType, attachment.sizeBytes, attachment.sha256]),
    record.flags,
    record.firstArchivedAtMs,
    record.origin,
  ]
}

/** @throws RecordShapeError */
export function decodeMessageRecord(value: unknown): MessageRecord {
  const [, sequence, codec, storedBytes, parts, sizeBytes, messageId, dateMs, from, to, cc, bcc, subject, attachments, flags, firstArchivedAtMs, origin] = fields(value, 'message', 17)
  const codecName = codecs[codec as number]
  if (
    !isNumber(sequence) ||
    !codecName ||
    !isNumber(storedBytes) ||
    !isNumber(parts) ||
    !isNumber(sizeBytes) ||
    !isNullableString(messageId) ||
    !(dateMs === null || isNumber(dateMs)) ||
    !isStrings(from) ||
    !isStrings(to) ||
    !isStrings(cc) ||
    !isStrings(bcc) ||
    !isNullableString(subject) ||
    !Array.isArray(attachments) ||
    !isStrings(flags) ||
    !isNumber(firstArchivedAtMs) ||
    !isNullableString(origin)
  ) {
    throw new RecordShapeError('message')
  }
  return {
    sequence,
    codec: codecName,
    storedBytes,
    parts,
    sizeBytes,
    messageId,
    dateMs,
    from,
    to,
    cc,
    bcc,
    subject,
    attachments: attachments.map((attachment: unknown) => {
      if (!Array.isArray(attachment) || attachment.length !== 4) throw new RecordShapeError('attachment')
      const [filename, contentType, attachmentBytes, sha256] = attachment as unknown[]
      if (!isNullableString(filename) || !isString(contentType) || !isNumber(attachmentBytes) || !isString(sha256)) throw new RecordShapeError('attachment')
      return { filename, contentType, sizeBytes: attachmentBytes, sha256 }
    }),
    flags,
    firstArchivedAtMs,
    origin,
  }
}

/** The delivery record: the format version, then the fields of delivery-fields.ts in order, the source by its position. */
export function encodeDelivery(delivery: Delivery): unknown[] {
  return [recordVersion, ...deliveryValues(delivery, (source) => deliverySources.indexOf(source))]
}

/** @throws RecordShapeError */
export function decodeDelivery(value: unknown): Delivery {
  const delivery = deliveryFromValues(fields(value, 'delivery', deliveryFields.length + 1).slice(1), (position) => deliverySources[position as number])
  if (!delivery) throw new RecordShapeError('delivery')
  return delivery
}

export function encodeChange(change: ChangeRecord): unknown[] {
  return [recordVersion, changeKinds.indexOf(change.kind), change.id, change.atMs, change.origin]
}

/** @throws RecordShapeError */
export function decodeChange(value: unknown): ChangeRecord {
  const [, kind, id, atMs, origin] = fields(value, 'change', 5)
  const kindName = changeKinds[kind as number]
  if (!kindName || !(id instanceof Uint8Array) || id.byteLength !== 32 || !isNumber(atMs) || !isNullableString(origin)) throw new RecordShapeError('change')
  return { kind: kindName, id, atMs, origin }
}
