import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { SignInSources } from '../access/sign-in.js'
import { HttpError, sendError } from './http-responses.js'
import { routeRequest, type ApiRoute, type ArchiveReader, type ReadAudit } from './http-routes.js'
import { coreRoutes } from './message-routes.js'
import { sessionRoutes } from './session-routes.js'
import type { SessionStore } from '../access/sessions.js'
import type { HttpServerOptions, TlsMaterial } from './http-server.js'
import { createListenerPair, type HttpsListenerOptions } from './http-listeners.js'
import { parseNetworks, type NetworkSet } from '../common/networks.js'
import { MailkeepError } from '../common/errors.js'
import { createLoginGate, sessionCookieName, type LoginGate } from './http-login.js'
import { loginThrottleDefaults, type LoginThrottleEvent, type LoginThrottleOptions } from './login-throttle.js'

export type { HttpsListenerOptions } from './http-listeners.js'
export { requestBodyBytesMax, BinaryAnswer, type ApiRoute, type ArchiveReader, type ReadAudit, type RouteRequest } from './http-routes.js'

/** How often quiet login-throttle pairs are forgotten (and their summaries audited), in ms. */
export const loginThrottleSweepMs = 10_000

/** Clients served the API over plain HTTP when HTTPS is on: loopback only. */
export const plainNetworksDefault: readonly string[] = ['127.0.0.0/8', '::1/128']

export interface HttpApiOptions {
  /** The plain HTTP listener, when enabled. */
  http?: HttpServerOptions
  /** The HTTPS listener, when enabled. */
  https?: HttpsListenerOptions
  /**
   * With both listeners: the clients (CIDR) the plain listener serves the API to; every
   * other client is redirected (308) to HTTPS. Default plainNetworksDefault (loopback).
   */
  plainNetworks?: readonly string[]
  /** Failed-login throttling per (address, user) (login-throttle.ts); defaults: loginThrottleDefaults. */
  loginThrottle?: LoginThrottleOptions
}

/** What the web pages share with the API: sign-in behind the same throttle, the same sessions and cookie. */
export interface PageShared {
  checkPassword: LoginGate['checkPassword']
  sessions: SessionStore
  cookieName: string
  absoluteTimeoutMs: number
}

export interface HttpApiDeps {
  logger: Logger
  clock: Clock
  /** Where user names and passwords are checked: the first admin, local accounts, the directory. */
  signIn: SignInSources
  archive: ArchiveReader
  status: () => Promise<unknown>
  /**
   * The web interface (firmware/web, composed in boot): given what pages share with the API
   * (the throttled password check, the sessions, the cookie), a handler that answers a page
   * request, or resolves false for a path that is not a page (the API then answers it).
   * Served only when `sessions` is given.
   */
  pages?: (shared: PageShared) => (request: IncomingMessage, response: ServerResponse) => Promise<boolean>
  /** Browser sessions; without it, no session routes and no cookie sign-in. */
  sessions?: SessionStore
  /** Told of every read of message content (chain of custody). */
  audit?: ReadAudit
  /** Routes beyond status and messages: search (the index module), policies, holds, audit (firmware/policy). */
  routes?: readonly ApiRoute[]
  /**
   * Told of login-throttle events for the audit log: failures before a pair is throttled,
   * the start and the end (with counts) of its throttling; bounded per minute. Never a password.
   */
  onLoginEvent?: (event: LoginThrottleEvent) => void
}

/**
 * The HTTP JSON API (ARCHITECTURE contract), over HTTPS (TLS 1.2+, HSTS) and over plain
 * HTTP for local scripts: the plain listener serves only clients in `plainNetworks`
 * (loopback) and redirects the others to HTTPS. Every route needs HTTP Basic authentication
 * (the first admin, a local account or a directory account: firmware/access/sign-in.ts)
 * and the one permission its route names (firmware/access/roles.ts: 403 without it); a
 * `user` sees only their own mail (404 for anything else). Failed logins are throttled per (remote address, user name): after a few,
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
 * method route takes it. The units: http-routes.ts (the routing table), http-login.ts
 * (the login check), http-responses.ts (errors to statuses), http-server.ts (lifecycle).
 */
