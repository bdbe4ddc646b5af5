import type { TLSSocket } from 'node:tls'
import type { Clock } from '../common/clock.js'
import { MirrorError } from './errors.js'
import { FramedSocket, handshakeFramePayloadBytesMax } from './protocol.js'
import { serverHandshake, type HandshakeProgress, type MirrorPeerIdentity } from './handshake.js'
import { certificateFingerprint } from './certificate.js'
import { createMirrorChannel } from './channel.js'
import { authFailuresMax, authFailureWindowMs, createAuthFailureLimiter, unpinnedAuthFailuresPerAddressMax } from './auth-limiter.js'
import { reportConnection } from './listener-connections.js'
import type { ConnectionState, ListenerContext } from './listener-types.js'

/**
 * The listener's two bounds on failed proofs: per (address, certificate), and per address for
 * certificates not pinned for any peer (a guesser making a new certificate per try).
 */
export function createInboundAuthLimits(clock: Clock, unpinnedPerAddressMax: number | undefined, isPinnedFingerprint: ((fingerprint: string) => boolean) | undefined) {
  const limiter = createAuthFailureLimiter(clock)
  const unpinnedLimiter = createAuthFailureLimiter(clock, {
    failuresMax: unpinnedPerAddressMax ?? unpinnedAuthFailuresPerAddressMax,
    windowMs: authFailureWindowMs,
  })
  const identityKey = (address: string, fingerprint: string): string => `${address} ${fingerprint}`
  return {
    isPinned: (fingerprint: string): boolean => isPinnedFingerprint?.(fingerprint) === true,
    /** Failed proofs that limit this address and certificate now; 0 when it may try. */
    limitedCount(address: string, fingerprint: string, pinned: boolean): number {
      const key = identityKey(address, fingerprint)
      return limiter.isLimited(key) ? limiter.count(key) : !pinned && unpinnedLimiter.isLimited(address) ? unpinnedLimiter.count(address) : 0
    },
    /** A proof from this address and certificate failed here. */
    recordFailure(address: string, fingerprint: string, pinned: boolean): void {
      limiter.record(identityKey(address, fingerprint))
      if (!pinned) unpinnedLimiter.record(address)
    },
    /** A proof succeeded: its own failures are forgotten. */
    forget: (address: string, fingerprint: string): void => limiter.forget(identityKey(address, fingerprint)),
    /** Keys limited now, over both bounds. */
    limitedKeys: (): number => limiter.limitedCount() + unpinnedLimiter.limitedCount(),
  }
}

/** The listener's bounds on failed proofs, as createInboundAuthLimits makes them. */
export type InboundAuthLimits = ReturnType<typeof createInboundAuthLimits>

/** Refuses a rate-limited address and certificate at once, without reading a frame. @returns true when refused */
function refuseIfLimited(
  context: ListenerContext,
  state: ConnectionState,
  framed: FramedSocket,
  progress: HandshakeProgress,
  certificate: { fingerprint: string; pinned: boolean },
): boolean {
  const limited = context.limits.limitedCount(state.address, certificate.fingerprint, certificate.pinned)
  if (limited === 0) return false
  // Refused without reading a frame or computing anything.
  const error = new MirrorError('RATE_LIMITED', `too many failed proofs from ${state.address} with this certificate; try again later`, {
    expected: `< ${authFailuresMax} failed proofs per ${authFailureWindowMs} ms`,
    actual: limited,
  })
  framed.refuse(error)
  reportConnection(context, state, progress, error)
  return true
}

/** The authenticated peer becomes a channel handed to onChannel; a failing handler closes it. */
async function handOver(context: ListenerContext, state: ConnectionState, framed: FramedSocket, peer: MirrorPeerIdentity, progress: HandshakeProgress): Promise<void> {
  const channel = createMirrorChannel(context.deps, framed, { ...peer, address: state.address, port: state.port }, { direction: 'inbound', idleTimeoutMs: context.idleTimeoutMs })
  state.channel = channel
  reportConnection(context, state, progress, null)
  if (context.stopping()) return void channel.close()
  try {
    await context.deps.onChannel(channel)
  } catch (error) {
    context.logger.error('the mirror channel handler failed; closing the channel', { error, peerSerial: peer.serial })
    await channel.close()
  }
}

/**
 * TLS is up on an accepted connection: a rate-limited address and certificate is refused at
 * once; otherwise the server side of the handshake runs (a failed proof counts toward the
 * limits) and the authenticated peer is handed over as a channel. Every outcome is reported.
 */
export async function handleSecureConnection(context: ListenerContext, socket: TLSSocket): Promise<void> {
  const state = context.connections.get(`${socket.remoteAddress}:${socket.remotePort}`)
  if (!state || !context.handshake) return void socket.destroy()
  const framed = new FramedSocket(socket, handshakeFramePayloadBytesMax)
  state.framed = framed
  const peerCertificate = socket.getPeerX509Certificate()
  const fingerprint = peerCertificate ? certificateFingerprint(peerCertificate) : 'none'
  const progress: HandshakeProgress = { peerFingerprint: fingerprint }
  const pinned = context.limits.isPinned(fingerprint)
  if (refuseIfLimited(context, state, framed, progress, { fingerprint, pinned })) return
  let peer
  try {
    peer = await serverHandshake(framed, { ...context.handshake, listenPort: context.deps.listenPort?.() ?? context.address()?.port ?? 0 }, progress)
  } catch (error) {
    const failure = error as MirrorError
    if (failure.code === 'AUTH_FAILED' && failure.origin === 'local') context.limits.recordFailure(state.address, fingerprint, pinned)
    reportConnection(context, state, progress, failure)
    return
  }
  clearTimeout(state.deadline)
  context.limits.forget(state.address, fingerprint)
  await handOver(context, state, framed, peer, progress)
}
