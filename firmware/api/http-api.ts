import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { AdminCredential } from './auth.js'
import { sendError } from './http-responses.js'
import { routeRequest, type ApiMethodRoute, type ApiRoute, type ArchiveReader } from './http-routes.js'
import { createHttpServer, type HttpServerOptions } from './http-server.js'
import { createLoginGate } from './http-login.js'
import { loginThrottleDefaults, type LoginThrottleEvent, type LoginThrottleOptions } from './login-throttle.js'

export { requestBodyBytesMax, type ApiMethodRoute, type ApiRoute, type ArchiveReader } from './http-routes.js'

/** How often quiet login-throttle pairs are forgotten (and their summaries audited), in ms. */
export const loginThrottleSweepMs = 10_000

export interface HttpApiOptions extends HttpServerOptions {
  /** Failed-login throttling per (address, user) (login-throttle.ts); defaults: loginThrottleDefaults. */
  loginThrottle?: LoginThrottleOptions
}

export interface HttpApiDeps {
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
 * method route takes it. The units: http-routes.ts (the routing table), http-login.ts
 * (the login check), http-responses.ts (errors to statuses), http-server.ts (lifecycle).
 */
export function createHttpApi(deps: HttpApiDeps, options: HttpApiOptions) {
  const { logger } = deps
  const login = createLoginGate(deps, options.loginThrottle ?? loginThrottleDefaults)
  const routeDeps = { ...deps, authenticate: login.authenticate }
  const server = createHttpServer(onRequest, options)
  let sweep: NodeJS.Timeout | undefined
  let requestsServed = 0

  function onRequest(request: IncomingMessage, response: ServerResponse): void {
    requestsServed += 1
    routeRequest(routeDeps, request, response).catch((error: unknown) => sendError(response, error, logger, request.url))
  }

  return {
    /** Binds host:port. @throws the listen error (EADDRINUSE…) */
    async start(): Promise<void> {
      if (server.listening) return
      await server.listen()
      sweep = setInterval(() => login.tick(), loginThrottleSweepMs)
      sweep.unref()
      logger.info('http listening', { address: server.address() })
    },
    /** Stops accepting, lets in-flight requests finish within stopTimeoutMs, then closes the rest; idempotent. */
    async stop(): Promise<void> {
      if (!server.listening) return
      clearInterval(sweep)
      // Held login attempts are answered at once (503) rather than waited for.
      await server.close(() => login.releaseHeld())
      login.close()
    },
    /** The bound address. @throws MailkeepError NOT_STARTED before start */
    address(): { host: string; port: number } {
      return server.address()
    },
    healthcheck() {
      return { ok: server.listening, detail: server.listening ? `${requestsServed} request(s) served; ${login.throttledPairs()} login pair(s) throttled` : 'not listening' }
    },
  }
}

export type HttpApi = ReturnType<typeof createHttpApi>
