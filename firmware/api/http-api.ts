import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MailkeepError } from '../common/errors.js'
import type { MessageMeta } from '../archive/types.js'
import { parseBasicAuth, type AdminCredential } from './auth.js'
import { createLoginThrottle, loginThrottleDefaults, loginUserCharsMax, type LoginThrottleEvent, type LoginThrottleOptions } from './login-throttle.js'

/** What the HTTP API reads from the archive. */
export interface ArchiveReader {
  getMeta(id: string): Promise<MessageMeta | undefined> | MessageMeta | undefined
  getRaw(id: string): Promise<Uint8Array | undefined> | Uint8Array | undefined
}

/** A route handler beyond the built-in ones (search is added by the index module). */
export type ApiRoute = (request: { url: URL; remoteAddress: string }) => Promise<unknown>

/**
 * A route with a method and a path pattern (retention, holds, audit). `params` are the
 * pattern's groups; `body` is the parsed JSON body of a POST (undefined for GET); `actor`
 * is `admin@REMOTE-ADDRESS` for the audit log.
 */
export interface ApiMethodRoute {
  method: 'GET' | 'POST'
  pattern: RegExp
  /** Status of a successful answer (201 for a creation); 200 when absent. */
  status?: number
  handle(request: { url: URL; params: string[]; body: unknown; actor: string; remoteAddress: string }): Promise<unknown> | unknown
}

/** Largest JSON request body accepted, in bytes. */
export const requestBodyBytesMax = 64 * 1024
/** How often quiet login-throttle pairs are forgotten (and their summaries audited), in ms. */
export const loginThrottleSweepMs = 10_000

export interface HttpApiOptions {
  host: string
  /** 0: any free port; see address() after start. */
  port: number
  /** Concurrent connections accepted; beyond this the server refuses. */
  connectionsMax?: number
  /** Whole-request time limit, in ms (node's requestTimeout). */
  requestTimeoutMs?: number
  /** Idle keep-alive connections are closed after this, in ms. */
  keepAliveTimeoutMs?: number
  /** Bound on how long stop() waits for in-flight requests, in ms. */
  stopTimeoutMs?: number
  /** Failed-login throttling per (address, user) (login-throttle.ts); defaults: loginThrottleDefaults. */
  loginThrottle?: LoginThrottleOptions
}

const messageIdPattern = /^[0-9a-f]{64}$/

class HttpError extends MailkeepError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message)
  }
}

/**
 * The HTTP JSON API (ARCHITECTURE contract): every route needs HTTP Basic authentication
 * as `admin`. Failed logins are throttled per (remote address, user name): after a few,
 * that pair's attempts wait a growing, capped delay before their password is checked, and
 * none is refused, so a guesser cannot lock the admin out (login-throttle.ts says why).
 * Failures are logged and audited without the password. Stateless apart from the throttle,
 * so an external load balancer can sit in front of several systems.
 *   GET /api/v1/status                  appliance status and store figures
 *   GET /api/v1/messages/{id}           metadata of one archived message
 *   GET /api/v1/messages/{id}/raw       the original bytes, byte-identical (message/rfc822)
 *   GET /api/v1/search?q=&limit=&cursor= (registered by the index module)
 *   retention, holds and audit routes (methodRoutes, registered by firmware/policy)
 * No route deletes or edits a message: any method but GET/HEAD answers 405 unless a
 * method route takes it.
 */
