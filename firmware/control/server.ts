import type { Server, Socket } from 'node:net'
import { unlink } from 'node:fs/promises'
import type { Logger } from '../common/logger.js'
import { createLineSplitter, type ControlRequest, type ControlResponse } from './protocol.js'
import { createCommandDispatch, errorBody, type CommandHandler, type ControlSession } from './command-dispatch.js'
import { listenOnUnixSocket } from './socket-listen.js'
import { createTechnicianAuth, type TechnicianAuthDeps } from './technician-auth.js'

export type { CommandHandler } from './command-dispatch.js'
export { authFailuresMax, authFailureWindowMs } from './technician-auth.js'

export interface ControlServerOptions {
  socketPath: string
  /** Largest request line, in bytes. */
  requestBytesMax: number
  /** A handler running longer than this answers TIMEOUT (the work itself is not cancelled). */
  requestTimeoutMs: number
  /** scrypt hash of the technician password; null: state-changing commands are refused. */
  technicianPasswordHash: string | null
}

/** Concurrent control connections accepted; the console and a few CLIs need far fewer. */
export const controlConnectionsMax = 32

export interface ControlServerDeps extends TechnicianAuthDeps {
  /** Handlers by command name (the composition root registers them). */
  handlers: ReadonlyMap<string, CommandHandler>
}

interface ConnectionDeps {
  logger: Logger
  /** Open connections, shared with stop() and the connection bound. */
  sockets: Set<Socket>
  execute: (request: ControlRequest, session: ControlSession) => Promise<unknown>
}

/**
 * Serves one connection: newline-delimited JSON requests, each answered (in completion order)
 * by its `id`; a malformed line answers PROTOCOL, an over-long one REQUEST_TOO_LARGE and ends
 * the connection. Past `controlConnectionsMax` the connection is answered UNAVAILABLE and ended.
 */
function serveConnection(deps: ConnectionDeps, requestBytesMax: number, socket: Socket): void {
  const { sockets } = deps
  if (sockets.size >= controlConnectionsMax) {
    socket.end(JSON.stringify({ id: 0, ok: false, error: { code: 'UNAVAILABLE', message: 'too many control connections' } }) + '\n')
    return
  }
  sockets.add(socket)
  const session: ControlSession = { authenticated: false }
  const reply = (response: ControlResponse) => {
    if (!socket.destroyed) socket.write(JSON.stringify(response) + '\n')
  }
  const onLine = (line: string) => {
    let request: ControlRequest
    try {
      request = JSON.parse(line) as ControlRequest
      if (typeof request.id !== 'number' || typeof request.command !== 'string' || !Array.isArray(request.args)) throw new Error('shape')
    } catch {
      reply({ id: 0, ok: false, error: { code: 'PROTOCOL', message: 'request must be {id, command, args}' } })
      return
    }
    deps.execute(request, session).then(
      (result) => reply({ id: request.id, ok: true, result: result ?? null }),
      (error: unknown) => reply({ id: request.id, ok: false, error: errorBody(deps.logger, error) }),
    )
  }
  const split = createLineSplitter(requestBytesMax, onLine, () => {
    reply({ id: 0, ok: false, error: { code: 'REQUEST_TOO_LARGE', message: `request over ${requestBytesMax} bytes` } })
    socket.end()
  })
  socket.on('data', split)
  socket.on('error', () => socket.destroy())
  socket.on('close', () => sockets.delete(socket))
}

/**
 * The service side of the control socket: a unix socket (mode 0600, in a 0700 directory)
 * answering the command table. Handlers are registered by the composition root; a command
 * without a handler answers UNAVAILABLE. A second service on the same socket path is
 * refused at start (ADDRESS_IN_USE) instead of stealing the socket.
 */
export function createControlServer(deps: ControlServerDeps, options: ControlServerOptions) {
  const { logger } = deps
  const checkAuth = createTechnicianAuth(deps, options.technicianPasswordHash)
  const execute = createCommandDispatch({ logger, handlers: deps.handlers, checkAuth }, options)
  const sockets = new Set<Socket>()
  const connection: ConnectionDeps = { logger, sockets, execute }
  let server: Server | undefined

  return {
    /** Binds the socket. @throws MailkeepError ADDRESS_IN_USE when another service answers there */
    async start(): Promise<void> {
      if (server) return
      server = await listenOnUnixSocket(options.socketPath, (socket) => serveConnection(connection, options.requestBytesMax, socket))
      logger.info('control socket listening', { socketPath: options.socketPath })
    },
    /** Closes the socket and every connection; idempotent. */
    async stop(): Promise<void> {
      const closing = server
      server = undefined
      if (!closing) return
      for (const socket of sockets) socket.destroy()
      await new Promise<void>((resolve) => closing.close(() => resolve()))
      await unlink(options.socketPath).catch(() => undefined)
    },
    healthcheck(): { ok: boolean; detail: string } {
      return { ok: server !== undefined, detail: server ? `${sockets.size} connection(s)` : 'not listening' }
    },
  }
}

export type ControlServer = ReturnType<typeof createControlServer>
