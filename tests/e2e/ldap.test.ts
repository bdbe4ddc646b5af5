import t from 'tap'
import { spawnSync } from 'node:child_process'
import { X509Certificate, createHash } from 'node:crypto'
import { copyFile, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { hashPassword } from '../../firmware/common/password.js'
import { tempDir, writeConfig, startService, cliJson, portOf, bunPath, mainPath } from '../helpers/service.js'
import { basicAuth, fetchAnswer } from '../helpers/https-client.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'
import { directoryConfig, directoryPassword, startTestDirectory } from '../helpers/ldap-directory.js'

const technicianPassword = 'e2e-ldap-pass'
const mail = (from: string, to: string, subject: string) =>
  Buffer.from(
    [`From: ${from}`, `To: ${to}`, `Subject: ${subject}`, `Message-ID: <${subject.replace(/\W/g, '')}@e2e>`, 'Date: Sat, 28 Nov 2026 11:00:00 +0000', '', `${subject} body`, ''].join('\r\n'),
  )

t.test('directory sign-in through slapd: groups to roles, aliases, disabled and wrong passwords, slapd stopped', async (t) => {
  const slapd = await startTestDirectory()
  t.teardown(() => slapd.remove())
  const dir = await tempDir()
  const caFile = join(dir, 'directory-ca.pem')
  await copyFile(join(slapd.dir, 'ca.pem'), caFile)
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) }, auth: { ldap: directoryConfig(slapd, caFile) } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const local = await cliJson(config, ['user', 'add', 'loc', '--role', 'auditor', '--password-stdin'], { input: `${technicianPassword}\nlocal-account-pass\n` })
  t.equal(local.code, 0, local.stderr)

  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const ids: Record<string, string> = {}
  for (const [name, from, to] of [
    ['alias', 'partner@other.example', 'uma.alias@corp.example'],
    ['primary', 'uma@corp.example', 'partner@other.example'],
    ['other', 'ann@corp.example', 'partner@other.example'],
  ] as const) {
    const reply = await session.send(from, [to], mail(from, to, `quarterly ${name}`))
    t.equal(reply.code, 250)
    ids[name] = archivedId(reply)!
  }
  session.close()

  const certificatePem = await readFile(join(service.dataDir, 'tls', 'cert.pem'), 'utf8')
  const pinned = { certificatePem, fingerprint: createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex') }
  const base = `https://127.0.0.1:${portOf(service, 'https')}`
  const as = (user: string, password: string, path: string, method = 'GET', body?: unknown) =>
    fetchAnswer(base + path, { pinned, method, headers: { ...basicAuth(user, password), 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  const own = (name: string) => as(name, directoryPassword(name), '/api/v1/session')

  t.match((await own('ann')).json, { user: 'ann', role: 'admin', source: 'directory' }, 'ann: admins and users groups → admin')
  t.match((await own('aud')).json, { role: 'auditor' }, 'aud: auditors group → auditor')
  t.match((await own('uma')).json, { role: 'user', addresses: ['uma@corp.example', 'uma.alias@corp.example'] }, 'uma: user, her proxyAddresses alias followed')
  t.equal(
    (await as('aud', directoryPassword('aud'), '/api/v1/holds', 'POST', { name: 'x', reason: 'y', custodians: ['a@b.example'] })).status,
    403,
    'an auditor from the directory changes nothing',
  )
  const umaSearch = (await as('uma', directoryPassword('uma'), '/api/v1/search?q=quarterly')).json as { total: number; hits: { id: string }[] }
  t.same(umaSearch.hits.map((hit) => hit.id).sort(), [ids.alias!, ids.primary!].sort(), 'uma sees mail of her address and of her alias, nothing else')
  t.equal(umaSearch.total, 2)
  t.equal((await as('uma', directoryPassword('uma'), `/api/v1/messages/${ids.other}`)).status, 404)
  t.match((await as('dis', directoryPassword('dis'), '/api/v1/session')).json, { error: { code: 'ACCOUNT_DISABLED' } }, 'the disabled account is refused')
  t.match((await as('nog', directoryPassword('nog'), '/api/v1/session')).json, { error: { code: 'NO_ROLE' } }, 'an account in no mapped group is refused')
  t.match((await as('uma', 'not-her-password', '/api/v1/session')).json, { error: { code: 'AUTH_FAILED' } }, 'a wrong password is refused')
  const browser = await fetchAnswer(`${base}/api/v1/session`, {
    pinned,
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ user: 'uma', password: directoryPassword('uma') }),
  })
  t.equal(browser.status, 201, 'a directory user signs in to a browser session too')
  const trail = JSON.stringify((await cliJson(config, ['audit', 'show', '--actor', 'uma', '--limit', '50'])).json)
  t.match(trail, /"action":"mail\.search"/, "uma's searches are audited under her name")

  // slapd stopped: directory users get 503 with the reason, never a bypass; local accounts work.
  await slapd.stop()
  const down = await as('dis', directoryPassword('dis'), '/api/v1/session')
  t.equal(down.status, 503)
  t.match(down.json, { error: { code: 'DIRECTORY_UNAVAILABLE', message: /directory unavailable: ECONNREFUSED/ } })
  t.equal((await as('uma', 'a-guess-while-down', '/api/v1/search?q=quarterly')).status, 503, 'a password not verified before is not let in while the directory is down')
  t.equal((await as('loc', 'local-account-pass', '/api/v1/search?q=quarterly')).status, 200, 'a local account still works')
  const adminPassword = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  t.equal((await as('admin', adminPassword, '/api/v1/status')).status, 200, 'the first admin still works')
  await slapd.start()
  t.match((await as('nog', directoryPassword('nog'), '/api/v1/session')).json, { error: { code: 'NO_ROLE' } }, 'slapd back: answers as before')
  t.equal((await as('aud', directoryPassword('aud'), '/api/v1/session')).status, 200)
  t.notMatch(service.lines.join('\n'), new RegExp(`${slapd.rootPassword}|${directoryPassword('uma')}`), 'no password in the service log')
  const shown = JSON.stringify((await cliJson(config, ['show', 'config'])).json)
  t.match(shown, /"bindPassword":"\[redacted\]"/, 'show config redacts the bind password')
})

t.test('a malformed directory configuration stops the boot with path: reason (exit 78), no stack trace', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, {
    auth: { ldap: { url: 'ldap://127.0.0.1:1', userBase: 'dc=x', userFilter: '(uid={user}', caFile: join(dir, 'missing-ca.pem'), roleGroups: { user: ['cn=u,dc=x'] } } },
  })
  const boot = spawnSync(bunPath, [mainPath, '--config', config], { encoding: 'utf8', timeout: 30_000 })
  t.equal(boot.status, 78)
  t.match(boot.stderr, /auth\.ldap\.userFilter: not an LDAP filter/)
  t.match(boot.stderr, /auth\.ldap\.url: ldap:\/\/ without startTls/)
  t.match(boot.stderr, /auth\.ldap\.caFile: .*missing-ca\.pem: ENOENT/)
  t.notMatch(boot.stderr, /\n\s+at /, 'no stack trace')
})
