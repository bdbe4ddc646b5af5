import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { chmod, mkdir, stat, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MailkeepError } from '../common/errors.js'
import { writeFileDurable, readTextIfPresent } from '../common/durable-file.js'
import { certificateFingerprint, generateRsaKeyPem, issueSelfSignedCertificatePem } from '../common/self-signed.js'

/**
 * The HTTPS listener's certificate. At first boot the appliance issues itself one (CN = the
 * serial, names: localhost, 127.0.0.1, ::1 and the configured host), which clients pin by its
 * fingerprint; a technician replaces it with one from the organisation's CA
 * (`mailkeep tls install CERT KEY`), checked before anything is written: the key matches the
 * certificate, the certificate is valid now, and each certificate of the chain is issued and
 * signed by the next. Files: `<dataDir>/tls/key.pem` (0600), `cert.pem` (the chain, leaf
 * first), and `installed.json` when a technician's certificate is in place (the generated
 * one is then never replaced by the appliance).
 */

/** Validity of the generated certificate, in years; reissued (same key) when it runs out. */
export const generatedHttpsValidityYears = 10
/** A generated certificate this close to its end is reissued at boot, in ms. */
const reissueBeforeExpiryMs = 24 * 60 * 60 * 1000

/** The certificate the HTTPS listener serves, as loaded, created or installed. */
export interface HttpsCertificate {
  /** PEM of the private key. Named so the logger redacts it; never log it anyway. */
  readonly privateKeyPem: string
  /** The chain, leaf first. */
  readonly certificatePem: string
  /** SHA-256 of the leaf's DER, 64 lower-case hex digits (what a client pins). */
  readonly fingerprint: string
  readonly subject: string
  readonly issuer: string
  /** Subject alternative names, as node:crypto prints them (`DNS:localhost, IP Address:127.0.0.1`). */
  readonly altNames: string
  readonly notBeforeMs: number
  readonly notAfterMs: number
  /** `generated` by the appliance, or `installed` by a technician. */
  readonly source: 'generated' | 'installed'
}

/** Why a certificate and key cannot be installed; each code has its own sentence. */
export type TlsProblemCode = 'CERTIFICATE_UNREADABLE' | 'KEY_UNREADABLE' | 'KEY_MISMATCH' | 'CERTIFICATE_EXPIRED' | 'CERTIFICATE_NOT_YET_VALID' | 'CHAIN_BROKEN'

export class TlsCertificateError extends MailkeepError {
  constructor(code: TlsProblemCode, message: string, fields: Record<string, unknown> = {}) {
    super(code, message, { fields })
    this.name = 'TlsCertificateError'
  }
}

const pemCertificate = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g

/** The certificates of a PEM chain, leaf first. @throws TlsCertificateError CERTIFICATE_UNREADABLE */
function parseChain(chainPem: string): X509Certificate[] {
  const blocks = chainPem.match(pemCertificate) ?? []
  if (blocks.length === 0) throw new TlsCertificateError('CERTIFICATE_UNREADABLE', 'the certificate file holds no PEM certificate (-----BEGIN CERTIFICATE-----)')
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block)
    } catch {
      throw new TlsCertificateError('CERTIFICATE_UNREADABLE', `certificate ${index + 1} of the chain cannot be read as X.509`, { position: index + 1 })
    }
  })
}

/** @throws TlsCertificateError KEY_UNREADABLE */
function parseKey(keyPem: string): KeyObject {
  try {
    return createPrivateKey(keyPem)
  } catch {
    throw new TlsCertificateError('KEY_UNREADABLE', 'the key file holds no readable unencrypted private key (PEM, PKCS#8 or PKCS#1)')
  }
}

/**
 * Checks a certificate chain and key for installation and describes them.
 *
 * @throws TlsCertificateError with the reason: CERTIFICATE_UNREADABLE, KEY_UNREADABLE,
 *   KEY_MISMATCH, CERTIFICATE_EXPIRED, CERTIFICATE_NOT_YET_VALID, CHAIN_BROKEN
 */
