import type { AddressInfo } from 'node:net'
import { createServer as createTlsServer, type Server as TlsServer, type TLSSocket } from 'node:tls'
import { MirrorError } from './errors.js'
import { tlsVersion } from './handshake-report.js'
import { acceptConnection } from './listener-connections.js'
import { handleSecureConnection } from './listener-handshake.js'
import type { ListenerContext } from './listener-types.js'

/**
 * Creates the TLS 1.3 server (both sides present a certificate; trust comes from the secret
 * proof), wires accept, TLS errors and authenticated connections to the listener's parts, and
 * listens on host:port.
 * @returns the listening server
 * @throws MirrorError LISTEN_FAILED (address in use, permission…)
 */
export async function openTlsServer(context: ListenerContext): Promise<TlsServer> {
  const { deps, options, logger, connections } = context
  const tlsServer = createTlsServer({
    key: deps.certificate.privateKeyPem,
    cert: deps.certificate.certificatePem,
    requestCert: true,
    // Trust comes from the shared-secret proof, not from a CA; the certificates are bound into it.
    rejectUnauthorized: false,
    minVersion: tlsVersion,
    maxVersion: tlsVersion,
    // A backstop only: our own deadline (started at accept) fires first.
    handshakeTimeout: options.handshakeTimeoutMs + 1_000,
  })
  tlsServer.on('connection', (raw) => acceptConnection(context, raw))
  tlsServer.on('tlsClientError', (error, socket) => {
    const state = connections.get(`${socket.remoteAddress}:${socket.remotePort}`)
    if (state) state.tlsError = error
  })
  tlsServer.on('secureConnection', (socket: TLSSocket) => {
    handleSecureConnection(context, socket).catch((error) => logger.error('mirror connection handling failed', { error }))
  })
  await new Promise<void>((resolve, reject) => {
    tlsServer.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new MirrorError('LISTEN_FAILED', `cannot listen on ${options.host}:${options.port}: ${error.code ?? error.message}`, {
          cause: error,
          fields: { host: options.host, port: options.port },
        }),
      ),
    )
    tlsServer.listen(options.port, options.host, () => resolve())
  })
  tlsServer.on('error', (error) => logger.error('mirror listener error', { error }))
  const bound = tlsServer.address() as AddressInfo
  logger.info('mirror listener started', { host: bound.address, port: bound.port, fingerprint: deps.certificate.fingerprint })
  return tlsServer
}
