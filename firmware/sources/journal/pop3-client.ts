import { connect as connectTcp, isIP, type Socket } from 'node:net'
import { connect as connectTls, type TLSSocket } from 'node:tls'
import assert from 'node:assert/strict'
import { JournalError, redactSecret } from './errors.js'
import { toJournalNetworkError } from './network-errors.js'

/**
 * A small POP3 client (RFC 1939, CAPA and STLS from RFC 2449/2595, response codes from
 * RFC 3206) on node:net/node:tls: just what the journal puller needs — greeting, CAPA,
 * STLS, USER/PASS (or SASL PLAIN when USER is not offered), STAT, LIST, UIDL, RETR with
 * dot-unstuffing, DELE and QUIT. One command at a time, no pipelining. Every read is
 * bounded (line length, listing entries, message bytes) and every wait has a deadline.
 */

/** Longest single-line server response we accept, in bytes (RFC 2449 allows 512). */
export const pop3ResponseLineBytesMax = 8192
/** Most entries a UIDL or LIST listing may have; a mailbox with more is refused. */
export const pop3ListingEntriesMax = 1_000_000
/** Longest UIDL we accept, in characters (RFC 1939 allows 70). */
export const pop3UidlCharactersMax = 70

/** Where and how a POP3 session connects; all durations in milliseconds. */
export interface Pop3ClientOptions {
  host: string
  port: number
  tls: 'implicit' | 'starttls' | 'none'
  tlsRejectUnauthorized: boolean
  /** Deadline for the TCP/TLS connection and the greeting, in milliseconds. */
  connectTimeoutMs: number
  /** Longest silence while a command waits for its reply, in milliseconds. */
  commandTimeoutMs: number
}

/** One entry of a UIDL or LIST listing. */
export interface Pop3ListingEntry {
  /** Message number in this session (1-based). */
  number: number
  value: string
}

/** A parsed single-line reply. */
interface Pop3Reply {
  ok: boolean
  text: string
  /** RFC 2449/3206 response code in brackets (`AUTH`, `IN-USE`, `SYS/TEMP`…), upper-cased; null when none. */
  responseCode: string | null
}

type Waiter = () => void

/**
 * Reads CRLF-terminated lines from a socket without copying the stream more than once per
 * wake-up. Chunks are queued as they arrive and joined only when the reader needs them.
 */
class LineReader {
  private buffer: Buffer = Buffer.alloc(0)
  private queued: Buffer[] = []
  private waiter: Waiter | null = null
  private failure: JournalError | null = null
  private detachSocket: (() => void) | null = null

  attach(socket: Socket, describeFailure: (error: unknown) => JournalError): void {
    this.detach()
    const onData = (chunk: Buffer): void => {
      this.queued.push(chunk)
      this.wake()
    }
    const onError = (error: unknown): void => this.fail(describeFailure(error))
    const onClose = (): void => this.fail(new JournalError('CONNECT_FAILED', 'the server closed the connection'))
    socket.on('data', onData)
    socket.on('error', onError)
    socket.on('close', onClose)
    this.detachSocket = () => {
      socket.off('data', onData)
      socket.off('error', onError)
      socket.off('close', onClose)
    }
  }

  detach(): void {
    this.detachSocket?.()
    this.detachSocket = null
  }

  /** Bytes received but not read yet (used to refuse data injected before a STLS upgrade). */
  bufferedBytes(): number {
    return this.buffer.length + this.queued.reduce((sum, chunk) => sum + chunk.length, 0)
  }

  fail(error: JournalError): void {
    if (this.failure === null) this.failure = error
    this.wake()
  }

  private wake(): void {
    const waiter = this.waiter
    this.waiter = null
    waiter?.()
  }

  private absorbQueued(): void {
    if (this.queued.length === 0) return
    this.buffer = this.buffer.length === 0 && this.queued.length === 1 ? this.queued[0]! : Buffer.concat([this.buffer, ...this.queued])
    this.queued = []
  }

