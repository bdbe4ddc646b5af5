import type { Logger } from '../common/logger.js'
import type { MirrorAuditEvent } from './listener.js'
import type { IdentityEvent } from './sender.js'
import type { InboundRefusal } from './types.js'
import { inboundRefusalsRememberedMax, type MirrorAuditEntry } from './mirror-service-options.js'

/**
 * Adds an inbound refusal to `refusals` (newest first, changed in place): one entry per
 * (address, claimed serial, code) with a count, so a refused peer retrying every few seconds
 * does not push other peers' refusals out of the list; at most inboundRefusalsRememberedMax.
 */
export function rememberInboundRefusal(refusals: InboundRefusal[], event: MirrorAuditEvent & { code: NonNullable<MirrorAuditEvent['code']> }): void {
  const same = refusals.findIndex((refusal) => refusal.address === event.remoteAddress && refusal.serial === event.peerSerial && refusal.code === event.code)
  const count = same === -1 ? 1 : refusals[same]!.count + 1
  if (same !== -1) refusals.splice(same, 1)
  refusals.unshift({
    address: event.remoteAddress,
    serial: event.peerSerial,
    code: event.code,
    expected: event.expected,
    actual: event.actual,
    message: event.message,
    atMs: event.timeMs,
    count,
  })
  refusals.length = Math.min(refusals.length, inboundRefusalsRememberedMax)
}

/** The audit entry of a failed secret proof (`mirror.auth-failed`). */
export function authFailedEntry(event: MirrorAuditEvent): MirrorAuditEntry {
  return {
    action: 'mirror.auth-failed',
    actor: event.remotePort === null ? event.remoteAddress : `${event.remoteAddress}:${event.remotePort}`,
    details: {
      direction: event.direction,
      // Inbound: the peer's proof failed here; outbound: whichever side's proof failed (origin says who decided).
      decidedBy: event.origin,
      claimedSerial: event.peerSerial,
      peerCertificateSha256: event.peerFingerprint,
      atMs: event.timeMs,
    },
  }
}

/** The audit entry of a peer's identity event (pinned, changed, restored, accepted). */
export function identityEntry(event: IdentityEvent): MirrorAuditEntry {
  return {
    action: event.action,
    actor: event.presented.address ?? `${event.peer.host}:${event.peer.port}`,
    details: {
      peer: `${event.peer.host}:${event.peer.port}`,
      expected: event.pinned,
      actual: { serial: event.presented.serial, storeId: event.presented.storeId, fingerprint: event.presented.fingerprint },
      ...(event.presented.direction ? { direction: event.presented.direction } : {}),
      ...(event.cursorReset !== undefined ? { cursorReset: event.cursorReset } : {}),
    },
  }
}

/** Where the mirror service's audit bookkeeping reports (the service's deps; read at each event). */
export interface MirrorAuditSinks {
  /** Told of every handshake outcome, inbound and outbound. */
  onHandshake?: (event: MirrorAuditEvent) => void
  /** The audit log; a throwing sink is logged, never fatal. */
  audit?: (entry: MirrorAuditEntry) => void
}

/** The service's audit and refusal bookkeeping: handshake outcomes, identity events, inbound refusals for status. */
export function createMirrorAudit(logger: Logger, deps: MirrorAuditSinks) {
  const inboundRefusals: InboundRefusal[] = []

  function write(entry: MirrorAuditEntry): void {
    if (!deps.audit) return
    try {
      deps.audit(entry)
    } catch (error) {
      logger.error('mirror audit sink failed', { error })
    }
  }

  return {
    /** Every handshake outcome: inbound refusals are remembered, failed proofs audited. */
    handshake(event: MirrorAuditEvent): void {
      if (event.direction === 'inbound' && event.outcome === 'refused' && event.code !== null) rememberInboundRefusal(inboundRefusals, { ...event, code: event.code })
      deps.onHandshake?.(event)
      if (event.code === 'AUTH_FAILED') write(authFailedEntry(event))
    },
    write,
    identity: (event: IdentityEvent): void => write(identityEntry(event)),
    /** The inbound refusals remembered, newest first (copies). */
    inboundRefusals: (): InboundRefusal[] => inboundRefusals.map((refusal) => ({ ...refusal })),
  }
}
