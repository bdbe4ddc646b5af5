/**
 * The one structured logger of mailkeep. Services receive a `Logger` through their deps
 * and never write to the console themselves (STYLE 17). A child logger carries a
 * namespace (`smtp`, `archive`, …) and fixed fields; every line is one JSON object on the
 * sink (stdout for the service) or one human-readable line (the console and the CLI).
 *
 * Secrets: any field whose name looks like a secret (password, secret, token, key material)
 * is replaced by `[redacted]` before it is written, whatever the caller passed (STYLE 14).
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Record<string, unknown>

export interface Logger {
  debug(message: string, fields?: LogFields): void
  info(message: string, fields?: LogFields): void
  warn(message: string, fields?: LogFields): void
  error(message: string, fields?: LogFields): void
  /** A logger for a sub-namespace (`parent.child`) with extra fixed fields. */
  child(namespace: string, fields?: LogFields): Logger
}

export interface LogRecord {
  time: string
  level: LogLevel
  ns: string
  msg: string
  [field: string]: unknown
}

export interface LoggerOptions {
  level?: LogLevel
  /** `json`: one JSON object per line; `pretty`: `time level ns: msg k=v`. */
  format?: 'json' | 'pretty'
  /** Where lines go; defaults to process.stdout. */
  write?: (line: string) => void
  /** Clock, injected so tests get stable output. */
  now?: () => Date
}

const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }
const secretFieldPattern = /pass(word)?|secret|token|private.?key|credential|authorization/i
const redactedText = '[redacted]'

/** Replaces secret-looking fields (recursively, bounded depth) and turns Errors into plain objects. */
export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6) return '[depth]'
  if (value instanceof Error) {
    const plain: LogFields = { name: value.name, message: value.message }
    const code = (value as { code?: unknown }).code
    if (code !== undefined) plain.code = code
    return plain
  }
  if (Array.isArray(value)) return value.map((item) => redact(item, depth + 1))
  if (value !== null && typeof value === 'object') {
    if (Buffer.isBuffer(value) || value instanceof Uint8Array) return `[${value.byteLength} bytes]`
    const out: LogFields = {}
    for (const [key, inner] of Object.entries(value)) {
      out[key] = secretFieldPattern.test(key) ? redactedText : redact(inner, depth + 1)
    }
    return out
  }
  return value
}

function formatPretty(record: LogRecord): string {
  const { time, level, ns, msg, ...rest } = record
  const extras = Object.entries(rest)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(' ')
  return `${time.slice(11, 23)} ${level.padEnd(5)} ${ns}: ${msg}${extras ? ' ' + extras : ''}`
}

/** Creates the root logger. Pure: opens nothing. */
export function createLogger(namespace: string, options: LoggerOptions = {}, fixed: LogFields = {}): Logger {
  const minimum = levelRank[options.level ?? 'info']
  const write = options.write ?? ((line: string) => process.stdout.write(line + '\n'))
  const now = options.now ?? (() => new Date())
  const format = options.format ?? 'json'

  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (levelRank[level] < minimum) return
    const safe = redact({ ...fixed, ...(fields ?? {}) }) as LogFields
    const record: LogRecord = { time: now().toISOString(), level, ns: namespace, msg, ...safe }
    let line: string
    try {
      line = format === 'json' ? JSON.stringify(record) : formatPretty(record)
    } catch {
      line = JSON.stringify({ time: record.time, level, ns: namespace, msg, unserializable: true })
    }
    write(line)
  }

  return {
    debug: (msg, fields) => emit('debug', msg, fields),
    info: (msg, fields) => emit('info', msg, fields),
    warn: (msg, fields) => emit('warn', msg, fields),
    error: (msg, fields) => emit('error', msg, fields),
    child: (child, fields) => createLogger(namespace ? `${namespace}.${child}` : child, options, { ...fixed, ...(fields ?? {}) }),
  }
}

/** A logger that keeps records in memory, for tests that assert on what was logged. */
export function createMemoryLogger(level: LogLevel = 'debug'): Logger & { records: LogRecord[] } {
  const records: LogRecord[] = []
  const logger = createLogger('', { level, write: (line) => records.push(JSON.parse(line) as LogRecord) })
  return Object.assign(logger, { records })
}
