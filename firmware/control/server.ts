import { createServer, createConnection, type Server, type Socket } from 'node:net'
import { mkdir, chmod, unlink, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MailkeepError } from '../common/errors.js'
import { verifyPassword } from '../common/password.js'
import { ControlError } from './errors.js'
import { createLineSplitter, type ControlRequest, type ControlResponse } from './protocol.js'
import { commandTable, checkArguments, type CommandSpec } from './command-table.js'

/** A command handler: runs in the service, returns JSON-serialisable data. */
export type CommandHandler = (args: string[]) => Promise<unknown> | unknown

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
/** Failed technician logins tolerated per window before further attempts are refused. */
export const authFailuresMax = 5
export const authFailureWindowMs = 60_000

/**
 * The service side of the control socket: a unix socket (mode 0600, in a 0700 directory)
 * answering the command table. Handlers are registered by the composition root; a command
 * without a handler answers UNAVAILABLE. A second service on the same socket path is
 * refused at start (ADDRESS_IN_USE) instead of stealing the socket.
 */
export function createControlServer(
  deps: {
    logger: Logger
    clock: Clock
    handlers: ReadonlyMap<string, CommandHandler>
    /** Told of every failed technician login (the audit log); the password is never passed. */
    onAuthFailure?: (event: { failuresInWindow: number }) => void
  },
  options: ControlServerOptions,
) {
  const { logger, clock, handlers } = deps
  const specs = new Map<string, CommandSpec>(commandTable.map((spec) => [spec.name, spec]))
  const sockets = new Set<Socket>()
  const authFailureTimes: number[] = []
  let server: Server | undefined

  async function removeStaleSocket(): Promise<void> {
    try {
      await stat(options.socketPath)
    } catch {
      return
    }
    const alive = await new Promise<boolean>((resolve) => {
      const probe = createConnection(options.socketPath)
      probe.once('connect', () => {
        probe.destroy()
        resolve(true)
      })
      probe.once('error', () => resolve(false))
    })
    if (alive) {
      throw new MailkeepError('ADDRESS_IN_USE', `another mailkeep service answers on ${options.socketPath}`, {
        fields: { socketPath: options.socketPath },
      })
    }
    await unlink(options.socketPath)
  }

  async function checkAuth(password: string | undefined): Promise<void> {
    if (!options.technicianPasswordHash) {
      throw new ControlError('AUTH_NOT_CONFIGURED', 'no technician password is configured (technician.passwordHash)')
    }
    const now = clock.monotonicMs()
    while (authFailureTimes.length > 0 && now - authFailureTimes[0]! > authFailureWindowMs) authFailureTimes.shift()
    if (authFailureTimes.length >= authFailuresMax) {
      throw new ControlError('AUTH_RATE_LIMITED', 'too many failed technician logins; wait a minute')
    }
    if (password === undefined) throw new ControlError('AUTH_REQUIRED', 'this command needs the technician password')
    if (!(await verifyPassword(password, options.technicianPasswordHash))) {
      authFailureTimes.push(now)
      logger.warn('technician authentication failed', { failuresInWindow: authFailureTimes.length })
      deps.onAuthFailure?.({ failuresInWindow: authFailureTimes.length })
      throw new ControlError('AUTH_FAILED', 'wrong technician password')
    }
  }

  async function execute(request: ControlRequest, session: { authenticated: boolean }): Promise<unknown> {
    if (request.command === 'auth') {
      await checkAuth(request.password)
      session.authenticated = true
      return { message: 'technician commands unlocked' }
    }
    const spec = specs.get(request.command)
    if (!spec) throw new ControlError('UNKNOWN_COMMAND', `unknown command: ${request.command}`)
    const usage = checkArguments(spec, request.args)
    if (usage) throw new ControlError('USAGE', usage)
    if (spec.technician && !session.authenticated) await checkAuth(request.password)
    const handler = handlers.get(spec.name)
    if (!handler) throw new ControlError('UNAVAILABLE', `${spec.name} is not available on this system`)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ControlError('TIMEOUT', `${spec.name} took longer than ${options.requestTimeoutMs} ms`)), options.requestTimeoutMs)
      timer.unref()
    })
    try {
      const result = await Promise.race([Promise.resolve().then(() => handler(request.args)), timeout])
      if (spec.technician) logger.info('technician command', { command: spec.name, args: request.args })
      return result
    } finally {
      clearTimeout(timer)
    }
  }

  function errorBody(error: unknown) {
    if (error instanceof MailkeepError) return { code: error.code, message: error.message, fields: error.fields }
    logger.error('control command failed', { error })
    return { code: 'COMMAND_FAILED', message: error instanceof Error ? error.message : String(error) }
  }

  function onConnection(socket: Socket): void {
    if (sockets.size >= controlConnectionsMax) {
      socket.end(JSON.stringify({ id: 0, ok: false, error: { code: 'UNAVAILABLE', message: 'too many control connections' } }) + '\n')
      return
    }
    sockets.add(socket)
    const session = { authenticated: false }
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
      execute(request, session).then(
        (result) => reply({ id: request.id, ok: true, result: result ?? null }),
        (error: unknown) => reply({ id: request.id, ok: false, error: errorBody(error) }),
      )
    }
    const split = createLineSplitter(options.requestBytesMax, onLine, () => {
      reply({ id: 0, ok: false, error: { code: 'REQUEST_TOO_LARGE', message: `request over ${options.requestBytesMax} bytes` } })
      socket.end()
    })
    socket.on('data', split)
    socket.on('error', () => socket.destroy())
    socket.on('close', () => sockets.delete(socket))
  }

  return {
    /** Binds the socket. @throws MailkeepError ADDRESS_IN_USE when another service answers there */
    async start(): Promise<void> {
      if (server) return
      await mkdir(dirname(options.socketPath), { recursive: true, mode: 0o700 })
      await chmod(dirname(options.socketPath), 0o700)
      await removeStaleSocket()
      const listening = createServer(onConnection)
      // The umask makes the socket 0600 from the moment it exists; the chmod makes sure.
      const previousUmask = process.umask(0o177)
      try {
        await new Promise<void>((resolve, reject) => {
          listening.once('error', reject)
          listening.listen(options.socketPath, () => resolve())
        })
      } finally {
        process.umask(previousUmask)
      }
      await chmod(options.socketPath, 0o600)
      server = listening
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
