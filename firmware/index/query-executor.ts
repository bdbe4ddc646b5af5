/**
 * The query executor: runs a search — parse, evaluate over postings, the tail and the date
 * column, order and cut a page, make the hits' snippets — within a time budget, with the
 * query cache kept across searches.
 */

import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { cutToChars } from '../common/text.js'
import { IndexError } from './errors.js'
import { parseQuery, positiveTokens } from './query.js'
import { makeSnippet } from './snippet.js'
import { readState, type Databases } from './index-databases.js'
import type { IndexOptions, SearchHit, SearchOptions, SearchResult } from './index-types.js'
import { getRecord } from './record-io.js'
import type { PendingTail } from './pending-tail.js'
import { queryCacheFor, queryCacheRecordsMax, type QueryCache, type SearchContext } from './query-cache.js'
import { createEvaluation } from './query-evaluation.js'
import { decodeCursor, encodeCursor, selectPage } from './result-page.js'

/** What the executor needs of its index. */
export interface QueryExecutorDeps {
  logger: Logger
  clock: Clock
  limits: Pick<IndexOptions, 'searchLimitDefault' | 'searchLimitMax' | 'searchTimeBudgetMs' | 'snippetTextCharsMax'>
  tail: PendingTail
}

/** The executor of one index's searches: see createQueryExecutor. */
export type QueryExecutor = ReturnType<typeof createQueryExecutor>

/** Creates the executor. Pure: it works on the databases each search hands it. */
export function createQueryExecutor(deps: QueryExecutorDeps) {
  const { logger, clock, limits } = deps
  let queryCache: QueryCache | undefined

  /**
   * Runs a query (see query.ts for the language) on `db`.
   *
   * @param epoch the index's epoch: the cache of another is dropped
   * @throws QuerySyntaxError, IndexError BAD_CURSOR, QUERY_TIMEOUT, INDEX_CORRUPT
   */
  function search(db: Databases, epoch: number, query: string, searchOptions: SearchOptions = {}): SearchResult {
    const node = parseQuery(query)
    const limit = Math.min(Math.max(1, Math.floor(searchOptions.limit ?? limits.searchLimitDefault)), limits.searchLimitMax)
    const after = searchOptions.cursor ? decodeCursor(searchOptions.cursor) : null
    const startedMs = clock.monotonicMs()
    const checkBudget = (): void => {
      if (clock.monotonicMs() - startedMs > limits.searchTimeBudgetMs) {
        throw new IndexError('QUERY_TIMEOUT', `the search took longer than ${limits.searchTimeBudgetMs} ms; narrow the query`, { fields: { searchTimeBudgetMs: limits.searchTimeBudgetMs } })
      }
    }
    const state = readState(db)
    const tailPostings = deps.tail.postingsFor(db, state)
    const cache = (queryCache = queryCacheFor(queryCache, epoch, state))
    const context: SearchContext = { db, state, cache, tailPostings, checkBudget }
    const evaluation = createEvaluation(context)
    const page = selectPage(evaluation.evaluate(node), evaluation.dateOf, after, limit)
    const hits = hitsOf(context, page.docids, page.dates, positiveTokens(node))
    const last = page.docids.length - 1
    const nextCursor = page.remaining > limit && last >= 0 ? encodeCursor(page.dates[last]!, page.docids[last]!) : null
    logger.debug('search', { query: query.slice(0, 200), total: page.total, hits: hits.length, elapsedMs: Math.round(clock.monotonicMs() - startedMs) })
    return { total: page.total, hits, nextCursor }
  }

  /** The hits of a page: display records (kept in the cache, cut to what a snippet looks at) with their snippets. */
  function hitsOf(context: SearchContext, docids: readonly number[], dates: readonly number[], highlight: ReadonlySet<string>): SearchHit[] {
    const { db, cache } = context
    const hits: SearchHit[] = []
    for (let index = 0; index < docids.length; index++) {
      const docid = docids[index]!
      let shown = cache.records.get(docid)
      if (shown === undefined) {
        let record = getRecord(db, docid)
        if (record === undefined) continue
        // A snippet is looked for in the start of the text; the cache keeps only that.
        if (record.text.length > limits.snippetTextCharsMax) record = { ...record, text: cutToChars(record.text, limits.snippetTextCharsMax) }
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

  return {
    search,
    /** Drops the query cache (databases opened, rebuild). */
    reset(): void {
      queryCache = undefined
    },
  }
}
