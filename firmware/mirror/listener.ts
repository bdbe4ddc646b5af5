import assert from 'node:assert/strict'
import type { Server as TlsServer } from 'node:tls'
import { mirroringModelMin } from '../../config/models.js'
import { MirrorError } from './errors.js'
import { channelIdleTimeoutMsDefault } from './channel.js'
import { toMirrorSecret } from './secret.js'
import { handshakeContext } from './handshake-report.js'
import { closeConnections, listenerHealth } from './listener-connections.js'
import { createInboundAuthLimits } from './listener-handshake.js'
import { openTlsServer } from './listener-server.js'
import type { ListenerContext, MirrorListenerDeps, MirrorListenerHealth, MirrorListenerOptions } from './listener-types.js'

// The listener's collaborators live beside it; importers keep using this module's names.
export { authFailureAddressesMax, authFailuresMax, authFailureWindowMs, createAuthFailureLimiter, unpinnedAuthFailuresPerAddressMax } from './auth-limiter.js'
export type { MirrorAuditEvent, MirrorTransportDeps } from './handshake-report.js'
export { connectToPeer, type ConnectToPeerOptions } from './peer-connect.js'
export { handshakesPerAddressMax, listenerStopTimeoutMs } from './listener-connections.js'
export type { MirrorListenerDeps, MirrorListenerHealth, MirrorListenerOptions } from './listener-types.js'

/**
 * The mirror listener: TLS 1.3 on `host:port`, every connection runs the server side of the
 * handshake and, once authenticated, becomes a MirrorChannel handed to `onChannel`. Pure
 * until start(). Every refusal and failure (TLS garbage, timeouts, busy, auth) is audited.
 * The parts: listener-server.ts (the TLS server), listener-connections.ts (accept, deadlines,
 * stop), listener-handshake.ts (rate limits, handshake, hand-over).
 */
export function createMirrorListener(deps: MirrorListenerDeps, options: MirrorListenerOptions) {
  assert.ok(options.handshakeTimeoutMs > 0, 'handshakeTimeoutMs must be positive')
  assert.ok(Number.isInteger(options.connectionsMax) && options.connectionsMax > 0, 'connectionsMax must be a positive integer')
  let server: TlsServer | undefined
  let stopping: Promise<void> | undefined
  /** The bound address (port resolved when 0 was asked), or null before start / after stop. */
  function address(): { host: string; port: number } | null {
    const bound = server?.address()
    return bound && typeof bound === 'object' ? { host: bound.address, port: bound.port } : null
  }
  const context: ListenerContext = {
    deps,
    options,
    logger: deps.logger.child('listener'),
    connections: new Map(),
    limits: createInboundAuthLimits(deps.clock, options.unpinnedAuthFailuresPerAddressMax, deps.isPinnedFingerprint),
    idleTimeoutMs: options.idleTimeoutMs ?? channelIdleTimeoutMsDefault,
    handshake: undefined,
    stopping: () => stopping !== undefined,
    address,
  }
  const { connections } = context

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
      context.handshake = handshakeContext(deps, await toMirrorSecret(options.sharedSecret), deps.admit)
      server = await openTlsServer(context)
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
        await closeConnections(connections, allClosed)
        await allClosed
        server = undefined
        context.logger.info('mirror listener stopped')
      })()
      return stopping
    },

    /** Listening state and connection counts, for boot's health evaluation and `show mirror`. */
    healthcheck: (): MirrorListenerHealth => listenerHealth(context),
  }
}

/** A listener as createMirrorListener makes it. */
export type MirrorListener = ReturnType<typeof createMirrorListener>
