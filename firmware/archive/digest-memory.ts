import assert from 'node:assert/strict'
import { idBytes } from './layout.js'
import { bucketOfId, bucketRange, checkIdsCallable, digestBucketCount, type DigestEntry, type DigestNode, type DigestView } from './digest-nodes.js'
import { addToLeaves, createDigestLeaves, createDigestTree } from './digest-tree.js'

/**
 * A digest of a fixed set of ids held in memory (id-digest.ts has the design): the same
 * DigestView a store snapshot gives, built from packed binary ids, for tests, benchmarks and
 * a model of a peer. Pure: no I/O.
 */

/** A digest of a fixed set of ids held in memory: for tests, benchmarks and a peer's model. */
export interface MemoryDigest extends DigestView {
  readonly root: DigestNode
}

/**
 * A digest of `ids` (packed binary ids, 32 bytes each) with their raw sizes. Copies what it
 * keeps; the set is fixed. Ids are kept sorted per bucket for idsInBucket.
 * @throws AssertionError on a repeated id or a length that is not a multiple of 32
 */
export function createMemoryDigest(ids: Uint8Array, sizesBytes: ArrayLike<number>): MemoryDigest {
  assert.ok(ids.byteLength % idBytes === 0, 'ids are packed 32-byte ids')
  const total = ids.byteLength / idBytes
  assert.ok(sizesBytes.length === total, 'one size per id')
  const leaves = createDigestLeaves()
  // Counting sort by bucket, then each bucket's few ids by their bytes.
  const starts = new Uint32Array(digestBucketCount + 1)
  for (let index = 0; index < total; index++) starts[bucketOfId(ids.subarray(index * idBytes)) + 1]!++
  for (let bucket = 0; bucket < digestBucketCount; bucket++) starts[bucket + 1]! += starts[bucket]!
  const order = new Uint32Array(total)
  const next = starts.slice(0, digestBucketCount)
  for (let index = 0; index < total; index++) {
    const id = ids.subarray(index * idBytes, (index + 1) * idBytes)
    order[next[bucketOfId(id)]!++] = index
    addToLeaves(leaves, id, sizesBytes[index]!)
  }
  const packed = Buffer.from(ids.buffer, ids.byteOffset, ids.byteLength)
  const compareIds = (a: number, b: number): number => packed.compare(packed, b * idBytes, (b + 1) * idBytes, a * idBytes, (a + 1) * idBytes)
  const sorted = Buffer.alloc(total * idBytes)
  const sizes = new Float64Array(total)
  for (let bucket = 0; bucket < digestBucketCount; bucket++) {
    const members = Array.from(order.subarray(starts[bucket]!, starts[bucket + 1]!)).sort(compareIds)
    members.forEach((member, offset) => {
      const position = starts[bucket]! + offset
      if (offset > 0) assert.ok(compareIds(members[offset - 1]!, member) < 0, 'ids of a digest are a set')
      packed.copy(sorted, position * idBytes, member * idBytes, (member + 1) * idBytes)
      sizes[position] = sizesBytes[member]!
    })
  }
  const tree = createDigestTree(leaves)
  return {
    root: tree.node(''),
    node: tree.node,
    children: tree.children,
    idsInBucket(prefixHex) {
      const { start, end } = bucketRange(prefixHex)
      checkIdsCallable(prefixHex, starts[end]! - starts[start]!)
      const entries: DigestEntry[] = []
      for (let position = starts[start]!; position < starts[end]!; position++) {
        entries.push({ id: sorted.toString('hex', position * idBytes, (position + 1) * idBytes), sizeBytes: sizes[position]! })
      }
      return entries
    },
  }
}
