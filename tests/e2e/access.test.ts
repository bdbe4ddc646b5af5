import t from 'tap'
import { X509Certificate, createHash, verify } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { hashPassword } from '../../firmware/common/password.js'
import { roles, type Role } from '../../firmware/access/roles.js'
import { coreRoutes } from '../../firmware/api/message-routes.js'
import { extraRoutes } from '../../boot/compose-http.js'
import type { ExportDeps } from '../../firmware/api/export-routes.js'
import type { PolicyService } from '../../firmware/policy/index.js'
import { tempDir, writeConfig, startService, cliJson, runCli, portOf } from '../helpers/service.js'
import { basicAuth, fetchAnswer, type Answer } from '../helpers/https-client.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'
import { exchangeJournalReport } from '../helpers/journal-report.js'
import { unzip } from '../helpers/zip.js'

const technicianPassword = 'e2e-access-pass'
const passwords: Record<string, string> = {
  auditor1: 'auditor-password-1',
  admin2: 'second-admin-password',
  bob: 'bob-password-123',
  carol: 'carol-password-123',
  erin: 'erin-password-123',
}

const attachmentText = 'region,total\nnorth,1200\nsouth,900\n'
const mail = (headers: string[], body: string) => Buffer.from([...headers, 'Date: Sat, 28 Nov 2026 11:00:00 +0000', '', body, ''].join('\r\n'))

