import { open } from 'node:fs/promises'
import { isAbsolute } from 'node:path'
import type { Logger } from '../firmware/common/logger.js'
import type { Clock } from '../firmware/common/clock.js'
import type { TlsMaterial } from '../firmware/api/http-server.js'
import { installHttpsCertificate, TlsCertificateError, type HttpsCertificate, type TlsProblemCode } from '../firmware/api/tls-certificate.js'
import type { CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'
import type { AuditEvent } from '../firmware/policy/index.js'

/** Largest certificate-chain or key file `tls install` reads, in bytes (a chain of a few certificates is under 10 KiB). */
export const tlsInstallFileBytesMax = 256 * 1024

/** The HTTPS certificate in use, or why there is none; `enabled` false when `https.enabled` is off. */
export interface HttpsState {
  enabled: boolean
  certificate?: HttpsCertificate
  unavailableReason?: string
}

export interface TlsCommandDeps {
  logger: Logger
  clock: Clock
  dataDir: string
  /** Changed by `tls install`. */
  state: HttpsState
  /** The running HTTPS listener serves this from now on; undefined when the listener is off. */
  replaceTls?(material: TlsMaterial): Promise<void>
  audit(event: AuditEvent): void
}

/** What `show tls` and `tls install` tell about a certificate (never the key). */
export function describeCertificate(certificate: HttpsCertificate): Record<string, unknown> {
  return {
    source: certificate.source,
    subject: certificate.subject,
    issuer: certificate.issuer,
    altNames: certificate.altNames,
    notBefore: new Date(certificate.notBeforeMs).toISOString(),
    notAfter: new Date(certificate.notAfterMs).toISOString(),
    fingerprint: certificate.fingerprint,
  }
}

/**
 * Reads a PEM file a technician named, at most `tlsInstallFileBytesMax` bytes.
 * @throws TlsCertificateError `code` with `PATH: reason` (missing, unreadable, too large)
 */
async function readPemFile(path: string, code: TlsProblemCode): Promise<string> {
  if (!isAbsolute(path)) throw new ControlError('USAGE', `${path}: the path must be absolute (the CLI resolves it)`)
  let handle: Awaited<ReturnType<typeof open>> | undefined
  try {
    handle = await open(path, 'r')
    const { size, isFile } = await handle.stat().then((stats) => ({ size: stats.size, isFile: stats.isFile() }))
    if (!isFile) throw new TlsCertificateError(code, `${path}: not a file`)
    if (size > tlsInstallFileBytesMax) throw new TlsCertificateError(code, `${path}: ${size} bytes, over the ${tlsInstallFileBytesMax}-byte limit of a PEM file`)
    return await handle.readFile('utf8')
  } catch (error) {
    if (error instanceof TlsCertificateError) throw error
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : ((error as NodeJS.ErrnoException).code ?? 'cannot be read')
    throw new TlsCertificateError(code, `${path}: ${reason}`)
  } finally {
    await handle?.close()
  }
}

/** `show tls` and `tls install CERT KEY` (technician: checked, written, served at once, audited). */
export function tlsCommandHandlers(deps: TlsCommandDeps): [string, CommandHandler][] {
  const { state } = deps
  const show = (): Record<string, unknown> => ({
    enabled: state.enabled,
    ...(state.certificate ? { certificate: describeCertificate(state.certificate) } : {}),
    ...(state.unavailableReason ? { unavailableReason: state.unavailableReason } : {}),
  })
  return [
    ['show tls', () => show()],
    [
      'tls install',
      async ([chainPath, keyPath]) => {
        const chainPem = await readPemFile(chainPath!, 'CERTIFICATE_UNREADABLE')
        const keyPem = await readPemFile(keyPath!, 'KEY_UNREADABLE')
        const certificate = await installHttpsCertificate({ logger: deps.logger, clock: deps.clock }, { dataDir: deps.dataDir }, chainPem, keyPem)
        state.certificate = certificate
        delete state.unavailableReason
        if (state.enabled && deps.replaceTls) await deps.replaceTls(certificate)
        deps.audit({ actor: 'technician', action: 'tls.install', details: { fingerprint: certificate.fingerprint, subject: certificate.subject, notAfterMs: certificate.notAfterMs } })
        return {
          message: state.enabled ? 'installed; HTTPS serves it now' : 'installed; served once https.enabled is on',
          ...show(),
        }
      },
    ],
  ]
}
