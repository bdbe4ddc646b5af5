import type { SessionStore } from '../access/sessions.js'
import type { ApiRoute } from './http-routes.js'
import { HttpError } from './http-responses.js'
import { sessionCookieName, type LoginGate } from './http-login.js'

/** Longest user name or password a sign-in body may carry, in characters. */
const credentialCharsMax = 1024

const cookie = (value: string, maxAgeSeconds: number): string => `${sessionCookieName}=${value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAgeSeconds}`

/**
 * Browser sign-in over the API (the web interface's, and any client that keeps cookies):
 *   POST /api/v1/session           {user, password} → 201, the session cookie, its CSRF token
 *   GET  /api/v1/session           who the caller is (any way of signing in), and its session
 *   POST /api/v1/session/signout   ends the caller's session and clears the cookie
 * The password is checked behind the same throttle as HTTP Basic. Sign-in and sign-out are
 * audited (`session.start`, `session.end`).
 */
export function sessionRoutes(deps: {
  gate: Pick<LoginGate, 'checkPassword'>
  sessions: SessionStore
  absoluteTimeoutMs: number
  audit?: (event: { actor: string; action: string; details: Record<string, unknown> }) => void
}): ApiRoute[] {
  return [
    {
      method: 'POST',
      pattern: /^\/api\/v1\/session$/,
      permission: 'session.own',
      open: true,
      status: 201,
      handle: async ({ body, incoming, remoteAddress, setHeader }) => {
        const { user, password } = (body ?? {}) as { user?: unknown; password?: unknown }
        if (typeof user !== 'string' || typeof password !== 'string' || user.length === 0 || user.length > credentialCharsMax || password.length > credentialCharsMax) {
          throw new HttpError(400, 'INVALID', 'the body is {"user": "...", "password": "..."}')
        }
        const principal = await deps.gate.checkPassword(user, password, incoming, remoteAddress)
        const { id, session } = deps.sessions.create(principal)
        setHeader('set-cookie', cookie(id, Math.floor(deps.absoluteTimeoutMs / 1000)))
        deps.audit?.({ actor: `${principal.name}@${remoteAddress}`, action: 'session.start', details: { role: principal.role, source: principal.source } })
        return session
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/session$/,
      permission: 'session.own',
      handle: ({ principal, authenticated }) => {
        const session = authenticated?.sessionId === undefined ? undefined : deps.sessions.resume(authenticated.sessionId)?.session
        return { user: principal.name, role: principal.role, source: principal.source, addresses: principal.addresses, via: authenticated?.via, ...(session ? { session } : {}) }
      },
    },
    {
      method: 'POST',
      pattern: /^\/api\/v1\/session\/signout$/,
      permission: 'session.own',
      handle: ({ authenticated, actor, setHeader }) => {
        const ended = authenticated?.sessionId !== undefined && deps.sessions.end(authenticated.sessionId)
        setHeader('set-cookie', cookie('', 0))
        if (ended) deps.audit?.({ actor, action: 'session.end', details: { reason: 'signout' } })
        return { signedOut: ended }
      },
    },
  ]
}
