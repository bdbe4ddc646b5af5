/** The index's options and the shapes its public methods return (see search-index.ts). */

import type { DocumentLimits } from './index-input.js'

export interface IndexOptions extends DocumentLimits {
  /** Documents kept in the pending tail before their postings are flushed, in documents. */
  pendingDocumentsMax: number
  /**
   * Build a flush's posting blocks between event-loop turns (in slices of `flushSliceMs`)
   * once the tail holds `pendingDocumentsMax` documents, and write them in a transaction
   * of their own, instead of building them inside the ingest that fills the tail (which
   * held the event loop for ~1 s per 4,096 corpus messages). The tail grows meanwhile; at
   * twice `pendingDocumentsMax` an ingest flushes it in its own transaction regardless.
   */
  flushInBackground: boolean
  /** Longest slice of a background flush build before it lets the event loop run, in ms. */
  flushSliceMs: number
  /** Hits per page when the caller gives no limit. */
  searchLimitDefault: number
  /** Most hits per page. */
  searchLimitMax: number
  /** Time budget of one search from when its turn comes, in ms; over it the search fails with QUERY_TOO_EXPENSIVE (config `search.queryTimeMsMax`). */
  queryTimeMsMax: number
  /** Longest slice of a paced search before the event loop gets a turn, in ms (config `search.sliceMs`). */
  searchSliceMs: number
  /** Paced searches that may wait for their turn while one evaluates; more fail with SEARCH_BUSY (config `search.waitingMax`). */
  searchesWaitingMax: number
  /** Messages indexed per write transaction by `rebuild`. */
  rebuildBatchMessages: number
  /** Ids listed per kind (missing, extra, stale) in a verify report; the counts are exact. */
  verifyListedIdsMax: number
}

/** Defaults sized for an appliance with a few GiB of RAM. */
export const defaultIndexOptions: Readonly<IndexOptions> = Object.freeze({
  tokensPerDocumentMax: 50_000,
  addressesPerDocumentMax: 2_000,
  snippetTextCharsMax: 4_096,
  textCharsPerDocumentMax: 1_000_000,
  futureDateSkewMsMax: 24 * 60 * 60 * 1000,
  pendingDocumentsMax: 4_096,
  flushInBackground: true,
  flushSliceMs: 4,
  searchLimitDefault: 20,
  searchLimitMax: 100,
  queryTimeMsMax: 2_000,
  searchSliceMs: 4,
  searchesWaitingMax: 8,
  rebuildBatchMessages: 500,
  verifyListedIdsMax: 100,
})

export interface SearchHit {
  /** Archive id (64 hex). */
  id: string
  /** The date the message is ordered by, ms since the epoch (Date header, or archive time when missing or in the future). */
  dateMs: number
  /** First sender, `Name <address>`. */
  from: string
  subject: string
  /** HTML-escaped excerpt with matches in `<mark>`; see makeSnippet. */
  snippet: string
}

export interface SearchResult {
  /** Number of messages matching the query (all pages). */
  total: number
  /** Newest first (by dateMs, then by index order). */
  hits: SearchHit[]
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null
}

export interface SearchOptions {
  /** Hits per page; default `searchLimitDefault`, at most `searchLimitMax`. */
  limit?: number
  /** `nextCursor` of the previous page. */
  cursor?: string | null
  /** This search's budget in ms instead of `queryTimeMsMax` (retention's queries over a whole archive). */
  timeMsMax?: number
  /** Only messages inside this scope count: hits, total and cursor (a `user`'s own mail). */
  scope?: SearchScope
}

/**
 * A search narrowed to the messages of some addresses: the query is joined (AND) with
 * `from:ADDRESS OR to:ADDRESS` for each of them (every recipient field: To, Cc, Bcc,
 * envelope and journal BCC), then every match is put to `admits` — the scope rule over the
 * message's metadata (firmware/access/scope.ts), which has the last word, since the index
 * folds addresses (case, diacritics, very long ones cut) and the rule compares them exactly.
 */
export interface SearchScope {
  /** Normalized addresses; none: nothing matches. */
  addresses: readonly string[]
  /** Whether the message with this archive id is inside the scope. */
  admits(id: string): boolean
}

export interface VerifyReport {
  /** Ids the archive listed. */
  archived: number
  /** Documents in the index. */
  indexed: number
  missingCount: number
  extraCount: number
  /** Indexed documents whose forward record differs from a fresh analysis (only with `getInput`). */
  staleCount: number
  /** The first `verifyListedIdsMax` of each kind. */
  missing: string[]
  extra: string[]
  stale: string[]
  ok: boolean
}

export interface IndexStats {
  documents: number
  /** Documents not yet in posting chunks (answered from the tail). */
  pending: number
  /** Flushes so far (posting chunks per token at most this many, plus patches). */
  flushes: number
  /** Documents removed since the last rebuild (their postings are garbage until then). */
  removedSinceRebuild: number
  /** A rebuild is under way, or was interrupted and must be run again: the index does not hold every message. */
  rebuilding: boolean
  /** False for an index written with another layout (it is rebuilt at start). */
  layoutCurrent: boolean
}

/** An async or sync source of values. */
export type Source<T> = AsyncIterable<T> | Iterable<T>
