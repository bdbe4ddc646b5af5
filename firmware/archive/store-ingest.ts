import assert from 'node:assert/strict'
import { putAppend } from '../common/lmdb-append.js'
import { ArchiveError } from './errors.js'
import { decodeMessageRecord, encodeDelivery, encodeMessageRecord, type MessageRecord } from './records.js'
import { deflateCodecs, encodeBlob, type BlobCodec } from './codec.js'
import { blobPartKey, blobParts, deliveryKeyHash, deliveryRecordKey, idKey } from './layout.js'
import { enterReadOnly, requireWritable, sha256Hex, track, unavailable, type StoreContext } from './store-context.js'
import { recheckReadOnly, volumeFullReason } from './store-read-only.js'
import { readCounters, type Databases } from './store-databases.js'
import { inTransaction, nextChange, runIndexer, updateDigest, withoutIndexerOnFailure } from './store-transactions.js'
import { deliveriesOf, metaOf } from './store-reads.js'
import { readPurgeRecord } from './purge-records.js'
import type { Delivery, EncodedRaw, IngestRequest, IngestResult } from './types.js'

/**
 * Ingest (store.ts's module comment has the design): a message's raw bytes stored once,
 * content-addressed, compressed before its transaction (or compressed already by a parse
 * worker); then, in its one transaction, the blob when the bytes are new, the message
 * record, this delivery (once per delivery key), the change-log entry, the counters, the
 * id digest's leaf and the indexer's postings. Resolves once durable; idempotent on the
 * content.
 */

/** Encoded bytes of a new message, made before its transaction. */
interface EncodedBlob {
  codec: BlobCodec
  bytes: Buffer
}

/** Returned from a transaction when the message vanished between the check and the transaction (a purge): compress and try again. */
const needsBlob = Symbol('needs-blob')

/**
 * Archives one message: the raw bytes once (content-addressed), its metadata, this
 * delivery, a change-log entry, counters and the indexer's postings, in one transaction;
 * resolves only once that transaction is durable. Idempotent on the content: a message
 * already held only gains a delivery, and a delivery whose `deliveryKey` is already
 * recorded gains nothing (the earlier sequence is returned).
 * @throws AssertionError (synchronously) on a malformed request
 * @throws ArchiveError MESSAGE_TOO_LARGE (over messageBytesMax), STORE_FULL (read-only, volume below freeBytesMin, archive at mapSizeBytes, disk full; retryable), STORE_UNAVAILABLE (not open, disk failure; retryable), STORE_CORRUPT (keys out of order)
 */
export function ingest(context: StoreContext, request: IngestRequest): Promise<IngestResult> {
  assertRequest(request)
  const messageBytesMax = context.options.messageBytesMax
  if (request.raw.byteLength > messageBytesMax) {
    return Promise.reject(
      new ArchiveError('MESSAGE_TOO_LARGE', `message of ${request.raw.byteLength} bytes is over the limit of ${messageBytesMax} bytes`, {
        fields: { sizeBytes: request.raw.byteLength, sizeBytesMax: messageBytesMax },
      }),
    )
  }
  const accept = (): Promise<IngestResult> => {
    requireWritable(context)
    return track(context, ingestOnce(context, sha256Hex(request.raw), request))
  }
  // A read-only store looks at the volume first (at most once per freeSpaceCacheMs), so
  // mail is taken again as soon as there is room, without waiting for the watcher. A
  // writable one accepts at once, so that a stop() right after ingest() waits for it.
  if (context.readOnly) return recheckReadOnly(context, false).then(accept)
  try {
    return accept()
  } catch (error) {
    return Promise.reject(error)
  }
}

function assertRequest(request: IngestRequest): void {
  assert.ok(request && request.raw instanceof Uint8Array, 'ingest needs raw bytes')
  assert.ok(request.parsed && Array.isArray(request.parsed.flags), 'ingest needs the parser result')
  const delivery = request.delivery
  assert.ok(delivery && Array.isArray(delivery.envelopeTo) && Array.isArray(delivery.envelopeBcc), 'ingest needs a delivery with envelope lists')
  assert.ok(Number.isFinite(delivery.receivedAtMs), 'delivery.receivedAtMs must be a number')
}

