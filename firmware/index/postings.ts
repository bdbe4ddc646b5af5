import assert from 'node:assert'

/**
 * Posting chunks and sorted docid sets.
 *
 * A chunk lists the documents (dense integer docids) that contain one token, each with a
 * field mask saying where the token occurs. Encoding, for compactness and fast decoding
 * in JavaScript: `varint(count)` then per entry `varint(docid − previous docid)` and one
 * mask byte (the first entry's delta is from 0). Chunks written by a flush are sorted; a
 * patch chunk (one document re-indexed after its flush) may repeat or precede docids of
 * earlier chunks, so decoding sorts and merges when it sees docids out of order.
 *
 * Sets of docids are ascending `Uint32Array`s without duplicates.
 */

/** Field bits of a posting entry. */
export const fieldBits = {
  subject: 1,
  /** Body text and the text of attachments. */
  body: 2,
  from: 4,
  to: 8,
  /** Attachment file names. */
  attachment: 16,
  /** Markers such as has:attachment. */
  marker: 32,
} as const

/** Every text field: what a word without a field matches. */
export const anyTextBits = fieldBits.subject | fieldBits.body | fieldBits.from | fieldBits.to | fieldBits.attachment

/** Token of the has:attachment marker (cannot collide: tokens never contain control characters). */
export const hasAttachmentToken = '\u0002attachment'

/** Encodes `[docid, mask, docid, mask, …]` (docids ascending) as one chunk. */
export function encodeChunk(entries: readonly number[]): Buffer {
  assert(entries.length % 2 === 0, 'entries come in docid, mask pairs')
  const count = entries.length / 2
  const buffer = Buffer.allocUnsafe(5 + count * 6)
  let offset = writeVarint(buffer, 0, count)
  let previous = 0
  for (let index = 0; index < entries.length; index += 2) {
    const docid = entries[index]!
    const mask = entries[index + 1]!
    assert(docid >= previous, 'chunk entries must be ascending')
    offset = writeVarint(buffer, offset, docid - previous)
    buffer[offset++] = mask
    previous = docid
  }
  return buffer.subarray(0, offset)
}

function writeVarint(buffer: Buffer, offset: number, value: number): number {
  let rest = value >>> 0
  while (rest >= 0x80) {
    buffer[offset++] = (rest & 0x7f) | 0x80
    rest >>>= 7
  }
  buffer[offset++] = rest
  return offset
}

/**
 * Appends the docids of `chunk` whose mask meets `wantedBits` to `out`.
 *
 * @returns false when the chunk is malformed (the caller reports the index corrupt)
 */
export function decodeChunkInto(chunk: Uint8Array, wantedBits: number, out: number[]): boolean {
  let offset = 0
  const readVarint = (): number => {
    let value = 0
    let shift = 0
    for (;;) {
      if (offset >= chunk.length || shift > 28) return -1
      const byte = chunk[offset++]!
      value += (byte & 0x7f) * 2 ** shift
      if (byte < 0x80) return value
      shift += 7
    }
  }
  const count = readVarint()
  if (count < 0) return false
  let docid = 0
  for (let index = 0; index < count; index++) {
    const delta = readVarint()
    if (delta < 0 || offset >= chunk.length) return false
    docid += delta
    const mask = chunk[offset++]!
    if ((mask & wantedBits) !== 0) out.push(docid)
  }
  return true
}

/** Turns docids gathered from chunks into a set: sorts and removes duplicates only when needed. */
export function toDocidSet(docids: number[]): Uint32Array {
  let sorted = true
  for (let index = 1; index < docids.length; index++) {
    if (docids[index]! <= docids[index - 1]!) {
      sorted = false
      break
    }
  }
  const array = Uint32Array.from(docids)
  if (sorted) return array
  array.sort()
  let write = 0
  for (let read = 0; read < array.length; read++) {
    if (write === 0 || array[read] !== array[write - 1]) array[write++] = array[read]!
  }
  return array.subarray(0, write)
}

/** Docids in both sets. Gallops through the larger set when the sizes differ a lot. */
export function intersect(left: Uint32Array, right: Uint32Array): Uint32Array {
  const [small, large] = left.length <= right.length ? [left, right] : [right, left]
  const out = new Uint32Array(small.length)
  let count = 0
  let position = 0
  for (let index = 0; index < small.length && position < large.length; index++) {
    const value = small[index]!
    if (large[position]! < value) {
      // Exponential search, then binary search, for the first element ≥ value.
      let step = 1
      let high = position + 1
      while (high < large.length && large[high]! < value) {
        position = high
        step *= 2
        high = position + step
      }
      let low = position + 1
      high = Math.min(high, large.length)
      while (low < high) {
        const middle = (low + high) >>> 1
        if (large[middle]! < value) low = middle + 1
        else high = middle
      }
      position = low
    }
    if (position < large.length && large[position] === value) out[count++] = value
  }
  return out.subarray(0, count)
}

/** Docids in either set. */
export function union(left: Uint32Array, right: Uint32Array): Uint32Array {
  const out = new Uint32Array(left.length + right.length)
  let count = 0
  let i = 0
  let j = 0
  while (i < left.length && j < right.length) {
    const a = left[i]!
    const b = right[j]!
    if (a < b) {
      out[count++] = a
      i++
    } else if (b < a) {
      out[count++] = b
      j++
    } else {
      out[count++] = a
      i++
      j++
    }
  }
  while (i < left.length) out[count++] = left[i++]!
  while (j < right.length) out[count++] = right[j++]!
  return out.subarray(0, count)
}

/** Docids in `left` and not in `right`. */
export function difference(left: Uint32Array, right: Uint32Array): Uint32Array {
  if (right.length === 0) return left
  const out = new Uint32Array(left.length)
  let count = 0
  let j = 0
  for (let i = 0; i < left.length; i++) {
    const value = left[i]!
    while (j < right.length && right[j]! < value) j++
    if (j < right.length && right[j] === value) continue
    out[count++] = value
  }
  return out.subarray(0, count)
}
