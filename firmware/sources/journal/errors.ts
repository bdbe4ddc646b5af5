import { MailkeepError, type ErrorDetails } from '../../common/errors.js'

/**
 * Operating errors of the journal puller (IMAP/POP3). Every code says whether trying again
 * later can help (`retryable`); the scheduler retries every failed pass on its next run
 * with capped exponential backoff either way, because a server-side fix (a reset password,
 * a renewed certificate) needs no action on the appliance.
 *
 * Messages and fields never contain the source's password: texts that come from a server
 * or a client library pass through `redactSecret` first.
 */
export type JournalErrorCode =
  /** TCP connection refused, reset, unreachable or the host did not resolve. Retryable. */
  | 'CONNECT_FAILED'
  /** A connect, greeting or command deadline passed. Retryable. */
  | 'TIMEOUT'
  /** The TLS handshake failed or the certificate was refused, or STARTTLS was not offered. Not retryable. */
  | 'TLS_FAILED'
  /** The server refused the user name or password. Not retryable. */
  | 'AUTH_FAILED'
  /** The server is temporarily unable to serve the mailbox (POP3 [IN-USE], [SYS/TEMP]; IMAP [UNAVAILABLE]). Retryable. */
  | 'SERVER_UNAVAILABLE'
  /** The configured mailbox does not exist. Not retryable. */
  | 'MAILBOX_NOT_FOUND'
  /** The mailbox does not accept the `$MailkeepArchived` keyword that 'flag' mode needs. Not retryable. */
  | 'KEYWORD_NOT_PERMITTED'
  /** The server answered something we cannot use (a refused command, a malformed reply). Retryable. */
  | 'PROTOCOL_ERROR'
  /** A reply broke one of our named limits (line length, listing size, message size). Retryable. */
  | 'LIMIT_EXCEEDED'
  /** The source's options are invalid. Not retryable. */
  | 'INVALID_OPTIONS'
  /** The POP3 'flag' mode state file could not be read or written. Retryable. */
  | 'STATE_FILE_FAILED'
  /** The ingest pipeline failed with an error that is not a typed MailkeepError. Retryable. */
  | 'INGEST_FAILED'
  /** The source was stopped while the operation ran or before it started. Retryable. */
  | 'STOPPED'

const retryableCodes: ReadonlySet<JournalErrorCode> = new Set<JournalErrorCode>([
  'CONNECT_FAILED',
  'TIMEOUT',
  'SERVER_UNAVAILABLE',
  'PROTOCOL_ERROR',
  'LIMIT_EXCEEDED',
  'STATE_FILE_FAILED',
  'INGEST_FAILED',
  'STOPPED',
])

/** A typed journal pull error; `retryable` follows from the code unless the caller overrides it. */
export class JournalError extends MailkeepError {
  declare readonly code: JournalErrorCode
  constructor(code: JournalErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, { retryable: retryableCodes.has(code), ...details })
    this.name = 'JournalError'
  }
}

const redactedText = '[redacted]'

/**
 * Replaces every occurrence of `secret` in `text` with `[redacted]`. Used on every text
 * that comes from a server or a client library before it goes into an error or a log
 * record: a server may echo a command line back in its refusal.
 */
export function redactSecret(text: string, secret: string): string {
  if (secret.length === 0) return text
  return text.split(secret).join(redactedText)
}
