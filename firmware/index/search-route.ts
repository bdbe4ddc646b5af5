import { IndexError } from './errors.js'
import type { SearchIndex, SearchResult } from './search-index.js'
import type { SearchScope } from './index-types.js'

/**
 * The handler of `GET /api/v1/search?q=&limit=&cursor=` for firmware/api's routes, narrowed
 * to `scope` when given (a `user`'s own mail)
 * (the API answers a non-retryable MailkeepError with 400 and its JSON, so a malformed
 * query comes back as `{ code: 'QUERY_SYNTAX', position, reason, message }`).
 *
 * @returns the route; it resolves to a SearchResult
 * @throws (from the route) QuerySyntaxError for a missing or malformed `q`; IndexError
 *   BAD_LIMIT for a `limit` that is not a positive integer; BAD_CURSOR; IndexError SEARCH_BUSY (more searches waiting than
 *   the queue holds) and QUERY_TOO_EXPENSIVE (over the time budget), both retryable: the API
 *   answers 503
 */
export function createSearchRoute(index: Pick<SearchIndex, 'search'>): (request: { url: URL; scope?: SearchScope | undefined }) => Promise<SearchResult> {
  return async ({ url, scope }) => {
    const query = url.searchParams.get('q') ?? ''
    const limitText = url.searchParams.get('limit')
    let limit: number | undefined
    if (limitText !== null) {
      limit = Number(limitText)
      if (!/^\d{1,6}$/.test(limitText) || limit < 1)
        throw new IndexError('BAD_LIMIT', `limit must be a positive integer, got '${limitText.slice(0, 20)}'`, { fields: { limit: limitText.slice(0, 20) } })
    }
    return index.search(query, { limit, cursor: url.searchParams.get('cursor'), ...(scope ? { scope } : {}) })
  }
}
