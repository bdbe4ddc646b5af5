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

/** Creates the evaluation for one search. */
export function createEvaluation(context: SearchContext): Evaluation {
  const { db, state, cache } = context

  const dateBlock = (block: number): Float64Array => {
    let dates = cache.dates.get(block) ?? cache.tailDates.get(block)
    if (!dates) {
      dates = readDateBlock(db, block)
      // A block is stable once all its docids are flushed (only a removal, counted in `patched`, writes it again).
      if ((block + 1) * dateBlockDocids - 1 <= state.flushed) cache.dates.set(block, dates)
      else cache.tailDates.set(block, dates)
    }
    return dates
  }
  // Candidates come in docid order, so consecutive lookups mostly hit the same block.
  let lastBlockNumber = -1
  let lastBlockDates: Float64Array = new Float64Array(0)
  const dateOf = (docid: number): number => {
    const block = Math.floor(docid / dateBlockDocids)
    if (block !== lastBlockNumber) {
      lastBlockDates = dateBlock(block)
      lastBlockNumber = block
    }
    return lastBlockDates[docid % dateBlockDocids]!
  }

  /** Every live docid dated in [fromMs, toMs): a scan of the date column, 1 KiB per 128 documents. */
  function* dateScan(fromMs: number, toMs: number): Paced<Uint32Array> {
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
      count = collectDated(dateBlock(block), fromMs, toMs, block * dateBlockDocids, docids, count)
    }
    return docids.subarray(0, count)
  }

  function* evaluate(queryNode: QueryNode): Paced<Uint32Array> {
    yield
    switch (queryNode.kind) {
      case 'match': {
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
      case 'address':
        return postingSet(context, queryNode.token, queryNode.field === 'from' ? fieldBits.from : fieldBits.to)
      case 'has':
        return postingSet(context, hasAttachmentToken, fieldBits.marker)
      case 'date': {
        const { fromMs, toMs } = dateRange([queryNode])
        return yield* dateScan(fromMs, toMs)
      }
      case 'or': {
        let result: Uint32Array | undefined
        for (const child of queryNode.children) {
          const set = yield* evaluate(child)
          result = result === undefined ? set : union(result, set)
        }
        return result ?? new Uint32Array(0)
      }
      case 'not':
        // parseQuery never leaves a negation where a set of its own is needed.
        throw new IndexError('QUERY_SYNTAX', 'a negation needs a positive term beside it')
      case 'and': {
        const dates = queryNode.children.filter((child) => child.kind === 'date')
        const negated = queryNode.children.filter((child) => child.kind === 'not')
        const positive = queryNode.children.filter((child) => child.kind !== 'date' && child.kind !== 'not')
        const { fromMs, toMs } = dateRange(dates)
        let result: Uint32Array
        if (positive.length === 0) result = yield* dateScan(fromMs, toMs)
        else {
          const sets: Uint32Array[] = []
          for (const child of positive) sets.push(yield* evaluate(child))
          sets.sort((a, b) => a.length - b.length)
          result = sets[0]!
          for (const set of sets.slice(1)) {
            if (result.length === 0) break
            result = intersect(result, set)
          }
          if (dates.length > 0) result = result.filter((docid) => {
            const dateMs = dateOf(docid)
            return dateMs >= fromMs && dateMs < toMs
          })
        }
        for (const child of negated) {
          if (result.length === 0) break
          if (child.kind === 'not') result = difference(result, yield* evaluate(child.child))
        }
        return result
      }
    }
  }

  return { evaluate, dateOf }
}
