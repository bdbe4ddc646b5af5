/**
 * A hostile slow SMTP client for tests: it connects from a chosen local address (any
 * 127.x.y.z works on Linux), then trickles one byte at a time, either before it has sent
 * a complete command or inside DATA, as the issue 20 reproduction did. It records the
 * replies it got and when the server closed it. Nothing runs at import time.
 */
import { connect, type Socket } from 'node:net'

/** Where the client trickles: inside its first command line, or inside DATA after a valid envelope. */
export type TrickleMode = 'command' | 'data'

export interface TricklerOptions {
  port: number
  host?: string
  /** The client's own address, e.g. 127.0.0.2. */
  localAddress: string
  mode: TrickleMode
  /** One byte every `intervalMs` milliseconds. */
  intervalMs: number
  /** RCPT TO in `data` mode. */
  recipient?: string
}

export interface TricklerOutcome {
  /** Every reply line received, in order. */
  lines: string[]
  /** The greeting line (220 …, or the 421 that refused the connection); null if none came. */
  greeting: string | null
  /** The last line received before the close. */
  lastLine: string | null
  /** Milliseconds from the greeting (command mode) or from the 354 (data mode) to the close; null if never reached. */
  closedAfterMs: number | null
  /** Bytes trickled in all. */
  trickledBytes: number
  /** The socket failed to connect (e.g. EADDRNOTAVAIL). */
  connectError: string | null
}

export interface Trickler {
  readonly localAddress: string
  /** Resolves with the first reply line (or null if the connection failed first). */
  readonly greeted: Promise<string | null>
  /** Resolves when the connection closed, whoever closed it. */
  readonly outcome: Promise<TricklerOutcome>
  /** Closes the connection from our side. */
  stop(): void
}

/** Opens one slow client; see the module comment. */
export function startTrickler(options: TricklerOptions): Trickler {
  const socket: Socket = connect({ port: options.port, host: options.host ?? '127.0.0.1', localAddress: options.localAddress })
  socket.setNoDelay(true)
  socket.setEncoding('latin1')
  const lines: string[] = []
  let buffer = ''
  let trickleFromMs: number | null = null
  let timer: NodeJS.Timeout | null = null
  let trickledBytes = 0
  let connectError: string | null = null
  let resolveGreeted: (line: string | null) => void = () => undefined
  const greeted = new Promise<string | null>((resolve) => (resolveGreeted = resolve))
  const filler = 'EHLO a-very-slow-client.example.test and then some more bytes that never end'

  const trickle = (): void => {
    timer = setInterval(() => {
      if (socket.destroyed || !socket.writable) return
      const byte = options.mode === 'command' ? filler.charAt(trickledBytes % filler.length) : 'x'
      socket.write(byte, 'latin1')
      trickledBytes++
    }, options.intervalMs)
  }

  socket.on('data', (text: string) => {
    buffer += text
    let end: number
    while ((end = buffer.indexOf('\r\n')) >= 0) {
      const line = buffer.slice(0, end)
      buffer = buffer.slice(end + 2)
      lines.push(line)
      if (lines.length === 1) {
        resolveGreeted(line)
        if (!line.startsWith('220')) continue
        if (options.mode === 'command') {
          trickleFromMs = performance.now()
          trickle()
        } else {
          socket.write(`EHLO slow.example.test\r\nMAIL FROM:<slow@example.test>\r\nRCPT TO:<${options.recipient ?? 'journal@archive.local'}>\r\nDATA\r\n`, 'latin1')
        }
      } else if (options.mode === 'data' && line.startsWith('354') && trickleFromMs === null) {
        trickleFromMs = performance.now()
        socket.write('Subject: slow\r\n\r\n', 'latin1')
        trickle()
      }
    }
  })
  socket.on('error', (error: NodeJS.ErrnoException) => {
    connectError ??= error.code ?? error.message
  })
  const outcome = new Promise<TricklerOutcome>((resolve) => {
    socket.once('close', () => {
      if (timer) clearInterval(timer)
      resolveGreeted(null)
      resolve({
        lines,
        greeting: lines[0] ?? null,
        lastLine: lines.at(-1) ?? null,
        closedAfterMs: trickleFromMs === null ? null : performance.now() - trickleFromMs,
        trickledBytes,
        connectError,
      })
    })
  })
  return {
    localAddress: options.localAddress,
    greeted,
    outcome,
    stop() {
      if (timer) clearInterval(timer)
      socket.destroy()
    },
  }
}

/** `127.0.0.<n>` style loopback addresses from the second on: 127.0.0.2, 127.0.0.3, … (n ≤ 65,000). */
export function loopbackAddresses(count: number, first = 2): string[] {
  return Array.from({ length: count }, (_, index) => {
    const n = first + index
    return `127.0.${Math.floor(n / 256)}.${n % 256}`
  })
}
