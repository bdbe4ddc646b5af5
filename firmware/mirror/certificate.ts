import { generateKeyPair, createHash, createPrivateKey, randomBytes, X509Certificate } from 'node:crypto'
import { chmod, mkdir, readFile, rename, stat } from 'node:fs/promises'
import { join } from 'node:path'
import forge from 'node-forge'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { writeFileDurable } from '../common/durable-file.js'
import { MirrorError } from './errors.js'

/**
 * The appliance's mirror identity: an RSA key pair and a self-signed certificate whose
 * common name is the serial. Peers do not trust it through a CA (trust comes from the shared
 * secret); the certificate exists so TLS can run and so both certificate fingerprints can be
 * bound into the handshake proofs. It is created once, on first boot, and reused: its
 * fingerprint stays stable across restarts, so a peer or a technician can recognise it.
 */

/** RSA modulus size, in bits. node-forge signs certificates with RSA only. */
export const identityKeyBits = 2048
/**
 * Validity of the certificate, in years. Long on purpose: nothing checks expiry (no CA), and
 * an appliance must not stop mirroring on a date nobody remembers.
 */
export const identityCertificateValidityYears = 100
/** Allowance for a peer whose clock is behind, in milliseconds (notBefore is set this far back). */
export const certificateClockSkewMs = 24 * 60 * 60 * 1000

/** The appliance's mirror key pair and certificate, as loaded or created. */
export interface IdentityCertificate {
  /** PEM of the private key (PKCS#8). Named so the logger redacts it; never log it anyway. */
  readonly privateKeyPem: string
  readonly certificatePem: string
  /** SHA-256 of the DER certificate, 64 lower-case hex digits. */
  readonly fingerprint: string
  /** The serial the certificate names (its common name). */
  readonly serial: string
  /** True when this call created the key pair (first boot). */
  readonly created: boolean
}

/** Where the identity lives and whom it names. */
export interface IdentityCertificateOptions {
  /** The appliance data directory; files go to `<dataDir>/mirror/`. */
  dataDir: string
  /** The appliance serial, written as the certificate's common name. */
  serial: string
}

const keyFileName = 'key.pem'
const certificateFileName = 'cert.pem'
const keyFileMode = 0o600
const certificateFileMode = 0o644
const directoryMode = 0o700

/** SHA-256 fingerprint of a certificate, 64 lower-case hex digits. */
export function certificateFingerprint(certificate: X509Certificate): string {
  return createHash('sha256').update(certificate.raw).digest('hex')
}

function generateRsaKeyPem(): Promise<string> {
  // node:crypto generates in the libuv thread pool, so the ~1 s of key search does not block
  // the event loop during boot; node-forge's pure-JS generator would.
  return new Promise((resolve, reject) => {
    generateKeyPair(
      'rsa',
      { modulusLength: identityKeyBits, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } },
      (error, _publicKey, privateKey) => (error ? reject(error) : resolve(privateKey)),
    )
  })
}

function issueCertificatePem(keyPem: string, serial: string, nowMs: number): string {
  const privateKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey
  const certificate = forge.pki.createCertificate()
  certificate.publicKey = forge.pki.setRsaPublicKey(privateKey.n, privateKey.e)
  // A positive 16-byte serial number (RFC 5280: at most 20 bytes, non-negative).
  const serialNumber = randomBytes(16)
  serialNumber[0] = serialNumber[0]! & 0x7f
  certificate.serialNumber = serialNumber.toString('hex')
  certificate.validity.notBefore = new Date(nowMs - certificateClockSkewMs)
  const notAfter = new Date(nowMs)
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + identityCertificateValidityYears)
  certificate.validity.notAfter = notAfter
  const name = [
    { name: 'commonName', value: serial },
    { name: 'organizationName', value: 'mailkeep appliance' },
  ]
  certificate.setSubject(name)
  certificate.setIssuer(name)
  certificate.setExtensions([
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
    { name: 'subjectKeyIdentifier' },
  ])
  certificate.sign(privateKey, forge.md.sha256.create())
  return forge.pki.certificateToPem(certificate)
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}

/** The parsed key, or undefined when the PEM is unusable. */
function parseKey(keyPem: string | undefined) {
  if (keyPem === undefined) return undefined
  try {
    const key = createPrivateKey(keyPem)
    return key.asymmetricKeyType === 'rsa' ? key : undefined
  } catch {
    return undefined
  }
}

