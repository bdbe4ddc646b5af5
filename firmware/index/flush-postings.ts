import assert from 'node:assert'
import { chunkBytesMax, writeChunk } from './posting-chunk.js'
import type { PostingSink, PostingSizes } from './posting-sink.js'
import { createTokenIds, grown, idsOfPacked, packedIdsOf } from './token-ids.js'

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

/** An empty flush accumulator, sized for `expected` (the last flush's sizes) so it seldom grows. */
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
      const packedIds = packedIdsOf()
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
