/**
 * firmware/index: the full-text index of the archive, kept in the archive's own LMDB
 * environment and written inside the archive's write transaction, so a message is
 * searchable as soon as its ingest commits. The layout and its reasons are in
 * docs/index-layout.md; the files of this folder and the data flow in its README.md.
 *
 * This file is the service's façade: SearchIndex is its contract; createIndex builds the
 * wiring (index-wiring.ts: the open databases, the epoch, the modules over them) and hands
 * each call to the module that does it (document-writes, tail-flush, query-executor,
 * verify-index, rebuild-index), in groups: writes, searches, status, maintenance.
 */

import assert from 'node:assert'
import type { RootDatabase } from 'lmdb'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { ParsedMessage } from '../mime/types.js'
import { docidOf, type indexDatabaseNames, indexDiskBytes, indexLayoutVersion, readState, storedState } from './index-databases.js'
import { defaultIndexOptions, type IndexOptions, type IndexStats, type SearchOptions, type SearchResult, type Source, type VerifyReport } from './index-types.js'
import type { IndexInput } from './index-input.js'
import { isPreparedDocument, prepareDocument, type PreparedDocument } from './prepared-document.js'
import type { SearchCounters } from './query-executor.js'
import { createIndexWiring, type IndexWiring } from './index-wiring.js'
import { verifyIndex } from './verify-index.js'
import { rebuildIndex } from './rebuild-index.js'

export { indexDatabaseNames, indexLayoutVersion } from './index-databases.js'
export { defaultIndexOptions, type IndexOptions, type IndexStats, type SearchHit, type SearchOptions, type SearchResult, type Source, type VerifyReport } from './index-types.js'

/** The index service: see createIndex. */
export interface SearchIndex {
  /** The limits in force: defaultIndexOptions with the options given. */
  options: Readonly<IndexOptions>

  /**
   * Opens (creating when missing) the index's named databases in the archive's LMDB
   * environment. Call once before anything else; the environment needs room for
   * `Object.keys(indexDatabaseNames).length` more databases in its `maxDbs`.
   */
  databases(root: RootDatabase): void

  /**
   * Indexes one message, synchronously. Called inside the archive's write transaction
   * (`transaction`/`transactionSync` callback), it joins that transaction, so the message
   * and its index entries commit or abort together; called outside one, it commits its
   * own. Indexing an id again (another delivery) updates what changed — new envelope
   * recipients become searchable — and keeps its place in the order.
   *
   * @param prepared `prepare(input.parsed)` computed beforehand (another shape, or
   *   undefined, is prepared here)
   * @returns the docid and whether anything was written
   * @throws IndexError INDEX_UNAVAILABLE before `databases`, INDEX_CORRUPT on an unreadable index; LMDB errors (map full) as thrown
   */
  indexMessage(input: IndexInput, prepared?: unknown): { docid: number; changed: boolean }

  /**
   * `indexMessage` for a caller whose write transaction is open (the archive hook): writes
   * in that transaction itself, without the nested transaction `indexMessage` starts there
   * (LMDB's nested begin and commit cost more than the indexing). If it throws, its writes
   * so far are in the caller's transaction, which must then be aborted.
   *
   * @returns null, writing nothing, when the stored index has another layout (see `layoutCurrent`)
   */
  indexMessageInTransaction(input: IndexInput, prepared?: unknown): { docid: number; changed: boolean } | null

  /**
   * The part of indexing that needs no database and no envelope (tokenizing, field
   * analysis, snippet text), with this index's limits: pure, its result plain data.
   * Run it before the write transaction (or on a worker thread with
   * `prepareDocument(parsed, limits)` and the same limits) and pass the result to
   * `indexMessage`.
   */
  prepare(parsed: ParsedMessage): PreparedDocument

  /**
   * Removes a message from search (retention, purge). Joins the caller's write
   * transaction like `indexMessage`. Its postings become garbage, skipped by searches
   * and dropped by the next `rebuild`.
   *
   * @returns false when the id was not indexed
   */
  removeMessage(id: string): boolean

  /**
   * `removeMessage` for a caller whose write transaction is open, as `indexMessageInTransaction`.
   *
   * @returns null, writing nothing, when the stored index has another layout
   */
  removeMessageInTransaction(id: string): boolean | null

  /**
   * Writes the postings of the pending tail now (ingest does it by itself every
   * `pendingDocumentsMax` documents). Joins the caller's write transaction.
   *
   * @returns the number of posting chunks written
   */
  flush(): number

