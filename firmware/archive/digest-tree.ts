import assert from 'node:assert/strict'
import { ArchiveError } from './errors.js'
import {
  bucketOfId,
  digestFanout,
  digestHashBytes,
  digestInvalid,
  digestLeafLevel,
  digestLeafValueBytes,
  idDigestHash,
  parsePrefix,
  prefixOf,
  xorInto,
  type DigestNode,
  type DigestView,
} from './digest-nodes.js'

/**
 * The id digest's leaves and the tree above them (id-digest.ts has the design): leaves in
 * flat arrays, filled id by id or from stored values; every internal node computed from them
 * and answered from memory; and the 44-byte value a leaf is stored as in `archive/digest`,
 * with the update every ingest and purge applies to it. Pure: no I/O (store-digest.ts does
 * the reads and writes).
 */

/** One level of the tree in flat arrays: node i's count, bytes and hash at index i. */
export interface DigestLevel {
  counts: Float64Array
  bytes: Float64Array
  /** digestHashBytes per node. */
  hashes: Uint8Array
}

function emptyLevel(level: number): DigestLevel {
  const nodes = digestFanout ** level
  return { counts: new Float64Array(nodes), bytes: new Float64Array(nodes), hashes: new Uint8Array(nodes * digestHashBytes) }
}

/** Empty leaves (65,536 buckets, about 3 MiB) to fill with addToLeaves or setLeafValue. */
export function createDigestLeaves(): DigestLevel {
  return emptyLevel(digestLeafLevel)
}

/** Adds a binary id of `sizeBytes` to its leaf, or removes it with `sign` −1 (the same XOR). */
export function addToLeaves(leaves: DigestLevel, id: Uint8Array, sizeBytes: number, sign: 1 | -1 = 1): void {
  const bucket = bucketOfId(id)
  leaves.counts[bucket]! += sign
  leaves.bytes[bucket]! += sign * sizeBytes
  xorInto(leaves.hashes, bucket * digestHashBytes, idDigestHash(id), 0, digestHashBytes)
}

/**
 * Sets one leaf from its stored value (encodeLeafValue's layout), copied straight into the
 * arrays: a snapshot reads up to 65,536 of them.
 * @throws ArchiveError STORE_CORRUPT when the value is not a leaf
 */
export function setLeafValue(leaves: DigestLevel, bucket: number, value: Uint8Array): void {
  if (value.byteLength !== digestLeafValueBytes) decodeLeafValue(value, bucket)
  const view = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  leaves.counts[bucket] = view.readUInt32BE(0)
  leaves.bytes[bucket] = view.readUInt32BE(4) * 2 ** 32 + view.readUInt32BE(8)
  leaves.hashes.set(view.subarray(12), bucket * digestHashBytes)
}

/** A tree's nodes above and at the leaves, answered from memory. */
export type DigestTree = Pick<DigestView, 'node' | 'children'>

/**
 * Computes every internal node from the leaves (69,905 nodes, ~3.4 MiB, a few ms) and answers
 * node and children lookups from memory. Takes ownership of `leaves`: change them no more.
 */
export function createDigestTree(leaves: DigestLevel): DigestTree {
  const levels: DigestLevel[] = []
  levels[digestLeafLevel] = leaves
  for (let level = digestLeafLevel - 1; level >= 0; level--) {
    const below = levels[level + 1]!
    const current = emptyLevel(level)
    for (let index = 0; index < current.counts.length; index++) {
      for (let child = index * digestFanout; child < (index + 1) * digestFanout; child++) {
        current.counts[index]! += below.counts[child]!
        current.bytes[index]! += below.bytes[child]!
        xorInto(current.hashes, index * digestHashBytes, below.hashes, child * digestHashBytes, digestHashBytes)
      }
    }
    levels[level] = current
  }
  const nodeAt = (level: number, index: number): DigestNode => {
    const nodes = levels[level]!
    const offset = index * digestHashBytes
    return { count: nodes.counts[index]!, bytes: nodes.bytes[index]!, hash: nodes.hashes.slice(offset, offset + digestHashBytes) }
  }
  return {
    node(prefixHex) {
      const { level, index } = parsePrefix(prefixHex)
      return nodeAt(level, index)
    },
    children(prefixHex) {
      const { level, index } = parsePrefix(prefixHex)
      if (level >= digestLeafLevel) throw digestInvalid(`digest node ${prefixHex} is a leaf and has no children`, { prefix: prefixHex })
      return Array.from({ length: digestFanout }, (_, child) => nodeAt(level + 1, index * digestFanout + child))
    },
  }
}

