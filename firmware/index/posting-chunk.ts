/**
 * The posting chunk codec.
 *
 * A chunk lists the documents (dense integer docids) that contain one token, each with a
 * field mask saying where the token occurs (fieldBits). Encoding, for compactness and fast
 * decoding in JavaScript: `varint(count)` then per entry `varint(docid − previous docid)`
 * and one mask byte (the first entry's delta is from 0). Chunks written by a flush are
 * sorted; a patch chunk (one document re-indexed after its flush) may repeat or precede
 * docids of earlier chunks, so whoever gathers docids from several chunks makes a set of
 * them with toDocidSet (docid-sets.ts), which sorts and merges when it sees them out of order.
 */

import assert from 'node:assert'

/** Encodes `[docid, mask, docid, mask, …]` (docids ascending) as one chunk. */
export function encodeChunk(entries: readonly number[]): Buffer {
  assert(entries.length % 2 === 0, 'entries come in docid, mask pairs')
  const count = entries.length / 2
  const docids = new Uint32Array(count)
  const masks = new Uint8Array(count)
  for (let index = 0; index < count; index++) {
    docids[index] = entries[2 * index]!
    masks[index] = entries[2 * index + 1]!
    assert(index === 0 || docids[index]! >= docids[index - 1]!, 'chunk entries must be ascending')
  }
  const buffer = Buffer.allocUnsafe(chunkBytesMax(count))
  return buffer.subarray(0, writeChunk(buffer, docids, masks, 0, count))
}

/** Bytes a chunk of `count` entries may need, at most. */
export function chunkBytesMax(count: number): number {
  return 5 + count * 6
}

/**
 * Writes the chunk of entries `from`..`to` − 1 (docids ascending) into `buffer` from offset
 * 0 (`chunkBytesMax` bytes are enough); returns its length. The one encoder of the format.
 */
export function writeChunk(buffer: Buffer, docids: ArrayLike<number>, masks: ArrayLike<number>, from: number, to: number): number {
  let offset = writeVarint(buffer, 0, to - from)
  let previous = 0
  for (let at = from; at < to; at++) {
    const docid = docids[at]!
    offset = writeVarint(buffer, offset, docid - previous)
    buffer[offset++] = masks[at]!
    previous = docid
  }
  return offset
}

/**
 * Appends the docids of `chunk` whose mask meets `wantedBits` to `out`.
 *
 * @returns false when the chunk is malformed (the caller reports the index corrupt)
 */
export function decodeChunkInto(chunk: Uint8Array, wantedBits: number, out: number[]): boolean {
  const reader = { bytes: chunk, offset: 0 }
  const count = readVarint(reader)
  if (count < 0) return false
  let docid = 0
  for (let index = 0; index < count; index++) {
    const delta = readVarint(reader)
    if (delta < 0 || reader.offset >= chunk.length) return false
    docid += delta
    const mask = chunk[reader.offset++]!
    if ((mask & wantedBits) !== 0) out.push(docid)
  }
  return true
}

/* Unsigned LEB128 varints, as posting chunks and posting blocks store counts and deltas. */

/** A position in bytes being read. */
export interface ByteReader {
  bytes: Uint8Array
  offset: number
}

/** Writes `value` (an unsigned 32-bit integer) at `offset`; returns the offset after it. */
export function writeVarint(buffer: Buffer, offset: number, value: number): number {
  let rest = value >>> 0
  while (rest >= 0x80) {
    buffer[offset++] = (rest & 0x7f) | 0x80
    rest >>>= 7
  }
  buffer[offset++] = rest
  return offset
}

/** Reads the varint at the reader's offset and moves past it; -1 when it is cut off or longer than 32 bits. */
export function readVarint(reader: ByteReader): number {
  const { bytes } = reader
  let value = 0
  let shift = 0
  for (;;) {
    if (reader.offset >= bytes.length || shift > 28) return -1
    const byte = bytes[reader.offset++]!
    value += (byte & 0x7f) * 2 ** shift
    if (byte < 0x80) return value
    shift += 7
  }
}

/** Bytes `writeVarint` takes for `value`. */
export function varintBytes(value: number): number {
  return value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x200000 ? 3 : value < 0x10000000 ? 4 : 5
}
