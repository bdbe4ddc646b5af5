/**
 * The evaluation of a parsed query into the set of docids that match it: posting sets of
 * its words intersected, phrases verified, OR as union, negations as difference, date
 * bounds through the date column.
 */

import type { QueryNode } from './query.js'
import { IndexError } from './errors.js'
import { bitsOf, fieldBits, hasAttachmentToken } from './field-bits.js'
import { difference, intersect, union } from './docid-sets.js'
import { collectDated, dateBlockDocids, readDateBlock } from './date-column.js'
import type { SearchContext } from './query-cache.js'
import { postingSet } from './posting-sets.js'
import { phraseFilter } from './phrase-filter.js'
import type { Paced } from './search-pacing.js'

/** The evaluation of queries in one search: see createEvaluation. */
export interface Evaluation {
  /**
   * The docids matching `node`, ascending (removed documents included: see `dateOf`), as
   * a paced computation: it yields between units of work (a posting set, 64 date blocks,
   * a phrase candidate) so that its driver can check the budget or let the event loop
   * run (search-pacing.ts).
   *
   * @throws IndexError INDEX_CORRUPT
   */
  evaluate(node: QueryNode): Paced<Uint32Array>
  /** The date of a docid (NaN: none, e.g. removed); fastest when asked in docid order. */
  dateOf(docid: number): number
}

/** The bounds [fromMs, toMs) of the date nodes among `nodes` (after is inclusive, before exclusive). */
export function dateRange(nodes: readonly QueryNode[]): { fromMs: number; toMs: number } {
  let fromMs = Number.NEGATIVE_INFINITY
  let toMs = Number.POSITIVE_INFINITY
  for (const dateNode of nodes) {
    if (dateNode.kind !== 'date') continue
    if (dateNode.bound === 'after') fromMs = Math.max(fromMs, dateNode.ms)
    else toMs = Math.min(toMs, dateNode.ms)
  }
  return { fromMs, toMs }
}

/** The kinds of query node that have an evaluator of their own. */
type MatchNode = Extract<QueryNode, { kind: 'match' }>
type OrNode = Extract<QueryNode, { kind: 'or' }>
type AndNode = Extract<QueryNode, { kind: 'and' }>

/** The dates of one search, read through the query cache. */
interface DateLookup {
  /** The date column's block `block` (cached once all its docids are flushed, else per tail generation). */
  block(block: number): Float64Array
  /** The date of a docid (NaN: none); fastest when asked in docid order. */
  dateOf(docid: number): number
}

/** What the evaluators of the node kinds share: the search's context, its dates and the evaluation of child nodes. */
interface Evaluator {
  context: SearchContext
  dates: DateLookup
  evaluate(node: QueryNode): Paced<Uint32Array>
}

/** Creates the evaluation for one search. */
export function createEvaluation(context: SearchContext): Evaluation {
  const dates = createDateLookup(context)
  const evaluator: Evaluator = { context, dates, evaluate }

  function* evaluate(queryNode: QueryNode): Paced<Uint32Array> {
    yield
    switch (queryNode.kind) {
      case 'match':
        return yield* evaluateMatch(context, queryNode)
      case 'address':
        return postingSet(context, queryNode.token, queryNode.field === 'from' ? fieldBits.from : fieldBits.to)
      case 'has':
        return postingSet(context, hasAttachmentToken, fieldBits.marker)
      case 'date': {
        const { fromMs, toMs } = dateRange([queryNode])
        return yield* dateScan(context, dates, fromMs, toMs)
      }
      case 'or':
        return yield* evaluateOr(evaluator, queryNode)
      case 'not':
        // parseQuery never leaves a negation where a set of its own is needed.
        throw new IndexError('QUERY_SYNTAX', 'a negation needs a positive term beside it')
      case 'and':
        return yield* evaluateAnd(evaluator, queryNode)
    }
  }

  return { evaluate, dateOf: dates.dateOf }
}

