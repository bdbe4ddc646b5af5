import assert from 'node:assert/strict'
import { hash } from 'node:crypto'
import { ArchiveError } from './errors.js'
import { idBytes, isArchiveId } from './layout.js'

/**
 * The id digest: a summary of a set of archive ids that two mirrored appliances compare to
 * prove they hold the same messages ("proof of agreement", issue 18), exchanging a few
 * kilobytes even at a million ids. Pure: no I/O. The store keeps the leaves (store-digest.ts,
 * `archive/digest`); this module has the prefix math, the tree, the wire format and the
 * comparison.
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

/** Domain prefix of every id's digest hash. */
export const digestDomain = 'mailkeep-digest-v1'
/** Leading bytes of an id that name its leaf bucket. */
export const digestBucketPrefixBytes = 2
/** Leaf buckets: one per value of the bucket prefix. */
export const digestBucketCount = 2 ** (8 * digestBucketPrefixBytes)
/** Children of an internal node (one hex digit). */
export const digestFanout = 16
/** Level of the leaves; the root is level 0. A node at level L is named by L hex digits. */
export const digestLeafLevel = 4
/** Bytes of a node's hash as kept and computed (SHA-256). */
export const digestHashBytes = 32
/** Bytes of a node's hash on the wire (see the module comment for why truncating is safe). */
export const digestWireHashBytes = 16
/** Bytes of one stored leaf value: count (u32 BE), bytes (u64 BE), hash (32). */
export const digestLeafValueBytes = 4 + 8 + digestHashBytes
/** Most prefixes in one children or ids request (a children answer is then at most ~350 KB). */
export const digestPrefixesPerRequestMax = 1024
/** Most ids in one ids answer, and in one idsInBucket call (~2.3 MB on the wire). */
export const digestIdsPerResponseMax = 65_536

/** One node of the tree: count of ids, sum of their raw sizes in bytes, XOR of their hashes. */
export interface DigestNode {
  count: number
  bytes: number
  /** 32 bytes locally, 16 when it came over the wire. */
  hash: Uint8Array
}

/** One archived id with its raw size, as enumerated under a prefix. */
export interface DigestEntry {
  id: string
  sizeBytes: number
}

/** A digest answered locally and synchronously (a store snapshot or an in-memory digest). */
export interface DigestView {
  /** The node named by `prefixHex` (0–4 lower-case hex digits). @throws ArchiveError DIGEST_INVALID for another prefix */
  node(prefixHex: string): DigestNode
  /** The 16 children of a node above the leaves, in digit order. @throws ArchiveError DIGEST_INVALID for a leaf or a malformed prefix */
  children(prefixHex: string): DigestNode[]
  /**
   * Ids under the prefix (0–4 hex digits), in id order, with their raw sizes.
   * @throws ArchiveError DIGEST_INVALID when more than digestIdsPerResponseMax ids are under it
   */
  idsInBucket(prefixHex: string): DigestEntry[]
}

/**
 * The peer's digest as a transport offers it: each call is one round trip and answers every
 * prefix it was given, in order. remoteOverBytes() makes one from two request/answer calls.
 */
export interface RemoteDigestView {
  /** 16 children for each prefix (levels 0–3). */
  children(prefixes: readonly string[]): Promise<DigestNode[][]>
  /** The ids under each prefix (levels 0–4), in id order. */
  ids(prefixes: readonly string[]): Promise<DigestEntry[][]>
}

/** Bounds on one comparison; defaults in compareLimitsDefault. */
export interface CompareLimits {
  /** Most ids enumerated, both sides together; past it the result is truncated. */
  idsMax: number
  /** Most differing nodes visited over all levels; past it the result is truncated. */
  differingNodesMax: number
  /** A differing node with at most this many ids on each side has its ids enumerated instead of its children fetched. */
  enumerateCountMax: number
  /** Most prefixes per remote call (≤ digestPrefixesPerRequestMax). */
  prefixesPerRequestMax: number
  /** Most peer ids asked for per ids call (≤ digestIdsPerResponseMax). */
  idsPerRequestMax: number
}

