import type { IncomingMessage, ServerResponse } from 'node:http'
import { MailkeepError } from '../common/errors.js'
import { createHttpServer, type HttpServerOptions, type TlsMaterial } from './http-server.js'

/** The HTTPS listener: where, its key and certificate chain, and the HSTS lifetime it announces. */
export interface HttpsListenerOptions extends HttpServerOptions {
  /**
   * The key and chain served. Absent when the certificate is unusable: HTTPS stays down
   * (`unavailableReason` says why, in the health check) until replaceTls gives one, and the
   * plain listener still serves only `plainNetworks`.
   */
  tls?: TlsMaterial
  unavailableReason?: string
  /** `Strict-Transport-Security: max-age` of every HTTPS answer, in seconds. */
  hstsMaxAgeSeconds: number
}

type OnRequest = (request: IncomingMessage, response: ServerResponse, overTls: boolean) => void

/**
 * The API's two listeners, plain and HTTPS, either of which may be off: listen and close
 * both, their addresses, and the HTTPS certificate swapped (or HTTPS started, when its
 * certificate was unusable).
 */
export function createListenerPair(onRequest: OnRequest, options: { http?: HttpServerOptions; https?: HttpsListenerOptions }) {
  const httpsOptions = options.https
  const plain = options.http ? createHttpServer((request, response) => onRequest(request, response, false), options.http) : undefined
  const secureServer = (https: HttpsListenerOptions, tls: TlsMaterial) => createHttpServer((request, response) => onRequest(request, response, true), { ...https, tls })
  let secure = httpsOptions?.tls ? secureServer(httpsOptions, httpsOptions.tls) : undefined
  let unavailableReason = httpsOptions && !httpsOptions.tls ? (httpsOptions.unavailableReason ?? 'no certificate') : undefined
  const servers = () => [plain, secure].filter((server) => server !== undefined)

  return {
    /** Why HTTPS is down, when it is configured but has no usable certificate. */
    unavailableReason: (): string | undefined => unavailableReason,
    /** The HTTPS port while it listens, else undefined. */
    httpsPort: (): number | undefined => (secure?.listening ? secure.address().port : undefined),
    /** Binds both. @throws the listen error; none is left listening */
    async listen(): Promise<void> {
      try {
        for (const server of servers()) await server.listen()
      } catch (error) {
        for (const server of servers()) await server.close(() => undefined)
        throw error
      }
    },
    /** Closes both (`closing` runs once neither accepts). */
    async close(closing: () => void): Promise<void> {
      await Promise.all(servers().map((server) => server.close(closing)))
    },
    /** @throws MailkeepError NOT_STARTED when that listener is not listening */
    address(listener: 'http' | 'https'): { host: string; port: number } {
      const server = listener === 'http' ? plain : secure
      if (!server) throw new MailkeepError('NOT_STARTED', `the ${listener} listener is not listening`)
      return server.address()
    },
    /** `host:port` of each listening listener, by name (`http`, `https`). */
    listeners(): Record<string, string> {
      const bound: Record<string, string> = {}
      for (const [name, server] of [
        ['http', plain],
        ['https', secure],
      ] as const) {
        if (!server?.listening) continue
        const { host, port } = server.address()
        bound[name] = `${host}:${port}`
      }
      return bound
    },
    /** @throws MailkeepError NOT_STARTED without HTTPS; the listen error as it comes */
    async replaceTls(material: TlsMaterial): Promise<void> {
      if (!httpsOptions) throw new MailkeepError('NOT_STARTED', 'https is not enabled')
      if (secure) await secure.replaceTls(material)
      else {
        const server = secureServer(httpsOptions, material)
        await server.listen()
        secure = server
      }
      unavailableReason = undefined
    },
  }
}
