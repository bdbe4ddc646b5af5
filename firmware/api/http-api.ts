import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MailkeepError } from '../common/errors.js'
import type { MessageMeta } from '../archive/types.js'
import { parseBasicAuth, loginFailuresMax, loginFailureWindowMs, type AdminCredential } from './auth.js'

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
 * as `admin`; failed logins are rate-limited per remote address (429) and logged without
 * the password. Stateless, so an external load balancer can sit in front of several
 * systems.
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
    /** Told of every failed login (the audit log); the password is never passed. */
    onLoginFailure?: (event: { remoteAddress: string; user: string }) => void
  },
  options: HttpApiOptions,
) {
  const { logger, clock } = deps
  const failures = new Map<string, number[]>()
  const sockets = new Set<Socket>()
  let server: Server | undefined
  let requestsServed = 0

  function rateLimited(address: string): boolean {
    const now = clock.monotonicMs()
    const recent = (failures.get(address) ?? []).filter((time) => now - time < loginFailureWindowMs)
    if (recent.length === 0) failures.delete(address)
    else failures.set(address, recent)
    return recent.length >= loginFailuresMax
  }

  async function authenticate(request: IncomingMessage, remoteAddress: string): Promise<void> {
    if (rateLimited(remoteAddress)) throw new HttpError(429, 'RATE_LIMITED', 'too many failed logins; try again later')
    const credentials = parseBasicAuth(request.headers.authorization)
    if (!credentials) throw new HttpError(401, 'AUTH_REQUIRED', 'authentication required (HTTP Basic, user admin)')
    if (!(await deps.credential.verify(credentials.user, credentials.password))) {
      const list = failures.get(remoteAddress) ?? []
      list.push(clock.monotonicMs())
      failures.set(remoteAddress, list)
      if (failures.size > 10_000) failures.clear()
      logger.warn('login failed', { remoteAddress, user: credentials.user.slice(0, 64) })
      deps.onLoginFailure?.({ remoteAddress, user: credentials.user.slice(0, 64) })
      throw new HttpError(401, 'AUTH_FAILED', 'wrong user or password')
    }
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
      logger.info('http listening', { address: this.address() })
    },
    /** Stops accepting, lets in-flight requests finish within stopTimeoutMs, then closes the rest; idempotent. */
    async stop(): Promise<void> {
      const closing = server
      server = undefined
      if (!closing) return
      const closed = new Promise<void>((resolve) => closing.close(() => resolve()))
      closing.closeIdleConnections?.()
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy()
      }, options.stopTimeoutMs ?? 5_000)
      timer.unref()
      await closed
      clearTimeout(timer)
    },
    /** The bound address; throws before start. */
    address(): { host: string; port: number } {
      const address = server?.address() as AddressInfo | null
      if (!address) throw new MailkeepError('NOT_STARTED', 'http api is not listening')
      return { host: address.address, port: address.port }
    },
    healthcheck() {
      return { ok: server !== undefined, detail: server ? `${requestsServed} request(s) served` : 'not listening' }
    },
  }
}

export type HttpApi = ReturnType<typeof createHttpApi>
