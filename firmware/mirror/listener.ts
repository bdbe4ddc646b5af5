import assert from 'node:assert/strict'
import type { Socket, AddressInfo } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import { mirroringModelMin } from '../../config/models.js'
import { MirrorError } from './errors.js'
import { FramedSocket, handshakeFramePayloadBytesMax } from './protocol.js'
import { normalizeRemoteAddress, serverHandshake, type AdmitPeer, type HandshakeContext, type HandshakeProgress } from './handshake.js'
import { certificateFingerprint } from './certificate.js'
import { channelIdleTimeoutMsDefault, createMirrorChannel, type MirrorChannel } from './channel.js'
import { toMirrorSecret, type MirrorSecret } from './secret.js'
import { authFailuresMax, authFailureWindowMs, createAuthFailureLimiter, unpinnedAuthFailuresPerAddressMax } from './auth-limiter.js'
import { handshakeContext, reportOutcome, tlsVersion, type MirrorAuditEvent, type MirrorTransportDeps } from './handshake-report.js'

// The listener's collaborators live beside it; importers keep using this module's names.
export { authFailureAddressesMax, authFailuresMax, authFailureWindowMs, createAuthFailureLimiter, unpinnedAuthFailuresPerAddressMax } from './auth-limiter.js'
export type { MirrorAuditEvent, MirrorTransportDeps } from './handshake-report.js'
export { connectToPeer, type ConnectToPeerOptions } from './peer-connect.js'

/** Handshakes one source address may have in progress at once (a stalled-connection flood stays local to it). */
export const handshakesPerAddressMax = 8
/** How long stop() waits for connections to close before destroying them, in milliseconds. */
export const listenerStopTimeoutMs = 3_000

/** Collaborators of the listener: audit is required, and onChannel receives each authenticated peer. */
export interface MirrorListenerDeps extends MirrorTransportDeps {
  audit: (event: MirrorAuditEvent) => void
  /** Receives each authenticated inbound channel; a rejection closes that channel. */
  onChannel: (channel: MirrorChannel) => void | Promise<void>
  /** Admission of each proven inbound appliance (pinned identity, configured peer); all admitted when absent. */
  admit?: AdmitPeer
  /** True when a certificate fingerprint is pinned for a peer: its failures never limit others on its address. */
  isPinnedFingerprint?: (fingerprint: string) => boolean
}

/** Where and how the listener accepts peers; from the config's `mirror` section. */
export interface MirrorListenerOptions {
  host: string
  /** 0 picks any free port; see address(). */
  port: number
  /** The secret string or its derived form (deriveMirrorSecret). */
  sharedSecret: string | MirrorSecret
  /** From TCP accept to an authenticated channel, in milliseconds; a slower peer is dropped. */
  handshakeTimeoutMs: number
  /** Connections open at once (handshaking and authenticated); more are dropped at accept. */
  connectionsMax: number
  /** Idle timeout of the channels this listener creates, in milliseconds. */
  idleTimeoutMs?: number
  /** Overrides unpinnedAuthFailuresPerAddressMax (tests). */
  unpinnedAuthFailuresPerAddressMax?: number
}

/** What healthcheck() reports; `ok`/`detail` fit boot's ServiceHealth. */
export interface MirrorListenerHealth {
  ok: boolean
  detail: string
  address: { host: string; port: number } | null
  connections: number
  handshakesInProgress: number
  channels: number
  rateLimitedAddresses: number
}

const normalizeAddress = normalizeRemoteAddress

/** Per accepted TCP connection, from accept to close. */
interface ConnectionState {
  raw: Socket
  address: string
  port: number
  deadline: NodeJS.Timeout
  /** Set once TLS is up. */
  framed?: FramedSocket
  channel?: MirrorChannel
  /** The outcome has been reported (audit + log). */
  reported: boolean
  tlsError?: Error
}

/**
 * The mirror listener: TLS 1.3 on `host:port`, every connection runs the server side of the
 * handshake and, once authenticated, becomes a MirrorChannel handed to `onChannel`. Pure
 * until start(). Every refusal and failure (TLS garbage, timeouts, busy, auth) is audited.
 */
