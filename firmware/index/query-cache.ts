/**
 * What searches keep across searches (QueryCache) and its bounds, and what one search
 * works with (SearchContext).
 */

import type { Databases, IndexState } from './index-databases.js'
import type { StoredRecord } from './display-record.js'
import type { PostingGroups } from './posting-groups.js'

/** What one search reads: the databases, the state it read, the cache and the tail. */
export interface SearchContext {
  db: Databases
  state: IndexState
  cache: QueryCache
  /** The postings of the pending tail (see PendingTail.postingsFor). */
  tailPostings: PostingGroups
}

/** A display record as hits show it: the text cut to what a snippet looks at, and its snippet without marks once made. */
export interface ShownRecord {
  record: StoredRecord
  /** The snippet when nothing is to be marked (a query of dates or of other fields): the same for every such query. */
  plainSnippet?: string
}

/** A set over flushed documents: those of chunks below `chunks`, docids up to `flushed`. */
export interface CachedSet {
  set: Uint32Array
  chunks: number
  flushed: number
}

/**
 * What searches decoded from data that only a flush, a re-index or a removal can change
 * (posting sets of flushed chunks, verified phrase sets over flushed documents, full date
 * blocks), kept across searches: hot tokens and repeated queries (every further page of a
 * result is the same query again) then cost no LMDB reads. Valid while the state's
 * `patched` (re-index or removal of a flushed document) and the index's epoch (databases
 * opened, rebuild) stay as they were; a flush only adds documents, and a cached set is
 * extended over them when next used. Bounded by `queryCacheDocidsMax`.
 */
export interface QueryCache {
  /** The index's epoch, and the state's `patched`: either moving starts the cache over. */
  epoch: number
  patched: number
  /** The state's chunks and flushed docid when last used (they only grow while the cache lives). */
  chunks: number
  flushed: number
  /**
   * Sets over flushed documents by `bits NUL token` (posting sets) or `phrase NUL field NUL
   * tokens`. A flush does not change what a set says about the documents it covers: a later
   * search extends it over the new chunk instead of starting over.
   */
  sets: Map<string, CachedSet>
  /** Docids held in `sets`. */
  docids: number
  /** Date blocks whose every docid is flushed. */
  dates: Map<number, Float64Array>
  /**
   * The other date blocks (tail documents), as of `tailDatesNext` and `tailDatesGeneration`:
   * an ingest moves `next`, a removal from the tail the generation (a removal of a flushed
   * document `patched`, which starts the whole cache over).
   */
  tailDates: Map<number, Float64Array>
  tailDatesNext: number
  tailDatesGeneration: number
  /**
   * Verified phrase sets over the tail, per phrase: the docids that have it among those
   * up to `through`, valid while the tail's `generation` stays (new documents extend it).
   */
  tailPhrases: Map<string, { generation: number; base: number; through: number; docids: number[] }>
  /**
   * Display records shown in hits (at most `queryCacheRecordsMax`), for the index
   * `generation` below: a re-indexed tail document changes its record and the generation
   * (a re-indexed flushed one changes `patched`, which starts the whole cache over).
   */
  records: Map<number, ShownRecord>
  recordsGeneration: number
}

/** Display records the query cache holds at most. */
export const queryCacheRecordsMax = 2_000

/** Docids the query cache holds at most (4 bytes each). */
export const queryCacheDocidsMax = 8_000_000

/**
 * The cache for a search of `state`: `previous` if it is still valid (same epoch and
 * `patched`, and the state has not gone back), else a new one; its tail date blocks and
 * display records dropped when the tail has changed since.
 *
 * @param epoch the index's epoch (moves when its data is replaced)
 */
export function queryCacheFor(previous: QueryCache | undefined, epoch: number, state: IndexState): QueryCache {
  const patched = state.patched ?? 0
  let cache = previous
  if (!cache || cache.epoch !== epoch || cache.patched !== patched || state.chunks < cache.chunks || state.flushed < cache.flushed) {
    cache = {
      epoch,
      patched,
      chunks: state.chunks,
      flushed: state.flushed,
      sets: new Map(),
      docids: 0,
      dates: new Map(),
      tailDates: new Map(),
      tailDatesNext: state.next,
      tailDatesGeneration: state.generation,
      tailPhrases: new Map(),
      records: new Map(),
      recordsGeneration: state.generation,
    }
  }
  cache.chunks = state.chunks
  cache.flushed = state.flushed
  if (cache.tailDatesNext !== state.next || cache.tailDatesGeneration !== state.generation) {
    cache.tailDates.clear()
    cache.tailDatesNext = state.next
    cache.tailDatesGeneration = state.generation
  }
  if (cache.recordsGeneration !== state.generation) {
    cache.records.clear()
    cache.recordsGeneration = state.generation
  }
  return cache
}

/** Keeps `entry` under `key` (replacing what was there), dropping the oldest sets past the budget. */
export function cacheSet(cache: QueryCache, key: string, entry: CachedSet): void {
  const previous = cache.sets.get(key)
  if (previous !== undefined) {
    cache.sets.delete(key)
    cache.docids -= previous.set.length
  }
  if (entry.set.length > queryCacheDocidsMax / 4) return
  while (cache.docids + entry.set.length > queryCacheDocidsMax && cache.sets.size > 0) {
    // Oldest first (a Map iterates in insertion order).
    const [oldKey, oldEntry] = cache.sets.entries().next().value as [string, CachedSet]
    cache.sets.delete(oldKey)
    cache.docids -= oldEntry.set.length
  }
  cache.sets.set(key, entry)
  cache.docids += entry.set.length
}
