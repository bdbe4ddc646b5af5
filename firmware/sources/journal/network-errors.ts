import { JournalError, redactSecret } from './errors.js'

/** Node error codes that mean the certificate or the TLS handshake was refused. */
const tlsErrorCodes: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'HOSTNAME_MISMATCH',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'EPROTO',
])

/** Node error codes of a connection that could not be made or was lost. */
const connectErrorCodes: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'EADDRNOTAVAIL',
])

/** True when a Node error looks like a refused certificate or a failed TLS handshake. */
export function isTlsError(error: unknown): boolean {
  if (!(error instanceof Error)) return false
  const code = String((error as { code?: unknown }).code ?? '')
  if (tlsErrorCodes.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) return true
  return (error as { library?: unknown }).library === 'SSL routines'
}

/**
 * Turns an error from `node:net`/`node:tls` (or one already typed) into a JournalError
 * with the right code. The text is redacted of `secret` because some libraries echo
 * the command they were sending.
 *
 * @param what short description of the step, e.g. "connecting to imap.example:993"
 */
export function toJournalNetworkError(error: unknown, what: string, secret: string): JournalError {
  if (error instanceof JournalError) return error
  const message = redactSecret(error instanceof Error ? error.message : String(error), secret)
  const code = error instanceof Error ? String((error as { code?: unknown }).code ?? '') : ''
  const fields = { detail: message, ...(code ? { errno: code } : {}) }
  if (isTlsError(error)) return new JournalError('TLS_FAILED', `TLS failed while ${what}: ${message}`, { fields })
  if (code === 'ETIMEDOUT') return new JournalError('TIMEOUT', `timed out while ${what}`, { fields })
  if (connectErrorCodes.has(code)) return new JournalError('CONNECT_FAILED', `connection failed while ${what}: ${message}`, { fields })
  return new JournalError('PROTOCOL_ERROR', `failed while ${what}: ${message}`, { fields })
}
