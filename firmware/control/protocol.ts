/**
 * The control socket speaks newline-delimited JSON: one request object per line, one
 * response per request, matched by `id`. A connection may carry many requests (the
 * console keeps one open); after a successful `auth` request the connection may run
 * technician commands without sending the password again.
 */

export interface ControlRequest {
  id: number
  /** Command name from the command table, e.g. `show status`. */
  command: string
  args: string[]
  /** Technician password for a one-shot state-changing command; never logged. */
  password?: string
  /** A secret the command takes (a new account's password); never logged, never an argument. */
  secret?: string
}

export interface ControlErrorBody {
  code: string
  message: string
  fields?: Record<string, unknown>
}

export type ControlResponse = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: ControlErrorBody }

/** Splits a byte stream into lines, refusing a line longer than `lineBytesMax`. */
export function createLineSplitter(lineBytesMax: number, onLine: (line: string) => void, onOverflow: () => void) {
  let pending = ''
  return (chunk: Buffer | string): void => {
    pending += chunk.toString()
    let newline = pending.indexOf('\n')
    while (newline >= 0) {
      const line = pending.slice(0, newline)
      pending = pending.slice(newline + 1)
      if (line.trim()) onLine(line)
      newline = pending.indexOf('\n')
    }
    if (Buffer.byteLength(pending) > lineBytesMax) {
      pending = ''
      onOverflow()
    }
  }
}
