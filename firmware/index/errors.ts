import { MailkeepError, type ErrorDetails } from '../common/errors.js'

/**
 * Operating errors of the search index (STYLE 11). Query errors are the user's to fix and
 * never retryable; store errors follow the archive's rules (the index lives in the same
 * LMDB environment).
 */
export type IndexErrorCode =
  /** The query text is malformed or over a limit; `fields.position` is the 0-based character offset. */
  | 'QUERY_SYNTAX'
  /** The query ran over its time budget (`queryTimeMsMax`: many phrases of common words over a large archive); narrow it. Retryable: a quieter moment may do. */
  | 'QUERY_TOO_EXPENSIVE'
  /** Too many searches were waiting for their turn (`searchesWaitingMax`); retryable. */
  | 'SEARCH_BUSY'
  /** A page size that is not a positive integer (HTTP `limit`). */
  | 'BAD_LIMIT'
  /** A pagination cursor that this index did not produce (or from an older layout). */
  | 'BAD_CURSOR'
  /** The index's databases were not opened (`databases(root)` was not called) or were closed. */
  | 'INDEX_UNAVAILABLE'
  /** Stored index data could not be decoded: rebuild the index. */
  | 'INDEX_CORRUPT'

export class IndexError extends MailkeepError {
  declare readonly code: IndexErrorCode
  constructor(code: IndexErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, { retryable: false, ...details })
    this.name = 'IndexError'
  }
}

/**
 * A malformed query. `position` is the 0-based offset (in UTF-16 code units, as JavaScript
 * strings count) of the character where the problem was found; `message` says what was
 * expected there. The HTTP API answers 400 with both; the CLI points at the position.
 */
export class QuerySyntaxError extends IndexError {
  readonly position: number
  constructor(position: number, message: string) {
    super('QUERY_SYNTAX', `${message} (at position ${position})`, { fields: { position, reason: message } })
    this.name = 'QuerySyntaxError'
    this.position = position
  }
}
