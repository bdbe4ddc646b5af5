import { MailkeepError } from '../firmware/common/errors.js'

/** A boot that cannot go on: the process exits with `exitCode` and starts nothing more. */
export class BootError extends MailkeepError {
  readonly exitCode: number
  constructor(message: string, exitCode: number, cause?: unknown) {
    super('BOOT_FATAL', message, { cause })
    this.name = 'BootError'
    this.exitCode = exitCode
  }
}