async function ingestOnce(context: StoreContext, id: string, request: IngestRequest): Promise<IngestResult> {
  let databases = requireWritable(context, true)
  try {
    await context.space.ensure(databases, request.raw.byteLength)
  } catch (error) {
    const freeBytes = context.space.lastVolumeFreeBytes()
    if (freeBytes !== null && freeBytes < context.options.freeBytesMin) {
      enterReadOnly(context, { cause: 'volume-full', reason: volumeFullReason(context, freeBytes), freeBytes, reopen: false })
    }
    throw error
  }
  // Compress outside the write transaction, and only when the bytes are new: the check is
  // repeated inside the transaction, which alone decides.
  let blob: EncodedBlob | undefined
  for (let attempt = 0; attempt < 2; attempt++) {
    if (!blob && (attempt > 0 || !databases.messages.doesExist(idKey(id)))) {
      const encoded = usableEncoding(context, id, request) ?? (await encodeBlob(request.raw))
      blob = { codec: encoded.codec, bytes: Buffer.from(encoded.bytes.buffer, encoded.bytes.byteOffset, encoded.bytes.byteLength) }
      databases = requireWritable(context, true)
    }
    const current = databases
    const currentBlob = blob
    const result = await withoutIndexerOnFailure(context, id, (indexing) => inTransaction(context, current, () => ingestInTransaction(context, current, id, request, currentBlob, indexing)))
    if (result !== needsBlob) {
      context.activity.ingests++
      return result
    }
  }
  // Only a purge racing twice with the same ingest gets here.
  throw unavailable(context, `message ${id} changed while it was being stored; try again`)
}

/**
 * The caller's compressed bytes (made on a parse worker) when they are bound to these raw
 * bytes by their SHA-256; anything else is ignored and the store compresses `raw` itself.
 */
function usableEncoding(context: StoreContext, id: string, request: IngestRequest): EncodedRaw | undefined {
  const encoded = request.encoded
  if (encoded === undefined) return undefined
  if (encoded.rawSha256 === id && (deflateCodecs.includes(encoded.codec) || (encoded.codec === 'identity' && encoded.bytes.byteLength === request.raw.byteLength))) return encoded
  context.logger.warn('ignoring precompressed bytes that do not belong to the message; compressing it again', { id, codec: encoded.codec })
  return undefined
}

