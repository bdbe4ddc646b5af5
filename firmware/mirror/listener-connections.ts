import type { Socket } from 'node:net'
import { MirrorError } from './errors.js'
import { normalizeRemoteAddress, type HandshakeProgress } from './handshake.js'
import { reportOutcome } from './handshake-report.js'
import type { ConnectionState, ListenerContext, MirrorListenerHealth } from './listener-types.js'

/** Handshakes one source address may have in progress at once (a stalled-connection flood stays local to it). */
export const handshakesPerAddressMax = 8
/** How long stop() waits for connections to close before destroying them, in milliseconds. */
export const listenerStopTimeoutMs = 3_000

/** Reports a connection's handshake outcome (audit and log), once per connection. */
export function reportConnection(context: ListenerContext, state: ConnectionState, progress: HandshakeProgress, error: MirrorError | null): void {
  if (state.reported) return
  state.reported = true
  reportOutcome(context.deps, context.logger, { direction: 'inbound', remoteAddress: state.address, remotePort: state.port }, progress, error)
}

/** Connections still handshaking (no channel yet), from `address` or from anywhere. */
export function handshakesInProgress(connections: ReadonlyMap<string, ConnectionState>, address?: string): number {
  let count = 0
  for (const state of connections.values()) if (!state.channel && (address === undefined || state.address === address)) count++
  return count
}

/** The handshake of `state` did not finish within handshakeTimeoutMs: refused TIMEOUT (reported by the handshake once TLS is up). */
function onHandshakeDeadline(context: ListenerContext, state: ConnectionState): void {
  if (state.channel) return
  const { handshakeTimeoutMs } = context.options
  const error = new MirrorError('TIMEOUT', `the mirror handshake did not finish within ${handshakeTimeoutMs} ms`, {
    expected: `<= ${handshakeTimeoutMs} ms`,
    actual: null,
  })
  if (state.framed) {
    // The handshake's pending receive fails with this error and reports it.
    state.framed.refuse(error)
  } else {
    reportConnection(context, state, {}, error)
    state.raw.destroy()
  }
}

/**
 * A TCP connection was accepted: refused BUSY at once (before TLS) beyond connectionsMax or
 * handshakesPerAddressMax for its address, dropped while stopping; otherwise tracked with a
 * handshake deadline until it closes (a close before TLS completed is reported TLS_FAILED).
 */
export function acceptConnection(context: ListenerContext, raw: Socket): void {
  const { connections, options } = context
  // Acknowledgements are small frames: Nagle's algorithm would hold one back behind the
  // previous one until a delayed TCP ACK (up to 40 ms), which shows up as replication lag.
  raw.setNoDelay(true)
  const address = normalizeRemoteAddress(raw.remoteAddress)
  const port = raw.remotePort ?? 0
  const key = `${raw.remoteAddress}:${port}`
  const refuseAtAccept = (reason: string, expected: number): void => {
    raw.destroy()
    const error = new MirrorError('BUSY', reason, { expected: `<= ${expected}`, actual: expected + 1 })
    reportOutcome(context.deps, context.logger, { direction: 'inbound', remoteAddress: address, remotePort: port }, {}, error)
  }
  // Refused before TLS: no CPU spent on a flood, the client sees a reset and retries later.
  if (context.stopping()) return void raw.destroy()
  if (connections.size >= options.connectionsMax) return refuseAtAccept('too many mirror connections', options.connectionsMax)
  if (handshakesInProgress(connections, address) >= handshakesPerAddressMax) {
    return refuseAtAccept(`too many handshakes in progress from ${address}`, handshakesPerAddressMax)
  }
  const state: ConnectionState = {
    raw,
    address,
    port,
    reported: false,
    deadline: setTimeout(() => onHandshakeDeadline(context, state), options.handshakeTimeoutMs).unref(),
  }
  connections.set(key, state)
  raw.once('close', () => {
    clearTimeout(state.deadline)
    connections.delete(key)
    if (!state.framed) {
      const message = state.tlsError ? `TLS failed: ${state.tlsError.message}` : 'the connection closed before TLS completed'
      reportConnection(context, state, {}, new MirrorError('TLS_FAILED', message, { fields: { causeCode: (state.tlsError as { code?: string })?.code } }))
    }
  })
}

/**
 * Closes every connection for stop(): channels with a CLOSE frame, handshakes with a BUSY
 * refusal, the rest at once; whatever is still open once `allClosed` resolves or after
 * listenerStopTimeoutMs is destroyed.
 */
export async function closeConnections(connections: ReadonlyMap<string, ConnectionState>, allClosed: Promise<void>): Promise<void> {
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
}

/** Listening state and connection counts, for boot's health evaluation and `show mirror`. */
export function listenerHealth(context: ListenerContext): MirrorListenerHealth {
  const { connections } = context
  const bound = context.address()
  const channels = [...connections.values()].filter((state) => state.channel).length
  return {
    ok: bound !== null && !context.stopping(),
    detail: bound ? `listening on ${bound.host}:${bound.port}, ${channels} peer channel(s)` : 'not listening',
    address: bound,
    connections: connections.size,
    handshakesInProgress: handshakesInProgress(connections),
    channels,
    rateLimitedAddresses: context.limits.limitedKeys(),
  }
}
