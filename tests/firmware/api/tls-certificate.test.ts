import t from 'tap'
import { X509Certificate, createHash } from 'node:crypto'
import { mkdtemp, readFile, readdir, stat, writeFile } from 'node:fs/promises'
import { get as httpsGet } from 'node:https'
import { tmpdir } from 'node:os'
import { connect, type SecureVersion } from 'node:tls'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock, systemClock } from '../../../firmware/common/clock.js'
import { generateRsaKeyPem, issueSelfSignedCertificatePem } from '../../../firmware/common/self-signed.js'
import { createHttpServer } from '../../../firmware/api/http-server.js'
import { checkCertificate, installHttpsCertificate, loadOrCreateHttpsCertificate, TlsCertificateError } from '../../../firmware/api/tls-certificate.js'

import { opensslChain } from '../../helpers/tls.js'

const deps = () => ({ logger: createMemoryLogger(), clock: systemClock })

t.test('generated: names the serial and loopback, 0600 key, reused across loads, reissued when the names change', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-https-cert-'))
  const first = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001', altNames: ['192.0.2.10'] })
  t.equal(first.source, 'generated')
  t.match(first.subject, /CN=MK650-0001/)
  t.match(first.altNames, /DNS:localhost/)
  t.match(first.altNames, /IP Address:127\.0\.0\.1/)
  t.match(first.altNames, /IP Address:192\.0\.2\.10/)
  const leaf = new X509Certificate(await readFile(join(dataDir, 'tls', 'cert.pem'), 'utf8'))
  t.equal(createHash('sha256').update(leaf.raw).digest('hex'), first.fingerprint, 'fingerprint is the SHA-256 of the DER')
  t.ok(leaf.checkHost('localhost') && leaf.checkIP('127.0.0.1') && leaf.checkIP('::1'), 'a client checking names accepts localhost, 127.0.0.1 and ::1')
  t.equal((await stat(join(dataDir, 'tls', 'key.pem'))).mode & 0o777, 0o600, 'key is 0600')
  t.ok(first.notAfterMs - Date.now() > 9 * 365 * 86_400_000, 'valid for about ten years')

  const again = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001', altNames: ['192.0.2.10'] })
  t.equal(again.fingerprint, first.fingerprint, 'a restart serves the same certificate')
  const moved = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001', altNames: ['192.0.2.11'] })
  t.not(moved.fingerprint, first.fingerprint, 'another configured host: reissued')
  t.equal(moved.privateKeyPem, first.privateKeyPem, 'for the same key')
  t.match(moved.altNames, /192\.0\.2\.11/)
  t.notMatch(moved.altNames, /192\.0\.2\.10/)

  // A generated certificate that has run out is reissued at boot.
  const later = createManualClock(first.notAfterMs + 1_000)
  const renewed = await loadOrCreateHttpsCertificate({ logger: createMemoryLogger(), clock: later }, { dataDir, serial: 'MK650-0001', altNames: ['192.0.2.11'] })
  t.ok(renewed.notAfterMs > later.now(), 'an expired generated certificate is reissued')

  await writeFile(join(dataDir, 'tls', 'key.pem'), 'not a key')
  const replaced = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  t.not(replaced.privateKeyPem, first.privateKeyPem, 'an unreadable generated key is replaced')
  t.same((await readdir(join(dataDir, 'tls'))).sort(), ['cert.pem', 'key.pem'], 'no temporary files left')
})

t.test('install: an openssl CA chain is checked, written and then kept across boots', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-https-ca-'))
  const { caPem, leafPem, leafKeyPem } = await opensslChain(dir)
  const dataDir = join(dir, 'data')
  const generated = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001' })

  const installed = await installHttpsCertificate(deps(), { dataDir }, leafPem + caPem, leafKeyPem)
  t.equal(installed.source, 'installed')
  t.match(installed.subject, /CN=archive\.example\.com/)
  t.match(installed.issuer, /CN=ca test authority/)
  t.equal(installed.fingerprint, createHash('sha256').update(new X509Certificate(leafPem).raw).digest('hex'))
  t.not(installed.fingerprint, generated.fingerprint)
  const stored = await readFile(join(dataDir, 'tls', 'cert.pem'), 'utf8')
  t.equal((stored.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'the whole chain is stored, leaf first')
  t.equal((await stat(join(dataDir, 'tls', 'key.pem'))).mode & 0o777, 0o600)

  // The appliance never replaces an installed certificate, even when its names differ.
  const booted = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001', altNames: ['192.0.2.99'] })
  t.same([booted.source, booted.fingerprint], ['installed', installed.fingerprint], 'the next boot serves the installed chain')
})

