/**
 * The query executor: runs a search — parse, evaluate over postings, the tail and the date
 * column, order and cut a page, make the hits' snippets — within a time budget, paced so
 * the event loop keeps running (search-pacing.ts), one at a time (search-turns.ts), with the
 * query cache kept across searches.
 */

import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { cutToChars } from '../common/text.js'
import { IndexError } from './errors.js'
import { parseQuery, positiveTokens, type QueryNode } from './query.js'
import { makeSnippet } from './snippet.js'
import { readState, type Databases, type IndexState } from './index-databases.js'
import type { IndexOptions, SearchHit, SearchOptions, SearchResult } from './index-types.js'
import { getRecord } from './record-io.js'
import { addressQueryToken } from './tokenize.js'
import type { PendingTail } from './pending-tail.js'
import { queryCacheFor, queryCacheRecordsMax, type QueryCache, type SearchContext } from './query-cache.js'
import { createEvaluation, type Evaluation } from './query-evaluation.js'
import { runInSlices, runToEnd } from './search-pacing.js'
import { decodeCursor, encodeCursor, selectPage } from './result-page.js'
import { createSearchTurns, type SearchCounters } from './search-turns.js'

export type { SearchCounters } from './search-turns.js'

/** What the executor needs of its index. */
export interface QueryExecutorDeps {
  logger: Logger
  clock: Clock
  limits: Pick<IndexOptions, 'searchLimitDefault' | 'searchLimitMax' | 'queryTimeMsMax' | 'searchSliceMs' | 'searchesWaitingMax' | 'snippetTextCharsMax'>
  tail: PendingTail
  /** The index's open databases and epoch now. @throws IndexError INDEX_UNAVAILABLE */
  current(): { db: Databases; epoch: number }
}

/** The executor of one index's searches: see createQueryExecutor. */
export type QueryExecutor = ReturnType<typeof createQueryExecutor>

/** A parsed search: what every attempt at it uses. */
interface PlannedSearch {
  query: string
  /** What is evaluated: the query, joined with the scope's addresses when there is a scope. */
  node: QueryNode
  /** The query as typed: its words are highlighted in snippets (never the scope's addresses). */
  queryNode: QueryNode
  admits: ((id: string) => boolean) | undefined
  limit: number
  after: ReturnType<typeof decodeCursor> | null
}

/**
 * Creates the executor. Paced searches (`search`) evaluate one at a time, in slices between
 * event-loop turns; the others wait in turn, at most `searchesWaitingMax` of them. One at a
 * time because a paused evaluation and another one would both extend the shared query cache
 * (a phrase's verified set of the tail): taking turns keeps every cache entry whole, and a
 * second evaluation beside the first would only share the same CPU.
 */
export function createQueryExecutor(deps: QueryExecutorDeps) {
  const { clock, limits } = deps
  let queryCache: QueryCache | undefined
  const turns = createSearchTurns(limits)

  /** A search's view: the state now, the cache valid for it, the tail's postings. */
  function contextFor(db: Databases, epoch: number): SearchContext {
    const state = readState(db)
    const tailPostings = deps.tail.postingsFor(db, state)
    const cache = (queryCache = queryCacheFor(queryCache, epoch, state))
    return { db, state, cache, tailPostings }
  }

  /**
   * Runs a query (see query.ts for the language) to its end on this turn: for tests,
   * benchmarks and tools. The appliance's callers use `search`.
   *
   * @throws QuerySyntaxError, IndexError BAD_CURSOR, QUERY_TOO_EXPENSIVE, INDEX_UNAVAILABLE, INDEX_CORRUPT
   */
  function searchBlocking(query: string, searchOptions: SearchOptions = {}): SearchResult {
    const planned = planSearch(query, searchOptions, limits)
    const startedMs = clock.monotonicMs()
    const { db, epoch } = deps.current()
    const context = contextFor(db, epoch)
    const evaluation = createEvaluation(context)
    try {
      const matching = runToEnd(evaluation.evaluate(planned.node), clock, startedMs, searchOptions.timeMsMax ?? limits.queryTimeMsMax)
      return pageOf(deps, context, evaluation, matching, planned, startedMs)
    } catch (error) {
      return stoppedOverBudget(deps, turns.counters, error, planned, startedMs)
    }
  }

  /**
   * Runs a query in slices of `searchSliceMs` between event-loop turns, within
   * `queryTimeMsMax` from when its turn came. An evaluation that a flush or a removal made
   * stale while it was paused starts over (the budget keeps running).
   *
   * @throws QuerySyntaxError, IndexError BAD_CURSOR, SEARCH_BUSY, QUERY_TOO_EXPENSIVE, INDEX_UNAVAILABLE, INDEX_CORRUPT
   */
  async function search(query: string, searchOptions: SearchOptions = {}): Promise<SearchResult> {
    const planned = planSearch(query, searchOptions, limits)
    deps.current()
    await turns.take()
    const startedMs = clock.monotonicMs()
    try {
      for (;;) {
        const { db, epoch } = deps.current()
        const context = contextFor(db, epoch)
        const evaluation = createEvaluation(context)
        const stillCurrent = stillCurrentFor(deps, db, epoch, context.state)
        const budgetMs = searchOptions.timeMsMax ?? limits.queryTimeMsMax
        const outcome = await runInSlices(evaluation.evaluate(planned.node), { clock, startedMs, budgetMs, sliceMs: limits.searchSliceMs, stillCurrent })
        if (outcome.done) return pageOf(deps, context, evaluation, outcome.value, planned, startedMs)
        turns.counters.restarts += 1
      }
    } catch (error) {
      return stoppedOverBudget(deps, turns.counters, error, planned, startedMs)
    } finally {
      turns.release()
    }
  }

  return {
    search,
    searchBlocking,
    /** Counters of the paced searches (a copy). */
    counters: (): SearchCounters => ({ ...turns.counters }),
    /** Drops the query cache (databases opened, rebuild). */
    reset(): void {
      queryCache = undefined
    },
  }
}

