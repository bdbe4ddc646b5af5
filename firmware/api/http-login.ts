import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { parseBasicAuth } from './auth.js'
import { signIn, type SignInSources } from '../access/sign-in.js'
import type { Principal } from '../access/roles.js'
import type { SessionStore } from '../access/sessions.js'
import { HttpError } from './http-responses.js'
import { createLoginThrottle, loginUserCharsMax, type LoginThrottleEvent, type LoginThrottleOptions } from './login-throttle.js'

/** The name of the session cookie: `__Host-` makes browsers keep it to this host, path `/`, over HTTPS. */
export const sessionCookieName = '__Host-mailkeep-session'
/** The header a page sends its session's CSRF token in. */
export const csrfHeader = 'x-csrf-token'

/** Who a request is, and how it said so (a session's id for sign-out). */
export interface Authenticated {
  principal: Principal
  via: 'basic' | 'token' | 'session'
  sessionId?: string
}

const headerText = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value[0] : value)

/** The session id in a Cookie header, if any. */
export function sessionCookie(header: string | undefined): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const [name, ...value] = part.trim().split('=')
    if (name === sessionCookieName) return value.join('=')
  }
  return undefined
}

/** How an attempt's hold ended: its wait passed, its client went away, or the service stops. */
type HoldOutcome = 'waited' | 'gone' | 'stopping'

const eventMessages: Record<LoginThrottleEvent['kind'], string> = {
  failed: 'login failed',
  throttled: 'login throttled',
  'throttle-ended': 'login throttling ended',
  'audit-suppressed': 'login audit events suppressed',
}

/** A held attempt: its pair's key, and how to end its hold early. */
interface Hold {
  key: string
  release(outcome: 'waited' | 'stopping'): void
}

/**
 * Resolves after `waitMs` ('waited'), or early when the client goes away ('gone'), when a
 * correct password of the same pair ends the wait ('waited') or when the service stops
 * ('stopping'). `holds` has each held attempt while it waits.
 */
function hold(holds: Set<Hold>, key: string, waitMs: number, socket: Socket): Promise<HoldOutcome> {
  if (socket.destroyed) return Promise.resolve('gone')
  return new Promise((resolve) => {
    const done = (outcome: HoldOutcome) => {
      clearTimeout(timer)
      socket.off('close', gone)
      holds.delete(held)
      resolve(outcome)
    }
    const gone = () => done('gone')
    const held: Hold = { key, release: done }
    const timer = setTimeout(() => done('waited'), waitMs)
    timer.unref()
    socket.once('close', gone)
    holds.add(held)
  })
}

/**
 * A user name and password checked behind the throttle: the attempt waits its pair's
 * delay, then its password is checked, and the outcome is told to the throttle.
 */
function passwordCheck(deps: { accounts: SignInSources }, throttle: ReturnType<typeof createLoginThrottle>, holds: Set<Hold>) {
  return async function checkPassword(name: string, password: string, request: IncomingMessage, remoteAddress: string): Promise<Principal> {
    const user = name.slice(0, loginUserCharsMax)
    // The wait comes before the check and is the same for a right and a wrong password, so
    // the time of the answer tells nothing before the delay has passed (login-throttle.ts).
    // Until it ends, the attempt counts as a failure for the pair's next arrivals, so
    // guesses sent in parallel are delayed one after another rather than checked together.
    const attempt = throttle.begin(remoteAddress, user)
    try {
      const outcome = attempt.waitMs > 0 ? await hold(holds, attempt.key, attempt.waitMs, request.socket) : 'waited'
      // A client that left is not checked: no one would hear the answer, and scrypt is not free.
      if (outcome === 'gone') throw new HttpError(499, 'CLIENT_GONE', 'the client closed the connection')
      if (outcome === 'stopping') throw new HttpError(503, 'UNAVAILABLE', 'the service is stopping; try again')
      const result = await signIn(deps.accounts, name, password)
      if (result.outcome === 'unavailable') throw new HttpError(503, 'DIRECTORY_UNAVAILABLE', `directory unavailable: ${result.reason}`)
      if (result.outcome === 'failed') {
        attempt.end('failed')
        if (result.reason === 'disabled') throw new HttpError(401, 'ACCOUNT_DISABLED', 'the account is disabled')
        if (result.reason === 'no-role') throw new HttpError(401, 'NO_ROLE', 'the directory account is in no group that has a role on this appliance')
        throw new HttpError(401, 'AUTH_FAILED', 'wrong user or password')
      }
      attempt.end('succeeded')
      // The pair's attempts held meanwhile waited (also) for this one, presumed to fail: a
      // correct password clears the pair's delay (login-throttle.ts), so they are checked now.
      for (const held of [...holds]) if (held.key === attempt.key) held.release('waited')
      return result.principal
    } finally {
      attempt.end('unchecked')
    }
  }
}

