/**
 * A TCP fault proxy for mirror tests: sits between a sender and a peer's listener and, per
 * connection, passes bytes through or breaks the connection in one of the ways networks do.
 * Directions: `up` = client → server (copies), `down` = server → client (acknowledgements).
 */
import { createServer, connect, type Server, type Socket } from 'node:net'

export type Fault =
  | { kind: 'pass' }
  /** TCP RST on both sides once `afterBytes` have gone in `direction`. */
  | { kind: 'reset'; afterBytes: number; direction: 'up' | 'down' }
  /** Stop forwarding anything once `afterBytes` went up; both sockets stay open (a dead link). */
  | { kind: 'stall'; afterBytes: number }
  /** Forward the first `afterBytes` up, then end both sides cleanly (FIN): a cut-off stream. */
  | { kind: 'truncate'; afterBytes: number }
  /** Silently discard `direction` after `afterBytes` while the other direction still flows. */
  | { kind: 'drop'; afterBytes: number; direction: 'up' | 'down' }
  /** Delay every chunk by `delayMs` milliseconds, in order. */
  | { kind: 'latency'; delayMs: number }

export interface FaultProxy {
  port: number
  /** Connections accepted so far. */
  readonly connections: number
  /** Faults applied so far (not counting `pass` and `latency`). */
  readonly faultsTriggered: number
  /** Where new connections go (the peer may restart on another port). */
  setTarget(port: number): void
  /** Destroys every open connection (as if the link went down for a moment). */
  cutAll(): void
  close(): Promise<void>
}

/** Starts a proxy on 127.0.0.1:0 towards `targetPort`; `plan(i)` chooses the fault of connection i (0-based). */
export async function startFaultProxy(targetPort: number, plan: (connectionIndex: number) => Fault): Promise<FaultProxy> {
  let target = targetPort
  let connections = 0
  let faultsTriggered = 0
  const open = new Set<Socket>()

  const server: Server = createServer((client) => {
    const fault = plan(connections++)
    const upstream = connect({ host: '127.0.0.1', port: target })
    for (const socket of [client, upstream]) {
      open.add(socket)
      socket.on('close', () => open.delete(socket))
      socket.on('error', () => undefined)
    }
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    const sent = { up: 0, down: 0 }
    let stalled = false
    const dropped = { up: false, down: false }
    let triggered = false
    const trigger = (): void => {
      if (!triggered) faultsTriggered++
      triggered = true
    }

    const forward = (from: Socket, to: Socket, direction: 'up' | 'down') => {
      from.on('data', (chunk: Buffer) => {
        if (stalled || dropped[direction]) return
        if (fault.kind === 'latency') {
          from.pause()
          setTimeout(() => {
            if (!to.destroyed) to.write(chunk)
            from.resume()
          }, fault.delayMs)
          return
        }
        const limited =
          (fault.kind === 'reset' || fault.kind === 'drop') && fault.direction === direction
            ? fault.afterBytes
            : (fault.kind === 'stall' || fault.kind === 'truncate') && direction === 'up'
              ? fault.afterBytes
              : undefined
        if (limited === undefined || sent[direction] + chunk.length <= limited) {
          sent[direction] += chunk.length
          to.write(chunk)
          return
        }
        const head = chunk.subarray(0, Math.max(0, limited - sent[direction]))
        sent[direction] += head.length
        if (head.length > 0) to.write(head)
        trigger()
        if (fault.kind === 'reset') {
          client.resetAndDestroy()
          upstream.resetAndDestroy()
        } else if (fault.kind === 'stall') {
          stalled = true
        } else if (fault.kind === 'truncate') {
          client.end()
          upstream.end()
          stalled = true
        } else if (fault.kind === 'drop') {
          dropped[direction] = true
        }
      })
    }
    forward(client, upstream, 'up')
    forward(upstream, client, 'down')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  return {
    port,
    get connections() {
      return connections
    },
    get faultsTriggered() {
      return faultsTriggered
    },
    setTarget(next) {
      target = next
    },
    cutAll() {
      for (const socket of open) socket.destroy()
    },
    close() {
      for (const socket of open) socket.destroy()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}
