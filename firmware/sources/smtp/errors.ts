import { MailkeepError, type ErrorDetails } from '../../common/errors.js'
import { ArchiveError } from '../../archive/errors.js'

/**
 * Operating errors of the SMTP listener. Every code that reaches a client carries its
 * SMTP reply: the basic code (RFC 5321) and the enhanced status code (RFC 3463), so the
 * sender knows whether to retry (4xx) or give up (5xx). `retryable` follows the reply
 * class. Start-up failures (bad options, port in use) have no reply.
 */
export type SmtpErrorCode =
  /** RCPT TO an address that is not an archive recipient, from a client outside the trusted networks. 550 5.7.1. */
  | 'RELAY_DENIED'
  /** RCPT TO beyond `recipientsMax` in one transaction. 452 4.5.3 (the client sends the rest in a new transaction). */
  | 'TOO_MANY_RECIPIENTS'
  /** More than `connectionsMax` clients connected at once. 421 4.7.0, then the connection is closed. */
  | 'TOO_MANY_CONNECTIONS'
  /** More than `untrustedConnectionsPerAddressMax` connections from one untrusted address (IPv6: one /64). 421 4.7.0, then closed. */
  | 'TOO_MANY_CONNECTIONS_FROM_ADDRESS'
  /** No MAIL FROM within `mailFromTimeoutMs` of the greeting or of the end of the previous transaction. 421 4.4.2, closed. */
  | 'MAIL_FROM_TIMEOUT'
  /** No complete command line within `commandTimeoutMs` of the previous reply. 421 4.4.2, closed. */
  | 'COMMAND_TIMEOUT'
  /** The message was not complete within `dataTimeoutMs` of DATA. 421 4.4.2, closed, nothing archived. */
  | 'DATA_TIMEOUT'
  /** The message arrived slower than `dataBytesPerSecondMin` on average after `dataRateGraceMs`. 421 4.4.2, closed, nothing archived. */
  | 'DATA_TOO_SLOW'
  /** The connection lasted `sessionTimeoutMs` (a message being archived is answered first). 421 4.4.2, closed. */
  | 'SESSION_TIMEOUT'
  /** The listener is stopping. 421 4.3.2, then the connection is closed. */
  | 'SHUTTING_DOWN'
  /** The message is larger than `sizeBytesMax`, or the store refused its size. 552 5.3.4. */
  | 'MESSAGE_TOO_LARGE'
  /** The archive's data volume is full. 452 4.3.1: the sender keeps the message and retries. */
  | 'STORE_FULL'
  /** Too many message bytes are held in memory across all sessions. 452 4.3.1, retried later. */
  | 'BUFFER_FULL'
  /** The archive failed or did not answer in time (retryable store error, unexpected error, `submitTimeoutMs`). 451 4.3.0. */
  | 'ARCHIVE_UNAVAILABLE'
  /** The archive refused the message for good (non-retryable store error). 554 5.6.0. */
  | 'MESSAGE_REFUSED'
  /** The options are invalid (CIDR syntax, limits). No reply: start() fails. */
  | 'INVALID_OPTIONS'
  /** The listener could not bind its address (in use, not permitted, no such address). No reply: start() fails. */
  | 'LISTEN_FAILED'
  /** start() was called after stop(). No reply. */
  | 'STOPPED'

/** One SMTP reply: basic code, enhanced status code and human-readable text (no CR/LF). */
export interface SmtpReply {
  code: number
  enhancedCode: string
  text: string
}

/** The reply of each code that reaches a client; codes without one never reach the protocol. */
const replyOfCode: Readonly<Partial<Record<SmtpErrorCode, Omit<SmtpReply, 'text'>>>> = {
  RELAY_DENIED: { code: 550, enhancedCode: '5.7.1' },
  TOO_MANY_RECIPIENTS: { code: 452, enhancedCode: '4.5.3' },
  TOO_MANY_CONNECTIONS: { code: 421, enhancedCode: '4.7.0' },
  TOO_MANY_CONNECTIONS_FROM_ADDRESS: { code: 421, enhancedCode: '4.7.0' },
  MAIL_FROM_TIMEOUT: { code: 421, enhancedCode: '4.4.2' },
  COMMAND_TIMEOUT: { code: 421, enhancedCode: '4.4.2' },
  DATA_TIMEOUT: { code: 421, enhancedCode: '4.4.2' },
  DATA_TOO_SLOW: { code: 421, enhancedCode: '4.4.2' },
  SESSION_TIMEOUT: { code: 421, enhancedCode: '4.4.2' },
  SHUTTING_DOWN: { code: 421, enhancedCode: '4.3.2' },
  MESSAGE_TOO_LARGE: { code: 552, enhancedCode: '5.3.4' },
  STORE_FULL: { code: 452, enhancedCode: '4.3.1' },
  BUFFER_FULL: { code: 452, enhancedCode: '4.3.1' },
  ARCHIVE_UNAVAILABLE: { code: 451, enhancedCode: '4.3.0' },
  MESSAGE_REFUSED: { code: 554, enhancedCode: '5.6.0' },
}

