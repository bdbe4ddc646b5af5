import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { SMTPServer, type SMTPServerOptions } from 'smtp-server'
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection'

/*
 * Four adjustments to smtp-server, made through its public classes and methods (the
 * package documents the `smtp-server/lib/*` deep imports; `connect`, `init`,
 * `connectionReady` and `send` are public in its type declarations):
 *
 * 1. The greeting. `SMTPConnection.init()` waits a fixed 100 ms before greeting every new
 *    connection (`setTimeout(() => this.connectionReady(), 100)`, to catch spam bots that
 *    talk before the greeting); there is no option for it, upstream neither. A sender that
 *    opens one connection per message (journaling servers often do) then tops out at
 *    about 10 messages/s per concurrent connection. Our senders are mail servers, not
 *    bots, so the connection greets at once: `init()` still sets up the socket, then
 *    `connectionReady()` runs right away, and the library's own timer, which still fires
 *    100 ms later, finds the greeting done and does nothing.
 *
 * 2. Enhanced status codes. With ENHANCEDSTATUSCODES on, smtp-server prefixes every reply
 *    with a default enhanced code per basic code (550 → 5.1.1, 552 → 5.2.2, 452 → 4.2.2),
 *    including replies to our handlers' errors, and a handler cannot say which one it
 *    means. A reply text that already starts with an enhanced code of the same class
 *    (`550` + `5.7.1 Relay access denied`) is therefore sent as it is.
 *
 * 3. Replies to pipelined commands (RFC 2920: mail servers send MAIL, RCPT and DATA in one
 *    packet when PIPELINING is offered) are corked until the end of the turn and leave in
 *    one write, where the library writes each on its own (measured with strace under Bun:
 *    three sendto calls become one).
 *
 * 4. Every reply is reported to the listener (`onReply`), after it is written: the
 *    session's deadlines (session-deadlines.ts) count the client's time from the reply it
 *    answers, since smtp-server offers no hook for that.
 */

/** Reports each reply a connection sent; `connection` can be sent a 421 later. */
export type ReplyListener = (connection: SMTPConnection, code: number) => void

/** How ArchiveSmtpServer's connections behave. */
export interface ArchiveConnectionSettings {
  /** Greet at once (true) or after smtp-server's 100 ms pause. */
  immediateGreeting: boolean
  /** Called after every reply. */
  onReply?: ReplyListener
}

const enhancedCodePrefix = /^([245])\.\d{1,3}\.\d{1,3} /

/** True when `text` starts with an enhanced status code of the same class as `code`. */
export function carriesEnhancedCode(code: number, text: string): boolean {
  const match = enhancedCodePrefix.exec(text)
  return match !== null && match[1] === String(code).charAt(0)
}

class ArchiveSmtpConnection extends SMTPConnection {
  readonly #settings: ArchiveConnectionSettings
  #greetingStarted = false

  constructor(server: SMTPServer, socket: Socket | TLSSocket, options: SMTPConnectionOptions | null | undefined, settings: ArchiveConnectionSettings) {
    super(server, socket, options)
    this.#settings = settings
  }

  override init(): void {
    super.init()
    if (this.#settings.immediateGreeting) this.connectionReady()
  }

  override connectionReady(next?: () => void): void {
    // The library's 100 ms timer calls this a second time: greet (and run onConnect) once.
    if (this.#greetingStarted) return
    this.#greetingStarted = true
    super.connectionReady(next)
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const ownCode = context !== false && typeof data === 'string' && carriesEnhancedCode(code, data)
    // Replies written in the same turn of the event loop (the answers to pipelined MAIL,
    // RCPT and DATA) leave in one write: one system call instead of one per reply.
    // (`_socket` is the current socket, the TLS one after STARTTLS.) Never the 220s (greeting,
    // and STARTTLS, after which the socket is wrapped for TLS at once) nor 221 (the socket ends).
    const socket = (this as unknown as { _socket?: Socket })._socket
    const corked = code !== 220 && code !== 221 && socket !== undefined && !socket.destroyed && typeof socket.cork === 'function'
    if (corked) {
      socket.cork()
      process.nextTick(() => socket.uncork())
    }
    super.send(code, data, ownCode ? false : context)
    this.#settings.onReply?.(this, code)
  }
}

/**
 * smtp-server's SMTPServer with the adjustments above.
 *
 * @param settings `immediateGreeting: false` keeps the library's 100 ms pause before each
 *   greeting; `onReply` hears of every reply
 */
export class ArchiveSmtpServer extends SMTPServer {
  readonly #settings: ArchiveConnectionSettings

  constructor(options: SMTPServerOptions, settings: ArchiveConnectionSettings) {
    super(options)
    this.#settings = settings
  }

  /** Same as the library's connect(), with our connection class. */
  override connect(socket: Socket | TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new ArchiveSmtpConnection(this, socket, socketOptions, this.#settings)
    this.connections.add(connection)
    connection.on('error', (error: Error) => this.emit('error', error))
    connection.on('connect', (info: unknown) => this.emit('connect', info))
    connection.init()
  }
}
