/**
 * Posting blocks: one flush's chunks, token by token in UTF-8 byte order, packed into
 * values of about half a page (or whole overflow pages), so LMDB stores one key per block
 * instead of one per token. Most tokens of a flush are rare (numbers, hashes, names): their
 * chunk is ~5 bytes, and a key of their own cost ~25 bytes more (node header, slot, key).
 *
 * A block is its entries one after the other; an entry is `varint(shared)`,
 * `varint(suffix length)`, the suffix, `varint(chunk length)`, the chunk, where `shared` is
 * the bytes the token has in common with the entry before it (0 for the first, whose token
 * is also in the block's key).
 */

import assert from 'node:assert'
import { readVarint, varintBytes, writeVarint } from './posting-chunk.js'

/** The page header of lmdb-js's LMDB (it carries a txnid: 24 bytes, not 16), in bytes; overflow pages hold `pageSize − 24` bytes of value. */
const pageHeaderBytes = 24
/** LMDB's per-entry cost in a leaf page: node header (8) and slot (2), in bytes. */
const leafEntryBytes = 10

/**
 * Most value bytes LMDB keeps in a leaf page beside a key of `keyBytes` (its `me_nodemax`:
 * half the page body, so two such entries fill a page); larger values go to overflow pages.
 * Checked against lmdb-js: with a 12-byte key, 2,014 bytes stay inline and 2,016 do not.
 */
export function inlineValueBytesMax(pageSizeBytes: number, keyBytes: number): number {
  return Math.floor((pageSizeBytes - pageHeaderBytes) / 2) - leafEntryBytes - keyBytes
}

/** Receives each finished block: its first token (the key's part) and its bytes (both the receiver's to keep). */
export type BlockSink = (first: Buffer, block: Buffer) => void

export interface BlockWriter {
  /**
   * Adds the next entry (tokens in increasing UTF-8 byte order, distinct): `token[0, tokenBytes)`
   * and `chunk[0, chunkBytes)`, both copied (the caller may reuse its buffers).
   */
  add(token: Buffer, tokenBytes: number, chunk: Buffer, chunkBytes: number): void
  /** Emits the last block. */
  finish(): void
}

/**
 * Packs entries into blocks as they come, with no allocation per entry (a flush writes
 * ~60,000): a block is cut when the next entry would take it past LMDB's inline size; a
 * block that is already larger (an entry of a common word) takes further entries until
 * its last overflow page is full.
 *
 * @param keyBytesOf the key length of a block that starts with a token of that many bytes
 */
export function createBlockWriter(pageSizeBytes: number, keyBytesOf: (tokenBytes: number) => number, emit: BlockSink): BlockWriter {
  let block = Buffer.allocUnsafe(2 * pageSizeBytes)
  let size = 0
  let first: Buffer | undefined
  let inlineMax = 0
  const previous = Buffer.allocUnsafe(blockTokenBytesMax)
  let previousBytes = 0
  const cut = (): void => {
    if (first !== undefined) emit(first, Buffer.from(block.subarray(0, size)))
    size = 0
    first = undefined
  }
  return {
    add(token, tokenBytes, chunk, chunkBytes) {
      assert(tokenBytes <= blockTokenBytesMax, 'a token is at most 64 characters')
      let shared = 0
      if (first !== undefined) {
        const most = Math.min(previousBytes, tokenBytes, 255)
        while (shared < most && previous[shared] === token[shared]) shared++
      }
      let bytes = blockEntryBytes(shared, tokenBytes, chunkBytes)
      if (first !== undefined && size + bytes > inlineMax) {
        const capacity = Math.ceil((size + pageHeaderBytes) / pageSizeBytes) * pageSizeBytes - pageHeaderBytes
        if (size <= inlineMax || size + bytes > capacity) {
          cut()
          shared = 0
          bytes = blockEntryBytes(0, tokenBytes, chunkBytes)
        }
      }
      if (first === undefined) {
        first = Buffer.from(token.subarray(0, tokenBytes))
        inlineMax = inlineValueBytesMax(pageSizeBytes, keyBytesOf(tokenBytes))
      }
      const needed = size + bytes
      if (needed > block.length) {
        const grown = Buffer.allocUnsafe(Math.max(needed, 2 * block.length))
        block.copy(grown, 0, 0, size)
        block = grown
      }
      size = writeVarint(block, size, shared)
      size = writeVarint(block, size, tokenBytes - shared)
      size += token.copy(block, size, shared, tokenBytes)
      size = writeVarint(block, size, chunkBytes)
      size += chunk.copy(block, size, 0, chunkBytes)
      previousBytes = token.copy(previous, 0, 0, tokenBytes)
    },
    finish: cut,
  }
}

/** Bytes of a block entry whose token shares `shared` of its `tokenBytes` with the one before it. */
function blockEntryBytes(shared: number, tokenBytes: number, chunkBytes: number): number {
  return varintBytes(shared) + varintBytes(tokenBytes - shared) + tokenBytes - shared + varintBytes(chunkBytes) + chunkBytes
}

/** Token bytes of a block entry at most (tokens are cut at 64 characters: ≤ 256 bytes UTF-8). */
export const blockTokenBytesMax = 1024

/** The token being rebuilt by findInBlock (synchronous: one scratch serves every call). */
const findScratch = new Uint8Array(blockTokenBytesMax)

/**
 * The chunk of `token` (UTF-8) in a block, or null when the block does not have it.
 *
 * @returns false when the block is malformed (the caller reports the index corrupt)
 */
export function findInBlock(block: Uint8Array, token: Uint8Array): Uint8Array | null | false {
  const current = findScratch
  let length = 0
  const reader = { bytes: block, offset: 0 }
  while (reader.offset < block.length) {
    const shared = readVarint(reader)
    const suffix = readVarint(reader)
    if (shared < 0 || suffix < 0 || shared > length || shared + suffix > blockTokenBytesMax || reader.offset + suffix > block.length) return false
    current.set(block.subarray(reader.offset, reader.offset + suffix), shared)
    length = shared + suffix
    reader.offset += suffix
    const chunkBytes = readVarint(reader)
    if (chunkBytes < 0 || reader.offset + chunkBytes > block.length) return false
    const order = compareBytes(current, length, token)
    if (order === 0) return block.subarray(reader.offset, reader.offset + chunkBytes)
    if (order > 0) return null
    reader.offset += chunkBytes
  }
  return null
}

/** Byte order of `left[0, leftLength)` against `right`: negative, 0 or positive. */
function compareBytes(left: Uint8Array, leftLength: number, right: Uint8Array): number {
  const most = Math.min(leftLength, right.byteLength)
  for (let index = 0; index < most; index++) {
    const difference = left[index]! - right[index]!
    if (difference !== 0) return difference
  }
  return leftLength - right.byteLength
}