/** @throws QuerySyntaxError, IndexError BAD_CURSOR */
function planSearch(query: string, searchOptions: SearchOptions, limits: QueryExecutorDeps['limits']): PlannedSearch {
  const queryNode = parseQuery(query)
  const limit = Math.min(Math.max(1, Math.floor(searchOptions.limit ?? limits.searchLimitDefault)), limits.searchLimitMax)
  const after = searchOptions.cursor ? decodeCursor(searchOptions.cursor) : null
  const scope = searchOptions.scope
  const node = scope ? scopedNode(queryNode, scope.addresses) : queryNode
  return { query, node, queryNode, admits: scope?.admits, limit, after }
}

/** `query AND (from:a OR to:a OR from:b OR to:b …)`; with no address, a node nothing matches. */
function scopedNode(query: QueryNode, addresses: readonly string[]): QueryNode {
  const position = 0
  const either: QueryNode[] = addresses.flatMap((address) => {
    const token = addressQueryToken(address)
    return [
      { kind: 'address', field: 'from', token, position },
      { kind: 'address', field: 'to', token, position },
    ] as const
  })
  // An address token no message can have (exact address tokens never hold a newline).
  if (either.length === 0) either.push({ kind: 'address', field: 'to', token: '\n', position })
  return { kind: 'and', children: [query, { kind: 'or', children: either, position }], position }
}

/** The matches the scope admits (the rule over each message's metadata), in their order. */
function admitted(context: SearchContext, matching: Uint32Array, admits: (id: string) => boolean): Uint32Array {
  const kept: number[] = []
  for (const docid of matching) {
    const id = getRecord(context.db, docid)?.id
    if (id !== undefined && admits(id)) kept.push(docid)
  }
  return Uint32Array.from(kept)
}

/** Whether what a paused evaluation read (the databases, the epoch, the state) is still the index's now. */
function stillCurrentFor(deps: QueryExecutorDeps, db: Databases, epoch: number, state: IndexState): () => boolean {
  return (): boolean => {
    const now = deps.current()
    if (now.epoch !== epoch || now.db !== db) return false
    const latest = readState(now.db)
    return latest.chunks === state.chunks && latest.flushed === state.flushed && latest.generation === state.generation && (latest.patched ?? 0) === (state.patched ?? 0)
  }
}

/** Counts and logs a search stopped over its budget, then throws its error again (any error). */
function stoppedOverBudget(deps: QueryExecutorDeps, counters: SearchCounters, error: unknown, planned: PlannedSearch, startedMs: number): never {
  if (error instanceof IndexError && error.code === 'QUERY_TOO_EXPENSIVE') {
    counters.tooExpensive += 1
    deps.logger.warn('search stopped over its budget', { query: planned.query.slice(0, 200), queryChars: planned.query.length, elapsedMs: Math.round(deps.clock.monotonicMs() - startedMs) })
  }
  throw error
}

/** The page of an evaluated search: order, cut, hits with snippets. Runs on one turn with the evaluation's end. */
function pageOf(deps: QueryExecutorDeps, context: SearchContext, evaluation: Evaluation, matching: Uint32Array, planned: PlannedSearch, startedMs: number): SearchResult {
  const { queryNode, limit, after, admits } = planned
  const page = selectPage(admits ? admitted(context, matching, admits) : matching, evaluation.dateOf, after, limit)
  const hits = hitsOf(context, page.docids, page.dates, positiveTokens(queryNode), deps.limits.snippetTextCharsMax)
  const last = page.docids.length - 1
  const nextCursor = page.remaining > limit && last >= 0 ? encodeCursor(page.dates[last]!, page.docids[last]!) : null
  deps.logger.debug('search', { query: planned.query.slice(0, 200), total: page.total, hits: hits.length, elapsedMs: Math.round(deps.clock.monotonicMs() - startedMs) })
  return { total: page.total, hits, nextCursor }
}

/** The hits of a page: display records (kept in the cache, cut to what a snippet looks at) with their snippets. */
function hitsOf(context: SearchContext, docids: readonly number[], dates: readonly number[], highlight: ReadonlySet<string>, snippetTextCharsMax: number): SearchHit[] {
  const { db, cache } = context
  const hits: SearchHit[] = []
  for (let index = 0; index < docids.length; index++) {
    const docid = docids[index]!
    let shown = cache.records.get(docid)
    if (shown === undefined) {
      let record = getRecord(db, docid)
      if (record === undefined) continue
      // A snippet is looked for in the start of the text; the cache keeps only that.
      if (record.text.length > snippetTextCharsMax) record = { ...record, text: cutToChars(record.text, snippetTextCharsMax) }
      if (cache.records.size >= queryCacheRecordsMax) cache.records.delete(cache.records.keys().next().value as number)
      shown = { record }
      cache.records.set(docid, shown)
    }
    const { record } = shown
    const snippet = highlight.size === 0 ? (shown.plainSnippet ??= makeSnippet(record.text, highlight)) : makeSnippet(record.text, highlight)
    hits.push({ id: record.id, dateMs: dates[index]!, from: record.from, subject: record.subject, snippet })
  }
  return hits
}