/**
 * The HTTP Basic check of every request, behind the login throttle (login-throttle.ts): an
 * attempt waits its pair's delay, then its password is checked, and the outcome is told to
 * the throttle. Throttle events go to the log and to `onLoginEvent` (the audit log), never
 * with a password.
 */
export function createLoginGate(
  deps: { logger: Logger; clock: Clock; accounts: SignInSources; sessions?: SessionStore; onLoginEvent?: (event: LoginThrottleEvent) => void },
  options: LoginThrottleOptions,
) {
  const { logger } = deps
  const throttle = createLoginThrottle(
    {
      clock: deps.clock,
      onEvent: (event) => {
        logger[event.kind === 'failed' ? 'warn' : 'info'](eventMessages[event.kind], { ...event })
        deps.onLoginEvent?.(event)
      },
    },
    options,
  )
  // Attempts waiting out their pair's delay; releaseHeld() ends them at once.
  const holds = new Set<Hold>()

  const checkPassword = passwordCheck(deps, throttle, holds)

  return {
    /**
     * The account whose user and password the request carries, after the pair's delay.
     * @throws HttpError 401 (no or wrong credentials, a disabled account), 499 (the client
     *   left while held), 503 (stopping; DIRECTORY_UNAVAILABLE)
     */
    async authenticate(request: IncomingMessage, remoteAddress: string): Promise<Authenticated> {
      const header = request.headers.authorization
      // A token is 256 random bits: nothing to throttle, and checking it costs one hash.
      if (header && /^Bearer /i.test(header)) {
        const principal = deps.accounts.tokens?.check(header.slice(7))
        if (!principal) throw new HttpError(401, 'TOKEN_INVALID', 'the token is not valid (revoked, or never issued here)')
        return { principal, via: 'token' }
      }
      const credentials = parseBasicAuth(header)
      if (credentials) return { principal: await checkPassword(credentials.user, credentials.password, request, remoteAddress), via: 'basic' }
      const sessionId = sessionCookie(request.headers.cookie)
      if (sessionId !== undefined && deps.sessions) {
        const resumed = deps.sessions.resume(sessionId)
        if (!resumed) throw new HttpError(401, 'SESSION_EXPIRED', 'the session has ended (signed out, idle or too old): sign in again')
        // A cookie is sent by the browser on its own: a change needs the page's CSRF token too.
        if (request.method !== 'GET' && request.method !== 'HEAD' && !resumed.csrfMatches(headerText(request.headers[csrfHeader]))) {
          throw new HttpError(403, 'CSRF_FAILED', `a change made with a session cookie needs its CSRF token in the ${csrfHeader} header`)
        }
        return { principal: resumed.principal, via: 'session', sessionId }
      }
      throw new HttpError(401, 'AUTH_REQUIRED', 'authentication required (HTTP Basic, a Bearer token or a session)')
    },
    /**
     * A user name and password checked behind the throttle (as Basic is): the JSON sign-in.
     * @throws HttpError as authenticate
     */
    checkPassword,
    /** Ends every held attempt now (answered 503): the service stops. */
    releaseHeld(): void {
      for (const held of [...holds]) held.release('stopping')
    },
    /** Forgets quiet pairs (login-throttle.ts `tick`). */
    tick(): void {
      throttle.tick()
    },
    /** The service stopped: summaries of the throttled pairs, then the throttle forgets everything. */
    close(): void {
      throttle.close()
    },
    /** Pairs throttled now. */
    throttledPairs(): number {
      return throttle.stats().throttled
    },
  }
}

export type LoginGate = ReturnType<typeof createLoginGate>
