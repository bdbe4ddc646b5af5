import t from 'tap'
import { X509Certificate, createHash } from 'node:crypto'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { hashPassword } from '../../firmware/common/password.js'
import { generateRsaKeyPem, issueSelfSignedCertificatePem } from '../../firmware/common/self-signed.js'
import { tempDir, writeConfig, startService, cliJson, runCli, portOf, type RunningService } from '../helpers/service.js'
import { basicAuth, fetchAnswer } from '../helpers/https-client.js'
import { opensslChain } from '../helpers/tls.js'

const technicianPassword = 'e2e-https-pass'

/** The appliance's certificate as a client first meets it: read from its data dir and pinned. */
async function pinnedOf(service: RunningService): Promise<{ certificatePem: string; fingerprint: string }> {
  const certificatePem = await readFile(join(service.dataDir, 'tls', 'cert.pem'), 'utf8')
  return { certificatePem, fingerprint: createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex') }
}

t.test('HTTPS end to end: generated at first boot, a technician installs the CA-issued one, bad files refused clearly', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { identity: { serial: 'MK650-TLS-E2E' }, technician: { passwordHash: await hashPassword(technicianPassword) } })
  let service = await startService(config)
  t.teardown(() => service.stop())
  const auth = basicAuth('admin', (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim())
  const technician = (args: string[]) => cliJson(config, [...args, '--password-stdin'], { input: technicianPassword + '\n' })

  const httpsPort = portOf(service, 'https')
  t.ok(httpsPort > 0, 'the ready line names the https listener')
  const generated = await pinnedOf(service)
  const shown = await cliJson(config, ['show', 'tls'])
  t.match(shown.json, { enabled: true, certificate: { source: 'generated', subject: /CN=MK650-TLS-E2E/, altNames: /IP Address:127\.0\.0\.1/, fingerprint: generated.fingerprint } })
  const status = await fetchAnswer(`https://127.0.0.1:${httpsPort}/api/v1/status`, { pinned: generated, headers: auth })
  t.equal(status.status, 200)
  t.equal(status.headers['strict-transport-security'], 'max-age=31536000')
  t.match(status.json, { listeners: { https: `127.0.0.1:${httpsPort}`, http: /^127\.0\.0\.1:\d+$/ } }, 'status lists both listeners')
  const plain = await fetchAnswer(`http://127.0.0.1:${portOf(service, 'http')}/api/v1/status`, { headers: auth })
  t.equal(plain.status, 200, 'plain HTTP still serves local scripts')

  // Bad input: each refused with its reason, nothing changed.
  const work = await mkdtemp(join(dir, 'certs-'))
  const { caPem, leafPem, leafKeyPem, otherCaPem } = await opensslChain(work)
  await writeFile(join(work, 'chain.pem'), leafPem + caPem)
  await writeFile(join(work, 'leaf.key'), leafKeyPem)
  const oldKey = await generateRsaKeyPem()
  await writeFile(
    join(work, 'expired.pem'),
    issueSelfSignedCertificatePem(oldKey, { commonName: 'old', organization: 'test', nowMs: Date.now() - 3 * 365 * 86_400_000, validityYears: 1, altNames: ['localhost'] }),
  )
  await writeFile(join(work, 'expired.key'), oldKey)
  await writeFile(join(work, 'wrong-chain.pem'), leafPem + otherCaPem)
  await writeFile(join(work, 'garbage.pem'), 'hello\n')
  const refusals: [string[], string, RegExp][] = [
    [['expired.pem', 'expired.key'], 'CERTIFICATE_EXPIRED', /the certificate expired on \d{4}-/],
    [['chain.pem', 'expired.key'], 'KEY_MISMATCH', /the key does not belong to the certificate/],
    [['wrong-chain.pem', 'leaf.key'], 'CHAIN_BROKEN', /certificate 1 of the chain is not issued and signed by certificate 2/],
    [['garbage.pem', 'leaf.key'], 'CERTIFICATE_UNREADABLE', /no PEM certificate/],
    [['missing.pem', 'leaf.key'], 'CERTIFICATE_UNREADABLE', /missing\.pem: no such file/],
  ]
  for (const [files, code, message] of refusals) {
    const result = await runCli(['--config', config, 'tls', 'install', ...files, '--password-stdin'], { input: technicianPassword + '\n', cwd: work })
    t.equal(result.code, 1, `${files.join(' ')}: refused`)
    t.match(result.stderr, message, `${files.join(' ')}: ${code} in a sentence`)
    t.notMatch(result.stderr, /\n\s+at /, 'no stack trace')
  }
  const stillGenerated = await fetchAnswer(`https://127.0.0.1:${httpsPort}/api/v1/status`, { pinned: generated, headers: auth })
  t.equal(stillGenerated.status, 200, 'after the refusals the generated certificate is still served')
  const unauthorized = await cliJson(config, ['tls', 'install', join(work, 'chain.pem'), join(work, 'leaf.key')])
  t.not(unauthorized.code, 0, 'tls install without the technician password is refused')

  // Relative paths are resolved by the CLI against its working directory.
  const installed = await runCli(['--config', config, 'tls', 'install', 'chain.pem', 'leaf.key', '--password-stdin'], { input: technicianPassword + '\n', cwd: work })
  t.equal(installed.code, 0, installed.stderr)
  t.match(installed.stdout, /installed; HTTPS serves it now/)
  t.match(installed.stdout, /CN=archive\.example\.com/)
  const leaf = new X509Certificate(leafPem)
  const caIssued = { certificatePem: caPem, fingerprint: createHash('sha256').update(leaf.raw).digest('hex') }
  const served = await fetchAnswer(`https://127.0.0.1:${httpsPort}/api/v1/status`, { pinned: caIssued, headers: auth })
  t.equal(served.status, 200, 'HTTPS serves the installed chain on the same port, no restart')
  await t.rejects(fetchAnswer(`https://127.0.0.1:${httpsPort}/api/v1/status`, { pinned: generated, headers: auth }), 'the generated certificate is gone')
  const audit = await cliJson(config, ['audit', 'show'])
  t.match(JSON.stringify(audit.json), /"action":"tls\.install".*"fingerprint":"[0-9a-f]{64}"/, 'the install is audited with its fingerprint')

  // A restart serves the installed certificate, not a generated one.
  await service.stop()
  service = await startService(config)
  const afterRestart = await fetchAnswer(`https://127.0.0.1:${portOf(service, 'https')}/api/v1/status`, { pinned: caIssued, headers: auth })
  t.equal(afterRestart.status, 200, 'the installed certificate survives a restart')
  t.match((await technician(['show', 'tls'])).json, { certificate: { source: 'installed', issuer: /CN=ca test authority/ } })
})