/**
 * Defaults: enumerating ids costs ~35 bytes a peer id against ~350 bytes and a round trip for
 * a node's children, so a node with up to 16 peer ids is enumerated. 65,536 ids (~2.3 MB)
 * covers about 2,000 differences at a million ids; past that the sides differ too much for
 * a proof to be worth the traffic, and the mirror's copy queue is what repairs them.
 */
export const compareLimitsDefault: CompareLimits = {
  idsMax: 65_536,
  differingNodesMax: 16_384,
  enumerateCountMax: 16,
  prefixesPerRequestMax: digestPrefixesPerRequestMax,
  idsPerRequestMax: digestIdsPerResponseMax,
}

/** Outcome of compareDigests. */
export interface DigestComparison {
  /** True when the roots agree: same count, bytes and (wire) hash. */
  agree: boolean
  /** Ids held here and not by the peer, in id order (incomplete when truncated). */
  onlyLocal: string[]
  /** Ids held by the peer and not here, in id order (incomplete when truncated). */
  onlyRemote: string[]
  /** True when the limits stopped the descent: the sides differ in more than the lists say. */
  truncated: boolean
  /** Remote calls made. */
  roundTrips: number
  /** Bytes of the requests and answers in the wire format of this module (framing excluded). */
  bytesExchanged: number
  localRoot: DigestNode
  remoteRoot: DigestNode
  localCount: number
  remoteCount: number
  localBytes: number
  remoteBytes: number
}

// ---- prefixes and buckets -----------------------------------------------------------------

const prefixPattern = /^[0-9a-f]{0,4}$/
const domainBytes = Buffer.from(digestDomain, 'utf8')
/**
 * The domain followed by room for one id: hashed in one call. One-shot `hash` measured 1.8 µs
 * a call under Bun against 4.4 µs for createHash (a throwaway script, this machine under load).
 */
const hashInput = Buffer.concat([domainBytes, Buffer.alloc(idBytes)])

function invalid(message: string, fields: Record<string, unknown> = {}): ArchiveError {
  return new ArchiveError('DIGEST_INVALID', message, { fields })
}

/**
 * Level and index of a node from its prefix: `'a3'` is node 0xa3 of level 2.
 * @throws ArchiveError DIGEST_INVALID unless 0–4 lower-case hex digits
 */
export function parsePrefix(prefixHex: string): { level: number; index: number } {
  if (typeof prefixHex !== 'string' || !prefixPattern.test(prefixHex)) {
    throw invalid(`a digest prefix is 0 to 4 lower-case hex digits, got ${JSON.stringify(prefixHex).slice(0, 40)}`, { prefix: String(prefixHex).slice(0, 40) })
  }
  return { level: prefixHex.length, index: prefixHex.length === 0 ? 0 : Number.parseInt(prefixHex, 16) }
}

/** The prefix of node `index` of `level`. */
export function prefixOf(level: number, index: number): string {
  return level === 0 ? '' : index.toString(16).padStart(level, '0')
}

/** The leaf bucket of a binary id: its first two bytes, big-endian. */
export function bucketOfId(id: Uint8Array): number {
  return (id[0]! << 8) | id[1]!
}

/** The leaves under a prefix: buckets `start` to `end` − 1. */
export function bucketRange(prefixHex: string): { start: number; end: number } {
  const { level, index } = parsePrefix(prefixHex)
  const width = digestFanout ** (digestLeafLevel - level)
  return { start: index * width, end: (index + 1) * width }
}

/** SHA-256 of the domain and the binary id: what a leaf XORs in for each id. */
export function idDigestHash(id: Uint8Array): Buffer {
  assert.ok(id.byteLength === idBytes, 'a binary archive id is 32 bytes')
  hashInput.set(id, domainBytes.byteLength)
  return hash('sha256', hashInput, 'buffer')
}

function xorInto(target: Uint8Array, targetOffset: number, source: Uint8Array, sourceOffset: number, length: number): void {
  for (let index = 0; index < length; index++) target[targetOffset + index]! ^= source[sourceOffset + index]!
}

function hashesEqual(a: Uint8Array, b: Uint8Array, length: number): boolean {
  for (let index = 0; index < length; index++) if (a[index] !== b[index]) return false
  return true
}