export function checkCertificate(chainPem: string, keyPem: string, nowMs: number): HttpsCertificate {
  const chain = matchedChain(chainPem, keyPem, "the key does not belong to the certificate (the chain's first certificate)")
  chain.forEach((certificate, index) => {
    const notBeforeMs = Date.parse(certificate.validFrom)
    const notAfterMs = Date.parse(certificate.validTo)
    const which = index === 0 ? 'the certificate' : `certificate ${index + 1} of the chain`
    if (notAfterMs <= nowMs) throw new TlsCertificateError('CERTIFICATE_EXPIRED', `${which} expired on ${new Date(notAfterMs).toISOString()}`, { notAfter: certificate.validTo })
    if (notBeforeMs > nowMs)
      throw new TlsCertificateError('CERTIFICATE_NOT_YET_VALID', `${which} is valid only from ${new Date(notBeforeMs).toISOString()}`, { notBefore: certificate.validFrom })
    const issuer = chain[index + 1]
    if (issuer && !(certificate.checkIssued(issuer) && certificate.verify(issuer.publicKey))) {
      throw new TlsCertificateError('CHAIN_BROKEN', `certificate ${index + 1} of the chain is not issued and signed by certificate ${index + 2}`, { position: index + 1 })
    }
  })
  return describe(chain, keyPem, 'installed')
}

/** The chain, once its leaf is known to belong to the key. @throws TlsCertificateError */
function matchedChain(chainPem: string, keyPem: string, mismatch: string): X509Certificate[] {
  const chain = parseChain(chainPem)
  if (!chain[0]!.checkPrivateKey(parseKey(keyPem))) throw new TlsCertificateError('KEY_MISMATCH', mismatch)
  return chain
}

function describe(chain: X509Certificate[], keyPem: string, source: HttpsCertificate['source']): HttpsCertificate {
  const leaf = chain[0]!
  return Object.freeze({
    privateKeyPem: keyPem,
    certificatePem: chain.map((certificate) => certificate.toString()).join(''),
    fingerprint: certificateFingerprint(leaf),
    subject: leaf.subject.replaceAll('\n', ', '),
    issuer: leaf.issuer.replaceAll('\n', ', '),
    altNames: leaf.subjectAltName ?? '',
    notBeforeMs: Date.parse(leaf.validFrom),
    notAfterMs: Date.parse(leaf.validTo),
    source,
  })
}

/** Where the HTTPS certificate lives and what a generated one names. */
export interface HttpsCertificateOptions {
  dataDir: string
  /** The appliance serial: the generated certificate's common name. */
  serial: string
  /** Names a generated certificate carries besides localhost, 127.0.0.1 and ::1 (the configured host). */
  altNames?: readonly string[]
}

const directoryOf = (dataDir: string) => join(dataDir, 'tls')
const keyFile = 'key.pem'
const chainFile = 'cert.pem'
const installedFile = 'installed.json'

/** The names a generated certificate carries. */
export function generatedAltNames(extra: readonly string[] = []): string[] {
  const names = ['localhost', '127.0.0.1', '::1']
  for (const name of extra) if (name !== '0.0.0.0' && name !== '::' && name !== '' && !names.includes(name)) names.push(name)
  return names
}

/**
 * Loads the HTTPS certificate, or issues the appliance's own at first boot (RSA-2048,
 * self-signed, 10 years). A generated certificate is reissued for the same key when it has
 * run out or names other hosts than the configuration asks; an installed one is served as
 * it is (an expired one with a warning: the technician installs the next). An unreadable
 * key or chain of a generated certificate is replaced; of an installed one it is an error,
 * since replacing it silently would change what clients were told to trust.
 *
 * @throws TlsCertificateError for an unusable installed certificate; fs errors as they come
 */