/** Creates the date lookup of one search: blocks through the query cache, the last block used kept at hand. */
function createDateLookup(context: SearchContext): DateLookup {
  const { db, state, cache } = context
  const block = (blockNumber: number): Float64Array => {
    let dates = cache.dates.get(blockNumber) ?? cache.tailDates.get(blockNumber)
    if (!dates) {
      dates = readDateBlock(db, blockNumber)
      // A block is stable once all its docids are flushed (only a removal, counted in `patched`, writes it again).
      if ((blockNumber + 1) * dateBlockDocids - 1 <= state.flushed) cache.dates.set(blockNumber, dates)
      else cache.tailDates.set(blockNumber, dates)
    }
    return dates
  }
  // Candidates come in docid order, so consecutive lookups mostly hit the same block.
  let lastBlockNumber = -1
  let lastBlockDates: Float64Array = new Float64Array(0)
  const dateOf = (docid: number): number => {
    const blockNumber = Math.floor(docid / dateBlockDocids)
    if (blockNumber !== lastBlockNumber) {
      lastBlockDates = block(blockNumber)
      lastBlockNumber = blockNumber
    }
    return lastBlockDates[docid % dateBlockDocids]!
  }
  return { block, dateOf }
}

/** Every live docid dated in [fromMs, toMs): a scan of the date column, 1 KiB per 128 documents. */
function* dateScan(context: SearchContext, dates: DateLookup, fromMs: number, toMs: number): Paced<Uint32Array> {
  const { state } = context
  let docids = new Uint32Array(Math.min(state.next + dateBlockDocids, 4_096))
  let count = 0
  const lastBlock = Math.floor((state.next - 1) / dateBlockDocids)
  for (let block = 0; block <= lastBlock; block++) {
    if ((block & 63) === 63) yield
    if (docids.length - count < dateBlockDocids) {
      const grown = new Uint32Array(Math.min(state.next + dateBlockDocids, 2 * docids.length))
      grown.set(docids.subarray(0, count))
      docids = grown
    }
    count = collectDated(dates.block(block), fromMs, toMs, block * dateBlockDocids, docids, count)
  }
  return docids.subarray(0, count)
}

/** Words in a field: their posting sets intersected, smallest first; a phrase (several words) verified on the candidates. */
function* evaluateMatch(context: SearchContext, queryNode: MatchNode): Paced<Uint32Array> {
  const bits = bitsOf(queryNode.field)
  const sets: Uint32Array[] = []
  for (const token of new Set(queryNode.tokens)) {
    sets.push(postingSet(context, token, bits))
    yield
  }
  sets.sort((a, b) => a.length - b.length)
  let result = sets[0]!
  for (const set of sets.slice(1)) result = intersect(result, set)
  return queryNode.tokens.length > 1 && result.length > 0 ? yield* phraseFilter(context, result, queryNode.field, queryNode.tokens) : result
}

/** The union of the children's sets. */
function* evaluateOr(evaluator: Evaluator, queryNode: OrNode): Paced<Uint32Array> {
  let result: Uint32Array | undefined
  for (const child of queryNode.children) {
    const set = yield* evaluator.evaluate(child)
    result = result === undefined ? set : union(result, set)
  }
  return result ?? new Uint32Array(0)
}

/**
 * The positive children's sets intersected, smallest first (a scan of the date column when
 * there are only dates), then kept within the date bounds, less the negated children's sets.
 */
function* evaluateAnd(evaluator: Evaluator, queryNode: AndNode): Paced<Uint32Array> {
  const dates = queryNode.children.filter((child) => child.kind === 'date')
  const negated = queryNode.children.filter((child) => child.kind === 'not')
  const positive = queryNode.children.filter((child) => child.kind !== 'date' && child.kind !== 'not')
  const { fromMs, toMs } = dateRange(dates)
  let result: Uint32Array
  if (positive.length === 0) result = yield* dateScan(evaluator.context, evaluator.dates, fromMs, toMs)
  else {
    const sets: Uint32Array[] = []
    for (const child of positive) sets.push(yield* evaluator.evaluate(child))
    sets.sort((a, b) => a.length - b.length)
    result = sets[0]!
    for (const set of sets.slice(1)) {
      if (result.length === 0) break
      result = intersect(result, set)
    }
    if (dates.length > 0)
      result = result.filter((docid) => {
        const dateMs = evaluator.dates.dateOf(docid)
        return dateMs >= fromMs && dateMs < toMs
      })
  }
  for (const child of negated) {
    if (result.length === 0) break
    if (child.kind === 'not') result = difference(result, yield* evaluator.evaluate(child.child))
  }
  return result
}