  /** Waits for more bytes; throws the connection's failure once everything before it was read. */
  private async more(): Promise<void> {
    if (this.queued.length > 0) return
    if (this.failure) throw this.failure
    await new Promise<void>((resolve) => (this.waiter = resolve))
  }

  /**
   * Returns the next line including its terminator. Throws LIMIT_EXCEEDED when no line
   * end appears within `bytesMax` bytes.
   */
  async readLine(bytesMax: number): Promise<Buffer> {
    let searchedBytes = 0
    for (;;) {
      this.absorbQueued()
      const newline = this.buffer.indexOf(0x0a, searchedBytes)
      if (newline >= 0) {
        if (newline + 1 > bytesMax) throw new JournalError('LIMIT_EXCEEDED', `a reply line is longer than ${bytesMax} bytes`, { fields: { lineBytesMax: bytesMax } })
        const line = this.buffer.subarray(0, newline + 1)
        this.buffer = this.buffer.subarray(newline + 1)
        return line
      }
      searchedBytes = this.buffer.length
      if (searchedBytes > bytesMax) throw new JournalError('LIMIT_EXCEEDED', `a reply line is longer than ${bytesMax} bytes`, { fields: { lineBytesMax: bytesMax } })
      await this.more()
    }
  }
}

/** Strips CRLF (or a bare LF) from the end of a line. */
function withoutLineEnd(line: Buffer): Buffer {
  let end = line.length
  if (end > 0 && line[end - 1] === 0x0a) end--
  if (end > 0 && line[end - 1] === 0x0d) end--
  return line.subarray(0, end)
}

const terminatorLine = Buffer.from('.\r\n')
const terminatorLineBare = Buffer.from('.\n')

function parseReply(line: Buffer): Pop3Reply {
  const text = withoutLineEnd(line).toString('latin1')
  if (text.startsWith('+OK')) return { ok: true, text: text.slice(3).trim(), responseCode: null }
  if (text.startsWith('-ERR')) {
    const rest = text.slice(4).trim()
    const code = /^\[([^\]]{1,64})\]/.exec(rest)
    return { ok: false, text: rest, responseCode: code ? code[1]!.toUpperCase() : null }
  }
  throw new JournalError('PROTOCOL_ERROR', `the server sent a reply that is neither +OK nor -ERR: ${JSON.stringify(text.slice(0, 80))}`)
}

/** Refuses command arguments that could smuggle a second command onto the wire. */
function assertSafeArgument(value: string, what: string): void {
  if (/[\r\n\0]/.test(value)) throw new JournalError('INVALID_OPTIONS', `the ${what} contains a line break or NUL, which POP3 cannot carry`)
}

/**
 * One POP3 session. Create it with `openPop3Session`; it is connected, greeted and (for
 * 'starttls') upgraded to TLS. Call `login`, then the transaction commands, then `quit`,
 * which is the only way deletions take effect. `close()` drops the connection without
 * QUIT, which keeps every message on the server (RFC 1939 §6).
 */
export class Pop3Session {
  private readonly reader = new LineReader()
  private socket: Socket
  private capabilitySet: Set<string> | null = null
  private secret = ''
  private closed = false

  private constructor(
    private readonly options: Pop3ClientOptions,
    socket: Socket,
  ) {
    this.socket = socket
  }

  /**
   * Connects, reads the greeting and, for `tls: 'starttls'`, upgrades with STLS.
   *
   * @throws JournalError CONNECT_FAILED, TIMEOUT (within `connectTimeoutMs`), TLS_FAILED
   *   (handshake or certificate refused, or STLS not offered), PROTOCOL_ERROR (no greeting)
   */
  static async open(options: Pop3ClientOptions): Promise<Pop3Session> {
    const target = `${options.host}:${options.port}`
    const socket = await connectSocket(options)
    const session = new Pop3Session(options, socket)
    const deadline = setTimeout(() => session.abort(new JournalError('TIMEOUT', `no POP3 greeting from ${target} within ${options.connectTimeoutMs} ms`)), options.connectTimeoutMs)
    deadline.unref()
    try {
      session.attach(socket)
      const greeting = parseReply(await session.reader.readLine(pop3ResponseLineBytesMax))
      if (!greeting.ok) throw new JournalError('SERVER_UNAVAILABLE', `the POP3 server ${target} refused the session: ${greeting.text}`)
      if (options.tls === 'starttls') await session.startTls()
      return session
    } catch (error) {
      session.close()
      throw error
    } finally {
      clearTimeout(deadline)
    }
  }

