/**
 * A minimal SMTP client for tests, benchmarks and the factory loopback: one session, many
 * messages, exact bytes.
 * It dot-stuffs the DATA it sends and returns each reply, so tests see exactly what the
 * appliance answered (250 with the archive id, or a 4xx/5xx).
 */
import { createConnection, type Socket } from 'node:net'

export interface SmtpReply {
  code: number
  text: string
}

export class SmtpSession {
  private buffer = ''
  private waiting: ((reply: SmtpReply) => void)[] = []
  private replies: SmtpReply[] = []
  private closed = false

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => {
      this.buffer += chunk
      for (;;) {
        const match = /^(\d{3})([ -])(.*)\r?\n/m.exec(this.buffer)
        if (!match || match.index !== 0) {
          const end = this.buffer.indexOf('\n')
          if (end < 0 || match) break
          this.buffer = this.buffer.slice(end + 1)
          continue
        }
        this.buffer = this.buffer.slice(match[0].length)
        if (match[2] === ' ') this.deliver({ code: Number(match[1]), text: match[3]! })
      }
    })
    socket.on('close', () => {
      this.closed = true
      for (const waiter of this.waiting.splice(0)) waiter({ code: 0, text: 'connection closed' })
    })
    socket.on('error', () => undefined)
  }

  private deliver(reply: SmtpReply) {
    const waiter = this.waiting.shift()
    if (waiter) waiter(reply)
    else this.replies.push(reply)
  }

  private next(): Promise<SmtpReply> {
    const ready = this.replies.shift()
    if (ready) return Promise.resolve(ready)
    if (this.closed) return Promise.resolve({ code: 0, text: 'connection closed' })
    return new Promise((resolve) => this.waiting.push(resolve))
  }

  static async open(port: number, host = '127.0.0.1'): Promise<SmtpSession> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const connection = createConnection({ port, host }, () => resolve(connection))
      connection.once('error', reject)
    })
    const session = new SmtpSession(socket)
    const greeting = await session.next()
    if (greeting.code !== 220) throw new Error(`greeting ${greeting.code} ${greeting.text}`)
    const ehlo = await session.command('EHLO test.invalid')
    if (ehlo.code !== 250) throw new Error(`EHLO ${ehlo.code} ${ehlo.text}`)
    return session
  }

  command(line: string): Promise<SmtpReply> {
    this.socket.write(line + '\r\n', 'latin1')
    return this.next()
  }

  /** Sends one message; resolves with the final reply (250 … archived <id>, or the refusal). */
  async send(from: string, recipients: string[], raw: Buffer): Promise<SmtpReply> {
    let reply = await this.command(`MAIL FROM:<${from}>`)
    if (reply.code !== 250) return reply
    for (const recipient of recipients) {
      reply = await this.command(`RCPT TO:<${recipient}>`)
      if (reply.code !== 250) return reply
    }
    reply = await this.command('DATA')
    if (reply.code !== 354) return reply
    const text = raw.toString('latin1')
    const stuffed = text.replace(/(^|\r\n)\./g, '$1..')
    this.socket.write(stuffed + (stuffed.endsWith('\r\n') ? '' : '\r\n') + '.\r\n', 'latin1')
    return this.next()
  }

  /**
   * Sends one message with PIPELINING (RFC 2920), as mail servers do when the server offers
   * it: MAIL FROM, every RCPT TO and DATA in one write, then the replies in order, then the
   * content. Resolves with the final reply, or the first refusal before the content.
   */
  async sendPipelined(from: string, recipients: string[], raw: Buffer): Promise<SmtpReply> {
    this.socket.write([`MAIL FROM:<${from}>`, ...recipients.map((recipient) => `RCPT TO:<${recipient}>`), 'DATA', ''].join('\r\n'), 'latin1')
    let refusal: SmtpReply | undefined
    for (let index = 0; index < recipients.length + 1; index++) {
      const reply = await this.next()
      if (reply.code !== 250) refusal ??= reply
    }
    const data = await this.next()
    if (refusal || data.code !== 354) return refusal ?? data
    const text = raw.toString('latin1')
    const stuffed = text.replace(/(^|\r\n)\./g, '$1..')
    this.socket.write(stuffed + (stuffed.endsWith('\r\n') ? '' : '\r\n') + '.\r\n', 'latin1')
    return this.next()
  }

  close(): void {
    if (!this.closed) this.socket.end('QUIT\r\n')
  }
}

/** The archive id in a `250 2.0.0 Ok: archived <id>` reply, or undefined. */
export function archivedId(reply: SmtpReply): string | undefined {
  return /archived ([0-9a-f]{64})/.exec(reply.text)?.[1]
}