/** The body of one ingest's transaction. Runs synchronously inside the write transaction. */
function ingestInTransaction(
  context: StoreContext,
  databases: Databases,
  id: string,
  request: IngestRequest,
  blob: EncodedBlob | undefined,
  indexing: boolean,
): IngestResult | typeof needsBlob {
  const key = idKey(id)
  const delivery = deliveryOf(request.delivery)
  const storedValue = databases.messages.get(key)
  let record = storedValue === undefined ? undefined : decodeMessageRecord(storedValue)
  if (record && delivery.deliveryKey) {
    const recorded = databases.deliveryKeys.get(deliveryKeyHash(id, delivery.deliveryKey))
    if (recorded !== undefined) return { id, duplicate: true, sequence: recorded }
  }
  if (!record && request.origin && delivery.source === 'mirror') {
    // A peer's copy of a message retention purged here, from a delivery it received no later
    // than the purge: had it arrived before, the purge would have removed it with the rest.
    // Decided in this transaction, so a copy racing a purge cannot bring the message back.
    const purged = readPurgeRecord(databases.purged, key)
    if (purged && delivery.receivedAtMs <= purged.atMs) return { id, duplicate: true, sequence: purged.sequence, purged: true }
  }
  if (!record && !blob) return needsBlob
  const nowMs = context.clock.now()
  const counters = readCounters(databases)
  const existing = record !== undefined
  const sequence = nextChange(databases, counters, existing ? 'delivery' : 'ingest', key, request.origin ?? null, nowMs)
  if (!record) {
    assert.ok(blob)
    record = storeBlob(databases, id, request, sequence, blob, nowMs)
    updateDigest(context, databases, id, key, record.sizeBytes, 1)
    counters.messages++
    counters.rawBytes += record.sizeBytes
    counters.storedBytes += record.storedBytes
  }
  databases.deliveries.putSync(deliveryRecordKey(key, sequence), encodeDelivery(delivery))
  if (delivery.deliveryKey) databases.deliveryKeys.putSync(deliveryKeyHash(id, delivery.deliveryKey), sequence)
  counters.deliveries++
  const wasFlagged = existing && record.flags.length > 0
  const stored = record
  runIndexer(context, indexing, (hook) => hook.messageStored(metaOf(id, stored, existing ? deliveriesOf(context, databases, id) : [delivery]), request.parsed, request.indexPrepared))
  if (context.indexer && !indexing && !record.flags.includes('index-failed')) record = { ...record, flags: [...record.flags, 'index-failed'] }
  if (!existing || record !== stored) databases.messages.putSync(key, encodeMessageRecord(record))
  if (record.flags.length > 0 && !wasFlagged) counters.flaggedMessages++
  databases.state.putSync('counters', counters)
  return { id, duplicate: existing, sequence }
}

/**
 * In the transaction of a new message: appends its blob's parts (keyed by the ingest's
 * sequence, cut as layout.ts's blobParts says) and returns its new record (not yet put).
 * @throws ArchiveError STORE_CORRUPT when a blob key is not past the last one
 */
function storeBlob(databases: Databases, id: string, request: IngestRequest, sequence: number, blob: EncodedBlob, nowMs: number): MessageRecord {
  const ranges = blobParts(blob.bytes.byteLength, databases.pageSizeBytes)
  ranges.forEach(([start, end], index) => {
    if (!putAppend(databases.blobs, blobPartKey(sequence, index), blob.bytes.subarray(start, end))) {
      throw new ArchiveError('STORE_CORRUPT', `blob key ${sequence}/${index} is not past the last blob`, { fields: { id, sequence } })
    }
  })
  return recordOf(request, sequence, blob, ranges.length, nowMs)
}

/** The message record of a new message. Pure. */
function recordOf(request: IngestRequest, sequence: number, blob: EncodedBlob, parts: number, nowMs: number): MessageRecord {
  const addresses = (list: { address: string }[]): string[] => list.map((entry) => entry.address)
  const parsed = request.parsed
  return {
    sequence,
    codec: blob.codec,
    storedBytes: blob.bytes.byteLength,
    parts,
    sizeBytes: request.raw.byteLength,
    messageId: parsed.messageId,
    dateMs: parsed.dateMs,
    from: addresses(parsed.from),
    to: addresses(parsed.to),
    cc: addresses(parsed.cc),
    bcc: addresses(parsed.bcc),
    subject: parsed.subject,
    attachments: parsed.attachments.map(({ filename, contentType, sizeBytes, sha256 }) => ({ filename, contentType, sizeBytes, sha256 })),
    flags: [...parsed.flags],
    firstArchivedAtMs: nowMs,
    origin: request.origin ?? null,
  }
}

/** A copy of the caller's delivery with exactly the fields the store records. Pure. */
function deliveryOf(delivery: Delivery): Delivery {
  return {
    source: delivery.source,
    sourceName: delivery.sourceName,
    receivedAtMs: delivery.receivedAtMs,
    envelopeFrom: delivery.envelopeFrom,
    envelopeTo: [...delivery.envelopeTo],
    envelopeBcc: [...delivery.envelopeBcc],
    remoteAddress: delivery.remoteAddress,
    journalEnvelopeText: delivery.journalEnvelopeText,
    deliveryKey: delivery.deliveryKey ?? null,
  }
}