  /** True when the connection is encrypted. */
  get encrypted(): boolean {
    return (this.socket as TLSSocket).encrypted === true
  }

  private attach(socket: Socket): void {
    socket.setTimeout(this.options.commandTimeoutMs)
    socket.on('timeout', () => this.abort(new JournalError('TIMEOUT', `the POP3 server was silent for ${this.options.commandTimeoutMs} ms`)))
    this.reader.attach(socket, (error) => toJournalNetworkError(error, `talking to ${this.options.host}:${this.options.port}`, this.secret))
  }

  /** Fails whatever waits and drops the connection. */
  private abort(error: JournalError): void {
    this.reader.fail(error)
    this.close()
  }

  private async command(line: string, logged = line): Promise<Pop3Reply> {
    if (this.closed) throw new JournalError('CONNECT_FAILED', 'the POP3 connection is closed')
    this.socket.write(line + '\r\n')
    try {
      return parseReply(await this.reader.readLine(pop3ResponseLineBytesMax))
    } catch (error) {
      if (error instanceof JournalError && error.code === 'PROTOCOL_ERROR') {
        throw new JournalError('PROTOCOL_ERROR', `after ${logged}: ${error.message}`)
      }
      throw error
    }
  }

  private async expectOk(line: string, logged = line): Promise<Pop3Reply> {
    const reply = await this.command(line, logged)
    if (!reply.ok) {
      const code = reply.responseCode === 'IN-USE' || reply.responseCode === 'SYS/TEMP' || reply.responseCode === 'LOGIN-DELAY' ? 'SERVER_UNAVAILABLE' : 'PROTOCOL_ERROR'
      throw new JournalError(code, `the server refused ${logged}: ${redactSecret(reply.text, this.secret)}`, { fields: { responseCode: reply.responseCode } })
    }
    return reply
  }

  /** Reads a multi-line body after +OK, undoing dot-stuffing, bounded to `bytesMax` bytes of content. */
  private async readMultiline(bytesMax: number, what: string): Promise<Buffer> {
    const parts: Buffer[] = []
    let totalBytes = 0
    for (;;) {
      // A content line may be as long as the whole remaining budget; the terminator line is 3 bytes.
      const line = await this.reader.readLine(Math.max(bytesMax - totalBytes, 0) + terminatorLine.length + 1)
      if (line.equals(terminatorLine) || line.equals(terminatorLineBare)) return Buffer.concat(parts, totalBytes)
      const content = line[0] === 0x2e ? line.subarray(1) : line
      totalBytes += content.length
      if (totalBytes > bytesMax) {
        throw new JournalError('LIMIT_EXCEEDED', `${what} is larger than ${bytesMax} bytes`, { fields: { bytesMax } })
      }
      parts.push(content)
    }
  }

  /** CAPA: the server's capabilities, upper-cased lines (`USER`, `STLS`, `SASL PLAIN LOGIN`…); empty when CAPA is refused. */
  async capabilities(): Promise<Set<string>> {
    if (this.capabilitySet) return this.capabilitySet
    const reply = await this.command('CAPA')
    const result = new Set<string>()
    if (reply.ok) {
      const body = await this.readMultiline(pop3ResponseLineBytesMax * 16, 'the CAPA reply')
      for (const line of body.toString('latin1').split(/\r?\n/)) if (line.trim()) result.add(line.trim().toUpperCase())
    }
    this.capabilitySet = result
    return result
  }

