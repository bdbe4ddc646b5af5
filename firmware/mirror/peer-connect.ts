import assert from 'node:assert/strict'
import { connect as connectTls } from 'node:tls'
import { MirrorError } from './errors.js'
import { FramedSocket, handshakeFramePayloadBytesMax, socketFailure } from './protocol.js'
import { clientHandshake, normalizeRemoteAddress, type AdmitPeer, type HandshakeProgress } from './handshake.js'
import { channelIdleTimeoutMsDefault, createMirrorChannel, type MirrorChannel } from './channel.js'
import { toMirrorSecret, type MirrorSecret } from './secret.js'
import { handshakeContext, reportOutcome, tlsVersion, type MirrorTransportDeps } from './handshake-report.js'

const normalizeAddress = normalizeRemoteAddress

/** Which peer to connect to and how long to try. */
export interface ConnectToPeerOptions {
  host: string
  port: number
  /** The secret string or its derived form (deriveMirrorSecret; saves ~50–100 ms per call). */
  sharedSecret: string | MirrorSecret
  /** From connect to an authenticated channel, in milliseconds. */
  timeoutMs: number
  /** Idle timeout of the channel, in milliseconds. */
  idleTimeoutMs?: number
  /** Admission of the proven peer (its pinned identity); admitted when absent. */
  admit?: AdmitPeer
}

const connectFailureCodes = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'EADDRNOTAVAIL'])

/**
 * Connects to a peer's listener and runs the client side of the handshake.
 * @returns an authenticated outbound MirrorChannel
 * @throws MirrorError — CONNECT_FAILED (retryable: refused, unreachable, DNS), TIMEOUT
 *   (retryable), TLS_FAILED / CONNECTION_CLOSED / BUSY / RATE_LIMITED (retryable), or a
 *   refusal with its reason code and expected/actual (PROTOCOL_MISMATCH, MODEL_NOT_ELIGIBLE,
 *   MODEL_MISMATCH, FIRMWARE_MISMATCH, SERIAL_CONFLICT, AUTH_FAILED, PROTOCOL: not retryable
 *   by default; the caller decides), SECRET_WEAK before connecting
 */
export async function connectToPeer(deps: MirrorTransportDeps, options: ConnectToPeerOptions): Promise<MirrorChannel> {
  assert.ok(options.timeoutMs > 0, 'timeoutMs must be positive')
  const logger = deps.logger.child('client', { peerHost: options.host, peerPort: options.port })
  const context = handshakeContext(deps, await toMirrorSecret(options.sharedSecret), options.admit)
  const socket = connectTls({
    host: options.host,
    port: options.port,
    key: deps.certificate.privateKeyPem,
    cert: deps.certificate.certificatePem,
    // See the listener: trust comes from the proof, and both certificates are bound into it.
    rejectUnauthorized: false,
    minVersion: tlsVersion,
    maxVersion: tlsVersion,
  })
  // Small frames (batch ends, the last frame of a batch) must not wait for Nagle; see the listener.
  socket.setNoDelay(true)
  let framed: FramedSocket | undefined
  let timer: NodeJS.Timeout | undefined
  const timeout = new MirrorError('TIMEOUT', `no authenticated channel to ${options.host}:${options.port} within ${options.timeoutMs} ms`, {
    expected: `<= ${options.timeoutMs} ms`,
    actual: null,
  })
  try {
    await new Promise<void>((resolve, reject) => {
      timer = setTimeout(() => {
        if (framed) framed.refuse(timeout)
        else reject(timeout)
        if (!framed) socket.destroy()
      }, options.timeoutMs).unref()
      socket.once('secureConnect', () => resolve())
      socket.once('error', (error: NodeJS.ErrnoException) => {
        if (framed) return
        reject(
          connectFailureCodes.has(error.code ?? '')
            ? new MirrorError('CONNECT_FAILED', `cannot connect to ${options.host}:${options.port}: ${error.code}`, {
                cause: error,
                fields: { causeCode: error.code },
              })
            : socketFailure(error),
        )
      })
    })
    framed = new FramedSocket(socket, handshakeFramePayloadBytesMax)
    const progress: HandshakeProgress = {}
    const base = { direction: 'outbound' as const, remoteAddress: socket.remoteAddress ? normalizeAddress(socket.remoteAddress) : options.host, remotePort: options.port }
    let peer
    try {
      peer = await clientHandshake(framed, context, progress)
    } catch (error) {
      reportOutcome(deps, logger, base, progress, error as MirrorError)
      throw error
    }
    reportOutcome(deps, logger, base, progress, null)
    return createMirrorChannel(
      deps,
      framed,
      { ...peer, address: base.remoteAddress, port: options.port },
      { direction: 'outbound', idleTimeoutMs: options.idleTimeoutMs ?? channelIdleTimeoutMsDefault },
    )
  } catch (error) {
    // Once framed, the handshake has already closed the socket (after sending any REFUSE).
    if (!framed) socket.destroy()
    throw error
  } finally {
    clearTimeout(timer)
  }
}
