import { createPrivateKey, X509Certificate } from 'node:crypto'
import { chmod, mkdir, rename, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { writeFileDurable, readTextIfPresent } from '../common/durable-file.js'
import { certificateFingerprint, generateRsaKeyPem, generatedKeyBits, issueSelfSignedCertificatePem } from '../common/self-signed.js'
import { MirrorError } from './errors.js'

export { certificateClockSkewMs, certificateFingerprint } from '../common/self-signed.js'

/**
 * The appliance's mirror identity: an RSA key pair and a self-signed certificate whose
 * common name is the serial. Peers do not trust it through a CA (trust comes from the shared
 * secret); the certificate exists so TLS can run and so both certificate fingerprints can be
 * bound into the handshake proofs. It is created once, on first boot, and reused: its
 * fingerprint stays stable across restarts, so a peer or a technician can recognise it.
 */

/** RSA modulus size, in bits. node-forge signs certificates with RSA only. */
export const identityKeyBits = generatedKeyBits
/**
 * Validity of the certificate, in years. Long on purpose: nothing checks expiry (no CA), and
 * an appliance must not stop mirroring on a date nobody remembers.
 */
export const identityCertificateValidityYears = 100

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

function issueCertificatePem(keyPem: string, serial: string, nowMs: number): string {
  return issueSelfSignedCertificatePem(keyPem, {
    commonName: serial,
    organization: 'mailkeep appliance',
    nowMs,
    validityYears: identityCertificateValidityYears,
    clientAuth: true,
  })
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

  let keyPem = await readTextIfPresent(keyPath)
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

  let certificatePem = await readTextIfPresent(certificatePath)
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
