import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { open } from 'lmdb'
import { hashPassword } from '../../firmware/common/password.js'
import { auditDatabaseNames } from '../../firmware/policy/index.js'
import { tempDir, writeConfig, startService, cliJson, runCli, type RunningService, portOf } from '../helpers/service.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'

const technicianPassword = 'e2e-retention-pass'

async function apiOf(service: RunningService) {
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const base = `http://127.0.0.1:${portOf(service, 'http')}`
  const authorization = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
  return async (path: string, method = 'GET') => {
    const response = await fetch(`${base}${path}`, { method, headers: { authorization } })
    return { status: response.status, body: response.headers.get('content-type')?.includes('json') ? ((await response.json()) as Record<string, unknown>) : null }
  }
}

const message = (from: string, subject: string) =>
  Buffer.from(
    `From: ${from}\r\nTo: bob@corp.example\r\nSubject: ${subject}\r\nDate: Sun, 29 Nov 2026 01:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W/g, '')}@e2e>\r\n\r\nbody of ${subject}\r\n`,
  )

t.test('retention end to end: SMTP in, policy and hold over the CLI, preview, purge, /raw, audit verify, tampering caught', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) }, retention: { purgeIntervalMs: 0 } })
  let service = await startService(config)
  t.teardown(() => service.stop())
  const technician = (args: string[]) => cliJson(config, [...args, '--password-stdin'], { input: technicianPassword + '\n' })

  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const ids: Record<string, string> = {}
  for (const [name, from, subject] of [
    ['sale', 'promo@news.example', 'weekly sale'],
    ['merger', 'promo@news.example', 'merger rumours'],
    ['personal', 'alice@corp.example', 'hello'],
  ] as const) {
    const reply = await session.send(from, ['bob@corp.example'], message(from, subject))
    t.equal(reply.code, 250, reply.text)
    ids[name] = archivedId(reply)!
  }
  session.close()

  // Newsletters may go at once (0 days); no default policy: everything else is kept forever.
  const added = await technician(['policy', 'add', 'newsletters', '--days', '0', '--sender', '@news.example'])
  t.equal(added.code, 0, added.stderr)
  const refused = await cliJson(config, ['policy', 'add', 'x', '--days', '1', '--sender', 'a@b.example'])
  t.not(refused.code, 0, 'policy add without the technician password is refused')
  const wrong = await cliJson(config, ['policy', 'add', 'x', '--days', '1', '--sender', 'a@b.example', '--password-stdin'], { input: 'not-the-password\n' })
  t.match(wrong.json, { error: { code: 'AUTH_FAILED' } }, 'a wrong technician password is refused (and audited)')
  const badArgs = await technician(['policy', 'add', 'x', '--days', 'soon'])
  t.equal(badArgs.code, 2, 'bad arguments: usage exit code')
  const hold = await technician(['hold', 'add', 'inquiry', '--reason', 'regulator inquiry', '--by', 'counsel', '--query', 'subject:merger'])
  t.equal(hold.code, 0, hold.stderr)

  const preview = await cliJson(config, ['policy', 'preview'])
  t.equal(preview.code, 0, preview.stderr)
  const plan = preview.json as { due: { id: string; policy: string }[]; kept: { id: string; holds: string[] }[] }
  t.same(
    plan.due.map((item) => [item.id, item.policy]),
    [[ids.sale, 'newsletters']],
  )
  t.same(
    plan.kept.map((item) => [item.id, item.holds]),
    [[ids.merger, ['inquiry']]],
  )
  const human = await runCli(['--config', config, 'policy', 'preview'])
  t.match(human.stdout, /due 1 .*held 1/)

  const run = await technician(['purge', 'run'])
  t.equal(run.code, 0, run.stderr)
  t.match(run.json, { purged: 1, batches: 1 })
  const api = await apiOf(service)
  t.equal((await api(`/api/v1/messages/${ids.sale}/raw`)).status, 404, 'purged: gone from /raw')
  t.equal((await api(`/api/v1/messages/${ids.merger}/raw`)).status, 200, 'held: survives')
  t.equal((await api(`/api/v1/messages/${ids.personal}/raw`)).status, 200, 'no policy: kept')
  t.equal((await api(`/api/v1/messages/${ids.merger}`, 'DELETE')).status, 405, 'no API path deletes a message')
  t.equal((await api('/api/v1/search?q=subject:sale')).body?.total, 0, 'purged from the index')

  const verified = await cliJson(config, ['audit', 'verify'])
  t.equal(verified.code, 0)
  t.match(verified.json, { ok: true, macChecked: true })
  t.match((await api('/api/v1/audit/verify')).body, { ok: true })
  const shown = (await cliJson(config, ['audit', 'show', '--limit', '50'])).json as { seq: number; action: string; details: Record<string, unknown> }[]
  // The API reads in between (raw bytes, a search) are the chain of custody's entries.
  const changes = shown.filter((entry) => !entry.action.startsWith('mail.'))
  t.same(
    changes.map((entry) => entry.action),
    ['config.initial', 'policy.set', 'login.failed', 'hold.place', 'purge.batch'],
    'config, the changes, the refused technician login, the purge',
  )
  t.ok(
    shown.some((entry) => entry.action === 'mail.read' && entry.details.part === 'raw'),
    'the /raw reads are audited too',
  )
  t.match(changes.at(-1)!.details, { messages: [{ id: ids.sale, sha256: ids.sale, policy: 'newsletters' }] })

  // Tamper with the audit log in the LMDB file while the service is down.
  t.equal(await service.stop(), 0)
  const env = open({ path: join(service.dataDir, 'archive'), maxDbs: 64 })
  const entries = env.openDB<string, number>(auditDatabaseNames.entries, { keyEncoding: 'uint32', encoding: 'string' })
  const holdSeq = changes.find((change) => change.action === 'hold.place')!.seq
  const entry = JSON.parse(entries.get(holdSeq)!) as { details: { hold: { query: string } } }
  entry.details.hold.query = 'subject:nothing'
  await entries.put(holdSeq, JSON.stringify(entry))
  await env.close()

  service = await startService(config)
  const damaged = await cliJson(config, ['audit', 'verify'])
  t.equal(damaged.code, 1, 'audit verify fails')
  t.match(damaged.json, { error: { code: 'AUDIT_DAMAGED', message: new RegExp(`HASH_MISMATCH at ${holdSeq}\\b`) } })
  t.match((await (await apiOf(service))('/api/v1/audit/verify')).body, { ok: false, problems: [{ seq: 4, code: 'HASH_MISMATCH' }] })
})