/** Combines nodes as their parent does: counts and bytes add up, hashes XOR (as long as the shortest). */
export function combineNodes(nodes: readonly DigestNode[]): DigestNode {
  const length = Math.min(digestHashBytes, ...nodes.map((node) => node.hash.byteLength))
  const hash = new Uint8Array(length)
  let count = 0
  let bytes = 0
  for (const node of nodes) {
    count += node.count
    bytes += node.bytes
    xorInto(hash, 0, node.hash, 0, length)
  }
  return { count, bytes, hash }
}

/** True when two nodes agree: same count and bytes, same hash over the wire's 16 bytes. */
export function nodesAgree(a: DigestNode, b: DigestNode): boolean {
  return a.count === b.count && a.bytes === b.bytes && a.hash.byteLength >= digestWireHashBytes && b.hash.byteLength >= digestWireHashBytes && hashesEqual(a.hash, b.hash, digestWireHashBytes)
}

// ---- leaves and tree ------------------------------------------------------------------------

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
      if (level >= digestLeafLevel) throw invalid(`digest node ${prefixHex} is a leaf and has no children`, { prefix: prefixHex })
      return Array.from({ length: digestFanout }, (_, child) => nodeAt(level + 1, index * digestFanout + child))
    },
  }
}

/**
 * Refuses an ids enumeration larger than one answer may carry.
 * @throws ArchiveError DIGEST_INVALID
 */
export function checkIdsCallable(prefixHex: string, count: number): void {
  if (count > digestIdsPerResponseMax) {
    throw invalid(`${count} ids are under digest prefix '${prefixHex}', more than the ${digestIdsPerResponseMax} one call may list; ask for its children`, { prefix: prefixHex, count, idsMax: digestIdsPerResponseMax })
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
    throw new ArchiveError('STORE_CORRUPT', `digest leaf ${prefixOf(digestLeafLevel, bucket)} disagrees with the archive (count ${count}, bytes ${bytes})`, { fields: { bucket, count, bytes } })
  }
  if (count === 0) return null
  value.writeUInt32BE(count, 0)
  value.writeUInt32BE(Math.floor(bytes / 2 ** 32), 4)
  value.writeUInt32BE(bytes % 2 ** 32, 8)
  return value
}

// ---- in-memory digest -----------------------------------------------------------------------

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

// ---- wire format ----------------------------------------------------------------------------
//
// request (children or ids):  varint n, then n prefixes; a prefix is u8 level (0–4) and
//                             ceil(level / 2) bytes of hex digits, high nibble first, the
//                             last nibble of an odd level zero
// children answer:            per prefix 16 nodes; a node is varint count, and when count > 0
//                             varint bytes and the 16-byte hash
// ids answer:                 per prefix varint n, then n × (32-byte id, varint size)
// Varints are unsigned LEB128, minimal, at most 2^53 − 1. Every decoder is strict: trailing
// bytes, a short message, a non-minimal varint, an id outside its prefix or out of order
// are refused with DIGEST_INVALID.

class ByteWriter {
  private buffer = new Uint8Array(256)
  private length = 0

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.byteLength) return
    const grown = new Uint8Array(Math.max(this.buffer.byteLength * 2, this.length + bytes))
    grown.set(this.buffer.subarray(0, this.length))
    this.buffer = grown
  }

  byte(value: number): void {
    this.reserve(1)
    this.buffer[this.length++] = value
  }

  varint(value: number): void {
    assert.ok(Number.isSafeInteger(value) && value >= 0, `a varint is a non-negative safe integer, got ${value}`)
    let rest = value
    while (rest >= 0x80) {
      this.byte((rest % 0x80) | 0x80)
      rest = Math.floor(rest / 0x80)
    }
    this.byte(rest)
  }

  bytes(bytes: Uint8Array): void {
    this.reserve(bytes.byteLength)
    this.buffer.set(bytes, this.length)
    this.length += bytes.byteLength
  }

  done(): Uint8Array {
    return this.buffer.slice(0, this.length)
  }
}

/** Longest minimal varint of a safe integer, in bytes. */
const varintBytesMax = 8

