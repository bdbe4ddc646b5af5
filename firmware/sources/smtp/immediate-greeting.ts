import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { SMTPServer, type SMTPServerOptions } from 'smtp-server'
import { SMTPConnection, type SMTPConnectionOptions } from 'smtp-server/lib/smtp-connection'

/*
 * Two adjustments to smtp-server, made through its public classes and methods (the
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
 */

const enhancedCodePrefix = /^([245])\.\d{1,3}\.\d{1,3} /

/** True when `text` starts with an enhanced status code of the same class as `code`. */
export function carriesEnhancedCode(code: number, text: string): boolean {
  const match = enhancedCodePrefix.exec(text)
  return match !== null && match[1] === String(code).charAt(0)
}

class ArchiveSmtpConnection extends SMTPConnection {
  readonly #immediateGreeting: boolean
  #greetingStarted = false

  constructor(server: SMTPServer, socket: Socket | TLSSocket, options: SMTPConnectionOptions | null | undefined, immediateGreeting: boolean) {
    super(server, socket, options)
    this.#immediateGreeting = immediateGreeting
  }

  override init(): void {
    super.init()
    if (this.#immediateGreeting) this.connectionReady()
  }

  override connectionReady(next?: () => void): void {
    // The library's 100 ms timer calls this a second time: greet (and run onConnect) once.
    if (this.#greetingStarted) return
    this.#greetingStarted = true
    super.connectionReady(next)
  }

  override send(code: number, data?: string | string[] | null, context?: string | false): void {
    const ownCode = context !== false && typeof data === 'string' && carriesEnhancedCode(code, data)
    super.send(code, data, ownCode ? false : context)
  }
}

/**
 * smtp-server's SMTPServer with the two adjustments above.
 *
 * @param immediateGreeting false keeps the library's 100 ms pause before each greeting
 */
export class ArchiveSmtpServer extends SMTPServer {
  readonly #immediateGreeting: boolean

  constructor(options: SMTPServerOptions, immediateGreeting: boolean) {
    super(options)
    this.#immediateGreeting = immediateGreeting
  }

  /** Same as the library's connect(), with our connection class. */
  override connect(socket: Socket | TLSSocket, socketOptions?: SMTPConnectionOptions | null): void {
    const connection = new ArchiveSmtpConnection(this, socket, socketOptions, this.#immediateGreeting)
    this.connections.add(connection)
    connection.on('error', (error: Error) => this.emit('error', error))
    connection.on('connect', (info: unknown) => this.emit('connect', info))
    connection.init()
  }
}
