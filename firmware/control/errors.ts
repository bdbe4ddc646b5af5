import { MailkeepError, type ErrorDetails } from '../common/errors.js'

/** Errors of the control socket and its commands, shown to technicians as `error CODE: message`. */
export type ControlErrorCode =
  | 'NOT_RUNNING' /** no service listens on the control socket */
  | 'UNKNOWN_COMMAND'
  | 'USAGE' /** wrong arguments; exit code 2 */
  | 'AUTH_REQUIRED' /** a state-changing command without the technician password */
  | 'AUTH_FAILED'
  | 'AUTH_RATE_LIMITED'
  | 'AUTH_NOT_CONFIGURED' /** technician.passwordHash is not set */
  | 'REQUEST_TOO_LARGE'
  | 'TIMEOUT'
  | 'PROTOCOL'
  | 'UNAVAILABLE' /** the command needs something this system does not have (e.g. `sim` on real hardware) */
  | 'COMMAND_FAILED'

export class ControlError extends MailkeepError {
  declare readonly code: ControlErrorCode
  constructor(code: ControlErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, details)
    this.name = 'ControlError'
  }
}
