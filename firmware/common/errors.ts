/**
 * Base of every typed operating error in mailkeep (STYLE 11). Each subsystem has its own
 * `errors.ts` that derives from `MailkeepError` with stable codes. Programmer errors use
 * node:assert instead and are never caught to be hidden.
 */
export interface ErrorDetails {
  /** Whether trying the same operation again later can succeed (disk full: yes; bad input: no). */
  retryable?: boolean
  /** Structured fields for logs and API bodies. Never put secrets here. */
  fields?: Record<string, unknown>
  cause?: unknown
}

export class MailkeepError extends Error {
  readonly code: string
  readonly retryable: boolean
  readonly fields: Record<string, unknown>

  constructor(code: string, message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'MailkeepError'
    this.code = code
    this.retryable = details.retryable ?? false
    this.fields = details.fields ?? {}
  }

  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, retryable: this.retryable, ...this.fields }
  }
}

/** True when `error` is a MailkeepError with the given code. */
export function hasCode(error: unknown, code: string): error is MailkeepError {
  return error instanceof MailkeepError && error.code === code
}

/** Exit codes of every mailkeep process (ARCHITECTURE contract). */
export const exitCodes = { ok: 0, failure: 1, usage: 2, config: 78 } as const
