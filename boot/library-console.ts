import { format } from 'node:util'
import type { Logger } from '../firmware/common/logger.js'

/**
 * Every line the service writes is one JSON object (STYLE 17), including what libraries
 * write to the console on their own. lmdb-js does: when a commit fails it calls
 * `console.error(error)` (lmdb/write.js) before rejecting the transaction, and Bun prints an
 * error given to console.error with an excerpt of the source that threw — the raw, non-JSON
 * lines seen in the log when a full volume failed a commit. The store gets the same error
 * through the rejection and logs it itself; this catches the console copy and logs it as a
 * field of one JSON line instead.
 */

/** The console methods a library may call, and the level each is logged at. */
const levels = { error: 'error', warn: 'warn', info: 'info', log: 'info', debug: 'debug' } as const

/**
 * Sends console.error/warn/info/log/debug to `logger` (namespace `console` under it), each
 * call one record: `text` (the arguments that are not errors, formatted as console would)
 * and `error` (the first Error, as the logger records errors). Installed once by the
 * process entry (boot/main.ts); nothing in firmware/ writes to the console.
 * @returns a function that puts the original methods back (for tests)
 */
export function routeConsoleToLogger(logger: Logger): () => void {
  const log = logger.child('console')
  const saved = Object.fromEntries(Object.keys(levels).map((method) => [method, console[method as keyof typeof levels]]))
  for (const [method, level] of Object.entries(levels)) {
    console[method as keyof typeof levels] = (...args: unknown[]) => log[level]('a library wrote to the console', consoleFields(method, args))
  }
  return () => {
    Object.assign(console, saved)
  }
}

/** The fields of one console call: the method, the text of its non-error arguments, its first error. */
export function consoleFields(method: string, args: unknown[]): Record<string, unknown> {
  const error = args.find((argument) => argument instanceof Error)
  const rest = args.filter((argument) => !(argument instanceof Error))
  return { console: method, ...(rest.length > 0 ? { text: format(...rest) } : {}), ...(error ? { error } : {}) }
}