// ---- stored leaf values ---------------------------------------------------------------------

/** The stored value of a leaf (digestLeafValueBytes). */
export function encodeLeafValue(node: DigestNode): Buffer {
  assert.ok(Number.isSafeInteger(node.count) && node.count >= 0 && node.count <= 0xffffffff && Number.isSafeInteger(node.bytes) && node.bytes >= 0)
  assert.ok(node.hash.byteLength === digestHashBytes)
  const value = Buffer.alloc(digestLeafValueBytes)
  value.writeUInt32BE(node.count, 0)
  value.writeUInt32BE(Math.floor(node.bytes / 2 ** 32), 4)
  value.writeUInt32BE(node.bytes % 2 ** 32, 8)
  value.set(node.hash, 12)
  return value
}

/** @throws ArchiveError STORE_CORRUPT when the value is not a leaf */
export function decodeLeafValue(value: Uint8Array, bucket: number): DigestNode {
  if (!(value instanceof Uint8Array) || value.byteLength !== digestLeafValueBytes) {
    throw new ArchiveError('STORE_CORRUPT', `digest leaf ${prefixOf(digestLeafLevel, bucket)} is undecodable`, { fields: { bucket } })
  }
  const view = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  return { count: view.readUInt32BE(0), bytes: view.readUInt32BE(4) * 2 ** 32 + view.readUInt32BE(8), hash: new Uint8Array(view.subarray(12, digestLeafValueBytes)) }
}

/**
 * The leaf value after adding (`sign` 1) or removing (−1) one binary id of `sizeBytes`;
 * null when the bucket becomes empty (the store then deletes the key).
 * @throws ArchiveError STORE_CORRUPT when the stored value is undecodable or the removal
 *   would leave a negative count or bytes, or an empty bucket with a non-zero hash
 */
export function updatedLeafValue(stored: Uint8Array | undefined, id: Uint8Array, sizeBytes: number, sign: 1 | -1): Buffer | null {
  // Worked in place on one copy of the value: this runs in every ingest's transaction.
  const bucket = bucketOfId(id)
  const value = Buffer.alloc(digestLeafValueBytes)
  if (stored !== undefined) {
    if (stored.byteLength !== digestLeafValueBytes) decodeLeafValue(stored, bucket)
    value.set(stored)
  }
  const count = value.readUInt32BE(0) + sign
  const bytes = value.readUInt32BE(4) * 2 ** 32 + value.readUInt32BE(8) + sign * sizeBytes
  xorInto(value, 12, idDigestHash(id), 0, digestHashBytes)
  const emptied = count === 0 && bytes === 0 && value.subarray(12).every((byte) => byte === 0)
  if (count < 0 || bytes < 0 || (count === 0 && !emptied) || count > 0xffffffff) {
    throw new ArchiveError('STORE_CORRUPT', `digest leaf ${prefixOf(digestLeafLevel, bucket)} disagrees with the archive (count ${count}, bytes ${bytes})`, {
      fields: { bucket, count, bytes },
    })
  }
  if (count === 0) return null
  value.writeUInt32BE(count, 0)
  value.writeUInt32BE(Math.floor(bytes / 2 ** 32), 4)
  value.writeUInt32BE(bytes % 2 ** 32, 8)
  return value
}
