import { PolicyError } from '../firmware/policy/errors.js'
import type { SearchIndex } from '../firmware/index/search-index.js'

/**
 * Budget of one page of a retention or hold query, in ms: these walk the whole archive page
 * by page (each page is one paced search), and a hold that cannot be evaluated stops purges.
 */
export const policyQueryTimeMsMax = 60_000

/**
 * Ids of every archived message a query matches, page by page through the search index:
 * how retention and holds evaluate a `query` criterion (firmware/policy's `matchQuery`).
 * Each page is one paced search of at most `policyQueryTimeMsMax`; the event loop gets a
 * turn between pages. It joins the two layers here, in boot, so that the index never
 * imports the policy layer; it throws firmware/policy's error because retention is its one
 * caller: the API answers it 503 (retryable), as for any retention that must wait.
 * @throws PolicyError UNAVAILABLE while the index has another layout or is being rebuilt
 * @throws IndexError from a page's search (QUERY_SYNTAX, QUERY_TOO_EXPENSIVE, SEARCH_BUSY)
 */
export async function allMatches(index: Pick<SearchIndex, 'layoutCurrent' | 'complete' | 'search' | 'options'>, query: string): Promise<Set<string>> {
  // An index of another layout indexes nothing new, and one being rebuilt (or left half
  // rebuilt) lacks messages: a query would miss mail, and a hold by query would not protect
  // it. Retention waits for the rebuild instead.
  if (!index.layoutCurrent()) throw new PolicyError('UNAVAILABLE', 'the search index has another layout: purges that use a query wait for the index rebuild')
  if (!index.complete()) throw new PolicyError('UNAVAILABLE', 'the search index is being rebuilt: purges that use a query wait until it holds every message')
  const ids = new Set<string>()
  let cursor: string | null = null
  do {
    const page = await index.search(query, { limit: index.options.searchLimitMax, cursor, timeMsMax: policyQueryTimeMsMax })
    for (const hit of page.hits) ids.add(hit.id)
    cursor = page.nextCursor
    await new Promise((resolve) => setImmediate(resolve))
  } while (cursor)
  return ids
}
