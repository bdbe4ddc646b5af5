import { createHash } from 'node:crypto'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { PeerCertificate } from 'node:tls'

/** One answer: status, headers and the whole body. */
export interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  /** The body parsed as JSON (undefined when it is not JSON). */
  json: unknown
}

export interface RequestOptions {
  method?: string
  headers?: Record<string, string>
  body?: string | Buffer
  /**
   * For https: the appliance's certificate chain (PEM, trusted as the only CA) and the
   * SHA-256 of its leaf's DER; the handshake fails before anything is sent unless the
   * server shows exactly that leaf.
   */
  pinned?: { certificatePem: string; fingerprint: string }
  /** Bind the client socket to this local address (e.g. 127.0.0.2, a non-plain client). */
  localAddress?: string
}

/** `Authorization: Basic` for `user:password`. */
export const basicAuth = (user: string, password: string): Record<string, string> => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })

/**
 * One request over plain HTTP or over HTTPS with the server's certificate pinned: the
 * handshake fails unless the server shows exactly that certificate (no CA, no name check).
 */
export function fetchAnswer(url: string, options: RequestOptions = {}): Promise<Answer> {
  const target = new URL(url)
  const secure = target.protocol === 'https:'
  const pinned = options.pinned
  if (secure && !pinned) throw new Error('https requests in tests pin the server certificate')
  const send = secure ? httpsRequest : httpRequest
  return new Promise((resolve, reject) => {
    const request = send(
      {
        host: target.hostname.replace(/^\[|\]$/g, ''),
        port: target.port,
        path: target.pathname + target.search,
        method: options.method ?? 'GET',
        headers: options.headers ?? {},
        agent: false,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
        ...(secure && pinned
          ? {
              ca: pinned.certificatePem,
              checkServerIdentity: (_host: string, peer: PeerCertificate) => {
                const fingerprint = createHash('sha256').update(peer.raw).digest('hex')
                return fingerprint === pinned.fingerprint ? undefined : new Error(`the server's certificate ${fingerprint.slice(0, 16)}… is not the pinned one`)
              },
            }
          : {}),
      },
      (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.on('error', reject)
        response.on('end', () => {
          const body = Buffer.concat(chunks)
          let json: unknown
          try {
            json = JSON.parse(body.toString('utf8'))
          } catch {
            json = undefined
          }
          resolve({ status: response.statusCode ?? 0, headers: response.headers, body, json })
        })
      },
    )
    request.on('error', reject)
    request.end(options.body)
  })
}
