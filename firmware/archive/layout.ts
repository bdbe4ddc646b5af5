import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'

/**
 * The on-disk layout of the archive: names of the LMDB sub-databases, their binary keys, and
 * how a compressed blob is cut into parts. Pure functions only; the store (store.ts and its
 * store-*.ts units, listed in README.md) does the I/O. Tests use these to address records
 * directly (e.g. to corrupt a blob on purpose).
 *
 * Sub-databases of the one LMDB environment (keys are raw bytes, big-endian numbers):
 *
 * | name                    | key                                        | value                                |
 * |-------------------------|--------------------------------------------|--------------------------------------|
 * | `archive/messages`      | id (32-byte SHA-256 of the raw bytes)      | message record (records.ts)          |
 * | `archive/blobs`         | ingest sequence (8) + part index (2)       | a slice of the compressed raw bytes  |
 * | `archive/deliveries`    | id (32) + sequence (8)                     | delivery record (records.ts)         |
 * | `archive/delivery-keys` | SHA-256 of `id \n deliveryKey` (32)        | sequence of that delivery            |
 * | `archive/changes`       | sequence (8)                               | change record (records.ts), appended |
 * | `archive/digest`        | bucket: the id's first 2 bytes (2)         | id digest leaf (44, digest-tree.ts)  |
 * | `archive/purged`        | id (32)                                    | [sequence, atMs] of its purge        |
 * | `archive/state`         | `format`, `counters`, `identity`, `digest`, `purged` | objects (msgpack), see below |
 *
 * `archive/state` holds `format` (name, layout version, page size, creation time), `counters`
 * (stats() and the last sequence, written with every change entry), `identity` (the store id:
 * 128 random bits as 32 lower-case hex digits and its creation time, written with `format`
 * when the archive is created, or at the first start of firmware that knows it; a wiped or
 * replaced volume therefore gets a new id) and `digest` (version, build time and message count
 * of the id digest's last full build: present means every ingest and purge since kept the
 * digest up to date).
 *
 * `archive/digest` holds the leaves of the id digest (id-digest.ts): for each non-empty bucket
 * of ids sharing their first 2 bytes, the count (u32), the sum of raw sizes in bytes (u64)
 * and the XOR of SHA-256("mailkeep-digest-v1" || id) over its ids. The leaf is read and
 * written in the same transaction as every ingest of a new id and every purge (a duplicate
 * changes nothing); an empty bucket has no key. Internal nodes are not stored: a snapshot
 * combines the leaves (store-digest.ts). Start rebuilds the leaves in one pass over
 * `archive/messages`, written in one transaction with the `digest` record, when that record
 * is missing (an archive made before the digest, a build cut short, a leaf found damaged
 * while the store ran) or the leaves' totals disagree with the counters (firmware without
 * the digest wrote meanwhile, or damage).
 *
 * Why blobs are keyed by the ingest sequence and not by the content hash: sequences grow,
 * so LMDB can append (MDB_APPEND) and fill every leaf page instead of splitting pages at
 * random positions; the hash → sequence link lives in the message record. Measured on the
 * real corpus, the deflated blobs alone took 0.73 bytes of disk per raw byte keyed by hash,
 * 0.65 keyed by sequence, and 0.45 keyed by sequence and cut as blobParts() cuts them.
 */

/** Names of the store's sub-databases; an indexer's databases must not start with `archive/`. */
export const databaseNames = {
  messages: 'archive/messages',
  blobs: 'archive/blobs',
  deliveries: 'archive/deliveries',
  deliveryKeys: 'archive/delivery-keys',
  changes: 'archive/changes',
  digest: 'archive/digest',
  purged: 'archive/purged',
  state: 'archive/state',
} as const

/** Version of this layout, kept in the `format` record and checked by start(). */
export const layoutVersion = 1
export const formatName = 'mailkeep-archive'

/** Bytes of a SHA-256 digest, the archive id in binary form. */
export const idBytes = 32
const sequenceBytes = 8
const partIndexBytes = 2
/** Largest part index a blob key can hold. */
export const blobPartsMax = 0xffff

const hexIdPattern = /^[0-9a-f]{64}$/

/** True when `id` is an archive id: 64 lower-case hex digits. */
export function isArchiveId(id: string): boolean {
  return hexIdPattern.test(id)
}

/** The binary key of an archive id. Asserts the id's form (a caller's bug otherwise). */
export function idKey(id: string): Buffer {
  assert.ok(isArchiveId(id), `archive id must be 64 lower-case hex digits, got ${JSON.stringify(id).slice(0, 80)}`)
  return Buffer.from(id, 'hex')
}

