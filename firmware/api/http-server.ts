import { createServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http'
import { createServer as createTlsServer } from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import { MailkeepError } from '../common/errors.js'

/** Where the server listens, its limits and timeouts. */
export interface HttpServerOptions {
  host: string
  /** 0: any free port; see address() after listen. */
  port: number
  /** Concurrent connections accepted; beyond this the server refuses. Default 256. */
  connectionsMax?: number
  /** Whole-request time limit, in ms (node's requestTimeout). Default 60 s. */
  requestTimeoutMs?: number
  /** Idle keep-alive connections are closed after this, in ms. Default 5 s. */
  keepAliveTimeoutMs?: number
  /** Bound on how long close() waits for in-flight requests, in ms. Default 5 s. */
  stopTimeoutMs?: number
  /** Serve HTTPS with this key and certificate chain (TLS 1.2 and later only). */
  tls?: TlsMaterial
}

/** A key and the certificate chain (leaf first) a TLS listener serves, PEM. */
export interface TlsMaterial {
  readonly privateKeyPem: string
  readonly certificatePem: string
}

/** The oldest TLS version a client may speak. */
export const tlsVersionMin = 'TLSv1.2'

/** Time to receive a request's headers, in ms. */
const headersTimeoutMs = 20_000

/**
 * The listening socket's lifecycle: listen on host:port, stop accepting, let in-flight
 * requests finish within `stopTimeoutMs`, then destroy the connections left.
 */
export function createHttpServer(onRequest: (request: IncomingMessage, response: ServerResponse) => void, serverOptions: HttpServerOptions) {
  let options = serverOptions
  const sockets = new Set<Socket>()
  let server: Server | undefined

  return {
    /** True between a successful listen() and close(). */
    get listening(): boolean {
      return server !== undefined
    },
    /** Binds host:port. @throws the listen error (EADDRINUSE…) */
    async listen(): Promise<void> {
      const timeouts = { requestTimeout: options.requestTimeoutMs ?? 60_000, headersTimeout: headersTimeoutMs, keepAliveTimeout: options.keepAliveTimeoutMs ?? 5_000 }
      const tls = options.tls
      const listening: Server = tls
        ? createTlsServer({ ...timeouts, key: tls.privateKeyPem, cert: tls.certificatePem, minVersion: tlsVersionMin }, onRequest)
        : createServer(timeouts, onRequest)
      listening.maxConnections = options.connectionsMax ?? 256
      listening.on('connection', (socket: Socket) => {
        sockets.add(socket)
        socket.on('close', () => sockets.delete(socket))
      })
      await new Promise<void>((resolve, reject) => {
        listening.once('error', reject)
        listening.listen(options.port, options.host, () => resolve())
      })
      server = listening
    },
    /**
     * Stops accepting and resolves when every connection is closed; `closing` runs once new
     * connections are refused (to release held requests). False when it was not listening.
     */
    async close(closing: () => void): Promise<boolean> {
      const stopping = server
      server = undefined
      if (!stopping) return false
      const closed = new Promise<void>((resolve) => stopping.close(() => resolve()))
      closing()
      stopping.closeIdleConnections?.()
      const timer = setTimeout(() => {
        for (const socket of sockets) socket.destroy()
      }, options.stopTimeoutMs ?? 5_000)
      timer.unref()
      await closed
      clearTimeout(timer)
      return true
    },
    /**
     * Serves another key and certificate from now on: stops accepting, lets requests in
     * flight finish (as close does), and listens again on the same bound port. (Bun's TLS
     * server cannot swap its secure context in place.)
     */
    async replaceTls(tls: TlsMaterial): Promise<void> {
      const { port } = this.address()
      await this.close(() => undefined)
      options = { ...options, port, tls }
      await this.listen()
    },
    /** The bound address. @throws MailkeepError NOT_STARTED before listen() */
    address(): { host: string; port: number } {
      const address = server?.address() as AddressInfo | null
      if (!address) throw new MailkeepError('NOT_STARTED', 'http api is not listening')
      return { host: address.address, port: address.port }
    },
  }
}