/** Why a stored certificate cannot be kept with this key and serial, or undefined when it can. */
function certificateProblem(certificatePem: string | undefined, keyPem: string, serial: string): string | undefined {
  if (certificatePem === undefined) return 'missing'
  let certificate: X509Certificate
  try {
    certificate = new X509Certificate(certificatePem)
  } catch {
    return 'unparseable'
  }
  if (!certificate.checkPrivateKey(createPrivateKey(keyPem))) return 'does not match the key'
  if (certificate.subject.split('\n').find((line) => line.startsWith('CN=')) !== `CN=${serial}`) return 'names another serial'
  return undefined
}

/**
 * Keeps unusable files (raw bytes are sacred, STYLE 10): renamed aside with a timestamp so a
 * technician can look at them, never deleted.
 */
async function quarantine(path: string, nowMs: number, logger: Logger): Promise<void> {
  const aside = `${path}.corrupt-${nowMs}`
  try {
    await rename(path, aside)
    logger.warn('unusable mirror identity file set aside', { path, aside })
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
  }
}

/**
 * Loads the mirror identity from `<dataDir>/mirror/key.pem` (mode 0600) and `cert.pem`, or
 * creates it at first boot: an RSA-2048 key from node:crypto (async) and a self-signed
 * X.509 certificate from node-forge with CN = serial, valid for 100 years, both written
 * durably (key first). Repairs what a crash or a change can leave: a key without a usable
 * certificate, or a certificate for another serial, gets a new certificate for the same key;
 * an unusable key is set aside (`key.pem.corrupt-<ms>`) and replaced. A key file with a
 * looser mode is tightened to 0600.
 *
 * @throws MirrorError CERTIFICATE_INVALID when the serial is empty; fs errors (EACCES, ENOSPC)
 *   as they come
 */
export async function loadOrCreateIdentityCertificate(deps: { logger: Logger; clock: Clock }, options: IdentityCertificateOptions): Promise<IdentityCertificate> {
  const { logger, clock } = deps
  if (options.serial.length === 0 || options.serial.length > 64) {
    throw new MirrorError('CERTIFICATE_INVALID', 'the serial for the mirror certificate must be 1–64 characters', {
      fields: { serialLength: options.serial.length },
    })
  }
  const directory = join(options.dataDir, 'mirror')
  const keyPath = join(directory, keyFileName)
  const certificatePath = join(directory, certificateFileName)
  await mkdir(directory, { recursive: true, mode: directoryMode })

  let keyPem = await readOptional(keyPath)
  let created = false
  if (parseKey(keyPem) === undefined) {
    if (keyPem !== undefined) await quarantine(keyPath, clock.now(), logger)
    // A certificate without its key is useless and would confuse the repair below.
    await quarantine(certificatePath, clock.now(), logger)
    const startedMs = clock.monotonicMs()
    keyPem = await generateRsaKeyPem()
    await writeFileDurable(keyPath, keyPem, keyFileMode)
    created = true
    logger.info('mirror key pair created', { keyPath, bits: identityKeyBits, durationMs: Math.round(clock.monotonicMs() - startedMs) })
  } else {
    const mode = (await stat(keyPath)).mode & 0o777
    if (mode !== keyFileMode) {
      await chmod(keyPath, keyFileMode)
      logger.warn('mirror key file mode tightened', { keyPath, modeOctal: mode.toString(8) })
    }
  }

  let certificatePem = await readOptional(certificatePath)
  const problem = certificateProblem(certificatePem, keyPem!, options.serial)
  if (problem !== undefined) {
    if (problem !== 'missing') {
      logger.warn('mirror certificate replaced', { certificatePath, reason: problem })
      await quarantine(certificatePath, clock.now(), logger)
    }
    certificatePem = issueCertificatePem(keyPem!, options.serial, clock.now())
    await writeFileDurable(certificatePath, certificatePem, certificateFileMode)
  }
  const fingerprint = certificateFingerprint(new X509Certificate(certificatePem!))
  logger.info(problem === undefined ? 'mirror certificate loaded' : 'mirror certificate issued', {
    certificatePath,
    fingerprint,
    serial: options.serial,
  })
  return Object.freeze({ privateKeyPem: keyPem!, certificatePem: certificatePem!, fingerprint, serial: options.serial, created })
}
