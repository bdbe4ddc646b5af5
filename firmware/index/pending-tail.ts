/**
 * The pending tail: the newest documents, whose postings are not yet flushed into chunks.
 * Searches answer for them from posting groups built in memory from their terms; a flush
 * (tail-flush.ts) reads the same terms. This module holds both: the terms of tail documents
 * this process indexed (a hint, below) and the search's posting groups of the tail.
 */

import { docidOf, type Databases, type IndexState } from './index-databases.js'
import { getForward } from './record-io.js'
import { postingsOf } from './forward-record.js'
import type { PackedTerms } from './packed-terms.js'
import type { PostingSink } from './posting-sink.js'
import { createPostingGroups, type PostingGroups } from './posting-groups.js'

/** The tail's postings as loaded for searches, and what of the state they were loaded for. */
interface TailCache {
  chunks: number
  generation: number
  loadedThrough: number
  /** The postings of the tail documents loaded, by token (flat typed arrays: see PostingGroups). */
  postings: PostingGroups
}

/** The pending tail of one index: see createPendingTail. */
export interface PendingTail {
  /** Keeps the terms of a document just indexed (not yet committed: see addTerms). */
  remember(docid: number, id: string, terms: PackedTerms): void
  /** Drops the terms kept for a document (re-indexed, removed or flushed). */
  forget(docid: number): void
  /**
   * Adds the terms of tail document `docid` to `sink`: those kept by `remember` when the
   * committed id mapping confirms them, else decoded from its forward record.
   *
   * @returns the terms added (0 for a document that is not there)
   */
  addTerms(db: Databases, docid: number, sink: PostingSink): number
  /** The postings of every tail document of `state`, loading those not loaded yet. */
  postingsFor(db: Databases, state: IndexState): PostingGroups
  /** Forgets everything (databases opened, rebuild). */
  reset(): void
}

/**
 * Creates an empty pending tail. Pure: it reads the databases it is handed, when asked.
 */
export function createPendingTail(): PendingTail {
  let tail: TailCache | undefined
  /**
   * The postings of tail documents as indexed by this process, so a flush need not decode
   * and re-tokenize their forward records. Only a hint: an entry counts at flush time only
   * when the committed id mapping still gives its docid to its id (a rolled-back ingest
   * leaves a stale entry, which this check rejects), and re-indexed or removed documents
   * drop their entry. Anything not covered here is read from the forward record.
   */
  let tailPostings = new Map<number, { id: string; terms: PackedTerms }>()

  /*
   * A token listed twice for one document (prepared terms, then address terms) gets one
   * posting, its bits OR-ed (the sink does that).
   */
  function addTerms(db: Databases, docid: number, sink: PostingSink): number {
    const known = tailPostings.get(docid)
    if (known !== undefined && docidOf(db, known.id) === docid && sink.addPacked(known.terms.tokens, known.terms.masks, docid, known.terms.hashes)) return known.terms.masks.length
    const forward = getForward(db, docid)
    if (forward === undefined) return 0
    const postings = postingsOf(forward)
    for (const [token, mask] of postings) sink.add(token, docid, mask)
    return postings.size
  }

  /**
   * Loads the terms of the pending tail documents that the cache has not seen. The first
   * search after a start (or after a rollback, a re-index or a removal in the tail) loads
   * the whole tail: grouped in flat typed arrays this takes ~0.05 ms a document, where a
   * Map of per-token arrays took ~0.2 (the mirror bench's first search on a peer that had
   * just caught up took 1.2 s for ~1,800 documents, and the lag p95 went over 1 s).
   */
  function postingsFor(db: Databases, state: IndexState): PostingGroups {
    if (tail && tail.chunks !== state.chunks && tail.generation === state.generation && tail.loadedThrough >= state.flushed) {
      // A flush moved the start of the tail: drop what it flushed rather than load the rest
      // again (after a background flush, what came in while it was built: up to thousands
      // of documents) — unless the dropped postings' slots outweigh the live ones.
      tail.postings.dropThrough(state.flushed)
      const { postings, slots } = tail.postings.held()
      tail.chunks = state.chunks
      if (slots > 2 * postings + 65_536) tail = undefined
    }
    if (!tail || tail.chunks !== state.chunks || tail.generation !== state.generation || tail.loadedThrough < state.flushed) {
      tail = { chunks: state.chunks, generation: state.generation, loadedThrough: state.flushed, postings: createPostingGroups() }
    }
    const postings = tail.postings
    for (let docid = tail.loadedThrough + 1; docid < state.next; docid++) {
      tail.loadedThrough = docid
      addTerms(db, docid, postings)
    }
    return postings
  }

  return {
    remember: (docid, id, terms) => void tailPostings.set(docid, { id, terms }),
    forget: (docid) => void tailPostings.delete(docid),
    addTerms,
    postingsFor,
    reset() {
      tail = undefined
      tailPostings = new Map()
    },
  }
}
