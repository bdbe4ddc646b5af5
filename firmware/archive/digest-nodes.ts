import assert from 'node:assert/strict'
import { hash } from 'node:crypto'
import { ArchiveError } from './errors.js'
import { idBytes } from './layout.js'

/**
 * What a node of the id digest is (id-digest.ts has the whole design): the digest's
 * constants, a node and an enumerated entry, the two views a comparison reads (local and
 * remote), how a prefix names a node and a bucket, the domain-separated hash of one id, and
 * how nodes combine and when they agree. Pure: no I/O. The tree (digest-tree.ts), the
 * in-memory digest (digest-memory.ts), the wire format (digest-wire.ts) and the comparison
 * (digest-compare.ts) build on it.
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

// ---- prefixes, buckets and hashes -----------------------------------------------------------

const prefixPattern = /^[0-9a-f]{0,4}$/
const domainBytes = Buffer.from(digestDomain, 'utf8')
/**
 * The domain followed by room for one id: hashed in one call. One-shot `hash` measured 1.8 µs
 * a call under Bun against 4.4 µs for createHash (a throwaway script, this machine under load).
 */
const hashInput = Buffer.concat([domainBytes, Buffer.alloc(idBytes)])

/** The error of a malformed prefix, request or answer, and of a peer that contradicts itself. */
export function digestInvalid(message: string, fields: Record<string, unknown> = {}): ArchiveError {
  return new ArchiveError('DIGEST_INVALID', message, { fields })
}

/**
 * Level and index of a node from its prefix: `'a3'` is node 0xa3 of level 2.
 * @throws ArchiveError DIGEST_INVALID unless 0–4 lower-case hex digits
 */
export function parsePrefix(prefixHex: string): { level: number; index: number } {
  if (typeof prefixHex !== 'string' || !prefixPattern.test(prefixHex)) {
    throw digestInvalid(`a digest prefix is 0 to 4 lower-case hex digits, got ${JSON.stringify(prefixHex).slice(0, 40)}`, { prefix: String(prefixHex).slice(0, 40) })
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

/** XORs `length` bytes of `source` into `target`, at the given offsets. */
export function xorInto(target: Uint8Array, targetOffset: number, source: Uint8Array, sourceOffset: number, length: number): void {
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
  return (
    a.count === b.count && a.bytes === b.bytes && a.hash.byteLength >= digestWireHashBytes && b.hash.byteLength >= digestWireHashBytes && hashesEqual(a.hash, b.hash, digestWireHashBytes)
  )
}

/**
 * Refuses an ids enumeration larger than one answer may carry.
 * @throws ArchiveError DIGEST_INVALID
 */
export function checkIdsCallable(prefixHex: string, count: number): void {
  if (count > digestIdsPerResponseMax) {
    throw digestInvalid(`${count} ids are under digest prefix '${prefixHex}', more than the ${digestIdsPerResponseMax} one call may list; ask for its children`, {
      prefix: prefixHex,
      count,
      idsMax: digestIdsPerResponseMax,
    })
  }
}