class ByteReader {
  private offset = 0
  constructor(
    private readonly input: Uint8Array,
    private readonly what: string,
  ) {}

  fail(reason: string): never {
    throw invalid(`malformed digest ${this.what}: ${reason}`, { what: this.what, reason, offset: this.offset })
  }

  byte(): number {
    if (this.offset >= this.input.byteLength) this.fail('it ends early')
    return this.input[this.offset++]!
  }

  varint(): number {
    let value = 0
    let scale = 1
    for (let index = 0; index < varintBytesMax; index++) {
      const byte = this.byte()
      value += (byte & 0x7f) * scale
      if (byte < 0x80) {
        if (index > 0 && byte === 0) this.fail('a varint is not minimal')
        if (!Number.isSafeInteger(value)) this.fail('a varint is too large')
        return value
      }
      scale *= 0x80
    }
    return this.fail('a varint is too long')
  }

  bytes(length: number): Uint8Array {
    if (this.offset + length > this.input.byteLength) this.fail('it ends early')
    const bytes = this.input.slice(this.offset, this.offset + length)
    this.offset += length
    return bytes
  }

  end(): void {
    if (this.offset !== this.input.byteLength) this.fail(`${this.input.byteLength - this.offset} bytes after the end`)
  }
}

function writePrefix(writer: ByteWriter, prefixHex: string): void {
  const { level, index } = parsePrefix(prefixHex)
  writer.byte(level)
  const digits = level % 2 === 0 ? index : index * digestFanout
  for (let byte = Math.ceil(level / 2) - 1; byte >= 0; byte--) writer.byte(Math.floor(digits / 256 ** byte) % 256)
}

function readPrefix(reader: ByteReader): string {
  const level = reader.byte()
  if (level > digestLeafLevel) reader.fail(`a prefix of level ${level}`)
  let digits = 0
  for (let byte = 0; byte < Math.ceil(level / 2); byte++) digits = digits * 256 + reader.byte()
  if (level % 2 === 1 && digits % digestFanout !== 0) reader.fail('an odd prefix has a non-zero last digit')
  return prefixOf(level, level % 2 === 1 ? digits / digestFanout : digits)
}

/**
 * A children or ids request: the prefixes asked about.
 * @throws AssertionError over digestPrefixesPerRequestMax; ArchiveError DIGEST_INVALID on a malformed prefix
 */
export function encodePrefixes(prefixes: readonly string[]): Uint8Array {
  assert.ok(prefixes.length <= digestPrefixesPerRequestMax, `at most ${digestPrefixesPerRequestMax} prefixes a request`)
  const writer = new ByteWriter()
  writer.varint(prefixes.length)
  for (const prefix of prefixes) writePrefix(writer, prefix)
  return writer.done()
}

/** @throws ArchiveError DIGEST_INVALID */
export function decodePrefixes(bytes: Uint8Array): string[] {
  const reader = new ByteReader(bytes, 'request')
  const count = reader.varint()
  if (count > digestPrefixesPerRequestMax) reader.fail(`${count} prefixes, more than ${digestPrefixesPerRequestMax}`)
  const prefixes = Array.from({ length: count }, () => readPrefix(reader))
  reader.end()
  return prefixes
}

/** A children answer: 16 nodes per prefix asked about, hashes truncated to 16 bytes. */
export function encodeChildren(groups: readonly DigestNode[][]): Uint8Array {
  const writer = new ByteWriter()
  for (const group of groups) {
    assert.ok(group.length === digestFanout, 'a node has 16 children')
    for (const node of group) {
      writer.varint(node.count)
      if (node.count === 0) {
        assert.ok(node.bytes === 0, 'an empty node has no bytes')
        continue
      }
      writer.varint(node.bytes)
      assert.ok(node.hash.byteLength >= digestWireHashBytes)
      writer.bytes(node.hash.subarray(0, digestWireHashBytes))
    }
  }
  return writer.done()
}