export function createHttpApi(
  deps: {
    logger: Logger
    clock: Clock
    credential: AdminCredential
    archive: ArchiveReader
    status: () => Promise<unknown>
    routes?: ReadonlyMap<string, ApiRoute>
    methodRoutes?: readonly ApiMethodRoute[]
    /**
     * Told of login-throttle events for the audit log: failures before a pair is throttled,
     * the start and the end (with counts) of its throttling; bounded per minute. Never a password.
     */
    onLoginEvent?: (event: LoginThrottleEvent) => void
  },
  options: HttpApiOptions,
) {
  const { logger, clock } = deps
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let sweep: NodeJS.Timeout | undefined
  let requestsServed = 0
  const throttle = createLoginThrottle(
    {
      clock,
      onEvent: (event) => {
        const level = event.kind === 'failed' ? 'warn' : 'info'
        const message = { failed: 'login failed', throttled: 'login throttled', 'throttle-ended': 'login throttling ended', 'audit-suppressed': 'login audit events suppressed' }[event.kind]
        logger[level](message, { ...event })
        deps.onLoginEvent?.(event)
      },
    },
    options.loginThrottle ?? loginThrottleDefaults,
  )
  // Attempts waiting out their pair's delay; stop() releases them at once.
  const holds = new Set<() => void>()

  /** Resolves after `waitMs` ('waited'), or early when the client goes away or the service stops. */
  function hold(waitMs: number, socket: Socket): Promise<'waited' | 'gone' | 'stopping'> {
    if (socket.destroyed) return Promise.resolve('gone')
    return new Promise((resolve) => {
      const done = (outcome: 'waited' | 'gone' | 'stopping') => {
        clearTimeout(timer)
        socket.off('close', gone)
        holds.delete(stopping)
        resolve(outcome)
      }
      const gone = () => done('gone')
      const stopping = () => done('stopping')
      const timer = setTimeout(() => done('waited'), waitMs)
      timer.unref()
      socket.once('close', gone)
      holds.add(stopping)
    })
  }

  async function authenticate(request: IncomingMessage, remoteAddress: string): Promise<void> {
    const credentials = parseBasicAuth(request.headers.authorization)
    if (!credentials) throw new HttpError(401, 'AUTH_REQUIRED', 'authentication required (HTTP Basic, user admin)')
    const user = credentials.user.slice(0, loginUserCharsMax)
    // The wait comes before the check and is the same for a right and a wrong password, so
    // the time of the answer tells nothing before the delay has passed (login-throttle.ts).
    const waitMs = throttle.waitMs(remoteAddress, user)
    const outcome = waitMs > 0 ? await hold(waitMs, request.socket) : 'waited'
    // A client that left is not checked: no one would hear the answer, and scrypt is not free.
    if (outcome === 'gone') throw new HttpError(499, 'CLIENT_GONE', 'the client closed the connection')
    if (outcome === 'stopping') throw new HttpError(503, 'UNAVAILABLE', 'the service is stopping; try again')
    if (!(await deps.credential.verify(credentials.user, credentials.password))) {
      throttle.recordFailure(remoteAddress, user)
      throw new HttpError(401, 'AUTH_FAILED', 'wrong user or password')
    }
    throttle.recordSuccess(remoteAddress, user)
  }

  function sendJson(response: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body)
    response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
    response.end(text)
  }

  async function readJsonBody(request: IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = []
    let bytes = 0
    for await (const chunk of request) {
      bytes += (chunk as Buffer).byteLength
      if (bytes > requestBodyBytesMax) throw new HttpError(413, 'BODY_TOO_LARGE', `the request body is over ${requestBodyBytesMax} bytes`)
      chunks.push(chunk as Buffer)
    }
    // An action without parameters (release) has no body; routes that need one validate it.
    if (bytes === 0) return undefined
    try {
      return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
    } catch (error) {
      throw new HttpError(400, 'BAD_JSON', `the body is not JSON: ${(error as Error).message.slice(0, 200)}`)
    }
  }

  async function route(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const remoteAddress = request.socket.remoteAddress ?? 'unknown'
    const url = new URL(request.url ?? '/', 'http://mailkeep.invalid')
    const path = url.pathname.replace(/\/+$/, '')
    const method = request.method === 'HEAD' ? 'GET' : request.method
    const methodRoute = deps.methodRoutes?.find((candidate) => candidate.method === method && candidate.pattern.test(path))
    // Only GET (and HEAD) exist, plus the POSTs of the method routes: there is no route that
    // deletes or edits an archived message (retention's purge is the only removal).
    if (method !== 'GET' && !methodRoute) throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path.slice(0, 200)}`)
    await authenticate(request, remoteAddress)
    if (methodRoute) {
      const body = method === 'POST' ? await readJsonBody(request) : undefined
      const params = methodRoute.pattern.exec(path)!.slice(1)
      const result = await methodRoute.handle({ url, params, body, actor: `admin@${remoteAddress}`, remoteAddress })
      return sendJson(response, methodRoute.status ?? 200, result)
    }
    if (path === '/api/v1/status') return sendJson(response, 200, await deps.status())
    const message = /^\/api\/v1\/messages\/([^/]+)(\/raw)?$/.exec(path)
    if (message) {
      const id = message[1]!.toLowerCase()
      if (!messageIdPattern.test(id)) throw new HttpError(400, 'BAD_ID', 'a message id is 64 hex digits (SHA-256)')
      if (message[2]) {
        const raw = await deps.archive.getRaw(id)
        if (!raw) throw new HttpError(404, 'NOT_FOUND', `no message ${id}`)
        response.writeHead(200, {
          'content-type': 'message/rfc822',
          'content-length': raw.byteLength,
          etag: `"${id}"`,
          'content-disposition': `attachment; filename="${id}.eml"`,
          'cache-control': 'private, max-age=31536000, immutable',
        })
        response.end(request.method === 'HEAD' ? undefined : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength))
        return
      }
      const meta = await deps.archive.getMeta(id)
      if (!meta) throw new HttpError(404, 'NOT_FOUND', `no message ${id}`)
      return sendJson(response, 200, meta)
    }
    const extra = deps.routes?.get(path)
    if (extra) return sendJson(response, 200, await extra({ url, remoteAddress }))
    throw new HttpError(404, 'NOT_FOUND', `no route ${path}`)
  }

  function onRequest(request: IncomingMessage, response: ServerResponse): void {
    requestsServed += 1
    route(request, response).catch((error: unknown) => {
      if (response.headersSent) {
        response.destroy()
        return
      }
      if (error instanceof HttpError) {
        if (error.status === 401) response.setHeader('www-authenticate', 'Basic realm="mailkeep", charset="UTF-8"')
        return sendJson(response, error.status, { error: { code: error.code, message: error.message } })
      }
      if (error instanceof MailkeepError) {
        const status = error.code === 'NOT_FOUND' ? 404 : error.code === 'EXISTS' ? 409 : error.retryable ? 503 : 400
        return sendJson(response, status, { error: { code: error.code, message: error.message, ...error.fields } })
      }
      logger.error('request failed', { error, path: request.url?.slice(0, 200) })
      sendJson(response, 500, { error: { code: 'INTERNAL', message: 'internal error' } })
    })
  }

  return {
    /** Binds host:port. @throws the listen error (EADDRINUSE…) */
    async start(): Promise<void> {
      if (server) return
      const listening = createServer({ requestTimeout: options.requestTimeoutMs ?? 60_000, headersTimeout: 20_000, keepAliveTimeout: options.keepAliveTimeoutMs ?? 5_000 }, onRequest)
      listening.maxConnections = options.connectionsMax ?? 256
      listening.on('connection', (socket: Socket) => {
        sockets.add(socket)
        socket.on('close', () => sockets.delete(socket))
      })
      await new Promise<void>((resolve, reject) => {
        listening.once('error', reject)
        listening.listen(options.port, options.host, () => resolve())
      })
      server = listening
      sweep = setInterval(() => throttle.tick(), loginThrottleSweepMs)
      sweep.unref()
      logger.info('http listening', { address: this.address() })
    },
    /** Stops accepting, lets in-flight requests finish within stopTimeoutMs, then closes the rest; idempotent. */
    async stop(): Promise<void> {
      const closing = server
      server = undefined
      if (!closing) return
      clearInterval(sweep)
      const closed = new Promise<void>((resolve) => closing.close(() => resolve()))
      for (const release of [...holds]) release()
      closing.closeIdleConnections?.()
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy()
      }, options.stopTimeoutMs ?? 5_000)
      timer.unref()
      await closed
      clearTimeout(timer)
      throttle.close()
    },
    /** The bound address; throws before start. */
    address(): { host: string; port: number } {
      const address = server?.address() as AddressInfo | null
      if (!address) throw new MailkeepError('NOT_STARTED', 'http api is not listening')
      return { host: address.address, port: address.port }
    },
    healthcheck() {
      const { throttled } = throttle.stats()
      return { ok: server !== undefined, detail: server ? `${requestsServed} request(s) served; ${throttled} login pair(s) throttled` : 'not listening' }
    },
  }
}

export type HttpApi = ReturnType<typeof createHttpApi>
