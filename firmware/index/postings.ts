import assert from 'node:assert'
import { doubledIdTable, placeId, tokenHash } from './term-table.js'

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
function chunkBytesMax(count: number): number {
  return 5 + count * 6
}

/**
 * Writes the chunk of entries `from`..`to` − 1 (docids ascending) into `buffer` from offset
 * 0 (`chunkBytesMax` bytes are enough); returns its length. The one encoder of the format.
 */
function writeChunk(buffer: Buffer, docids: ArrayLike<number>, masks: ArrayLike<number>, from: number, to: number): number {
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

function writeVarint(buffer: Buffer, offset: number, value: number): number {
  let rest = value >>> 0
  while (rest >= 0x80) {
    buffer[offset++] = (rest & 0x7f) | 0x80
    rest >>>= 7
  }
  buffer[offset++] = rest
  return offset
}

/** What a flush or the search tail is fed: postings, a document at a time (docids ascending). */
export interface PostingSink {
  /** Adds a posting; the same token again for the same (latest) docid ORs its mask in. */
  add(token: string, docid: number, mask: number): void
  /**
   * Adds a document's packed terms (tokens joined by spaces, a mask per token, their
   * tokenHash if known) as `add` would each. Returns false, adding nothing, when the counts
   * of tokens and masks differ.
   */
  addPacked(tokens: string, masks: Uint8Array, docid: number, hashes?: Int32Array): boolean
}

/** The sizes a flush's postings start at (tokens, postings): a flush passes the last flush's. */
export interface PostingSizes {
  tokens: number
  postings: number
}

/**
 * Dense ids for the distinct tokens of a batch of documents: an open-addressing table over
 * tokenHash (FNV-1a of the UTF-16 units), not a Map. A Map must hash every token string it
 * is given, and the tokens come as fresh strings (split from a document's packed terms):
 * measured under Bun, 0.35–0.45 µs a lookup against ~0.1 for strings it had hashed before.
 * `idIn` hashes (or takes the worker's hash) and compares a token where it lies in the packed
 * string, against the known tokens' units kept one after another in one array (a string per
 * token was ~25% slower to compare against: each is a separate object, often a substring
 * of another document's packed terms), and makes a string only of a new token.
 */
interface TokenIds {
  /** The distinct tokens, by id. */
  readonly list: string[]
  /**
   * The id of text[start, end) (a new one when absent and `create`; else -1). `known` is its
   * tokenHash when the caller has it (a prepared document's): checked before a new id is
   * made on it, so a wrong one can never file a token twice.
   */
  idIn(text: string, start: number, end: number, create: boolean, known?: number): number
}

function createTokenIds(expectedTokens: number): TokenIds {
  const list: string[] = []
  let hashes = new Int32Array(expectedTokens)
  // Kept at most half full: the power of two at least twice the tokens.
  let table = new Int32Array(2 ** Math.ceil(Math.log2(2 * expectedTokens))) // id + 1; 0 = empty
  /** Every token's UTF-16 units, one after another; token `id` is units[starts[id], starts[id + 1]). */
  let units = new Uint16Array(8 * expectedTokens)
  let starts = new Int32Array(expectedTokens + 1)
  const idIn = (text: string, start: number, end: number, create: boolean, known?: number): number => {
    const hash = known ?? tokenHash(text, start, end)
    const tableMask = table.length - 1
    const length = end - start
    for (let probe = hash & tableMask; ; probe = (probe + 1) & tableMask) {
      const entry = table[probe]!
      if (entry === 0) break
      const id = entry - 1
      if (hashes[id] !== hash) continue
      const from = starts[id]!
      if (starts[id + 1]! - from !== length) continue
      let same = 0
      while (same < length && units[from + same] === text.charCodeAt(start + same)) same++
      if (same === length) return id
    }
    if (known !== undefined && known !== tokenHash(text, start, end)) return idIn(text, start, end, create)
    if (!create) return -1
    const id = list.length
    list.push(start === 0 && end === text.length ? text : text.slice(start, end))
    if (id >= hashes.length) {
      hashes = grown(hashes, id + 1)
      starts = grown(starts, hashes.length + 1)
    }
    const from = starts[id]!
    if (from + length > units.length) units = grown(units, from + length)
    for (let at = 0; at < length; at++) units[from + at] = text.charCodeAt(start + at)
    starts[id + 1] = from + length
    hashes[id] = hash
    // Kept at most half full: a doubled table, every id placed again.
    if (2 * (id + 1) > table.length) table = doubledIdTable(table, hashes, id + 1)
    else placeId(table, hash, id)
    return id
  }
  return { list, idIn }
}

/** `array` if it holds `size` elements, else a copy at least twice as long. */
function grown<T extends Int32Array | Uint32Array | Uint8Array | Uint16Array>(array: T, size: number): T {
  if (size <= array.length) return array
  const copy = new (array.constructor as new (length: number) => T)(Math.max(size, 2 * array.length))
  copy.set(array)
  return copy
}

/** The token ids of the document being added (one scratch array: adding is synchronous). */
let packedIds = new Int32Array(1024)

/**
 * Splits a document's packed terms into `packedIds` (each token's id, made if new); returns
 * their count, or -1 (making no id) when the counts of tokens and masks differ.
 */
function idsOfPacked(ids: TokenIds, tokens: string, tokenMasks: Uint8Array, tokenHashes: Int32Array | undefined): number {
  if (tokens.length === 0) return tokenMasks.length === 0 ? 0 : -1
  let count = 1
  for (let at = tokens.indexOf(' '); at >= 0; at = tokens.indexOf(' ', at + 1)) count++
  if (count !== tokenMasks.length) return -1
  if (count > packedIds.length) packedIds = new Int32Array(2 * count)
  const known = tokenHashes !== undefined && tokenHashes.length === count ? tokenHashes : undefined
  let start = 0
  for (let index = 0; index < count; index++) {
    let end = tokens.indexOf(' ', start)
    if (end < 0) end = tokens.length
    packedIds[index] = ids.idIn(tokens, start, end, true, known === undefined ? undefined : known[index])
    start = end + 1
  }
  return count
}

/**
 * A flush's postings: gathered as documents come, then put in token order and encoded one
 * chunk per token. Kept in flat typed arrays, each posting (token id, docid, mask) appended
 * as it comes; `arrange` then moves them into token order in one pass (a counting sort), so
 * that each chunk is encoded from consecutive memory. Timed on 4,096 synthetic corpus
 * documents (692,569 postings, 49,305 tokens) under Bun, both ways in the same runs
 * (session 9, a throwaway script): gathering 57–93 ms, arranging and encoding 29–36, where
 * per-token linked lists (still the search tail's, PostingGroups) took 130–193 ms to
 * gather and 63–86 to walk and encode. Inside the 20× pipeline, where the parse workers
 * compete for the caches, the gain is smaller: the flush's build on the event loop took
 * 0.113–0.119 CPU-ms a message against 0.130–0.138 (docs/index-layout.md, session 9).
 */
export interface FlushPostings extends PostingSink {
  /** The distinct tokens, in no particular order. */
  tokens(): string[]
  /** Distinct tokens and postings held. */
  sizes(): PostingSizes
  /**
   * Puts the postings in the order of `sorted` (every distinct token once), each token's in
   * docid order; yields every `step` tokens or postings, so that a background flush can let
   * the event loop run. After it, chunk `index` is `sorted[index]`'s.
   */
  arrange(sorted: readonly string[], step: number): Generator<void, void>
  /** Bytes chunk `index` may need, at most. */
  chunkBytesMax(index: number): number
  /** Encodes chunk `index` (as encodeChunk would) into `buffer` from offset 0; returns its length. */
  encodeInto(index: number, buffer: Buffer): number
}

export function createFlushPostings(expected: PostingSizes = { tokens: 1024, postings: 64 * 1024 }): FlushPostings {
  const tokensAtStart = Math.max(1024, expected.tokens)
  const ids = createTokenIds(tokensAtStart)
  const postingsAtStart = Math.max(64 * 1024, expected.postings)
  let counts = new Int32Array(tokensAtStart)
  /** Per token: the docid of its latest posting (-1: none yet), and that posting's index. */
  let lastDocids = new Int32Array(tokensAtStart).fill(-1)
  let lastPostings = new Int32Array(tokensAtStart)
  let tokenIds = new Int32Array(postingsAtStart)
  let docids = new Uint32Array(postingsAtStart)
  let masks = new Uint8Array(postingsAtStart)
  let postings = 0
  let latestDocid = -1
  /** After arrange: chunk index's postings are sortedDocids[chunkStarts[index], chunkStarts[index + 1]). */
  let chunkStarts: Int32Array | undefined
  let sortedDocids = new Uint32Array(0)
  let sortedMasks = new Uint8Array(0)
  const addId = (id: number, docid: number, mask: number): void => {
    if (id >= counts.length) {
      counts = grown(counts, id + 1)
      const before = lastDocids.length
      lastDocids = grown(lastDocids, id + 1)
      lastDocids.fill(-1, before)
      lastPostings = grown(lastPostings, id + 1)
    }
    if (lastDocids[id] === docid) {
      masks[lastPostings[id]!]! |= mask
      return
    }
    const posting = postings++
    if (posting >= docids.length) {
      tokenIds = grown(tokenIds, posting + 1)
      docids = grown(docids, posting + 1)
      masks = grown(masks, posting + 1)
    }
    tokenIds[posting] = id
    docids[posting] = docid
    masks[posting] = mask
    lastDocids[id] = docid
    lastPostings[id] = posting
    counts[id]!++
  }
  const startDocument = (docid: number): void => {
    assert(docid >= latestDocid && chunkStarts === undefined, 'postings come in docid order, before arrange')
    latestDocid = docid
  }
  return {
    add(token, docid, mask) {
      startDocument(docid)
      addId(ids.idIn(token, 0, token.length, true), docid, mask)
    },
    addPacked(tokens, tokenMasks, docid, tokenHashes) {
      startDocument(docid)
      const count = idsOfPacked(ids, tokens, tokenMasks, tokenHashes)
      for (let index = 0; index < count; index++) addId(packedIds[index]!, docid, tokenMasks[index]!)
      return count >= 0
    },
    tokens: () => ids.list.slice(),
    sizes: () => ({ tokens: ids.list.length, postings }),
    *arrange(sorted, step) {
      const tokenCount = ids.list.length
      assert(sorted.length === tokenCount, 'arrange takes every token once')
      const starts = new Int32Array(tokenCount + 1)
      /** Per token id: where its next posting goes. */
      const cursors = new Int32Array(tokenCount).fill(-1)
      for (let index = 0; index < tokenCount; index++) {
        const token = sorted[index]!
        const id = ids.idIn(token, 0, token.length, false)
        if (id < 0) throw new Error(`no postings for ${JSON.stringify(token)}`)
        assert(cursors[id] === -1, 'arrange takes every token once')
        cursors[id] = starts[index]!
        starts[index + 1] = starts[index]! + counts[id]!
        if (index % step === step - 1) yield
      }
      const outDocids = new Uint32Array(postings)
      const outMasks = new Uint8Array(postings)
      for (let posting = 0; posting < postings; posting++) {
        const at = cursors[tokenIds[posting]!]!++
        outDocids[at] = docids[posting]!
        outMasks[at] = masks[posting]!
        if (posting % step === step - 1) yield
      }
      sortedDocids = outDocids
      sortedMasks = outMasks
      chunkStarts = starts
    },
    chunkBytesMax(index) {
      assert(chunkStarts !== undefined, 'chunks are read after arrange')
      return chunkBytesMax(chunkStarts[index + 1]! - chunkStarts[index]!)
    },
    encodeInto(index, buffer) {
      assert(chunkStarts !== undefined, 'chunks are read after arrange')
      return writeChunk(buffer, sortedDocids, sortedMasks, chunkStarts[index]!, chunkStarts[index + 1]!)
    },
  }
}

/**
 * The search tail's postings, grouped by token as documents come (docids ascending): a
 * token's postings are a linked list of slots in flat typed arrays, so that `collect` walks
 * one token's and `dropThrough` drops a flushed start. Measured on 4,096 corpus messages
 * (619,291 postings, 45,978 tokens) under Bun, grouping took 55–96 ms this way and
 * 350–400 ms with an array per token.
 */
export interface PostingGroups extends PostingSink {
  /** The distinct tokens, in no particular order. */
  tokens(): string[]
  /** Appends to `out` the docids of `token` whose mask meets `bits`, ascending (none for an unknown token). */
  collect(token: string, bits: number, out: number[]): void
  /**
   * Drops every posting of a docid up to `docid` (each token's list is ascending, so they
   * are its first ones). Their slots stay used until the groups are made again: see `held`.
   */
  dropThrough(docid: number): void
  /** Postings held, and slots used (dropped postings included). */
  held(): { postings: number; slots: number }
}

export function createPostingGroups(): PostingGroups {
  const ids = createTokenIds(1024)
  let first = new Int32Array(1024)
  let last = new Int32Array(1024)
  let counts = new Int32Array(1024)
  let docids = new Uint32Array(64 * 1024)
  let masks = new Uint8Array(64 * 1024)
  let next = new Int32Array(64 * 1024)
  let slots = 0
  let live = 0
  const addId = (id: number, docid: number, mask: number): void => {
    if (id >= first.length) {
      first = grown(first, id + 1)
      last = grown(last, id + 1)
      counts = grown(counts, id + 1)
    }
    // A token with a count of 0 has no list (a new one, or one whose list dropThrough emptied).
    if (counts[id]! > 0 && docids[last[id]!] === docid) {
      masks[last[id]!]! |= mask
      return
    }
    const slot = slots++
    if (slot >= docids.length) {
      docids = grown(docids, slot + 1)
      masks = grown(masks, slot + 1)
      next = grown(next, slot + 1)
    }
    docids[slot] = docid
    masks[slot] = mask
    next[slot] = -1
    live++
    if (counts[id] === 0) first[id] = slot
    else next[last[id]!] = slot
    last[id] = slot
    counts[id]!++
  }
  return {
    add(token, docid, mask) {
      addId(ids.idIn(token, 0, token.length, true), docid, mask)
    },
    addPacked(tokens, tokenMasks, docid, tokenHashes) {
      const count = idsOfPacked(ids, tokens, tokenMasks, tokenHashes)
      for (let index = 0; index < count; index++) addId(packedIds[index]!, docid, tokenMasks[index]!)
      return count >= 0
    },
    tokens: () => ids.list.slice(),
    collect(token, bits, out) {
      const id = ids.idIn(token, 0, token.length, false)
      if (id < 0 || counts[id] === 0) return
      for (let slot = first[id]!; slot !== -1; slot = next[slot]!) if ((masks[slot]! & bits) !== 0) out.push(docids[slot]!)
    },
    dropThrough(docid) {
      // A token whose list empties keeps its id, with a count of 0: `add` then starts its list again.
      for (let id = 0; id < ids.list.length; id++) {
        if (counts[id] === 0) continue
        let slot = first[id]!
        while (slot !== -1 && docids[slot]! <= docid) {
          slot = next[slot]!
          counts[id]!--
          live--
        }
        first[id] = slot
      }
    },
    held: () => ({ postings: live, slots }),
  }
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

interface ByteReader {
  bytes: Uint8Array
  offset: number
}

/** Reads the varint at the reader's offset and moves past it; -1 when it is cut off or longer than 32 bits. */
function readVarint(reader: ByteReader): number {
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

function varintBytes(value: number): number {
  return value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x200000 ? 3 : value < 0x10000000 ? 4 : 5
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
