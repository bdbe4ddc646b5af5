import assert from 'node:assert'
import { chunkBytesMax, writeChunk } from './posting-chunk.js'
import type { PostingSink, PostingSizes } from './posting-sink.js'
import { createTokenIds, grown, idsOfPacked, packedIdsOf, type TokenIds } from './token-ids.js'

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

/** The gathered postings as they are at one moment (the arrays are replaced as they grow). */
interface GatheredArrays {
  /** Postings per token id. */
  counts: Int32Array
  /** Per posting, in the order added: its token id, docid and mask. */
  tokenIds: Int32Array
  docids: Uint32Array
  masks: Uint8Array
  /** Postings held (the arrays may be longer). */
  postings: number
}

/** Postings in token order: chunk `index`'s are docids[starts[index], starts[index + 1]) with their masks. */
interface ArrangedPostings {
  starts: Int32Array
  docids: Uint32Array
  masks: Uint8Array
}

/**
 * The gathering side: postings appended flat as they come, a token's repeat within the
 * latest document ORed into its posting. `addId` is the hot path (once per posting): it only
 * writes into the arrays, growing them (doubled) when full.
 */
function createPostingGatherer(tokensAtStart: number, postingsAtStart: number) {
  let counts = new Int32Array(tokensAtStart)
  /** Per token: the docid of its latest posting (-1: none yet), and that posting's index. */
  let lastDocids = new Int32Array(tokensAtStart).fill(-1)
  let lastPostings = new Int32Array(tokensAtStart)
  let tokenIds = new Int32Array(postingsAtStart)
  let docids = new Uint32Array(postingsAtStart)
  let masks = new Uint8Array(postingsAtStart)
  let postings = 0
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
  return {
    addId,
    postings: (): number => postings,
    /** The arrays now; read again after adding more. */
    arrays: (): GatheredArrays => ({ counts, tokenIds, docids, masks, postings }),
  }
}

/**
 * Moves `gathered` into the order of `sorted` (every distinct token of `ids` once) in one
 * pass, a counting sort: each token's postings stay in the order added (docid order).
 * Yields every `step` tokens or postings; returns the arranged postings.
 */
function* arrangeByToken(ids: TokenIds, gathered: GatheredArrays, sorted: readonly string[], step: number): Generator<void, ArrangedPostings> {
  const { counts, tokenIds, docids, masks, postings } = gathered
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
  return { starts, docids: outDocids, masks: outMasks }
}

/** An empty flush accumulator, sized for `expected` (the last flush's sizes) so it seldom grows. */
export function createFlushPostings(expected: PostingSizes = { tokens: 1024, postings: 64 * 1024 }): FlushPostings {
  const tokensAtStart = Math.max(1024, expected.tokens)
  const ids = createTokenIds(tokensAtStart)
  const gatherer = createPostingGatherer(tokensAtStart, Math.max(64 * 1024, expected.postings))
  const addId = gatherer.addId
  let latestDocid = -1
  /** Set once arrange has run: the chunks are read from it. */
  let arranged: ArrangedPostings | undefined
  const startDocument = (docid: number): void => {
    assert(docid >= latestDocid && arranged === undefined, 'postings come in docid order, before arrange')
    latestDocid = docid
  }
  const chunks = (): ArrangedPostings => {
    assert(arranged !== undefined, 'chunks are read after arrange')
    return arranged
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
    sizes: () => ({ tokens: ids.list.length, postings: gatherer.postings() }),
    *arrange(sorted, step) {
      arranged = yield* arrangeByToken(ids, gatherer.arrays(), sorted, step)
    },
    chunkBytesMax(index) {
      const { starts } = chunks()
      return chunkBytesMax(starts[index + 1]! - starts[index]!)
    },
    encodeInto(index, buffer) {
      const { starts, docids, masks } = chunks()
      return writeChunk(buffer, docids, masks, starts[index]!, starts[index + 1]!)
    },
  }
}
