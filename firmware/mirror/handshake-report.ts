import { randomBytes as cryptoRandomBytes } from 'node:crypto'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { MirrorError, MirrorErrorCode, RefusalValue } from './errors.js'
import type { IdentityCertificate } from './certificate.js'
import type { AdmitPeer, HandshakeContext, HandshakeProgress, MirrorIdentity } from './handshake.js'
import type { MirrorSecret } from './secret.js'

/** TLS 1.3 only: the handshake proof binds the TLS 1.3 exporter. */
export const tlsVersion = 'TLSv1.3'

/** One handshake outcome, for the audit log. Never carries the secret or a proof. */
export interface MirrorAuditEvent {
  type: 'mirror.handshake'
  outcome: 'accepted' | 'refused'
  direction: 'inbound' | 'outbound'
  /** The reason code of a refusal; null when accepted. */
  code: MirrorErrorCode | null
  /** Which side decided the refusal; null when accepted. */
  origin: 'local' | 'peer' | null
  expected: RefusalValue
  actual: RefusalValue
  message: string | null
  remoteAddress: string
  remotePort: number | null
  /** What the peer claimed in its HELLO (unauthenticated unless accepted); null before it. */
  peerSerial: string | null
  peerStoreId: string | null
  peerFingerprint: string | null
  /** Wall-clock time, milliseconds since the epoch. */
  timeMs: number
}

/** Injected collaborators of the mirror transport. */
export interface MirrorTransportDeps {
  logger: Logger
  clock: Clock
  /** Cryptographically secure random bytes; defaults to node:crypto randomBytes. Tests may fix them. */
  randomBytes?: (size: number) => Buffer
  identity: MirrorIdentity
  certificate: IdentityCertificate
  /** Told of every handshake outcome; a throwing audit sink is logged, never fatal. */
  audit?: (event: MirrorAuditEvent) => void
  /** This side's listening port, said in every HELLO (peers add us by it); 0 when absent or not listening. */
  listenPort?: () => number
}

/** The handshake context both directions start from: identity, secret, randomness, listening port. */
export function handshakeContext(deps: MirrorTransportDeps, secret: MirrorSecret, admit?: AdmitPeer): HandshakeContext {
  return {
    identity: deps.identity,
    secret,
    randomBytes: deps.randomBytes ?? cryptoRandomBytes,
    listenPort: deps.listenPort?.() ?? 0,
    ...(admit ? { admit } : {}),
  }
}

/** Logs one handshake outcome and tells the audit sink (a throwing sink is logged, never fatal). */
export function reportOutcome(
  deps: MirrorTransportDeps,
  logger: Logger,
  base: { direction: 'inbound' | 'outbound'; remoteAddress: string; remotePort: number | null },
  progress: HandshakeProgress,
  error: MirrorError | null,
): void {
  const event: MirrorAuditEvent = {
    type: 'mirror.handshake',
    outcome: error ? 'refused' : 'accepted',
    ...base,
    code: error?.code ?? null,
    origin: error?.origin ?? null,
    expected: error?.expected ?? null,
    actual: error?.actual ?? null,
    message: error?.message ?? null,
    peerSerial: progress.peerSerial ?? null,
    peerStoreId: progress.peerStoreId ?? null,
    peerFingerprint: progress.peerFingerprint ?? null,
    timeMs: deps.clock.now(),
  }
  const { type: _type, timeMs: _time, ...fields } = event
  if (error) logger.warn('mirror handshake refused', fields)
  else logger.info('mirror peer authenticated', fields)
  try {
    deps.audit?.(event)
  } catch (auditError) {
    logger.error('mirror audit sink failed', { error: auditError })
  }
}
