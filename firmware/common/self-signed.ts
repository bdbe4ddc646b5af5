import { generateKeyPair, randomBytes, type X509Certificate, createHash } from 'node:crypto'
import { isIP } from 'node:net'
import forge from 'node-forge'

/**
 * Self-signed certificates for the appliance's own TLS listeners (the mirror's identity and
 * the HTTPS API). RSA keys come from node:crypto (in the thread pool, so the key search does
 * not block the event loop during boot); node-forge writes the X.509 certificate, which
 * node:crypto cannot. node-forge signs with RSA only.
 */

/** RSA modulus size of generated keys, in bits. */
export const generatedKeyBits = 2048
/** Allowance for a client whose clock is behind, in milliseconds (notBefore is set this far back). */
export const certificateClockSkewMs = 24 * 60 * 60 * 1000

/** A new RSA private key, PEM (PKCS#8). */
export function generateRsaKeyPem(bits = generatedKeyBits): Promise<string> {
  return new Promise((resolve, reject) => {
    generateKeyPair(
      'rsa',
      { modulusLength: bits, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } },
      (error, _publicKey, privateKey) => (error ? reject(error) : resolve(privateKey)),
    )
  })
}

/** What a self-signed certificate names and how long it lasts. */
export interface SelfSignedOptions {
  commonName: string
  organization: string
  /** Issue time (notBefore is `certificateClockSkewMs` earlier). */
  nowMs: number
  validityYears: number
  /** Subject alternative names: DNS names and IP addresses (what a browser checks). */
  altNames?: readonly string[]
  /** Client authentication too (the mirror's certificate is both ends of a link). */
  clientAuth?: boolean
}

/** Issues a certificate for the RSA key `keyPem`, signed by itself (SHA-256). */
export function issueSelfSignedCertificatePem(keyPem: string, options: SelfSignedOptions): string {
  const privateKey = forge.pki.privateKeyFromPem(keyPem) as forge.pki.rsa.PrivateKey
  const certificate = forge.pki.createCertificate()
  certificate.publicKey = forge.pki.setRsaPublicKey(privateKey.n, privateKey.e)
  // A positive 16-byte serial number (RFC 5280: at most 20 bytes, non-negative).
  const serialNumber = randomBytes(16)
  serialNumber[0] = serialNumber[0]! & 0x7f
  certificate.serialNumber = serialNumber.toString('hex')
  certificate.validity.notBefore = new Date(options.nowMs - certificateClockSkewMs)
  const notAfter = new Date(options.nowMs)
  notAfter.setUTCFullYear(notAfter.getUTCFullYear() + options.validityYears)
  certificate.validity.notAfter = notAfter
  const name = [
    { name: 'commonName', value: options.commonName },
    { name: 'organizationName', value: options.organization },
  ]
  certificate.setSubject(name)
  certificate.setIssuer(name)
  const extensions: object[] = [
    { name: 'basicConstraints', cA: false, critical: true },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true, clientAuth: options.clientAuth === true },
    { name: 'subjectKeyIdentifier' },
  ]
  if (options.altNames && options.altNames.length > 0) {
    // GeneralName types: 2 = dNSName, 7 = iPAddress.
    extensions.push({ name: 'subjectAltName', altNames: options.altNames.map((name) => (isIP(name) ? { type: 7, ip: name } : { type: 2, value: name })) })
  }
  certificate.setExtensions(extensions)
  certificate.sign(privateKey, forge.md.sha256.create())
  return forge.pki.certificateToPem(certificate)
}

/** SHA-256 fingerprint of a certificate, 64 lower-case hex digits. */
export function certificateFingerprint(certificate: X509Certificate): string {
  return createHash('sha256').update(certificate.raw).digest('hex')
}