  private async startTls(): Promise<void> {
    const capabilities = await this.capabilities()
    if (!capabilities.has('STLS')) throw new JournalError('TLS_FAILED', `the POP3 server ${this.options.host} does not offer STLS`)
    await this.expectOk('STLS')
    // Bytes that arrived after the +OK but before the handshake were sent in cleartext by
    // someone on the path (STARTTLS command injection); refuse instead of reading them as TLS replies.
    if (this.reader.bufferedBytes() > 0) throw new JournalError('TLS_FAILED', 'the server sent data before the STLS handshake')
    this.reader.detach()
    this.socket.setTimeout(0)
    this.socket.removeAllListeners('timeout')
    const plain = this.socket
    // From here the TLS socket wrapping it reports its failures; keep a late error of the
    // plain socket from being an unhandled 'error' event.
    plain.on('error', () => undefined)
    const secure = await handshake(connectTls({ socket: plain, servername: serverName(this.options.host), rejectUnauthorized: this.options.tlsRejectUnauthorized }), this.options)
    this.socket = secure
    this.attach(secure)
    // Capabilities learnt in cleartext may have been tampered with (RFC 2595 §4): ask again.
    this.capabilitySet = null
  }

  /**
   * Authenticates with USER/PASS, or SASL PLAIN when the server offers no USER command.
   * The password is never logged nor put into an error.
   *
   * @throws JournalError AUTH_FAILED when refused, SERVER_UNAVAILABLE for [IN-USE]/[SYS/TEMP]/[LOGIN-DELAY]
   */
  async login(user: string, password: string): Promise<void> {
    assertSafeArgument(user, 'user name')
    assertSafeArgument(password, 'password')
    this.secret = password
    const capabilities = await this.capabilities()
    const offersUser = capabilities.size === 0 || capabilities.has('USER')
    const offersPlain = [...capabilities].some((line) => /^SASL\b.*\bPLAIN\b/.test(line))
    let reply: Pop3Reply
    if (offersUser || !offersPlain) {
      reply = await this.command(`USER ${user}`)
      if (reply.ok) reply = await this.command(`PASS ${password}`, 'PASS [redacted]')
    } else {
      const token = Buffer.from(`\0${user}\0${password}`, 'utf8').toString('base64')
      reply = await this.command(`AUTH PLAIN ${token}`, 'AUTH PLAIN [redacted]')
    }
    if (reply.ok) return
    const text = redactSecret(reply.text, password)
    const temporary = reply.responseCode === 'IN-USE' || reply.responseCode === 'SYS/TEMP' || reply.responseCode === 'LOGIN-DELAY'
    throw new JournalError(temporary ? 'SERVER_UNAVAILABLE' : 'AUTH_FAILED', `the POP3 server refused the login of ${user}: ${text}`, {
      fields: { user, responseCode: reply.responseCode },
    })
  }

  /** STAT: number of messages and their total size in bytes. */
  async stat(): Promise<{ count: number; sizeBytes: number }> {
    const reply = await this.expectOk('STAT')
    const match = /^(\d+)\s+(\d+)/.exec(reply.text)
    if (!match) throw new JournalError('PROTOCOL_ERROR', `malformed STAT reply: ${JSON.stringify(reply.text.slice(0, 80))}`)
    return { count: Number(match[1]), sizeBytes: Number(match[2]) }
  }

  private async listing(command: 'UIDL' | 'LIST'): Promise<Pop3ListingEntry[]> {
    await this.expectOk(command)
    const entries: Pop3ListingEntry[] = []
    for (;;) {
      const line = await this.reader.readLine(pop3ResponseLineBytesMax)
      if (line.equals(terminatorLine) || line.equals(terminatorLineBare)) return entries
      if (entries.length >= pop3ListingEntriesMax) {
        throw new JournalError('LIMIT_EXCEEDED', `the ${command} listing has more than ${pop3ListingEntriesMax} entries`, { fields: { entriesMax: pop3ListingEntriesMax } })
      }
      const text = withoutLineEnd(line).toString('latin1')
      const match = /^(\d+)\s+(\S+)$/.exec(text)
      if (!match) throw new JournalError('PROTOCOL_ERROR', `malformed ${command} line: ${JSON.stringify(text.slice(0, 80))}`)
      entries.push({ number: Number(match[1]), value: match[2]! })
    }
  }