  /**
   * Starts a background flush (built in slices between event-loop turns, as ingest's) of
   * the whole pending tail, for a tail an unplanned stop left behind: otherwise the first
   * search loads it from the forward records in one go (~0.25 ms a document, up to twice
   * `pendingDocumentsMax`), stalling the event loop for it. Nothing when the tail is empty,
   * a build is under way, background flushes are off or the layout is not this one.
   *
   * @returns the documents the flush covers (0 when none started)
   */
  flushPendingInBackground(): number

  /**
   * Resolves once no flush is being built in the background or waiting to be written
   * (one that failed counts as settled: the next ingest flushes in its transaction).
   * For a caller that wants the index at rest: a benchmark before its queries, a test.
   */
  settled(): Promise<void>

  /**
   * Runs a query (see query.ts for the language), paced: it evaluates in slices of
   * `searchSliceMs` between event-loop turns, one search at a time (the others wait their
   * turn, at most `searchesWaitingMax`), within `queryTimeMsMax` of its turn.
   *
   * @returns one page, newest first, with the total and the cursor of the next page
   * @throws QuerySyntaxError (code QUERY_SYNTAX, with `position`) for a malformed query;
   *   IndexError BAD_CURSOR, SEARCH_BUSY, QUERY_TOO_EXPENSIVE (over `queryTimeMsMax`),
   *   INDEX_UNAVAILABLE, INDEX_CORRUPT
   */
  search(query: string, searchOptions?: SearchOptions): Promise<SearchResult>

  /**
   * The same search run to its end on the caller's turn, holding the event loop meanwhile
   * (within the same budget): for tests, benchmarks and tools, never for a request.
   *
   * @throws as search, except SEARCH_BUSY
   */
  searchBlocking(query: string, searchOptions?: SearchOptions): SearchResult

  /** Counters of the paced searches (running, waiting, stopped over budget, refused busy, restarted). */
  searchCounters(): SearchCounters

  /**
   * Bytes of LMDB pages each index database occupies (branch, leaf and overflow pages);
   * free pages of the environment are not counted.
   */
  diskBytes(): Record<keyof typeof indexDatabaseNames, number>

  /** Figures for status views. */
  stats(): IndexStats

  /**
   * True when the index answers for every archived message: its layout is current and no
   * rebuild is under way or was left unfinished (a crash, a stop). Retention asks this
   * before it trusts a query (a hold by query must see every message it names).
   */
  complete(): boolean

  /**
   * False when the stored index has another layout version (written by other firmware):
   * it must be rebuilt before it can be read or written.
   */
  layoutCurrent(): boolean

  /** True when the message is indexed. */
  has(id: string): boolean

  /**
   * Checks the index against the archive (see verifyIndex): missing, extra and, with
   * `getInput`, stale documents. Reads only.
   *
   * @param listIds every archive id
   * @param getInput the index input of a stored message (undefined when it is gone)
   */
  verify(listIds: Source<string>, getInput?: (id: string) => Promise<IndexInput | undefined> | IndexInput | undefined): Promise<VerifyReport>

  /**
   * Drops the index's data and indexes every message again, `rebuildBatchMessages` per
   * write transaction. The archive's own databases are not touched; searches during a
   * rebuild see a partial index. Messages ingested meanwhile are indexed by the ingest
   * hook as usual (and skipped here when unchanged).
   *
   * @param messages every stored message's index input
   * @param onProgress called after each batch with the number indexed so far
   * @param signal stops the rebuild between messages (it then throws INDEX_UNAVAILABLE and
   *   the index stays marked incomplete: `complete()` is false until a rebuild finishes)
   * @returns the number of messages indexed
   */
  rebuild(messages: Source<IndexInput>, onProgress?: (indexed: number) => void, signal?: AbortSignal): Promise<number>
}

/**
 * Creates the index service. Pure: nothing is opened until `databases(root)`.
 *
 * @param deps.logger the index's logger (boot names it `index`)
 * @param deps.clock monotonic time bounds searches
 * @param options limits; see IndexOptions (defaults in defaultIndexOptions)
 */
export function createIndex(deps: { logger: Logger; clock: Clock }, options: Partial<IndexOptions> = {}): SearchIndex {
  const limits: IndexOptions = { ...defaultIndexOptions, ...options }
  assert(limits.pendingDocumentsMax >= 1 && limits.searchLimitMax >= 1 && limits.tokensPerDocumentMax >= 1 && limits.flushSliceMs >= 0)
  const wiring = createIndexWiring(deps, limits)
  return {
    options: limits as Readonly<IndexOptions>,
    ...writeMethods(wiring),
    ...searchMethods(wiring),
    ...statusMethods(wiring),
    ...maintenanceMethods(wiring),
  }
}