/** @throws ArchiveError DIGEST_INVALID */
export function decodeChildren(bytes: Uint8Array, prefixCount: number): DigestNode[][] {
  const reader = new ByteReader(bytes, 'children answer')
  const groups = Array.from({ length: prefixCount }, () =>
    Array.from({ length: digestFanout }, (): DigestNode => {
      const count = reader.varint()
      if (count === 0) return { count, bytes: 0, hash: new Uint8Array(digestWireHashBytes) }
      return { count, bytes: reader.varint(), hash: reader.bytes(digestWireHashBytes) }
    }),
  )
  reader.end()
  return groups
}

/** An ids answer: the entries under each prefix asked about, in id order. */
export function encodeIds(groups: readonly DigestEntry[][]): Uint8Array {
  const writer = new ByteWriter()
  for (const entries of groups) {
    writer.varint(entries.length)
    for (const entry of entries) {
      writer.bytes(Buffer.from(entry.id, 'hex'))
      writer.varint(entry.sizeBytes)
    }
  }
  return writer.done()
}

/** @throws ArchiveError DIGEST_INVALID (also for an id outside its prefix, out of order, or too many ids) */
export function decodeIds(bytes: Uint8Array, prefixes: readonly string[]): DigestEntry[][] {
  const reader = new ByteReader(bytes, 'ids answer')
  let total = 0
  const groups = prefixes.map((prefix) => {
    const count = reader.varint()
    total += count
    if (total > digestIdsPerResponseMax) reader.fail(`more than ${digestIdsPerResponseMax} ids`)
    const entries: DigestEntry[] = []
    for (let index = 0; index < count; index++) entries.push({ id: Buffer.from(reader.bytes(idBytes)).toString('hex'), sizeBytes: reader.varint() })
    const problem = entriesProblem(prefix, entries)
    if (problem) reader.fail(problem)
    return entries
  })
  reader.end()
  return groups
}

/** Why a list of entries cannot be the ids under `prefix` in id order; null when it can. */
function entriesProblem(prefix: string, entries: readonly DigestEntry[]): string | null {
  for (let index = 0; index < entries.length; index++) {
    const { id, sizeBytes } = entries[index]!
    if (!isArchiveId(id) || !id.startsWith(prefix)) return `id ${id.slice(0, 70)} is not under prefix '${prefix}'`
    if (index > 0 && entries[index - 1]!.id >= id) return `ids under prefix '${prefix}' are not in strictly ascending order`
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) return `id ${id} has size ${sizeBytes}`
  }
  return null
}

/**
 * Answers a children request (encodePrefixes' bytes) from a local view: the peer's half of
 * a comparison, for the transport to call.
 * @throws ArchiveError DIGEST_INVALID on a malformed request or a leaf prefix; DIGEST_SNAPSHOT_CLOSED from a closed snapshot
 */
export function answerChildren(view: DigestView, request: Uint8Array): Uint8Array {
  return encodeChildren(decodePrefixes(request).map((prefix) => view.children(prefix)))
}

/**
 * Answers an ids request from a local view, refusing one that would list more than
 * digestIdsPerResponseMax ids.
 * @throws ArchiveError DIGEST_INVALID; DIGEST_SNAPSHOT_CLOSED from a closed snapshot
 */
export function answerIds(view: DigestView, request: Uint8Array): Uint8Array {
  const prefixes = decodePrefixes(request)
  checkIdsCallable(prefixes.join(','), prefixes.reduce((sum, prefix) => sum + view.node(prefix).count, 0))
  return encodeIds(prefixes.map((prefix) => view.idsInBucket(prefix)))
}

/** The two calls a transport carries: a request's bytes out, the answer's bytes back. */
export interface DigestExchange {
  children(request: Uint8Array): Promise<Uint8Array>
  ids(request: Uint8Array): Promise<Uint8Array>
}

/** A RemoteDigestView over a transport, decoding answers strictly. */
export function remoteOverBytes(exchange: DigestExchange): RemoteDigestView {
  return {
    async children(prefixes) {
      return decodeChildren(await exchange.children(encodePrefixes(prefixes)), prefixes.length)
    },
    async ids(prefixes) {
      return decodeIds(await exchange.ids(encodePrefixes(prefixes)), prefixes)
    },
  }
}

// ---- comparison -----------------------------------------------------------------------------

