import { MailkeepError, type ErrorDetails } from '../common/errors.js'

/**
 * Reason codes a mirror peer may send in a REFUSE frame. Each refusal names what this
 * side expected and what it got (STYLE 15), and both sides report the same values: the
 * side that detected the problem sends them, the other side reports what it received.
 */
export const refusalCodes = [
  'PROTOCOL_MISMATCH' /** the peer speaks another mirror protocol version */,
  'MODEL_NOT_ELIGIBLE' /** a model below 450 may not mirror (either side) */,
  'MODEL_MISMATCH' /** peers must be the same model */,
  'FIRMWARE_MISMATCH' /** peers must run the same firmware version */,
  'SERIAL_CONFLICT' /** the peer has this appliance's own serial: a loop to itself or a cloned identity */,
  'AUTH_FAILED' /** the proof of the shared secret did not verify */,
  'RATE_LIMITED' /** too many failed proofs from this address lately */,
  'PROTOCOL' /** malformed or unexpected frame */,
  'TIMEOUT' /** a phase took longer than its limit */,
  'BUSY' /** the listener has no room for another connection */,
  'FRAME_TOO_LARGE' /** a frame above the size limit */,
  'IDENTITY_CHANGED' /** a proven peer's serial, store id or certificate differs from the one pinned; a technician must accept it */,
  'NOT_A_PEER' /** the appliance proved the secret but is not a configured peer: a pending join */,
] as const

export type MirrorRefusalCode = (typeof refusalCodes)[number]

/** Every code a MirrorError can carry: the refusal codes plus failures seen only locally. */
export type MirrorErrorCode =
  | MirrorRefusalCode
  | 'CONNECT_FAILED' /** TCP connect failed (ECONNREFUSED, EHOSTUNREACH, DNS…) */
  | 'TLS_FAILED' /** the TLS handshake failed */
  | 'CONNECTION_CLOSED' /** the connection ended before the exchange finished */
  | 'CLOSED' /** the channel was already closed when it was used */
  | 'SECRET_WEAK' /** the shared secret fails the strength rules */
  | 'CERTIFICATE_INVALID' /** the stored certificate or key cannot be used */
  | 'LISTEN_FAILED' /** the listener cannot bind its address */
  // Copy layer (queue, sender, receiver, service); local only, never sent in a REFUSE.
  | 'BATCH_FAILED' /** the peer could not store a batch durably; `retryable` is what the peer said */
  | 'ACK_TIMEOUT' /** batches in flight and no acknowledgement within ackTimeoutMs */
  | 'PEER_UNKNOWN' /** an operation named a peer that is not configured */
  | 'PEER_EXISTS' /** addPeer named a peer that is already configured */
  | 'PEER_INVALID' /** a peer address that cannot be used (empty host, port outside 1–65535) */
  | 'STATE_FAILED' /** a mirror state file could not be written (disk full, permissions) */
  | 'STOPPED' /** the mirror service is stopped or stopping */
  | 'NOTHING_PENDING' /** `mirror accept` named a peer with no changed identity and no pending join */
  | 'VERIFY_FAILED' /** `mirror verify` could not finish: the peer is not connected, answered with an error or a bad signature */
  | 'VERIFY_BUSY' /** a verify of this peer is already running */
  | 'REQUEUE_FULL' /** requeued ids for a peer would pass requeuedIdsMax; retry once the peer has taken some */

/** A value in a refusal's expected/actual pair: a model number, a version, a limit. */
export type RefusalValue = string | number | null

/** Codes whose failure is usually transient: the caller may retry the same peer later. */
const retryableCodes: ReadonlySet<MirrorErrorCode> = new Set<MirrorErrorCode>([
  'CONNECT_FAILED',
  'TLS_FAILED',
  'CONNECTION_CLOSED',
  'TIMEOUT',
  'RATE_LIMITED',
  'BUSY',
  'ACK_TIMEOUT',
  'STATE_FAILED',
])

/** Details of a MirrorError: the compared values and which side decided. */
export interface MirrorErrorDetails extends ErrorDetails {
  expected?: RefusalValue
  actual?: RefusalValue
  /** `peer`: the other side sent this refusal; `local`: this side decided it. */
  origin?: 'local' | 'peer'
}

/**
 * A failure of the mirror transport or of the trust handshake. `expected`/`actual` carry the
 * values compared (null where nothing was compared); `retryable` defaults per code (connect
 * failures, timeouts and rate limits: yes; model, firmware and auth refusals: no) but the
 * caller, e.g. a sender with capped backoff, makes the final decision.
 */
export class MirrorError extends MailkeepError {
  declare readonly code: MirrorErrorCode
  readonly expected: RefusalValue
  readonly actual: RefusalValue
  readonly origin: 'local' | 'peer'

  constructor(code: MirrorErrorCode, message: string, details: MirrorErrorDetails = {}) {
    const expected = details.expected ?? null
    const actual = details.actual ?? null
    const origin = details.origin ?? 'local'
    super(code, message, {
      ...details,
      retryable: details.retryable ?? retryableCodes.has(code),
      fields: { ...(details.fields ?? {}), expected, actual, origin },
    })
    this.name = 'MirrorError'
    this.expected = expected
    this.actual = actual
    this.origin = origin
  }
}

/** True when `code` may travel in a REFUSE frame. */
export function isRefusalCode(code: unknown): code is MirrorRefusalCode {
  return typeof code === 'string' && (refusalCodes as readonly string[]).includes(code)
}
