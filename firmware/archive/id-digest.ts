/**
 * The id digest: a summary of a set of archive ids that two mirrored appliances compare to
 * prove they hold the same messages ("proof of agreement", issue 18), exchanging a few
 * kilobytes even at a million ids. Pure: no I/O. The store keeps the leaves (store-digest.ts,
 * `archive/digest`). This module is the design and the one import for other layers; the
 * code is in five units, each readable alone:
 *   digest-nodes.ts    constants, a node, the views, prefixes and buckets, an id's hash
 *   digest-tree.ts     leaves, the tree above them, a leaf's stored value
 *   digest-memory.ts   a digest of a fixed set of ids held in memory
 *   digest-wire.ts     the byte format of requests and answers, the responder's half
 *   digest-compare.ts  compareDigests: the descent, its limits and its checks
 *
 * Tree. 65,536 leaf buckets, one per value of an id's first 2 bytes. A leaf holds the count
 * of its ids, the sum of their raw sizes in bytes, and the XOR of SHA-256("mailkeep-digest-v1"
 * || id) over its ids. XOR is order-independent and its own inverse, so adding and removing
 * an id are the same update and the store changes one leaf per ingest or purge. Internal
 * nodes are 16-ary (level 0 the root, level 4 the leaves) and combine their children: counts
 * and bytes add up, hashes XOR. A node at level L is named by the first L hex digits of its
 * ids (its prefix): '' the root, 'a' a level-1 node, 'a3f0' a leaf.
 *
 * The hash is domain-separated so it is never the bare id (which a peer already has) and
 * equal sets give equal hashes whatever the order of arrival. XOR is not collision-resistant
 * against someone who chooses which ids exist (a few hundred chosen messages let Gaussian
 * elimination hit any target), so the digest proves agreement against accidents — lost
 * writes, bugs, damaged disks — not against a peer that lies; the peers are authenticated by
 * the mirror secret, and count and bytes must agree too.
 *
 * Wire. Hashes travel truncated to 16 bytes: the chance that two different sets give equal
 * 128-bit truncations by accident is 2^-128 per compared node, far below the disk's own
 * undetected error rate, and the truncation halves every node on the wire (a node is about
 * 21 bytes: varint count, varint bytes, 16-byte hash; an empty node is one byte). Truncation
 * commutes with XOR, so a node's truncated hash is the XOR of its children's truncated hashes
 * and the receiver checks each answer against what the peer said one level up.
 *
 * Comparison (compareDigests). Breadth-first from the root, one round trip per level: the
 * children of every differing node are asked for in one batched call; a differing node that
 * is small enough (or a leaf, or empty on one side) has its ids enumerated instead and the
 * two sorted lists are merged. Nodes that agree are never descended into. Measured with
 * scripts/bench/digest.ts on 1,000,000 ids: agreement takes 1 round trip and 386 bytes; one
 * id missing on one side is found in 5 round trips and 2,015 bytes, 10 in 5 and 14.6 KB,
 * 1,000 in 5 and 909 KB (most of it the ids of the 1,000 differing leaves).
 */

export {
  bucketOfId,
  bucketRange,
  checkIdsCallable,
  combineNodes,
  digestBucketCount,
  digestBucketPrefixBytes,
  digestDomain,
  digestFanout,
  digestHashBytes,
  digestIdsPerResponseMax,
  digestLeafLevel,
  digestLeafValueBytes,
  digestPrefixesPerRequestMax,
  digestWireHashBytes,
  idDigestHash,
  nodesAgree,
  parsePrefix,
  prefixOf,
  type DigestEntry,
  type DigestNode,
  type DigestView,
  type RemoteDigestView,
} from './digest-nodes.js'
export {
  addToLeaves,
  createDigestLeaves,
  createDigestTree,
  decodeLeafValue,
  encodeLeafValue,
  setLeafValue,
  updatedLeafValue,
  type DigestLevel,
  type DigestTree,
} from './digest-tree.js'
export { createMemoryDigest, type MemoryDigest } from './digest-memory.js'
export {
  answerChildren,
  answerIds,
  decodeChildren,
  decodeIds,
  decodePrefixes,
  encodeChildren,
  encodeIds,
  encodePrefixes,
  remoteOverBytes,
  type DigestExchange,
} from './digest-wire.js'
export { compareDigests, compareLimitsDefault, type CompareLimits, type DigestComparison } from './digest-compare.js'