/** A node that differs between the two sides. */
interface Differing {
  prefix: string
  local: DigestNode
  remote: DigestNode
}

/** Splits `items` into batches of at most `itemsMax` items and `weightMax` total weight. */
function batches<T>(items: readonly T[], itemsMax: number, weightMax: number, weight: (item: T) => number): T[][] {
  const result: T[][] = []
  let current: T[] = []
  let currentWeight = 0
  for (const item of items) {
    if (current.length > 0 && (current.length >= itemsMax || currentWeight + weight(item) > weightMax)) {
      result.push(current)
      current = []
      currentWeight = 0
    }
    current.push(item)
    currentWeight += weight(item)
  }
  if (current.length > 0) result.push(current)
  return result
}

function differingChildren(prefix: string, local: readonly DigestNode[], remote: readonly DigestNode[]): Differing[] {
  const found: Differing[] = []
  for (let child = 0; child < digestFanout; child++) {
    if (!nodesAgree(local[child]!, remote[child]!)) found.push({ prefix: prefix + child.toString(16), local: local[child]!, remote: remote[child]! })
  }
  return found
}

/** Checks the peer's entries under a node against what it said of the node: count, bytes, hash. */
function checkRemoteEntries(node: Differing, entries: readonly DigestEntry[]): void {
  const problem = entriesProblem(node.prefix, entries)
  const hash = new Uint8Array(digestWireHashBytes)
  let bytes = 0
  if (!problem) {
    for (const entry of entries) {
      bytes += entry.sizeBytes
      xorInto(hash, 0, idDigestHash(Buffer.from(entry.id, 'hex')), 0, digestWireHashBytes)
    }
  }
  if (problem || !nodesAgree({ count: entries.length, bytes, hash }, node.remote)) {
    throw invalid(`the peer's ids under digest prefix '${node.prefix}' contradict its digest${problem ? `: ${problem}` : ''}`, { prefix: node.prefix, count: entries.length, expectedCount: node.remote.count })
  }
}

/** Adds to the two lists the ids only one of two sorted entry lists holds. */
function mergeDifferences(local: readonly DigestEntry[], remote: readonly DigestEntry[], onlyLocal: string[], onlyRemote: string[]): void {
  let localIndex = 0
  let remoteIndex = 0
  while (localIndex < local.length || remoteIndex < remote.length) {
    const localId = local[localIndex]?.id
    const remoteId = remote[remoteIndex]?.id
    if (remoteId === undefined || (localId !== undefined && localId < remoteId)) {
      onlyLocal.push(localId!)
      localIndex++
    } else if (localId === undefined || remoteId < localId) {
      onlyRemote.push(remoteId)
      remoteIndex++
    } else {
      localIndex++
      remoteIndex++
    }
  }
}

/**
 * Finds the ids only one side holds by descending both trees from the root, one batched
 * round trip per level, into differing nodes only. Bounded by `limits` (compareLimitsDefault
 * for what is not given): past them it stops and says `truncated`, with the differences found
 * so far. Every answer of the peer is checked against what it said one level up.
 *
 * @throws ArchiveError DIGEST_INVALID when the peer's answers are malformed or contradict
 *   each other; whatever the transport or the local view throws (e.g. DIGEST_SNAPSHOT_CLOSED)
 */
