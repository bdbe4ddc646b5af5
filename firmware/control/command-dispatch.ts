import type { Logger } from '../common/logger.js'
import { MailkeepError } from '../common/errors.js'
import { ControlError } from './errors.js'
import type { ControlErrorBody, ControlRequest } from './protocol.js'
import { commandTable, checkArguments, type CommandSpec } from './command-table.js'

/** A command handler: runs in the service, returns JSON-serialisable data. */
/** A command's handler: its arguments, and the request's secret when the command takes one (CommandSpec.secret). */
export type CommandHandler = (args: string[], request: { secret?: string }) => Promise<unknown> | unknown

/** What one connection remembers between its requests. */
export interface ControlSession {
  /** A successful `auth` request unlocked technician commands on this connection. */
  authenticated: boolean
}

export interface CommandDispatchDeps {
  logger: Logger
  handlers: ReadonlyMap<string, CommandHandler>
  /** The technician password check (technician-auth.ts). */
  checkAuth: (password: string | undefined) => Promise<void>
}

/**
 * Runs one request against the command table: `auth`, or a known command with valid
 * arguments whose handler answers within `requestTimeoutMs` (the work itself is not
 * cancelled). Technician commands need the session unlocked or a password, and are logged
 * (command and arguments, never the password).
 *
 * The returned function resolves with the handler's result.
 * @throws ControlError UNKNOWN_COMMAND, USAGE, UNAVAILABLE (no handler), TIMEOUT, the AUTH_*
 *   codes of checkAuth; whatever the handler throws
 */
export function createCommandDispatch(deps: CommandDispatchDeps, options: { requestTimeoutMs: number }) {
  const { logger, handlers, checkAuth } = deps
  const specs = new Map<string, CommandSpec>(commandTable.map((spec) => [spec.name, spec]))

  return async function execute(request: ControlRequest, session: ControlSession): Promise<unknown> {
    if (request.command === 'auth') {
      await checkAuth(request.password)
      session.authenticated = true
      return { message: 'technician commands unlocked' }
    }
    const spec = specs.get(request.command)
    if (!spec) throw new ControlError('UNKNOWN_COMMAND', `unknown command: ${request.command}`)
    const usage = checkArguments(spec, request.args)
    if (usage) throw new ControlError('USAGE', usage)
    if (spec.technician && !session.authenticated) await checkAuth(request.password)
    const handler = handlers.get(spec.name)
    if (!handler) throw new ControlError('UNAVAILABLE', `${spec.name} is not available on this system`)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ControlError('TIMEOUT', `${spec.name} took longer than ${options.requestTimeoutMs} ms`)), options.requestTimeoutMs)
      timer.unref()
    })
    try {
      const result = await Promise.race([Promise.resolve().then(() => handler(request.args, typeof request.secret === 'string' ? { secret: request.secret } : {})), timeout])
      if (spec.technician) logger.info('technician command', { command: spec.name, args: request.args })
      return result
    } finally {
      clearTimeout(timer)
    }
  }
}

/** The error body of a failed request: a MailkeepError as it is, anything else logged and answered COMMAND_FAILED. */
export function errorBody(logger: Logger, error: unknown): ControlErrorBody {
  if (error instanceof MailkeepError) return { code: error.code, message: error.message, fields: error.fields }
  logger.error('control command failed', { error })
  return { code: 'COMMAND_FAILED', message: error instanceof Error ? error.message : String(error) }
}