export async function loadOrCreateHttpsCertificate(deps: { logger: Logger; clock: Clock }, options: HttpsCertificateOptions): Promise<HttpsCertificate> {
  const { logger, clock } = deps
  const directory = directoryOf(options.dataDir)
  await mkdir(directory, { recursive: true, mode: 0o700 })
  const keyPath = join(directory, keyFile)
  const chainPath = join(directory, chainFile)
  const installed = (await readTextIfPresent(join(directory, installedFile))) !== undefined
  let keyPem = await readTextIfPresent(keyPath)
  const chainPem = await readTextIfPresent(chainPath)

  if (installed) {
    const certificate = describeStored(chainPem ?? '', keyPem ?? '', 'installed')
    if (certificate.notAfterMs <= clock.now()) logger.warn('the installed https certificate has expired', { notAfterMs: certificate.notAfterMs, fingerprint: certificate.fingerprint })
    logger.info('https certificate loaded', { source: 'installed', fingerprint: certificate.fingerprint, subject: certificate.subject })
    return certificate
  }

  let keyUsable = keyPem !== undefined
  if (keyUsable) {
    try {
      parseKey(keyPem!)
    } catch {
      keyUsable = false
    }
  }
  if (!keyUsable) {
    keyPem = await generateRsaKeyPem()
    await writeFileDurable(keyPath, keyPem, 0o600)
    logger.info('https key created', { keyPath })
  } else if (((await stat(keyPath)).mode & 0o777) !== 0o600) {
    await chmod(keyPath, 0o600)
  }
  const wantedNames = generatedAltNames(options.altNames)
  const current = keyUsable && chainPem !== undefined ? tryDescribe(chainPem, keyPem!) : undefined
  const reason =
    current === undefined
      ? 'none usable'
      : current.notAfterMs <= clock.now() + reissueBeforeExpiryMs
        ? 'expiring'
        : !sameNames(current.altNames, wantedNames) || !current.subject.includes(`CN=${options.serial}`)
          ? 'names changed'
          : undefined
  if (reason === undefined) {
    logger.info('https certificate loaded', { source: 'generated', fingerprint: current!.fingerprint })
    return current!
  }
  const issued = issueSelfSignedCertificatePem(keyPem!, {
    commonName: options.serial,
    organization: 'mailkeep appliance',
    nowMs: clock.now(),
    validityYears: generatedHttpsValidityYears,
    altNames: wantedNames,
  })
  await writeFileDurable(chainPath, issued, 0o644)
  const certificate = describe(parseChain(issued), keyPem!, 'generated')
  logger.info('https certificate issued', { reason, fingerprint: certificate.fingerprint, altNames: certificate.altNames })
  return certificate
}

function describeStored(chainPem: string, keyPem: string, source: HttpsCertificate['source']): HttpsCertificate {
  return describe(matchedChain(chainPem, keyPem, 'the installed https key does not belong to its certificate'), keyPem, source)
}

function tryDescribe(chainPem: string, keyPem: string): HttpsCertificate | undefined {
  try {
    return describeStored(chainPem, keyPem, 'generated')
  } catch {
    return undefined
  }
}

/** True when node:crypto's `subjectAltName` text names exactly `names`. */
function sameNames(altNames: string, names: readonly string[]): boolean {
  const present = altNames
    .split(', ')
    .map((entry) => entry.replace(/^(DNS|IP Address):/, ''))
    .map((entry) => (entry === '0:0:0:0:0:0:0:1' ? '::1' : entry.toLowerCase()))
  return present.length === names.length && names.every((name) => present.includes(name.toLowerCase()))
}

/**
 * Installs a technician's certificate chain and key after `checkCertificate` accepts them:
 * both files written durably (key first), then the marker that keeps the appliance from
 * replacing them. Returns what the listener is to serve.
 *
 * @throws TlsCertificateError with the reason (nothing is written then); fs errors as they come
 */
export async function installHttpsCertificate(deps: { logger: Logger; clock: Clock }, options: { dataDir: string }, chainPem: string, keyPem: string): Promise<HttpsCertificate> {
  const certificate = checkCertificate(chainPem, keyPem, deps.clock.now())
  const directory = directoryOf(options.dataDir)
  await mkdir(directory, { recursive: true, mode: 0o700 })
  // Without the marker a crash between the two files leaves a generated-looking pair that
  // does not match; the next boot then replaces it with a fresh generated certificate.
  await unlink(join(directory, installedFile)).catch(() => undefined)
  await writeFileDurable(join(directory, keyFile), certificate.privateKeyPem, 0o600)
  await writeFileDurable(join(directory, chainFile), certificate.certificatePem, 0o644)
  await writeFileDurable(join(directory, installedFile), JSON.stringify({ installedAtMs: deps.clock.now(), fingerprint: certificate.fingerprint }) + '\n', 0o644)
  deps.logger.info('https certificate installed', { fingerprint: certificate.fingerprint, subject: certificate.subject, notAfterMs: certificate.notAfterMs })
  return certificate
}
