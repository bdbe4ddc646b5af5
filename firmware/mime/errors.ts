import { MailkeepError, type ErrorDetails } from '../common/errors.js'

/**
 * Error codes of firmware/mime. None of them leaves the service: `parse` and
 * `unwrapJournal` never throw, they turn these into flags (STYLE 10, 11).
 *
 * - PARSE_BUDGET_EXCEEDED: a parse ran past its time budget (becomes `parse-timeout`).
 */
export type MimeErrorCode = 'PARSE_BUDGET_EXCEEDED'

/** A typed firmware/mime error; not retryable (the same bytes fail the same way). */
export class MimeError extends MailkeepError {
  declare readonly code: MimeErrorCode

  constructor(code: MimeErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, details)
    this.name = 'MimeError'
  }
}