export async function compareDigests(local: DigestView, remote: RemoteDigestView, limits: Partial<CompareLimits> = {}): Promise<DigestComparison> {
  const bounds: CompareLimits = { ...compareLimitsDefault, ...limits }
  assert.ok(bounds.prefixesPerRequestMax >= 1 && bounds.prefixesPerRequestMax <= digestPrefixesPerRequestMax, 'prefixesPerRequestMax out of range')
  assert.ok(bounds.idsPerRequestMax >= 1 && bounds.idsPerRequestMax <= digestIdsPerResponseMax, 'idsPerRequestMax out of range')
  let roundTrips = 0
  let bytesExchanged = 0
  let truncated = false
  let idsSpent = 0
  let differingVisited = 0
  const onlyLocal: string[] = []
  const onlyRemote: string[] = []

  const fetchChildren = async (prefixes: string[]): Promise<DigestNode[][]> => {
    const answers = await Promise.all(
      batches(prefixes, bounds.prefixesPerRequestMax, Number.POSITIVE_INFINITY, () => 1).map(async (batch) => {
        roundTrips++
        const groups = await remote.children(batch)
        if (groups.length !== batch.length || groups.some((group) => group.length !== digestFanout || group.some((node) => node.hash.byteLength < digestWireHashBytes))) {
          throw invalid('the peer answered a children request with the wrong shape', { prefixes: batch.length, answered: groups.length })
        }
        bytesExchanged += encodePrefixes(batch).byteLength + encodeChildren(groups).byteLength
        return groups
      }),
    )
    return answers.flat()
  }
  const fetchIds = async (nodes: Differing[]): Promise<DigestEntry[][]> => {
    const answers = await Promise.all(
      batches(nodes, bounds.prefixesPerRequestMax, bounds.idsPerRequestMax, (node) => node.remote.count).map(async (batch) => {
        roundTrips++
        const prefixes = batch.map((node) => node.prefix)
        const groups = await remote.ids(prefixes)
        if (groups.length !== batch.length) throw invalid('the peer answered an ids request with the wrong shape', { prefixes: batch.length, answered: groups.length })
        bytesExchanged += encodePrefixes(prefixes).byteLength + encodeIds(groups).byteLength
        return groups
      }),
    )
    return answers.flat()
  }
  /** Reserves enumeration work; false (and truncated) when it would pass idsMax. */
  const spend = (ids: number): boolean => {
    if (idsSpent + ids > bounds.idsMax) {
      truncated = true
      return false
    }
    idsSpent += ids
    return true
  }

  const rootChildren = (await fetchChildren(['']))[0]!
  const remoteRoot = combineNodes(rootChildren)
  const localRoot = local.node('')
  const agree = nodesAgree(localRoot, remoteRoot)
  let frontier = agree ? [] : differingChildren('', local.children(''), rootChildren)
  while (frontier.length > 0) {
    const descend: Differing[] = []
    const enumerate: Differing[] = []
    for (const node of frontier) {
      if (++differingVisited > bounds.differingNodesMax) {
        truncated = true
        break
      }
      const leaf = node.prefix.length === digestLeafLevel
      const small = node.local.count <= bounds.enumerateCountMax && node.remote.count <= bounds.enumerateCountMax
      const listable = node.local.count <= digestIdsPerResponseMax && node.remote.count <= bounds.idsPerRequestMax
      if (node.remote.count === 0) {
        // Everything here is ours alone: no round trip needed.
        if (node.local.count > digestIdsPerResponseMax) truncated = true
        else if (spend(node.local.count)) onlyLocal.push(...local.idsInBucket(node.prefix).map((entry) => entry.id))
      } else if ((leaf || small || node.local.count === 0) && listable) {
        if (spend(node.local.count + node.remote.count)) enumerate.push(node)
      } else if (leaf) {
        truncated = true
      } else {
        descend.push(node)
      }
    }
    const [childGroups, idGroups] = await Promise.all([fetchChildren(descend.map((node) => node.prefix)), fetchIds(enumerate)])
    enumerate.forEach((node, index) => {
      const entries = idGroups[index]!
      checkRemoteEntries(node, entries)
      mergeDifferences(node.local.count === 0 ? [] : local.idsInBucket(node.prefix), entries, onlyLocal, onlyRemote)
    })
    frontier = descend.flatMap((node, index) => {
      const children = childGroups[index]!
      if (!nodesAgree(combineNodes(children), node.remote)) {
        throw invalid(`the peer's children of digest node '${node.prefix}' do not add up to the node`, { prefix: node.prefix })
      }
      return differingChildren(node.prefix, local.children(node.prefix), children)
    })
  }
  onlyLocal.sort()
  onlyRemote.sort()
  return {
    agree,
    onlyLocal,
    onlyRemote,
    truncated,
    roundTrips,
    bytesExchanged,
    localRoot,
    remoteRoot,
    localCount: localRoot.count,
    remoteCount: remoteRoot.count,
    localBytes: localRoot.bytes,
    remoteBytes: remoteRoot.bytes,
  }
}