const preparedOrNone = (prepared: unknown): PreparedDocument | undefined => (isPreparedDocument(prepared) ? prepared : undefined)

/** The façade's writes: databases, indexing, removal, flushes. */
function writeMethods(
  wiring: IndexWiring,
): Pick<
  SearchIndex,
  'databases' | 'indexMessage' | 'indexMessageInTransaction' | 'prepare' | 'removeMessage' | 'removeMessageInTransaction' | 'flush' | 'flushPendingInBackground' | 'settled'
> {
  const { limits, writes, flush, open } = wiring
  return {
    databases(root: RootDatabase): void {
      wiring.openDatabases(root)
    },
    indexMessage(input: IndexInput, prepared?: unknown): { docid: number; changed: boolean } {
      const db = open()
      return db.root.transactionSync(() => writes.indexInTransaction(db, input, true, preparedOrNone(prepared)))
    },
    indexMessageInTransaction(input: IndexInput, prepared?: unknown): { docid: number; changed: boolean } | null {
      const db = open()
      const state = storedState(db)
      if (state.v !== indexLayoutVersion) return null
      return writes.indexInTransaction(db, input, true, preparedOrNone(prepared), { ...state })
    },
    prepare(parsed: ParsedMessage): PreparedDocument {
      return prepareDocument(parsed, limits)
    },
    removeMessage(id: string): boolean {
      const db = open()
      return db.root.transactionSync(() => writes.removeInTransaction(db, id))
    },
    removeMessageInTransaction(id: string): boolean | null {
      const db = open()
      if (storedState(db).v !== indexLayoutVersion) return null
      return writes.removeInTransaction(db, id)
    },
    flush(): number {
      const db = open()
      return db.root.transactionSync(() => flush.flushInTransaction(db, readState(db)))
    },
    flushPendingInBackground(): number {
      const db = open()
      const state = storedState(db)
      if (state.v !== indexLayoutVersion) return 0
      return flush.startInBackground(db, state)
    },
    settled: (): Promise<void> => flush.settled(),
  }
}

/** The façade's searches, handed to the query executor. */
function searchMethods({ executor }: IndexWiring): Pick<SearchIndex, 'search' | 'searchBlocking' | 'searchCounters'> {
  return {
    search: (query: string, searchOptions: SearchOptions = {}): Promise<SearchResult> => executor.search(query, searchOptions),
    searchBlocking: (query: string, searchOptions: SearchOptions = {}): SearchResult => executor.searchBlocking(query, searchOptions),
    searchCounters: (): SearchCounters => executor.counters(),
  }
}

/** The façade's figures and checks for status views and callers. */
function statusMethods({ open }: IndexWiring): Pick<SearchIndex, 'diskBytes' | 'stats' | 'complete' | 'layoutCurrent' | 'has'> {
  return {
    diskBytes(): Record<keyof typeof indexDatabaseNames, number> {
      return indexDiskBytes(open())
    },
    stats(): IndexStats {
      // Without the layout check: status views must work on an index of another layout too.
      const state = storedState(open())
      return {
        documents: state.documents,
        pending: state.next - 1 - state.flushed,
        flushes: state.chunks,
        removedSinceRebuild: state.removed,
        rebuilding: state.rebuilding === true,
        layoutCurrent: state.v === indexLayoutVersion,
      }
    },
    complete(): boolean {
      const state = storedState(open())
      return state.v === indexLayoutVersion && state.rebuilding !== true
    },
    layoutCurrent(): boolean {
      return storedState(open()).v === indexLayoutVersion
    },
    has(id: string): boolean {
      return docidOf(open(), id) !== undefined
    },
  }
}

/** The façade's verify and rebuild. */
function maintenanceMethods(wiring: IndexWiring): Pick<SearchIndex, 'verify' | 'rebuild'> {
  const { logger, limits, writes, open } = wiring
  return {
    async verify(listIds: Source<string>, getInput?: (id: string) => Promise<IndexInput | undefined> | IndexInput | undefined): Promise<VerifyReport> {
      return verifyIndex(open(), { logger, limits }, listIds, getInput)
    },
    async rebuild(messages: Source<IndexInput>, onProgress?: (indexed: number) => void, signal?: AbortSignal): Promise<number> {
      const db = open()
      const deps = {
        logger,
        limits,
        indexInTransaction: (input: IndexInput) => void writes.indexInTransaction(db, input, true),
        // A flush built from the data cleared here must not be written after it.
        onCleared: wiring.cleared,
        afterCleared: wiring.forgetReads,
      }
      return rebuildIndex(db, deps, messages, onProgress, signal)
    },
  }
}