t.test('install: every bad input is refused with its reason and nothing is written', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-https-bad-'))
  const { caPem, leafPem, leafKeyPem, otherCaPem } = await opensslChain(dir)
  const dataDir = join(dir, 'data')
  const generated = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  const nowMs = Date.now()
  const otherKey = await generateRsaKeyPem()
  const expired = issueSelfSignedCertificatePem(otherKey, { commonName: 'old', organization: 'test', nowMs: nowMs - 3 * 365 * 86_400_000, validityYears: 1 })
  const future = issueSelfSignedCertificatePem(otherKey, { commonName: 'new', organization: 'test', nowMs: nowMs + 3 * 86_400_000, validityYears: 1 })

  const cases: Array<[string, string, string, string, RegExp]> = [
    ['no certificate at all', 'hello', leafKeyPem, 'CERTIFICATE_UNREADABLE', /no PEM certificate/],
    ['a damaged certificate', '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n', leafKeyPem, 'CERTIFICATE_UNREADABLE', /certificate 1 of the chain/],
    ['an unreadable key', leafPem, 'not a key', 'KEY_UNREADABLE', /private key/],
    ["another certificate's key", leafPem, otherKey, 'KEY_MISMATCH', /does not belong/],
    ['an expired certificate', expired, otherKey, 'CERTIFICATE_EXPIRED', /expired on \d{4}-/],
    ['a certificate not yet valid', future, otherKey, 'CERTIFICATE_NOT_YET_VALID', /valid only from/],
    ['a chain with the wrong authority', leafPem + otherCaPem, leafKeyPem, 'CHAIN_BROKEN', /not issued and signed by certificate 2/],
    ['a chain in the wrong order', caPem + leafPem, leafKeyPem, 'KEY_MISMATCH', /does not belong/],
  ]
  for (const [what, chain, key, code, sentence] of cases) {
    const error = await installHttpsCertificate(deps(), { dataDir }, chain, key).then(
      () => undefined,
      (caught: unknown) => caught,
    )
    t.ok(error instanceof TlsCertificateError, `${what}: a typed error`)
    t.match(error, { code, message: sentence }, `${what}: ${code}`)
    t.notMatch(String((error as Error).message), /MII[A-Za-z0-9+/]{8}|PRIVATE KEY-----/, `${what}: the sentence quotes no key or certificate`)
  }
  const kept = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  t.same([kept.source, kept.fingerprint], ['generated', generated.fingerprint], 'the generated certificate is still served')
  t.same((await readdir(join(dataDir, 'tls'))).sort(), ['cert.pem', 'key.pem'], 'no file was written')
  t.equal(checkCertificate(leafPem + caPem, leafKeyPem, nowMs).source, 'installed', 'checkCertificate alone accepts the good pair')
})

/** The leaf a TLS client is shown, and the protocol agreed, or the handshake's error. */
function handshake(port: number, versions: { minVersion?: SecureVersion; maxVersion?: SecureVersion } = {}): Promise<{ fingerprint: string; protocol: string | null } | Error> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...versions }, () => {
      const fingerprint = createHash('sha256').update(socket.getPeerX509Certificate()!.raw).digest('hex')
      resolve({ fingerprint, protocol: socket.getProtocol() })
      socket.end()
    })
    socket.on('error', (error) => resolve(error))
  })
}

t.test('the listener serves its certificate over TLS 1.2+ only and swaps it on the same port', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-https-listen-'))
  const generated = await loadOrCreateHttpsCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  const server = createHttpServer((_request, response) => response.end('ok'), { host: '127.0.0.1', port: 0, tls: generated, stopTimeoutMs: 500 })
  await server.listen()
  t.teardown(() => server.close(() => undefined))
  const { port } = server.address()

  t.match(await handshake(port), { fingerprint: generated.fingerprint, protocol: /^TLSv1\.[23]$/ }, 'the generated certificate is served')
  const pinned = await new Promise<string>((resolve, reject) => {
    const request = httpsGet({ host: '127.0.0.1', port, path: '/', ca: generated.certificatePem, servername: 'localhost', checkServerIdentity: () => undefined }, (response) => {
      let body = ''
      response.on('data', (chunk) => (body += chunk))
      response.on('end', () => resolve(body))
    })
    request.on('error', reject)
  })
  t.equal(pinned, 'ok', 'a client trusting only this certificate gets its answer')
  const old = await handshake(port, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })
  t.ok(old instanceof Error, 'a client limited to TLS 1.1 is refused')

  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-https-swap-'))
  const { caPem, leafPem, leafKeyPem } = await opensslChain(dir)
  const installed = await installHttpsCertificate(deps(), { dataDir }, leafPem + caPem, leafKeyPem)
  await server.replaceTls(installed)
  t.equal(server.address().port, port, 'the same port')
  t.match(await handshake(port), { fingerprint: installed.fingerprint }, 'the installed certificate is served from then on')
})