export function createHttpApi(deps: HttpApiDeps, options: HttpApiOptions) {
  const { logger } = deps
  if (!options.http && !options.https) throw new MailkeepError('INVALID_OPTIONS', 'the http api needs a listener (http or https)')
  const plainClients = plainNetworkSet(options)
  const login = createLoginGate({ ...deps, accounts: deps.signIn }, options.loginThrottle ?? loginThrottleDefaults)
  const sessions = deps.sessions
  const routes = [
    ...(sessions ? sessionRoutes({ gate: login, sessions, absoluteTimeoutMs: sessions.options.absoluteTimeoutMs, ...(deps.audit ? { audit: deps.audit } : {}) }) : []),
    ...coreRoutes({ ...deps, clock: deps.clock }),
    ...(deps.routes ?? []),
  ]
  const routeDeps = { routes, authenticate: login.authenticate }
  const web =
    sessions && deps.pages ? deps.pages({ checkPassword: login.checkPassword, sessions, cookieName: sessionCookieName, absoluteTimeoutMs: sessions.options.absoluteTimeoutMs }) : undefined
  const httpsOptions = options.https
  const hsts = `max-age=${httpsOptions?.hstsMaxAgeSeconds ?? 0}`
  const pair = createListenerPair(onRequest, options)
  let started = false
  let sweep: NodeJS.Timeout | undefined
  let requestsServed = 0

  function onRequest(request: IncomingMessage, response: ServerResponse, overTls: boolean): void {
    requestsServed += 1
    if (overTls) response.setHeader('strict-transport-security', hsts)
    else if (httpsOptions && !plainClients.contains(request.socket.remoteAddress ?? '')) {
      const httpsPort = pair.httpsPort()
      if (httpsPort !== undefined) return redirectToHttps(request, response, httpsPort, httpsOptions.host)
      const down = new HttpError(503, 'HTTPS_UNAVAILABLE', `HTTPS is down (${pair.unavailableReason() ?? 'not listening'}); plain HTTP serves local clients only`)
      return sendError(response, down, logger, request.url)
    }
    const api = () => routeRequest(routeDeps, request, response)
    ;(web ? web(request, response).then((answered) => (answered ? undefined : api())) : api()).catch((error: unknown) => sendError(response, error, logger, request.url))
  }

  return {
    /** Binds the listeners. @throws the listen error (EADDRINUSE…); none is left listening */
    async start(): Promise<void> {
      if (started) return
      await pair.listen()
      started = true
      sweep = setInterval(() => {
        login.tick()
        sessions?.sweep()
      }, loginThrottleSweepMs)
      sweep.unref()
      logger.info('http listening', pair.listeners())
      if (pair.unavailableReason()) logger.error('https is down', { reason: pair.unavailableReason() })
    },
    /** Stops accepting, lets in-flight requests finish within stopTimeoutMs, then closes the rest; idempotent. */
    async stop(): Promise<void> {
      if (!started) return
      started = false
      clearInterval(sweep)
      // Held login attempts are answered at once (503) rather than waited for.
      await pair.close(() => login.releaseHeld())
      login.close()
    },
    /** The bound address of the plain (default) or the HTTPS listener. @throws MailkeepError NOT_STARTED when that one is not listening */
    address: (listener: 'http' | 'https' = 'http'): { host: string; port: number } => pair.address(listener),
    /** `host:port` of each listening listener, by name (`http`, `https`). */
    listeners: (): Record<string, string> => pair.listeners(),
    /**
     * The HTTPS listener serves another key and certificate from now on, on the same port
     * (or starts, when its certificate was unusable). @throws MailkeepError NOT_STARTED
     * when HTTPS is off or the API is stopped; the listen error as it comes
     */
    async replaceTls(material: TlsMaterial): Promise<void> {
      if (!started) throw new MailkeepError('NOT_STARTED', 'the api is stopped')
      await pair.replaceTls(material)
      logger.info('https certificate replaced', pair.listeners())
    },
    /** Every route served, in the order they are matched (the role table's test walks them). */
    routes(): readonly ApiRoute[] {
      return routes
    },
    healthcheck() {
      if (!started) return { ok: false, detail: 'not listening' }
      const down = pair.unavailableReason()
      if (down) return { ok: false, detail: `https is down: ${down}` }
      return { ok: true, detail: `${requestsServed} request(s) served; ${login.throttledPairs()} login pair(s) throttled` }
    },
  }
}

/** The clients the plain listener serves. @throws MailkeepError INVALID_OPTIONS naming each bad entry */
function plainNetworkSet(options: HttpApiOptions): NetworkSet {
  const parsed = parseNetworks(options.plainNetworks ?? plainNetworksDefault, 'http.plainNetworks')
  if (!parsed.networks) throw new MailkeepError('INVALID_OPTIONS', parsed.problems.join('; '), { fields: { problems: parsed.problems } })
  return parsed.networks
}

/** A host name as a client may write it in `Host` (a name, an IPv4 address or a bracketed IPv6 one). */
const hostNamePattern = /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])$/

/**
 * 308 to the same path on the HTTPS port of the host the client asked for (its `Host`
 * header without the port), or of `fallbackHost` when that header is missing or not a
 * host name. 308 keeps the method and body; nothing of the request is read or served.
 */
function redirectToHttps(request: IncomingMessage, response: ServerResponse, httpsPort: number, fallbackHost: string): void {
  const asked = (request.headers.host ?? '').replace(/:\d+$/, '')
  const host = hostNamePattern.test(asked) ? asked : fallbackHost.includes(':') ? `[${fallbackHost}]` : fallbackHost
  const path = (request.url ?? '/').startsWith('/') ? (request.url ?? '/') : '/'
  const location = `https://${host}:${httpsPort}${path}`
  const body = `plain HTTP serves local clients only; use ${location}\n`
  response.writeHead(308, { location, 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store', connection: 'close' })
  response.end(body)
}

export type HttpApi = ReturnType<typeof createHttpApi>
