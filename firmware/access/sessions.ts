import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Clock } from '../common/clock.js'
import type { Principal } from './roles.js'

/**
 * Browser sessions: made at sign-in, kept in memory (a restart signs everyone out), ended
 * by sign-out, by `idleTimeoutMs` without a request, or `absoluteTimeoutMs` after sign-in,
 * whichever comes first. The session id travels in an HttpOnly, Secure, SameSite=Strict
 * cookie; only its SHA-256 is kept. Each session has a CSRF token the page sends back in a
 * header on every state change: a cookie alone never changes anything.
 */

export interface SessionOptions {
  idleTimeoutMs: number
  absoluteTimeoutMs: number
  /** Sessions kept at most; beyond, the one idle longest is ended. */
  sessionsMax: number
}

export const sessionDefaults: SessionOptions = { idleTimeoutMs: 30 * 60_000, absoluteTimeoutMs: 12 * 3_600_000, sessionsMax: 10_000 }

interface Session {
  principal: Principal
  csrfToken: string
  createdAtMs: number
  lastSeenAtMs: number
}

/** What a session's holder is told about it. */
export interface SessionView {
  user: string
  role: Principal['role']
  csrfToken: string
  /** When it ends if unused (ISO). */
  idleExpiresAt: string
  /** When it ends in any case (ISO). */
  expiresAt: string
}

const hashOf = (id: string): string => createHash('sha256').update(id).digest('hex')

export function createSessionStore(deps: { clock: Clock }, options: SessionOptions = sessionDefaults) {
  const sessions = new Map<string, Session>()
  const view = (session: Session): SessionView => ({
    user: session.principal.name,
    role: session.principal.role,
    csrfToken: session.csrfToken,
    idleExpiresAt: new Date(Math.min(session.lastSeenAtMs + options.idleTimeoutMs, session.createdAtMs + options.absoluteTimeoutMs)).toISOString(),
    expiresAt: new Date(session.createdAtMs + options.absoluteTimeoutMs).toISOString(),
  })
  const expired = (session: Session, now: number): boolean => now - session.lastSeenAtMs >= options.idleTimeoutMs || now - session.createdAtMs >= options.absoluteTimeoutMs

  return {
    /** A new session for `principal`: its id (for the cookie, never stored) and its view. */
    create(principal: Principal): { id: string; session: SessionView } {
      const now = deps.clock.now()
      if (sessions.size >= options.sessionsMax) {
        let oldest: [string, Session] | undefined
        for (const entry of sessions) if (!oldest || entry[1].lastSeenAtMs < oldest[1].lastSeenAtMs) oldest = entry
        if (oldest) sessions.delete(oldest[0])
      }
      const id = randomBytes(32).toString('base64url')
      const session: Session = { principal, csrfToken: randomBytes(24).toString('base64url'), createdAtMs: now, lastSeenAtMs: now }
      sessions.set(hashOf(id), session)
      return { id, session: view(session) }
    },
    /** The live session of a cookie's id (its idle time restarts), or undefined. */
    resume(id: string): { principal: Principal; session: SessionView; csrfMatches(token: string | undefined): boolean } | undefined {
      const key = hashOf(id)
      const session = sessions.get(key)
      const now = deps.clock.now()
      if (!session) return undefined
      if (expired(session, now)) {
        sessions.delete(key)
        return undefined
      }
      session.lastSeenAtMs = now
      return {
        principal: session.principal,
        session: view(session),
        csrfMatches: (token) => token !== undefined && token.length === session.csrfToken.length && timingSafeEqual(Buffer.from(token), Buffer.from(session.csrfToken)),
      }
    },
    /** Ends a session (sign-out); false when there was none. */
    end(id: string): boolean {
      return sessions.delete(hashOf(id))
    },
    /** Ends every session of an account (disabled, removed, new password). */
    endAllOf(name: string): number {
      let ended = 0
      for (const [key, session] of sessions) if (session.principal.name === name && sessions.delete(key)) ended++
      return ended
    },
    /** Forgets expired sessions. */
    sweep(): void {
      const now = deps.clock.now()
      for (const [key, session] of sessions) if (expired(session, now)) sessions.delete(key)
    },
    size(): number {
      return sessions.size
    },
    options,
  }
}

export type SessionStore = ReturnType<typeof createSessionStore>
