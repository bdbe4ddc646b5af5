import { ImapFlow, type ImapFlowError } from 'imapflow'
import { JournalError, redactSecret, type JournalErrorCode } from './errors.js'
import { isTlsError, toJournalNetworkError } from './network-errors.js'
import type { ResolvedJournalOptions } from './types.js'

/**
 * The IMAP client of a journal pass (imapflow) as the pass needs it: configured for
 * unchanged bytes and bounded replies, its errors mapped to JournalErrors, and the
 * sequence sets that keep command lines short.
 */

/** Longest IMAP response line we accept, in bytes (a SEARCH answer of ~2 million UIDs). */
export const imapResponseLineBytesMax = 16 * 1024 * 1024
/** Room for framing around the largest literal in one response, in bytes. */
export const imapResponseOverheadBytes = 1024 * 1024
/** Smallest literal we accept whatever `messageBytesMax` is, in bytes, so a tiny message limit cannot break ordinary replies. */
export const imapLiteralBytesMin = 64 * 1024

/** Compresses sorted UIDs into an IMAP sequence set (`1:5,9,12:14`) to keep command lines short. */
export function toSequenceSet(sortedUids: readonly number[]): string {
  const ranges: string[] = []
  let start = -1
  let previous = -1
  for (const uid of sortedUids) {
    if (uid === previous + 1 && start >= 0) {
      previous = uid
      continue
    }
    if (start >= 0) ranges.push(start === previous ? `${start}` : `${start}:${previous}`)
    start = uid
    previous = uid
  }
  if (start >= 0) ranges.push(start === previous ? `${start}` : `${start}:${previous}`)
  return ranges.join(',')
}

const timeoutCodes = new Set(['CONNECT_TIMEOUT', 'GREETING_TIMEOUT', 'UPGRADE_TIMEOUT', 'ETIMEOUT', 'ETIMEDOUT'])
const closedCodes = new Set(['NoConnection', 'EConnectionClosed', 'ClosedAfterConnectText', 'StateLogout'])
const limitCodes = new Set(['LineTooLarge', 'LiteralTooLarge', 'ResponseTooLarge', 'TooManyTokens', 'TooManyResponses', 'MAX_IMAP_NESTING_REACHED'])

/** Maps an imapflow error to a JournalError; texts are redacted of the password. */
export function toImapError(error: unknown, what: string, password: string): JournalError {
  if (error instanceof JournalError) return error
  const imapError = (error ?? {}) as ImapFlowError
  const code = String(imapError.code ?? '')
  const serverText = typeof imapError.responseText === 'string' ? imapError.responseText : ''
  const text = redactSecret([error instanceof Error ? error.message : String(error), serverText].filter(Boolean).join(': '), password)
  const fields: Record<string, unknown> = { detail: text }
  if (code) fields.imapCode = code
  if (imapError.serverResponseCode) fields.serverResponseCode = imapError.serverResponseCode
  const typed = (journalCode: JournalErrorCode, message: string): JournalError => new JournalError(journalCode, message, { fields })
  if (imapError.authenticationFailed || imapError.serverResponseCode === 'AUTHENTICATIONFAILED') return typed('AUTH_FAILED', `the IMAP server refused the login while ${what}: ${text}`)
  if (imapError.serverResponseCode === 'UNAVAILABLE') return typed('SERVER_UNAVAILABLE', `the IMAP server is unavailable while ${what}: ${text}`)
  if (imapError.tlsFailed || code === 'ClosedAfterConnectTLS' || code === 'STARTTLS_INJECTION' || isTlsError(error)) return typed('TLS_FAILED', `TLS failed while ${what}: ${text}`)
  if (imapError.mailboxMissing || imapError.serverResponseCode === 'NONEXISTENT') return typed('MAILBOX_NOT_FOUND', `the mailbox does not exist (${what}): ${text}`)
  if (timeoutCodes.has(code)) return typed('TIMEOUT', `timed out while ${what}: ${text}`)
  if (limitCodes.has(code)) return typed('LIMIT_EXCEEDED', `a reply broke a size limit while ${what}: ${text}`)
  if (closedCodes.has(code)) return typed('CONNECT_FAILED', `the connection was lost while ${what}: ${text}`)
  const network = toJournalNetworkError(error, what, password)
  return network.code === 'PROTOCOL_ERROR' ? typed('PROTOCOL_ERROR', `IMAP failed while ${what}: ${text}`) : network
}

/** Throws PROTOCOL_ERROR when imapflow reported a refused command by returning false. */
export function expectDone(done: boolean | undefined, what: string): void {
  if (!done) throw new JournalError('PROTOCOL_ERROR', `the IMAP server refused ${what}`)
}

/**
 * An imapflow client for one pass, not connected yet. Its own logger is off (it would see
 * protocol traffic); BINARY is off so the archive gets the bytes as stored; every wait and
 * every reply is bounded.
 */
export function createImapClient(options: ResolvedJournalOptions): ImapFlow {
  return new ImapFlow({
    host: options.host,
    port: options.port,
    secure: options.tls === 'implicit',
    // 'starttls' must upgrade or fail; 'none' must not upgrade (explicit operator choice).
    doSTARTTLS: options.tls === 'starttls' ? true : options.tls === 'none' ? false : undefined,
    tls: { rejectUnauthorized: options.tlsRejectUnauthorized },
    auth: { user: options.user, pass: options.password },
    // imapflow's own logger would see protocol traffic: ours gets only typed, redacted errors.
    logger: false,
    emitLogs: false,
    disableAutoIdle: true,
    // BINARY fetches may decode transfer encodings; the archive needs the bytes as stored.
    disableBinary: true,
    connectionTimeout: options.connectTimeoutMs,
    greetingTimeout: options.connectTimeoutMs,
    socketTimeout: options.commandTimeoutMs,
    // A server that understated RFC822.SIZE cannot make us buffer more than this.
    maxLiteralSize: Math.max(options.messageBytesMax, imapLiteralBytesMin),
    maxLineLength: imapResponseLineBytesMax,
    maxResponseSize: Math.max(options.messageBytesMax, imapResponseLineBytesMax) + imapResponseOverheadBytes,
    clientInfo: { name: 'mailkeep' },
  })
}
