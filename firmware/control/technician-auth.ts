import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { verifyPassword } from '../common/password.js'
import { ControlError } from './errors.js'

/** Failed technician logins tolerated per window before further attempts are refused. */
export const authFailuresMax = 5
/** The sliding window for authFailuresMax, in milliseconds (monotonic clock). */
export const authFailureWindowMs = 60_000

export interface TechnicianAuthDeps {
  logger: Logger
  clock: Clock
  /** Told of every failed technician login (the audit log); the password is never passed. */
  onAuthFailure?: (event: { failuresInWindow: number }) => void
}

/**
 * The technician password check of the control socket, shared by every connection: at most
 * `authFailuresMax` failures per `authFailureWindowMs`, after which every attempt is refused
 * until the window slides past them. A null hash refuses every attempt.
 *
 * The returned check resolves when `password` matches `passwordHash`.
 * @throws ControlError AUTH_NOT_CONFIGURED, AUTH_RATE_LIMITED, AUTH_REQUIRED (no password), AUTH_FAILED
 */
export function createTechnicianAuth(deps: TechnicianAuthDeps, passwordHash: string | null): (password: string | undefined) => Promise<void> {
  const { logger, clock } = deps
  /** Monotonic times of the failures within the window, oldest first. */
  const authFailureTimes: number[] = []

  return async function checkAuth(password: string | undefined): Promise<void> {
    if (!passwordHash) {
      throw new ControlError('AUTH_NOT_CONFIGURED', 'no technician password is configured (technician.passwordHash)')
    }
    const now = clock.monotonicMs()
    while (authFailureTimes.length > 0 && now - authFailureTimes[0]! > authFailureWindowMs) authFailureTimes.shift()
    if (authFailureTimes.length >= authFailuresMax) {
      throw new ControlError('AUTH_RATE_LIMITED', 'too many failed technician logins; wait a minute')
    }
    if (password === undefined) throw new ControlError('AUTH_REQUIRED', 'this command needs the technician password')
    if (!(await verifyPassword(password, passwordHash))) {
      authFailureTimes.push(now)
      logger.warn('technician authentication failed', { failuresInWindow: authFailureTimes.length })
      deps.onAuthFailure?.({ failuresInWindow: authFailureTimes.length })
      throw new ControlError('AUTH_FAILED', 'wrong technician password')
    }
  }
}