  /** UIDL: every message's number and unique id, in the order the server lists them. */
  async uidl(): Promise<Pop3ListingEntry[]> {
    const entries = await this.listing('UIDL')
    for (const entry of entries) {
      if (entry.value.length > pop3UidlCharactersMax) {
        throw new JournalError('PROTOCOL_ERROR', `UIDL of message ${entry.number} is longer than ${pop3UidlCharactersMax} characters`)
      }
    }
    return entries
  }

  /** LIST: every message's number and size in bytes. */
  async list(): Promise<Map<number, number>> {
    const sizes = new Map<number, number>()
    for (const entry of await this.listing('LIST')) sizes.set(entry.number, Number(entry.value))
    return sizes
  }

  /**
   * RETR: the message's bytes as the server holds them (CRLF line ends, dot-stuffing undone).
   *
   * @param bytesMax larger messages fail with LIMIT_EXCEEDED; the session is unusable then
   *   (the rest of the message is still on the wire) and is closed
   */
  async retrieve(number: number, bytesMax: number): Promise<Buffer> {
    assert.ok(Number.isInteger(number) && number > 0, 'message number must be a positive integer')
    await this.expectOk(`RETR ${number}`)
    try {
      return await this.readMultiline(bytesMax, `message ${number}`)
    } catch (error) {
      this.close()
      throw error
    }
  }

  /** DELE: marks the message deleted; the server removes it only when QUIT succeeds. */
  async delete(number: number): Promise<void> {
    assert.ok(Number.isInteger(number) && number > 0, 'message number must be a positive integer')
    await this.expectOk(`DELE ${number}`)
  }

  /**
   * QUIT: ends the session; the server then removes the messages marked by DELE (UPDATE
   * state). Resolves only on +OK: a refusal or a lost connection means nothing was removed.
   */
  async quit(): Promise<void> {
    try {
      await this.expectOk('QUIT')
    } finally {
      this.close()
    }
  }

  /** Drops the connection without QUIT (nothing marked by DELE is removed). Idempotent. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.reader.detach()
    this.socket.destroy()
  }
}

/** SNI name for a host: none for IP literals (RFC 6066 forbids them). */
function serverName(host: string): string | undefined {
  return isIP(host) === 0 ? host : undefined
}

/**
 * Waits until `socket` emits `readyEvent` ('connect' or 'secureConnect'), bounded by the
 * connect timeout; on error or timeout the socket is destroyed and a typed error thrown.
 */
function whenReady<T extends Socket>(socket: T, readyEvent: 'connect' | 'secureConnect', what: string, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new JournalError('TIMEOUT', `timed out after ${timeoutMs} ms ${what}`))
    }, timeoutMs)
    timer.unref()
    socket.once(readyEvent, () => {
      clearTimeout(timer)
      socket.removeAllListeners('error')
      resolve(socket)
    })
    socket.once('error', (error) => {
      clearTimeout(timer)
      socket.destroy()
      reject(toJournalNetworkError(error, what, ''))
    })
  })
}

/** Waits for a TLS socket's handshake, bounded by the connect timeout. */
function handshake(socket: TLSSocket, options: Pop3ClientOptions): Promise<TLSSocket> {
  return whenReady(socket, 'secureConnect', `negotiating TLS with ${options.host}:${options.port}`, options.connectTimeoutMs)
}

/** Opens the TCP (and for 'implicit', TLS) connection, bounded by the connect timeout. */
function connectSocket(options: Pop3ClientOptions): Promise<Socket> {
  if (options.tls === 'implicit') {
    return handshake(connectTls({ host: options.host, port: options.port, servername: serverName(options.host), rejectUnauthorized: options.tlsRejectUnauthorized }), options)
  }
  return whenReady(connectTcp({ host: options.host, port: options.port }), 'connect', `connecting to ${options.host}:${options.port}`, options.connectTimeoutMs)
}
