import { MailkeepError, type ErrorDetails } from '../firmware/common/errors.js'

/**
 * Operating errors of the hardware abstraction layer (STYLE 11). Programmer errors (a
 * negative tick length, a non-integer disk count) are node:assert failures instead.
 */
export type HalErrorCode =
  /** A probe (systeminformation, mdadm, statfs) did not answer within its timeout; retrying can help. */
  | 'HAL_TIMEOUT'
  /** A probe failed for another reason (command error, unreadable /proc file); retrying can help. */
  | 'HAL_PROBE_FAILED'
  /** No serial number could be found: no override, no DMI serial or UUID, no machine-id. */
  | 'HAL_IDENTITY_UNAVAILABLE'
  /** statfs of the data volume failed (path missing, permission denied). */
  | 'HAL_VOLUME_UNAVAILABLE'
  /** A simulator fault knob named a disk index that does not exist. */
  | 'SIM_NO_SUCH_DISK'
  /** A simulator fault knob named a NIC that does not exist (or was removed). */
  | 'SIM_NO_SUCH_NIC'
  /** A simulator fault knob got a value out of range (e.g. negative free bytes). */
  | 'SIM_BAD_VALUE'

/** A typed HAL operating error with a stable `code` (see HalErrorCode). */
export class HalError extends MailkeepError {
  declare readonly code: HalErrorCode
  constructor(code: HalErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, details)
    this.name = 'HalError'
  }
}