const controlCharacters = /[\u0000-\u001f\u007f]/g

/** A typed SMTP listener error; `reply` is what the client is told, null for start-up errors. */
export class SmtpError extends MailkeepError {
  declare readonly code: SmtpErrorCode
  readonly reply: SmtpReply | null

  /**
   * @param replyText Text sent to the client after the codes; defaults to `message`. Must not
   *   contain message content; control characters are replaced so the reply stays one line.
   */
  constructor(code: SmtpErrorCode, message: string, details: ErrorDetails & { replyText?: string } = {}) {
    const base = replyOfCode[code]
    const retryable = base ? base.code < 500 : code === 'LISTEN_FAILED'
    super(code, message, { retryable, ...details })
    this.name = 'SmtpError'
    this.reply = base ? { ...base, text: (details.replyText ?? message).replace(controlCharacters, ' ') } : null
  }
}

/** `550 5.7.1 text`: the reply as one line, without CRLF. */
export function formatReply(reply: SmtpReply): string {
  return `${reply.code} ${reply.enhancedCode} ${reply.text}`
}

/**
 * The error object smtp-server's handler callbacks take: `responseCode` is the basic code
 * and the message starts with the enhanced code, which our connection class (see
 * immediate-greeting.ts) recognizes so smtp-server does not add its own default one.
 */
export function toHandlerError(error: SmtpError): Error & { responseCode: number } {
  const reply = error.reply ?? { code: 451, enhancedCode: '4.3.0', text: 'Local error in processing' }
  return Object.assign(new Error(`${reply.enhancedCode} ${reply.text}`), { responseCode: reply.code })
}

/**
 * Maps a rejection of `IngestPipeline.submit` to the reply the sender gets (STYLE 11):
 * STORE_FULL → 452 4.3.1, MESSAGE_TOO_LARGE → 552 5.3.4, any other retryable ArchiveError
 * → 451 4.3.0, any other ArchiveError → 554 5.6.0. An error that is not an ArchiveError is
 * a fault on our side whose cause we do not know, so the sender is asked to retry (451):
 * a retry costs nothing (ingest is idempotent), a wrong 5xx would lose the message.
 */
export function smtpErrorForIngestFailure(error: unknown): SmtpError {
  const cause = error
  if (error instanceof ArchiveError) {
    const fields = { archiveCode: error.code }
    if (error.code === 'STORE_FULL') {
      return new SmtpError('STORE_FULL', `archive full: ${error.message}`, { cause, fields, replyText: 'Insufficient system storage, try again later' })
    }
    if (error.code === 'MESSAGE_TOO_LARGE') {
      return new SmtpError('MESSAGE_TOO_LARGE', `archive refused the size: ${error.message}`, { cause, fields, replyText: 'Message too large for the archive' })
    }
    if (error.retryable) {
      return new SmtpError('ARCHIVE_UNAVAILABLE', `archive unavailable (${error.code}): ${error.message}`, {
        cause,
        fields,
        replyText: 'Archive temporarily unavailable, try again later',
      })
    }
    return new SmtpError('MESSAGE_REFUSED', `archive refused the message (${error.code}): ${error.message}`, {
      cause,
      fields,
      replyText: `Message refused by the archive (${error.code})`,
    })
  }
  if (error instanceof MailkeepError && !error.retryable) {
    return new SmtpError('MESSAGE_REFUSED', `ingest refused the message (${error.code}): ${error.message}`, {
      cause,
      fields: { ingestCode: error.code },
      replyText: `Message refused by the archive (${error.code})`,
    })
  }
  const message = error instanceof Error ? error.message : String(error)
  return new SmtpError('ARCHIVE_UNAVAILABLE', `ingest failed: ${message}`, { cause, replyText: 'Local error in processing, try again later' })
}
