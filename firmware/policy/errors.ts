import { MailkeepError, type ErrorDetails } from '../common/errors.js'

/**
 * Operating errors of retention, holds and the audit log. The HTTP API answers INVALID
 * with 400, NOT_FOUND with 404, EXISTS with 409 and UNAVAILABLE (retryable) with 503.
 */
export type PolicyErrorCode =
  /** A policy, hold or request body failed validation; `fields.problems` lists each as `path: reason`. */
  | 'INVALID'
  /** No policy or hold with that name. */
  | 'NOT_FOUND'
  /** A policy or hold with that name exists already (hold names are never reused, released ones included). */
  | 'EXISTS'
  /** The archive (and so the policy databases) is not open. Retryable. */
  | 'UNAVAILABLE'
  /** A stored policy, hold or audit record is undecodable. */
  | 'CORRUPT'
  /** `audit verify` found the chain damaged (the CLI exits 1; the API answers the report with ok false). */
  | 'AUDIT_DAMAGED'

export class PolicyError extends MailkeepError {
  declare readonly code: PolicyErrorCode
  constructor(code: PolicyErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, { retryable: code === 'UNAVAILABLE', ...details })
    this.name = 'PolicyError'
  }
}