t.test('accounts and roles over real HTTPS: every route × role, a user sees only their own mail', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const technician = (args: string[], secret?: string) => cliJson(config, [...args, '--password-stdin'], { input: technicianPassword + '\n' + (secret === undefined ? '' : secret + '\n') })

  // Accounts, over the CLI (technician password, then the account's, one line each).
  for (const [name, role, addresses] of [
    ['auditor1', 'auditor', []],
    ['admin2', 'admin', []],
    ['bob', 'user', ['bob@example.com', 'Robert@Example.com']],
    ['carol', 'user', ['carol.hidden@example.com']],
    ['erin', 'user', ['erin@example.com']],
  ] as const) {
    const added = await technician(['user', 'add', name, '--role', role, ...addresses.flatMap((address) => ['--address', address])], passwords[name])
    t.equal(added.code, 0, `user add ${name}: ${added.stderr}`)
  }
  const listed = await cliJson(config, ['user', 'list'])
  t.match(listed.json, [{ name: 'admin2', role: 'admin' }, { name: 'auditor1' }, { name: 'bob', addresses: ['bob@example.com', 'robert@example.com'] }, { name: 'carol' }, { name: 'erin' }])
  t.notMatch(JSON.stringify(listed.json), /scrypt|password/, 'no hash is shown')
  const duplicate = await technician(['user', 'add', 'bob', '--role', 'user', '--address', 'x@example.com'], 'another-password-1')
  t.match(duplicate.json, { error: { code: 'EXISTS' } })
  const short = await technician(['user', 'add', 'zoe', '--role', 'user', '--address', 'zoe@example.com'], 'short')
  t.match(short.json, { error: { code: 'INVALID', message: /shorter than 10 characters/ } })
  const badRole = await technician(['user', 'add', 'zoe', '--role', 'boss', '--address', 'zoe@example.com'], 'long-enough-password')
  t.match(badRole.json, { error: { code: 'INVALID', message: /role "boss": one of admin, auditor, user/ } })
  const noAddress = await technician(['user', 'add', 'zoe', '--role', 'user'], 'long-enough-password')
  t.match(noAddress.json, { error: { code: 'INVALID', message: /needs at least one address/ } })
  const reserved = await technician(['user', 'add', 'admin', '--role', 'admin'], 'long-enough-password')
  t.match(reserved.json, { error: { code: 'INVALID', message: /reserved/ } })
  const log = await readFile(join(service.dataDir, '..', 'config.json'), 'utf8').catch(() => '')
  t.notMatch(service.lines.join('\n') + log, /bob-password-123|carol-password-123/, 'no account password in the log')

  // Mail: all of it says "quarterly"; who may see which is in the comments.
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const send = async (from: string, to: string[], raw: Buffer) => {
    const reply = await session.send(from, to, raw)
    t.equal(reply.code, 250, reply.text)
    return archivedId(reply)!
  }
  const ids = {
    // A journal report: alice to bob, carol.hidden in the envelope's BCC only → bob, carol.
    journal: await send(
      'journal@corp.example',
      ['journal@archive.local'],
      exchangeJournalReport(
        mail(
          [
            'From: Alice <alice@example.com>',
            'To: bob@example.com',
            'Subject: quarterly numbers',
            'Message-ID: <q@example.com>',
            'MIME-Version: 1.0',
            'Content-Type: multipart/mixed; boundary="att"',
          ],
          [
            '--att',
            'Content-Type: text/plain',
            '',
            'quarterly numbers body',
            '--att',
            'Content-Type: text/csv; name="numbers.csv"',
            'Content-Disposition: attachment; filename="numbers.csv"',
            'Content-Transfer-Encoding: base64',
            '',
            Buffer.from(attachmentText).toString('base64'),
            '--att--',
          ].join('\r\n'),
        ),
      ),
    ),
    // bob's alias, in another case, as sender → bob.
    alias: await send(
      'robert@example.com',
      ['zed@example.com'],
      mail(['From: ROBERT@example.com', 'To: zed@example.com', 'Subject: quarterly alias', 'Message-ID: <alias@example.com>'], 'quarterly from the alias'),
    ),
    // erin → erin.
    erin: await send(
      'erin@example.com',
      ['zed@example.com'],
      mail(['From: Erin <Erin@Example.com>', 'To: zed@example.com', 'Subject: quarterly erin', 'Message-ID: <erin@example.com>'], 'quarterly by erin'),
    ),
    // Near misses of erin and nobody's → admins and auditors only.
    lookalike: await send(
      'erin@example.co',
      ['x.erin@example.com'],
      mail(['From: erin@example.co', 'To: x.erin@example.com, erin@example.com.evil', 'Subject: quarterly lookalike', 'Message-ID: <look@example.com>'], 'quarterly lookalike'),
    ),
    nobody: await send(
      'zed@example.com',
      ['yan@example.com'],
      mail(['From: zed@example.com', 'To: yan@example.com', 'Subject: quarterly nobody', 'Message-ID: <nobody@example.com>'], 'quarterly nobody secret'),
    ),
  }
  session.close()
  const sees: Record<string, string[]> = {
    admin: Object.values(ids),
    admin2: Object.values(ids),
    auditor1: Object.values(ids),
    bob: [ids.journal, ids.alias],
    carol: [ids.journal],
    erin: [ids.erin],
  }

  const certificatePem = await readFile(join(service.dataDir, 'tls', 'cert.pem'), 'utf8')
  const pinned = { certificatePem, fingerprint: createHash('sha256').update(new X509Certificate(certificatePem).raw).digest('hex') }
  const base = `https://127.0.0.1:${portOf(service, 'https')}`
  passwords.admin = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const as = (name: string, path: string, options: { method?: string; body?: unknown } = {}): Promise<Answer> =>
    fetchAnswer(base + path, {
      pinned,
      method: options.method ?? 'GET',
      headers: { ...basicAuth(name, passwords[name]!), ...(options.body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
    })

  // Scope through search: hits, totals and snippets hold only the caller's mail.
  for (const [name, visible] of Object.entries(sees)) {
    const answer = await as(name, '/api/v1/search?q=quarterly&limit=2')
    t.equal(answer.status, 200, `${name} searches`)
    const result = answer.json as { total: number; hits: { id: string; snippet: string }[]; nextCursor: string | null }
    t.equal(result.total, visible.length, `${name}: the total counts only their mail`)
    const all = [...result.hits]
    let cursor = result.nextCursor
    while (cursor) {
      const next = (await as(name, `/api/v1/search?q=quarterly&limit=2&cursor=${encodeURIComponent(cursor)}`)).json as typeof result
      all.push(...next.hits)
      cursor = next.nextCursor
    }
    t.same(all.map((hit) => hit.id).sort(), [...visible].sort(), `${name}: every page holds exactly their mail`)
    if (!visible.includes(ids.nobody)) t.notMatch(JSON.stringify(all), /secret/, `${name}: no snippet of another's mail`)
    const counted = (await as(name, '/api/v1/search?q=nobody')).json as { total: number }
    t.equal(counted.total, visible.includes(ids.nobody) ? 1 : 0, `${name}: a word only in another's mail counts nothing`)
  }
  const bcc = (await as('carol', '/api/v1/search?q=to:carol.hidden@example.com')).json as { total: number }
  t.equal(bcc.total, 1, 'carol finds the message she was a journal BCC of')

  // Scope through reads: another's message is 404, the same answer as one that does not exist.
  const absent = 'f'.repeat(64)
  for (const [name, visible] of Object.entries(sees)) {
    for (const id of Object.values(ids)) {
      for (const suffix of ['', '/raw']) {
        const answer = await as(name, `/api/v1/messages/${id}${suffix}`)
        t.equal(answer.status, visible.includes(id) ? 200 : 404, `${name} ${suffix || 'meta'} ${id.slice(0, 8)}`)
      }
    }
  }
  // Attachments: the same scope, BCC-only recipients included; each download audited.
  for (const [name, visible] of Object.entries(sees)) {
    const answer = await as(name, `/api/v1/messages/${ids.journal}/attachments/0`)
    t.equal(answer.status, visible.includes(ids.journal) ? 200 : 404, `${name}: the journal message's attachment`)
    if (answer.status === 200) {
      t.equal(answer.body.toString(), attachmentText, `${name}: its bytes`)
      t.match(answer.headers, { 'content-type': 'application/octet-stream', 'x-content-type-options': 'nosniff', 'content-disposition': /^attachment; filename="numbers\.csv"/ })
    }
  }
  t.equal((await as('carol', `/api/v1/messages/${ids.journal}/attachments/1`)).status, 404, 'an attachment number the message does not have')
  t.equal((await as('carol', `/api/v1/messages/${ids.nobody}/attachments/0`)).status, 404)

  const foreign = await as('erin', `/api/v1/messages/${ids.nobody}/raw`)
  const missing = await as('erin', `/api/v1/messages/${absent}/raw`)
  t.same(foreign.json, { error: { code: 'NOT_FOUND', message: `no message ${ids.nobody}` } })
  t.same(missing.json, { error: { code: 'NOT_FOUND', message: `no message ${absent}` } }, 'the same answer as for an id nobody archived')

  // Export: a zip of the caller's messages, byte-identical, with a manifest the appliance signed.
  const exportOf = async (name: string) => {
    const answer = await as(name, '/api/v1/export?q=quarterly')
    t.equal(answer.status, 200, `${name} exports`)
    t.equal(answer.headers['content-type'], 'application/zip')
    const files = await unzip(answer.body)
    const manifestBytes = files.get('manifest.json')!
    const manifest = JSON.parse(manifestBytes.toString()) as { count: number; query: string; exportedBy: string; messages: { id: string; sizeBytes: number; deliveries: unknown[] }[] }
    t.equal(createHash('sha256').update(manifestBytes).digest('hex'), answer.headers['x-manifest-sha256'], `${name}: the manifest's hash is in the answer's header`)
    const signer = new X509Certificate(files.get('certificate.pem')!.toString())
    t.ok(
      verify('sha256', manifestBytes, signer.publicKey, Buffer.from(files.get('manifest.sig')!.toString().trim(), 'base64')),
      `${name}: the manifest's signature verifies with the appliance's certificate`,
    )
    return { files, manifest }
  }
  const carolExport = await exportOf('carol')
  t.same(
    carolExport.manifest.messages.map((message) => message.id),
    [ids.journal],
    'carol exports only the message she was a journal BCC of',
  )
  t.same([...carolExport.files.keys()].sort(), ['certificate.pem', 'manifest.json', 'manifest.sig', `messages/${ids.journal}.eml`])
  const rawJournal = (await as('carol', `/api/v1/messages/${ids.journal}/raw`)).body
  t.same(carolExport.files.get(`messages/${ids.journal}.eml`), rawJournal, 'the .eml in the zip is the /raw bytes')
  t.equal(createHash('sha256').update(rawJournal).digest('hex'), ids.journal, 'and its SHA-256 is its id in the manifest')
  const auditorExport = await exportOf('auditor1')
  t.equal(auditorExport.manifest.count, Object.keys(ids).length, 'the auditor exports every message')
  for (const message of auditorExport.manifest.messages) {
    const bytes = auditorExport.files.get(`messages/${message.id}.eml`)!
    t.equal(createHash('sha256').update(bytes).digest('hex'), message.id, `${message.id.slice(0, 8)}: bytes match the manifest`)
  }

  // The technician's export: the same zip, written by the service to a file the CLI names.
  const cliExport = await runCli(['--config', config, 'export', 'quarterly', '--out', 'case.zip', '--password-stdin'], { input: technicianPassword + '\n', cwd: dir })
  t.equal(cliExport.code, 0, cliExport.stderr)
  t.match(cliExport.stdout, new RegExp(`exported ${Object.keys(ids).length} message\\(s\\) to ${dir.replace(/[/\\.]/g, '\\$&')}/case\\.zip`))
  const caseFiles = await unzip(await readFile(join(dir, 'case.zip')))
  t.equal((JSON.parse(caseFiles.get('manifest.json')!.toString()) as { count: number; exportedBy: string }).exportedBy, 'technician')
  t.equal([...caseFiles.keys()].filter((name) => name.startsWith('messages/')).length, Object.keys(ids).length)
  const again = await runCli(['--config', config, 'export', 'quarterly', '--out', 'case.zip', '--password-stdin'], { input: technicianPassword + '\n', cwd: dir })
  t.match(again.stderr, /case\.zip: exists; not overwritten/, 'an existing file is never overwritten')

  // Chain of custody: each search and each content read is an audit entry of its account.
  const carolTrail = (await cliJson(config, ['audit', 'show', '--actor', 'carol', '--limit', '100'])).json as { actor: string; action: string; details: Record<string, unknown> }[]
  t.ok(carolTrail.length > 0 && carolTrail.every((entry) => /^carol@127\.0\.0\.1$/.test(entry.actor)), 'audit show --actor carol: only carol, with her address')
  t.match(
    carolTrail.find((entry) => entry.action === 'mail.search' && entry.details.query === 'quarterly'),
    { details: { role: 'user', total: 1, ids: [ids.journal] } },
    'her search: the query, the total and the ids she was shown',
  )
  t.match(
    carolTrail.find((entry) => entry.action === 'mail.export'),
    { details: { role: 'user', query: 'quarterly', count: 1, manifestSha256: /^[0-9a-f]{64}$/ } },
    'her export: the query, the count and the manifest hash',
  )
  t.match(
    carolTrail.filter((entry) => entry.action === 'mail.read').map((entry) => entry.details),
    [
      { part: 'metadata', ids: [ids.journal] },
      { part: 'raw', ids: [ids.journal] },
    ],
    'her reads: exactly the two she was served, none of the 404s',
  )
  const auditorTrail = (await cliJson(config, ['audit', 'show', '--actor', 'auditor1', '--limit', '100'])).json as { action: string }[]
  t.equal(auditorTrail.filter((entry) => entry.action === 'mail.read').length, 2 * Object.keys(ids).length + 1, 'every read by the auditor')

  // Every route × every role. The table names a request and the status per role; a route
  // the API serves without a row here fails the test (a new route must say who may use it).
  const table: { method: 'GET' | 'POST'; path: string; body?: unknown; expect: Record<Role, number> }[] = [
    { method: 'POST', path: '/api/v1/session', body: { user: 'bob', password: passwords.bob }, expect: { admin: 201, auditor: 201, user: 201 } },
    { method: 'GET', path: '/api/v1/session', expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'POST', path: '/api/v1/session/signout', expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'GET', path: '/api/v1/status', expect: { admin: 200, auditor: 200, user: 403 } },
    { method: 'GET', path: `/api/v1/messages/${ids.journal}`, expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'GET', path: `/api/v1/messages/${ids.journal}/raw`, expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'GET', path: '/api/v1/search?q=quarterly', expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'GET', path: `/api/v1/messages/${ids.journal}/attachments/0`, expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'GET', path: '/api/v1/export?q=quarterly', expect: { admin: 200, auditor: 200, user: 200 } },
    { method: 'GET', path: '/api/v1/policies', expect: { admin: 200, auditor: 200, user: 403 } },
    { method: 'POST', path: '/api/v1/policies', body: { name: 'role-test', retentionDays: 3650, criteria: { senders: ['@news.example'] } }, expect: { admin: 201, auditor: 403, user: 403 } },
    { method: 'GET', path: '/api/v1/policies/preview', expect: { admin: 200, auditor: 200, user: 403 } },
    { method: 'POST', path: '/api/v1/policies/role-test/remove', expect: { admin: 200, auditor: 403, user: 403 } },
    { method: 'GET', path: '/api/v1/holds', expect: { admin: 200, auditor: 200, user: 403 } },
    { method: 'POST', path: '/api/v1/holds', body: { name: 'role-hold', reason: 'role table', custodians: ['zed@example.com'] }, expect: { admin: 201, auditor: 403, user: 403 } },
    { method: 'POST', path: '/api/v1/holds/role-hold/release', expect: { admin: 200, auditor: 403, user: 403 } },
    { method: 'GET', path: '/api/v1/audit/verify', expect: { admin: 200, auditor: 200, user: 403 } },
    { method: 'GET', path: '/api/v1/audit?limit=5', expect: { admin: 200, auditor: 200, user: 403 } },
  ]
  const served = [
    ...coreRoutes({ archive: { getMeta: () => undefined, getRaw: () => undefined }, status: async () => ({}) }),
    ...extraRoutes({
      archive: { getMeta: () => undefined, getRaw: async () => undefined },
      search: { search: async () => ({ total: 0, hits: [], nextCursor: null }) },
      policy: {} as PolicyService,
      exporter: {} as ExportDeps,
    }),
  ]
  for (const route of served) {
    const rows = table.filter((row) => row.method === route.method && route.pattern.test(row.path.split('?')[0]!))
    t.ok(rows.length > 0, `${route.method} ${route.pattern.source} has a row in the role table`)
  }
  const accountOf: Record<Role, string[]> = { user: ['bob'], auditor: ['auditor1'], admin: ['admin2', 'admin'] }
  // Refusals first (they change nothing), then the admin, whose POSTs create and remove.
  for (const role of ['user', 'auditor', 'admin'] as const) {
    t.ok(roles.includes(role))
    for (const row of table) {
      const name = role === 'admin' ? (row.method === 'POST' && row.path.includes('hold') ? 'admin2' : 'admin') : accountOf[role][0]!
      const answer = await as(name, row.path, { method: row.method, body: row.body })
      t.equal(answer.status, row.expect[role], `${role} (${name}) ${row.method} ${row.path}: ${answer.body.toString().slice(0, 160)}`)
      if (answer.status === 403) t.match(answer.json, { error: { code: 'FORBIDDEN', message: new RegExp(`the ${role} role may not`) } })
    }
  }

  // Browser sessions: cookie flags, CSRF on every change, sign-out, ended with the account.
  const signIn = (user: string, password: string) =>
    fetchAnswer(`${base}/api/v1/session`, { pinned, method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ user, password }) })
  t.match((await signIn('bob', 'not-his-password')).json, { error: { code: 'AUTH_FAILED' } })
  const started = await signIn('bob', passwords.bob!)
  t.equal(started.status, 201)
  const setCookie = String(started.headers['set-cookie'])
  t.match(setCookie, /^__Host-mailkeep-session=[A-Za-z0-9_-]{43}; Path=\/; HttpOnly; Secure; SameSite=Strict; Max-Age=43200$/, 'HttpOnly, Secure, SameSite=Strict, host-only')
  const bobSession = started.json as { csrfToken: string; user: string; expiresAt: string; idleExpiresAt: string }
  t.match(bobSession, { user: 'bob', csrfToken: /^[A-Za-z0-9_-]{32}$/ })
  const sessionCookie = setCookie.split(';')[0]!
  const withCookie = (path: string, method = 'GET', headers: Record<string, string> = {}, body?: unknown) =>
    fetchAnswer(base + path, {
      pinned,
      method,
      headers: { cookie: sessionCookie, 'content-type': 'application/json', ...headers },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  t.equal(((await withCookie('/api/v1/search?q=quarterly')).json as { total: number }).total, 2, 'the cookie signs bob in, scoped')
  t.match((await withCookie('/api/v1/session')).json, { user: 'bob', via: 'session', session: { csrfToken: bobSession.csrfToken } })
  const noCsrf = await withCookie('/api/v1/session/signout', 'POST')
  t.equal(noCsrf.status, 403, 'sign-out with the cookie alone is refused')
  t.match(noCsrf.json, { error: { code: 'CSRF_FAILED' } })
  t.match((await withCookie('/api/v1/session/signout', 'POST', { 'x-csrf-token': 'x'.repeat(32) })).json, { error: { code: 'CSRF_FAILED' } }, 'a wrong token too')
  const out = await withCookie('/api/v1/session/signout', 'POST', { 'x-csrf-token': bobSession.csrfToken })
  t.match(out.json, { signedOut: true })
  t.match(String(out.headers['set-cookie']), /Max-Age=0/, 'the cookie is cleared')
  t.match((await withCookie('/api/v1/search?q=quarterly')).json, { error: { code: 'SESSION_EXPIRED' } }, 'a signed-out session is dead')
  const adminStarted = await signIn('admin2', passwords.admin2!)
  const adminCookie = String(adminStarted.headers['set-cookie']).split(';')[0]!
  const adminCsrf = (adminStarted.json as { csrfToken: string }).csrfToken
  const hold = { name: 'cookie-hold', reason: 'csrf', custodians: ['zed@example.com'] }
  const placeHold = (headers: Record<string, string>) =>
    fetchAnswer(`${base}/api/v1/holds`, { pinned, method: 'POST', headers: { cookie: adminCookie, 'content-type': 'application/json', ...headers }, body: JSON.stringify(hold) })
  t.equal((await placeHold({})).status, 403, 'an admin change with the cookie alone is refused (CSRF)')
  t.equal((await placeHold({ 'x-csrf-token': adminCsrf })).status, 201, 'with the token it is made')
  t.equal((await technician(['user', 'disable', 'admin2'])).code, 0)
  t.match((await fetchAnswer(`${base}/api/v1/holds`, { pinned, headers: { cookie: adminCookie } })).json, { error: { code: 'SESSION_EXPIRED' } }, 'disabling an account ends its sessions')
  t.equal((await technician(['user', 'enable', 'admin2'])).code, 0)

  // Disabled, re-enabled, a new password; wrong passwords.
  t.equal((await technician(['user', 'disable', 'erin'])).code, 0)
  const disabled = await as('erin', '/api/v1/search?q=quarterly')
  t.equal(disabled.status, 401)
  t.match(disabled.json, { error: { code: 'ACCOUNT_DISABLED' } })
  t.equal((await technician(['user', 'enable', 'erin'])).code, 0)
  t.equal((await as('erin', '/api/v1/search?q=quarterly')).status, 200, 'enabled again')
  t.equal((await technician(['user', 'passwd', 'erin'], 'erin-new-password-1')).code, 0)
  t.equal((await as('erin', '/api/v1/search?q=quarterly')).status, 401, 'the old password no longer works')
  passwords.erin = 'erin-new-password-1'
  t.equal((await as('erin', '/api/v1/search?q=quarterly')).status, 200, 'the new one does')
  passwords.ghost = 'whatever-password'
  t.match((await as('ghost', '/api/v1/status')).json, { error: { code: 'AUTH_FAILED' } }, 'an unknown user: the same answer as a wrong password')
  t.equal((await technician(['user', 'remove', 'erin'])).code, 0)
  t.match((await as('erin', '/api/v1/status')).json, { error: { code: 'AUTH_FAILED' } }, 'a removed account cannot sign in')
  const noSecret = await runCli(['--config', config, 'user', 'passwd', 'bob'], { input: '' })
  t.equal(noSecret.code, 2, 'user passwd without a terminal or --password-stdin is a usage error')

  // API tokens: shown once, act with their role (and scope), revoked at once.
  const created = await technician(['token', 'create', '--name', 'nightly', '--role', 'auditor'])
  t.equal(created.code, 0, created.stderr)
  const token = (created.json as { token: string }).token
  t.match(token, /^mkt_nightly_[A-Za-z0-9_-]{43}$/)
  const scoped = ((await technician(['token', 'create', '--name', 'carol-script', '--role', 'user', '--address', 'carol.hidden@example.com'])).json as { token: string }).token
  const bearer = (value: string, path: string, method = 'GET', body?: unknown) =>
    fetchAnswer(base + path, {
      pinned,
      method,
      headers: { authorization: `Bearer ${value}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
  t.equal(((await bearer(token, '/api/v1/search?q=quarterly')).json as { total: number }).total, 5, 'an auditor token searches everything')
  t.equal((await bearer(token, '/api/v1/policies', 'POST', { name: 'nope', retentionDays: 1, criteria: { senders: ['@x.example'] } })).status, 403, 'and changes nothing')
  t.equal(((await bearer(scoped, '/api/v1/search?q=quarterly')).json as { total: number }).total, 1, 'a user token sees its addresses only')
  t.equal((await bearer(scoped, `/api/v1/messages/${ids.nobody}`)).status, 404)
  t.match(
    (await bearer(token.slice(0, -1) + (token.endsWith('A') ? 'B' : 'A'), '/api/v1/status')).json,
    { error: { code: 'TOKEN_INVALID' } },
    'a token with one character changed is refused',
  )
  const tokenList = JSON.stringify((await cliJson(config, ['token', 'list'])).json)
  t.match(tokenList, /"name":"nightly".*"lastUsedAt":"20/, 'listed with when it was last used')
  t.notOk(tokenList.includes(token.slice('mkt_nightly_'.length)), 'the list never shows the secret')
  t.equal((await technician(['token', 'revoke', 'nightly'])).code, 0)
  t.match((await bearer(token, '/api/v1/status')).json, { error: { code: 'TOKEN_INVALID' } }, 'a revoked token stops working at once')
  t.equal((await bearer(scoped, '/api/v1/search?q=quarterly')).status, 200, 'other tokens keep working')

  const audit = JSON.stringify((await cliJson(config, ['audit', 'show', '--limit', '200'])).json)
  for (const action of ['account.add', 'account.disable', 'account.enable', 'account.password', 'account.remove', 'token.create', 'token.revoke'])
    t.match(audit, new RegExp(`"action":"${action.replace('.', '\\.')}"`), `${action} audited`)
  t.notMatch(audit, /erin-new-password|bob-password/, 'no password in the audit log')
  t.notOk(audit.includes(token.slice('mkt_nightly_'.length)) || service.lines.join('\n').includes(token.slice('mkt_nightly_'.length)), 'no token secret in the audit log or the service log')
  const verified = await cliJson(config, ['audit', 'verify'])
  t.equal(verified.code, 0, 'the audit chain verifies')
})