export function createMirrorListener(deps: MirrorListenerDeps, options: MirrorListenerOptions) {
  assert.ok(options.handshakeTimeoutMs > 0, 'handshakeTimeoutMs must be positive')
  assert.ok(Number.isInteger(options.connectionsMax) && options.connectionsMax > 0, 'connectionsMax must be a positive integer')
  const logger = deps.logger.child('listener')
  const limiter = createAuthFailureLimiter(deps.clock)
  const unpinnedLimiter = createAuthFailureLimiter(deps.clock, {
    failuresMax: options.unpinnedAuthFailuresPerAddressMax ?? unpinnedAuthFailuresPerAddressMax,
    windowMs: authFailureWindowMs,
  })
  const isPinned = (fingerprint: string): boolean => deps.isPinnedFingerprint?.(fingerprint) === true
  const connections = new Map<string, ConnectionState>()
  const idleTimeoutMs = options.idleTimeoutMs ?? channelIdleTimeoutMsDefault
  let server: TlsServer | undefined
  let context: HandshakeContext | undefined
  let stopping: Promise<void> | undefined

  function report(state: ConnectionState, progress: HandshakeProgress, error: MirrorError | null): void {
    if (state.reported) return
    state.reported = true
    reportOutcome(deps, logger, { direction: 'inbound', remoteAddress: state.address, remotePort: state.port }, progress, error)
  }

  function handshakesInProgress(address?: string): number {
    let count = 0
    for (const state of connections.values()) if (!state.channel && (address === undefined || state.address === address)) count++
    return count
  }

  function onConnection(raw: Socket): void {
    // Acknowledgements are small frames: Nagle's algorithm would hold one back behind the
    // previous one until a delayed TCP ACK (up to 40 ms), which shows up as replication lag.
    raw.setNoDelay(true)
    const address = normalizeAddress(raw.remoteAddress)
    const port = raw.remotePort ?? 0
    const key = `${raw.remoteAddress}:${port}`
    const refuseAtAccept = (reason: string, expected: number): void => {
      raw.destroy()
      const error = new MirrorError('BUSY', reason, { expected: `<= ${expected}`, actual: expected + 1 })
      reportOutcome(deps, logger, { direction: 'inbound', remoteAddress: address, remotePort: port }, {}, error)
    }
    // Refused before TLS: no CPU spent on a flood, the client sees a reset and retries later.
    if (stopping) return void raw.destroy()
    if (connections.size >= options.connectionsMax) return refuseAtAccept('too many mirror connections', options.connectionsMax)
    if (handshakesInProgress(address) >= handshakesPerAddressMax) {
      return refuseAtAccept(`too many handshakes in progress from ${address}`, handshakesPerAddressMax)
    }
    const state: ConnectionState = {
      raw,
      address,
      port,
      reported: false,
      deadline: setTimeout(() => onDeadline(state), options.handshakeTimeoutMs).unref(),
    }
    connections.set(key, state)
    raw.once('close', () => {
      clearTimeout(state.deadline)
      connections.delete(key)
      if (!state.framed) {
        const message = state.tlsError ? `TLS failed: ${state.tlsError.message}` : 'the connection closed before TLS completed'
        report(state, {}, new MirrorError('TLS_FAILED', message, { fields: { causeCode: (state.tlsError as { code?: string })?.code } }))
      }
    })
  }

  function onDeadline(state: ConnectionState): void {
    if (state.channel) return
    const error = new MirrorError('TIMEOUT', `the mirror handshake did not finish within ${options.handshakeTimeoutMs} ms`, {
      expected: `<= ${options.handshakeTimeoutMs} ms`,
      actual: null,
    })
    if (state.framed) {
      // The handshake's pending receive fails with this error and reports it.
      state.framed.refuse(error)
    } else {
      report(state, {}, error)
      state.raw.destroy()
    }
  }

  async function onSecureConnection(socket: TLSSocket): Promise<void> {
    const state = connections.get(`${socket.remoteAddress}:${socket.remotePort}`)
    if (!state || !context) return void socket.destroy()
    const framed = new FramedSocket(socket, handshakeFramePayloadBytesMax)
    state.framed = framed
    const peerCertificate = socket.getPeerX509Certificate()
    const fingerprint = peerCertificate ? certificateFingerprint(peerCertificate) : 'none'
    const progress: HandshakeProgress = { peerFingerprint: fingerprint }
    const identityKey = `${state.address} ${fingerprint}`
    const pinned = isPinned(fingerprint)
    const limited = limiter.isLimited(identityKey) ? limiter.count(identityKey) : !pinned && unpinnedLimiter.isLimited(state.address) ? unpinnedLimiter.count(state.address) : 0
    if (limited > 0) {
      // Refused without reading a frame or computing anything.
      const error = new MirrorError('RATE_LIMITED', `too many failed proofs from ${state.address} with this certificate; try again later`, {
        expected: `< ${authFailuresMax} failed proofs per ${authFailureWindowMs} ms`,
        actual: limited,
      })
      framed.refuse(error)
      report(state, progress, error)
      return
    }
    let peer
    try {
      peer = await serverHandshake(framed, { ...context, listenPort: deps.listenPort?.() ?? address()?.port ?? 0 }, progress)
    } catch (error) {
      const failure = error as MirrorError
      if (failure.code === 'AUTH_FAILED' && failure.origin === 'local') {
        limiter.record(identityKey)
        if (!pinned) unpinnedLimiter.record(state.address)
      }
      report(state, progress, failure)
      return
    }
    clearTimeout(state.deadline)
    limiter.forget(identityKey)
    const channel = createMirrorChannel(deps, framed, { ...peer, address: state.address, port: state.port }, { direction: 'inbound', idleTimeoutMs })
    state.channel = channel
    report(state, progress, null)
    if (stopping) return void channel.close()
    try {
      await deps.onChannel(channel)
    } catch (error) {
      logger.error('the mirror channel handler failed; closing the channel', { error, peerSerial: peer.serial })
      await channel.close()
    }
  }

  /** The bound address (port resolved when 0 was asked), or null before start / after stop. */
  function address(): { host: string; port: number } | null {
    const bound = server?.address()
    return bound && typeof bound === 'object' ? { host: bound.address, port: bound.port } : null
  }

  return {
    /**
     * Checks eligibility and the secret, then listens.
     * @throws MirrorError MODEL_NOT_ELIGIBLE (this model may not mirror), SECRET_WEAK,
     *   LISTEN_FAILED (address in use, permission…)
     */
    async start(): Promise<void> {
      assert.equal(server, undefined, 'start() once')
      if (deps.identity.model < mirroringModelMin) {
        throw new MirrorError('MODEL_NOT_ELIGIBLE', `model ${deps.identity.model} may not mirror: models >= ${mirroringModelMin} only`, {
          expected: `>= ${mirroringModelMin}`,
          actual: deps.identity.model,
        })
      }
      context = handshakeContext(deps, await toMirrorSecret(options.sharedSecret), deps.admit)
      const tlsServer = createTlsServer({
        key: deps.certificate.privateKeyPem,
        cert: deps.certificate.certificatePem,
        requestCert: true,
        // Trust comes from the shared-secret proof, not from a CA; the certificates are bound into it.
        rejectUnauthorized: false,
        minVersion: tlsVersion,
        maxVersion: tlsVersion,
        // A backstop only: our own deadline (started at accept) fires first.
        handshakeTimeout: options.handshakeTimeoutMs + 1_000,
      })
      tlsServer.on('connection', onConnection)
      tlsServer.on('tlsClientError', (error, socket) => {
        const state = connections.get(`${socket.remoteAddress}:${socket.remotePort}`)
        if (state) state.tlsError = error
      })
      tlsServer.on('secureConnection', (socket: TLSSocket) => {
        onSecureConnection(socket).catch((error) => logger.error('mirror connection handling failed', { error }))
      })
      await new Promise<void>((resolve, reject) => {
        tlsServer.once('error', (error: NodeJS.ErrnoException) =>
          reject(
            new MirrorError('LISTEN_FAILED', `cannot listen on ${options.host}:${options.port}: ${error.code ?? error.message}`, {
              cause: error,
              fields: { host: options.host, port: options.port },
            }),
          ),
        )
        tlsServer.listen(options.port, options.host, () => resolve())
      })
      tlsServer.on('error', (error) => logger.error('mirror listener error', { error }))
      server = tlsServer
      const bound = tlsServer.address() as AddressInfo
      logger.info('mirror listener started', { host: bound.address, port: bound.port, fingerprint: deps.certificate.fingerprint })
    },

    address,

    /**
     * Stops accepting, closes every channel it created (CLOSE frame) and every handshake,
     * and destroys what is still open after listenerStopTimeoutMs. Idempotent.
     */
    stop(): Promise<void> {
      stopping ??= (async () => {
        const tlsServer = server
        if (!tlsServer) return
        const allClosed = new Promise<void>((resolve) => tlsServer.close(() => resolve()))
        for (const state of connections.values()) {
          if (state.channel) void state.channel.close()
          else if (state.framed) state.framed.refuse(new MirrorError('BUSY', 'the mirror listener is stopping'))
          else state.raw.destroy()
        }
        let timer: NodeJS.Timeout | undefined
        const timedOut = new Promise<void>((resolve) => {
          timer = setTimeout(resolve, listenerStopTimeoutMs).unref()
        })
        await Promise.race([allClosed, timedOut])
        clearTimeout(timer)
        for (const state of connections.values()) state.raw.destroy()
        await allClosed
        server = undefined
        logger.info('mirror listener stopped')
      })()
      return stopping
    },

    /** Listening state and connection counts, for boot's health evaluation and `show mirror`. */
    healthcheck(): MirrorListenerHealth {
      const bound = address()
      const channels = [...connections.values()].filter((state) => state.channel).length
      const rateLimitedAddresses = limiter.limitedCount() + unpinnedLimiter.limitedCount()
      return {
        ok: bound !== null && !stopping,
        detail: bound ? `listening on ${bound.host}:${bound.port}, ${channels} peer channel(s)` : 'not listening',
        address: bound,
        connections: connections.size,
        handshakesInProgress: handshakesInProgress(),
        channels,
        rateLimitedAddresses,
      }
    },
  }
}

/** A listener as createMirrorListener makes it. */
export type MirrorListener = ReturnType<typeof createMirrorListener>