/** The 8-byte big-endian key of a sequence number (1 … 2^53 − 1). */
export function sequenceKey(sequence: number): Buffer {
  assert.ok(Number.isSafeInteger(sequence) && sequence >= 0, `sequence must be a non-negative safe integer, got ${sequence}`)
  const key = Buffer.alloc(sequenceBytes)
  key.writeUIntBE(Math.floor(sequence / 2 ** 32), 0, 4)
  key.writeUInt32BE(sequence % 2 ** 32, 4)
  return key
}

/** Reads a sequence number from the first 8 bytes at `offset` of a key. */
export function readSequence(key: Uint8Array, offset = 0): number {
  const view = Buffer.from(key.buffer, key.byteOffset + offset, sequenceBytes)
  return view.readUInt32BE(0) * 2 ** 32 + view.readUInt32BE(4)
}

/** Key of an id digest leaf in `archive/digest`: its bucket (the id's first 2 bytes), big-endian. */
export function digestBucketKey(bucket: number): Buffer {
  assert.ok(Number.isInteger(bucket) && bucket >= 0 && bucket <= 0xffff, `digest bucket out of range: ${bucket}`)
  const key = Buffer.alloc(2)
  key.writeUInt16BE(bucket, 0)
  return key
}

/** Key of part `partIndex` of the blob stored by the ingest with `sequence`. */
export function blobPartKey(sequence: number, partIndex: number): Buffer {
  assert.ok(Number.isInteger(partIndex) && partIndex >= 0 && partIndex <= blobPartsMax, `part index out of range: ${partIndex}`)
  const key = Buffer.alloc(sequenceBytes + partIndexBytes)
  sequenceKey(sequence).copy(key, 0)
  key.writeUInt16BE(partIndex, sequenceBytes)
  return key
}

/** Key of one delivery: the message id, then the delivery's change-log sequence. */
export function deliveryRecordKey(id: Buffer, sequence: number): Buffer {
  return Buffer.concat([id, sequenceKey(sequence)])
}

/** Key that makes a source-side delivery key unique per message. */
export function deliveryKeyHash(id: string, deliveryKey: string): Buffer {
  return createHash('sha256').update(id).update('\n').update(deliveryKey).digest()
}

/**
 * LMDB page header size in lmdb-js's LMDB fork, in bytes (measured: a 4,072-byte value
 * fills exactly one 4,096-byte overflow page, 4,073 bytes need two).
 */
export const pageHeaderBytes = 24
/** Per-entry cost in a leaf page beyond key and value: 2-byte slot + 8-byte node header + our 10-byte key, with slack for even alignment. */
const leafEntryOverheadBytes = 22

/**
 * How a compressed blob is cut into parts so LMDB wastes little space. A value larger than
 * about half a page goes to overflow pages, which LMDB allocates whole: a 2.1 KB blob would
 * take a full 4 KB page. So a blob is stored as
 *   - a head of whole overflow pages (only when the blob is at least one page long), sized
 *     to fill those pages exactly, then
 *   - the tail in small chunks that four to a page fit in ordinary leaf pages, where
 *     appended keys pack them densely.
 * Readers never depend on the cut: they concatenate the parts in
 * key order, so the policy can change without a format change.
 *
 * @param pageSizeBytes the environment's page size
 * @returns the byte ranges `[start, end)` of each part, in order (none for an empty blob)
 */
export function blobParts(lengthBytes: number, pageSizeBytes: number): Array<[number, number]> {
  assert.ok(Number.isSafeInteger(lengthBytes) && lengthBytes >= 0)
  assert.ok(pageSizeBytes >= 1024 && (pageSizeBytes & (pageSizeBytes - 1)) === 0, `page size must be a power of two ≥ 1024, got ${pageSizeBytes}`)
  const chunkBytes = (Math.floor((pageSizeBytes - pageHeaderBytes) / 4) - leafEntryOverheadBytes) & ~1
  const parts: Array<[number, number]> = []
  let offset = 0
  const headPages = Math.floor((lengthBytes + pageHeaderBytes) / pageSizeBytes)
  if (headPages > 0) {
    offset = headPages * pageSizeBytes - pageHeaderBytes
    parts.push([0, offset])
  }
  while (offset < lengthBytes) {
    const end = Math.min(lengthBytes, offset + chunkBytes)
    parts.push([offset, end])
    offset = end
  }
  assert.ok(parts.length <= blobPartsMax + 1, `blob of ${lengthBytes} bytes needs too many parts`)
  return parts
}
