import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { open } from 'lmdb'
import { hasCode } from '../../../firmware/common/errors.js'
import { systemClock } from '../../../firmware/common/clock.js'
import { loadAdminCredential, initialPasswordFile } from '../../../firmware/api/auth.js'
import { createHttpApi } from '../../../firmware/api/http-api.js'
import { loginAuditEntry } from '../../../firmware/api/login-throttle.js'
import { commandTable } from '../../../firmware/control/command-table.js'
import { auditDatabaseNames, canonicalJson, policyApiRoutes, policyCommandHandlers, type AuditEntry } from '../../../firmware/policy/index.js'
import { dayMs, rawMessage, retentionWorld } from './fixtures/world.js'
import { waitUntil } from '../../helpers/wait.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

async function rejectsWith(t: TestContext, promise: Promise<unknown>, code: string, message: string) {
  try {
    await promise
    t.fail(`${message}: resolved, expected ${code}`)
  } catch (error) {
    t.ok(hasCode(error, code), `${message}: ${code} (got ${(error as Error).message})`)
  }
}

const purgeEntries = (entries: AuditEntry[]) => entries.filter((entry) => entry.action === 'purge.batch')

t.test('expiry by age and criteria; the longest retention wins; preview equals execution; batches audited', async (t) => {
  const world = await retentionWorld({ batchMessagesMax: 2 })
  t.teardown(world.stop)
  const { policy, clock, archive } = world
  await policy.setPolicy({ name: 'default', retentionDays: 365 }, 'tester')
  await policy.setPolicy({ name: 'newsletters', retentionDays: 30, criteria: { senders: ['@news.example'] } }, 'tester')
  await policy.setPolicy({ name: 'legal', retentionDays: 3650, criteria: { recipients: ['legal@corp.example'] } }, 'tester')
  await policy.setPolicy({ name: 'invoices', retentionDays: 60, criteria: { query: 'subject:invoice' } }, 'tester')
  await policy.setPolicy({ name: 'imported', retentionDays: 90, criteria: { sources: ['import'] } }, 'tester')

  const newsletter = await world.ingest(rawMessage({ from: 'promo@mail.news.example', to: 'bob@corp.example', subject: 'Sale' }))
  const newsToLegal = await world.ingest(rawMessage({ from: 'promo@news.example', to: 'legal@corp.example', subject: 'Sale' }))
  const invoice = await world.ingest(rawMessage({ from: 'billing@vendor.example', to: 'bob@corp.example', subject: 'Invoice 42' }))
  const plain = await world.ingest(rawMessage({ from: 'carol@corp.example', to: 'bob@corp.example', subject: 'Lunch' }))
  const imported = await world.ingest(rawMessage({ from: 'carol@corp.example', to: 'dave@corp.example', subject: 'Old' }), { source: 'import', sourceName: '/mbox' })

  const dueAt = async (days: number) => {
    clock.advance(days * dayMs - (clock.now() - 1_700_000_000_000))
    return (await policy.preview()).due.map((item) => item.id).sort()
  }
  t.same(await dueAt(29), [], 'nothing before 30 days')
  t.same(await dueAt(30), [newsletter], 'the newsletter at exactly 30 days (subdomain matches the domain entry)')
  t.same(await dueAt(60), [invoice, newsletter].sort(), 'invoice by query at 60 days')
  t.same(await dueAt(90), [imported, invoice, newsletter].sort(), 'by source at 90 days')
  const preview = await policy.preview()
  t.equal(preview.due.find((item) => item.id === invoice)?.policy, 'invoices')
  t.same(await dueAt(366), [imported, invoice, newsletter, plain].sort(), 'the default policy at 365 days')
  t.notOk((await dueAt(3649)).includes(newsToLegal), 'legal (3650 days) wins over newsletters (30 days) for the same message')

  const planned = await policy.preview()
  t.equal(planned.dueMessages, 4)
  t.same(planned.duePerPolicy, { default: 1, imported: 1, invoices: 1, newsletters: 1 })
  const report = await policy.runPurge('tester')
  t.equal(report.purged, 4)
  t.equal(report.batches, 2, 'batches of batchMessagesMax (2)')
  const purged = purgeEntries(world.audit.entries(0, 1000)).flatMap((entry) => entry.details.messages as { id: string; policy: string; sha256: string }[])
  t.same(purged.map((item) => item.id).sort(), planned.due.map((item) => item.id).sort(), 'execution purged exactly what the preview showed')
  for (const item of purged) {
    t.equal(item.sha256, item.id, 'audit records the content hash')
    t.equal(await archive.getRaw(item.id), undefined, 'purged message is gone')
    t.equal(
      world.index.searchBlocking(`subject:${item.id === invoice ? 'invoice' : 'sale'}`).hits.some((hit) => hit.id === item.id),
      false,
      'and out of the index',
    )
  }
  t.ok(await archive.getRaw(newsToLegal), 'the legal message stays')
  t.notOk(JSON.stringify(world.audit.entries(0, 1000)).includes('Invoice 42'), 'no content in the audit log')
  t.same(
    archive
      .changes(0, 100)
      .filter((change) => change.kind === 'purge')
      .map((change) => change.id)
      .sort(),
    purged.map((item) => item.id).sort(),
    'a purge change entry per message',
  )
  t.same((await policy.preview()).due, [], 'nothing left to purge')
  t.equal(world.audit.verify().ok, true)
})

t.test('holds: placed before and after arrival, hold beats policy, date range on archive time, release', async (t) => {
  const world = await retentionWorld({ batchMessagesMax: 10 })
  t.teardown(world.stop)
  const { policy, clock, archive } = world
  await policy.setPolicy({ name: 'default', retentionDays: 10 }, 'tester')
  await policy.placeHold({ name: 'case-1', custodians: ['carol@corp.example'], reason: 'Smith v. Corp', placedBy: 'counsel' }, 'tester')
  const toCarol = await world.ingest(rawMessage({ from: 'x@ext.example', to: 'Carol <CAROL@corp.example>', subject: 'Hi' }))
  const toDave = await world.ingest(rawMessage({ from: 'x@ext.example', to: 'dave@corp.example', subject: 'Hi' }))
  const mergerBefore = await world.ingest(rawMessage({ from: 'y@ext.example', to: 'erin@corp.example', subject: 'merger plans' }))
  await policy.placeHold({ name: 'case-2', query: 'subject:merger', reason: 'regulator inquiry' }, 'tester')
  clock.advance(5 * dayMs)
  const mergerAfter = await world.ingest(rawMessage({ from: 'y@ext.example', to: 'erin@corp.example', subject: 'merger closing' }))
  const forged = await world.ingest(rawMessage({ from: 'z@ext.example', to: 'frank@corp.example', subject: 'backdated', date: 'Mon, 1 Jan 1990 00:00:00 +0000' }))
  // Covers the archive day of `forged` although its Date header says 1990.
  const archiveDay = new Date(clock.now()).toISOString().slice(0, 10)
  await policy.placeHold({ name: 'case-3', from: archiveDay, until: archiveDay, custodians: ['frank@corp.example'], reason: 'audit' }, 'tester')
  await rejectsWith(t, policy.placeHold({ name: 'case-1', query: 'x', reason: 'again' }, 'tester'), 'EXISTS', 'hold names are unique')

  clock.advance(20 * dayMs)
  const preview = await policy.preview()
  t.same(
    preview.due.map((item) => item.id),
    [toDave],
    'only unheld mail is due',
  )
  const held = Object.fromEntries(preview.kept.map((item) => [item.id, item.holds]))
  t.same(
    held,
    { [toCarol]: ['case-1'], [mergerBefore]: ['case-2'], [mergerAfter]: ['case-2'], [forged]: ['case-3'] },
    'hold placed before arrival, after arrival, and mail arriving after the hold are all held',
  )
  await policy.runPurge('tester')
  t.equal(await archive.getRaw(toDave), undefined)
  for (const id of [toCarol, mergerBefore, mergerAfter, forged]) t.ok(await archive.getRaw(id), 'held mail survives the purge')

  const released = await policy.releaseHold('case-2', 'counsel')
  t.equal(released.active, false)
  await rejectsWith(t, policy.releaseHold('case-2', 'counsel'), 'NOT_FOUND', 'a released hold cannot be released again')
  t.same((await policy.preview()).due.map((item) => item.id).sort(), [mergerAfter, mergerBefore].sort(), 'released: subject to retention again')
  await policy.runPurge('tester')
  t.equal(await archive.getRaw(mergerBefore), undefined)
  t.ok(await archive.getRaw(toCarol), 'still held by case-1')
  const actions = world.audit.entries(0, 1000).map((entry) => entry.action)
  t.same(
    actions.filter((action) => action.startsWith('hold.')),
    ['hold.place', 'hold.place', 'hold.place', 'hold.release'],
  )
  t.same(
    policy.holds().map((hold) => [hold.name, hold.active]),
    [
      ['case-1', true],
      ['case-2', false],
      ['case-3', true],
    ],
    'released holds stay listed',
  )
})

t.test('a hold placed while a purge runs protects the batches that follow', async (t) => {
  const world = await retentionWorld({ batchMessagesMax: 1 })
  t.teardown(world.stop)
  const { policy, clock, archive } = world
  await policy.setPolicy({ name: 'default', retentionDays: 1 }, 'tester')
  const ids = []
  for (let index = 0; index < 4; index++) ids.push(await world.ingest(rawMessage({ from: 'a@ext.example', to: 'grace@corp.example', subject: `note ${index}` })))
  clock.advance(2 * dayMs)
  const running = policy.runPurge('tester')
  // Queued behind the first batch: the three batches after it re-plan and see the hold.
  await policy.placeHold({ name: 'late', custodians: ['grace@corp.example'], reason: 'late hold' }, 'tester')
  const report = await running
  t.ok(report.purged <= 1, `at most the batch in flight was purged (${report.purged})`)
  t.ok(report.keptAtExecution >= 3, 'the rest were kept when their batch re-checked')
  let survivors = 0
  for (const id of ids) if (await archive.getRaw(id)) survivors++
  t.equal(survivors, 4 - report.purged)
})

t.test('no purge of a message a mirror peer has not acknowledged yet', async (t) => {
  let watermark: number | null = null
  const world = await retentionWorld({ watermark: () => watermark, batchMessagesMax: 10 })
  t.teardown(world.stop)
  const { policy, clock, archive } = world
  await policy.setPolicy({ name: 'default', retentionDays: 0 }, 'tester')
  const first = await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'one' }))
  const second = await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'two' }))
  const third = await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'three' }))
  // A new delivery of `first` puts it in the change log again, above the peer's cursor.
  watermark = 3
  const again = rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'one' })
  t.not(await world.ingest(again), first, 'different bytes: a different message')
  clock.advance(dayMs)
  watermark = 1
  let preview = await policy.preview()
  t.same(
    preview.due.map((item) => item.id),
    [first],
    'only the message at or below the lowest acknowledged sequence is due',
  )
  t.equal(preview.mirrorPendingMessages, 3)
  t.ok(preview.kept.every((item) => item.reason === 'mirror-pending'))
  await policy.runPurge('tester')
  t.equal(await archive.getRaw(first), undefined)
  t.ok(await archive.getRaw(second), 'deferred while the peer copies it')
  t.ok(await archive.getRaw(third))
  watermark = archive.lastSequence()
  preview = await policy.preview()
  t.equal(preview.dueMessages, 3, 'acknowledged: due')
  watermark = null
  t.equal((await policy.preview()).dueMessages, 3, 'no peers: nothing deferred')
})

t.test('the scheduled job purges on its interval, audited as the system', async (t) => {
  const world = await retentionWorld({ purgeIntervalMs: 50 })
  t.teardown(world.stop)
  await world.policy.setPolicy({ name: 'default', retentionDays: 0 }, 'tester')
  const id = await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'soon gone' }))
  // Done once a run that purged something has finished (deletion comes before its audit entry).
  await waitUntil(() => (world.policy.lastRun()?.report?.purged ?? 0) > 0, { what: 'a scheduled run that purged', timeoutMs: 5_000, intervalMs: 20, observe: () => world.policy.lastRun() })
  t.notOk(world.archive.has(id), 'purged by the schedule')
  t.match(
    world.audit.entries(0, 100).find((entry) => entry.action === 'purge.batch'),
    { actor: 'system', details: { purged: 1, failed: [] } },
  )
  t.match(world.policy.lastRun(), { report: { purged: 1 } })
  t.equal(world.policy.healthcheck().ok, true)
})

t.test('a purge the audit log missed (interrupted before its batch entry) is audited at the next start', async (t) => {
  const key = Buffer.alloc(32, 3)
  const world = await retentionWorld({ key })
  const id = await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'lost' }))
  // What an interruption between the store's delete and the batch's audit entry leaves behind.
  const { sequence } = await world.archive.delete(id)
  t.notOk(world.audit.entries(0, 100).some((entry) => entry.action.startsWith('purge.')))
  await world.stop()
  const again = await retentionWorld({ key, path: world.path })
  t.teardown(again.stop)
  const recovered = again.audit.entries(0, 100).filter((entry) => entry.action === 'purge.recovered')
  t.match(recovered, [{ actor: 'system', details: { messages: [{ id, sequence }] } }])
  await again.stop()
  const third = await retentionWorld({ key, path: world.path })
  t.teardown(third.stop)
  t.equal(third.audit.entries(0, 100).filter((entry) => entry.action === 'purge.recovered').length, 1, 'audited once, not at every start')
  t.equal(third.audit.verify().ok, true)
})

t.test('purge reclaims space: freed pages are reused, the environment does not grow', async (t) => {
  const world = await retentionWorld({ batchMessagesMax: 100 })
  t.teardown(world.stop)
  const { policy, clock, archive } = world
  await policy.setPolicy({ name: 'default', retentionDays: 1 }, 'tester')
  const round = async (label: string) => {
    for (let index = 0; index < 40; index++) await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: `${label} ${index}`, padBytes: 60_000 }))
  }
  await round('first')
  const full = archive.stats()
  t.ok(full.storedBytes > 40 * 60_000, `stored ${full.storedBytes} bytes`)
  clock.advance(2 * dayMs)
  const report = await policy.runPurge('tester')
  t.equal(report.purged, 40)
  const empty = archive.stats()
  t.equal(empty.messages, 0)
  t.equal(empty.storedBytes, 0, 'stored bytes counted down to zero')
  await round('second')
  const again = archive.stats()
  t.equal(again.messages, 40)
  t.ok(again.fileBytes < full.fileBytes * 1.5, `re-ingesting the same volume reuses the freed pages: ${full.fileBytes} → ${again.fileBytes} bytes (without reuse it would double)`)
})

t.test('audit verify: passes untouched; catches altered, reordered, removed, truncated and re-hashed entries', async (t) => {
  const key = Buffer.alloc(32, 7)
  let world = await retentionWorld({ key, config: { smtp: { port: 25 }, secret: 'x' } })
  const path = world.path
  await world.policy.setPolicy({ name: 'default', retentionDays: 30 }, 'tester')
  await world.policy.placeHold({ name: 'h1', query: 'subject:x', reason: 'r' }, 'tester')
  await world.policy.placeHold({ name: 'h2', custodians: ['a@b.example'], reason: 'r' }, 'tester')
  await world.policy.releaseHold('h1', 'tester')
  const report = world.audit.verify()
  t.equal(report.ok, true, 'untouched log verifies')
  t.equal(report.entries, 5, 'config.initial + four changes')
  t.equal(report.macChecked, true)
  await world.stop()

  // Restarting with another configuration audits which paths changed (never values).
  world = await retentionWorld({ key, path, config: { smtp: { port: 26 }, secret: 'y' } })
  const last = world.audit.entries(5, 10)
  t.same(
    last.map((entry) => [entry.action, entry.details.changedPaths]),
    [['config.changed', ['secret', 'smtp.port']]],
  )
  t.notOk(JSON.stringify(last).includes('"y"'), 'no config value in the entry')
  await world.stop()

  async function tampered(label: string, change: (entries: ReturnType<typeof openEntries>) => void | Promise<void>, codes: string[]) {
    const env = open({ path, maxDbs: 64 })
    const entries = openEntries(env)
    const saved = [...entries.getRange({})].map(({ key: seq, value }) => [seq, value] as const)
    const head = env.openDB<unknown, string>(auditDatabaseNames.state, {}).get('head')
    await change(entries)
    await env.close()
    const check = await retentionWorld({ key, path })
    // start() audits nothing new here (same config, no purges): the log is as tampered.
    const result = check.audit.verify()
    await check.stop()
    t.equal(result.ok, false, `${label}: detected`)
    for (const code of codes)
      t.ok(
        result.problems.some((problem) => problem.code === code),
        `${label}: ${code} (${JSON.stringify(result.problems.map((problem) => problem.code))})`,
      )
    const restore = open({ path, maxDbs: 64 })
    const restoreEntries = openEntries(restore)
    await restore.transaction(() => {
      for (const { key: seq } of restoreEntries.getRange({})) restoreEntries.removeSync(seq)
      for (const [seq, value] of saved) restoreEntries.putSync(seq, value)
      restore.openDB<unknown, string>(auditDatabaseNames.state, {}).putSync('head', head)
    })
    await restore.close()
  }
  const openEntries = (env: ReturnType<typeof open>) => env.openDB<string, number>(auditDatabaseNames.entries, { keyEncoding: 'uint32', encoding: 'string' })
  const edit = (text: string, update: (entry: AuditEntry) => void) => {
    const entry = JSON.parse(text) as AuditEntry
    update(entry)
    return canonicalJson(entry)
  }

  await tampered(
    'altered details',
    (entries) =>
      void entries.putSync(
        3,
        edit(entries.get(3)!, (entry) => (entry.details.hold = { name: 'h1', query: 'nothing' })),
      ),
    ['HASH_MISMATCH'],
  )
  await tampered(
    'reordered',
    (entries) => {
      const [a, b] = [entries.get(2)!, entries.get(3)!]
      entries.transactionSync(() => {
        entries.putSync(2, b)
        entries.putSync(3, a)
      })
    },
    ['OUT_OF_ORDER', 'CHAIN_BROKEN'],
  )
  await tampered('removed from the middle', (entries) => void entries.removeSync(3), ['SEQUENCE_GAP', 'CHAIN_BROKEN'])
  await tampered('truncated tail', (entries) => void entries.removeSync(6), ['TRUNCATED'])
  await tampered(
    'altered and re-hashed without the key',
    (entries) => {
      entries.putSync(
        2,
        edit(entries.get(2)!, (entry) => {
          entry.actor = 'someone-else'
          const { seq, atMs, actor, action, details, prevHash } = entry
          entry.hash = createHash('sha256').update(canonicalJson({ seq, atMs, actor, action, details, prevHash })).digest('hex')
        }),
      )
    },
    ['MAC_MISMATCH'],
  )

  const clean = await retentionWorld({ key, path })
  t.teardown(clean.stop)
  t.equal(clean.audit.verify().ok, true, 'restored log verifies again')
})

t.test('API and commands: validated bodies, admin-only, audited failures, no route that deletes or edits a message', async (t) => {
  const world = await retentionWorld()
  t.teardown(world.stop)
  const id = await world.ingest(rawMessage({ from: 'a@ext.example', to: 'b@corp.example', subject: 'keep me' }))
  const credential = await loadAdminCredential({ clock: systemClock }, { dataDir: world.path, adminPasswordHash: null })
  const password = (await readFile(join(world.path, initialPasswordFile), 'utf8')).trim()
  const api = createHttpApi(
    {
      logger: world.logger,
      clock: world.clock,
      signIn: { firstAdmin: credential },
      archive: world.archive,
      status: async () => ({}),
      routes: policyApiRoutes(world.policy),
      onLoginEvent: (event) => void world.audit.append(loginAuditEntry(event)),
    },
    { http: { host: '127.0.0.1', port: 0 } },
  )
  await api.start()
  t.teardown(() => api.stop())
  const base = `http://127.0.0.1:${api.address().port}`
  const auth = { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` }
  const call = async (method: string, path: string, body?: unknown, headers: Record<string, string> = auth) => {
    const response = await fetch(`${base}${path}`, {
      method,
      headers: { ...headers, 'content-type': 'application/json' },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    })
    // biome-ignore lint/suspicious/noExplicitAny: the test reads nested fields of the API's JSON answers.
    return { status: response.status, json: (await response.json().catch(() => undefined)) as Record<string, any> }
  }

  const bad = await call('POST', '/api/v1/policies', { name: 'Bad Name', retentionDays: -1, extra: 1 })
  t.equal(bad.status, 400)
  t.match(bad.json.error.problems.join('\n'), /additional properties \(extra\)[\s\S]*name: must match pattern[\s\S]*retentionDays: must be >= 0/)
  t.equal((await call('POST', '/api/v1/policies', '{not json')).status, 400)
  const badQuery = await call('POST', '/api/v1/holds', { name: 'q', query: 'subject:(', reason: 'r' })
  t.equal(badQuery.status, 400)
  t.match(badQuery.json.error.message, /query: /)
  t.equal((await call('POST', '/api/v1/policies', { name: 'short', retentionDays: 1 })).status, 400, 'a named policy needs criteria')
  t.equal((await call('POST', '/api/v1/policies', { name: 'default', retentionDays: 0 })).status, 201)
  t.equal((await call('POST', '/api/v1/holds', { name: 'keep', query: 'subject:keep', reason: 'case', placedBy: 'counsel' })).status, 201)
  t.equal((await call('POST', '/api/v1/holds', { name: 'keep', query: 'subject:keep', reason: 'case' })).status, 409)
  const listed = await call('GET', '/api/v1/policies')
  t.match(listed.json, { fingerprint: /^[0-9a-f]{64}$/, policies: [{ name: 'default', retentionDays: 0, createdBy: /^admin@127\.0\.0\.1$/ }] })
  const preview = await call('GET', '/api/v1/policies/preview')
  t.same(
    preview.json.kept.map((item: { id: string }) => item.id),
    [id],
    'held by the hold placed over the API',
  )
  t.equal((await call('POST', '/api/v1/holds/keep/release')).status, 200)
  t.equal((await call('POST', '/api/v1/holds/nope/release')).status, 404)
  t.equal((await call('POST', '/api/v1/policies/default/remove')).status, 200)
  t.equal((await call('GET', '/api/v1/audit/verify')).json.ok, true)
  t.match((await call('POST', '/api/v1/holds')).json, { error: { code: 'INVALID', message: /must be object/ } }, 'a POST that needs a body says so')

  // Immutability: nothing deletes or edits a message.
  for (const method of ['DELETE', 'PUT', 'PATCH', 'POST']) {
    t.equal((await call(method, `/api/v1/messages/${id}`, method === 'DELETE' ? undefined : {})).status, 405, `${method} /api/v1/messages/{id} is refused`)
  }
  t.equal((await call('DELETE', '/api/v1/policies/default')).status, 405, 'no DELETE route anywhere')
  for (const route of policyApiRoutes(world.policy)) t.notMatch(route.pattern.source, /messages/, `${route.method} ${route.pattern.source} does not touch messages`)
  const messageCommands = commandTable.filter((spec) => /delete|edit|message|purge|remove/.test(spec.name) && !spec.name.startsWith('sim ')).map((spec) => spec.name)
  t.same(messageCommands, ['user remove', 'mirror remove', 'policy remove', 'purge run'], 'the only removal commands: an account, a peer, a policy, and the policy purge')
  t.ok(await world.archive.getRaw(id), 'the message is still there')

  const failed = await call('GET', '/api/v1/policies', undefined, { authorization: `Basic ${Buffer.from('admin:wrong').toString('base64')}` })
  t.equal(failed.status, 401)
  const loginEntry = await waitUntil(() => world.audit.entries(0, 100).find((entry) => entry.action === 'login.failed'), { what: 'the failed login audited' })
  t.match(loginEntry, { actor: /^http@/, details: { via: 'http', user: 'admin' } })
  t.notOk(JSON.stringify(world.audit.entries(0, 100)).includes('wrong'), 'no password in the audit log')

  // The control handlers: argument parsing and errors.
  const handlers = policyCommandHandlers(world.policy)
  const added = (await handlers.get('policy add')!(['lists', '--days', '7', '--sender', '@lists.example,@news.example', '--source', 'smtp'])) as { criteria: unknown; createdBy: string }
  t.same(added.criteria, { senders: ['lists.example', 'news.example'].map((domain) => `@${domain}`), sources: ['smtp'] })
  t.equal(added.createdBy, 'technician')
  for (const [args, pattern] of [
    [['x'], /--days/],
    [['x', '--days', 'soon'], /--days must be/],
    [['x', '--days', '3', '--bogus', '1'], /unknown option --bogus/],
  ] as const) {
    try {
      await handlers.get('policy add')!([...args])
      t.fail('accepted bad arguments')
    } catch (error) {
      t.ok(hasCode(error, 'USAGE'))
      t.match((error as Error).message, pattern)
    }
  }
  const hold = (await handlers.get('hold add')!(['case', '--reason', 'why', '--custodian', 'a@b.example', '--from', '2024-01-01', '--until', '2024-12-31'])) as {
    fromMs: number
    untilMs: number
  }
  t.equal(hold.fromMs, Date.parse('2024-01-01T00:00:00Z'))
  t.equal(hold.untilMs, Date.parse('2025-01-01T00:00:00Z'), 'an end date covers its whole day')
  t.match(await handlers.get('audit show')!(['--limit', '2']), [{ action: 'policy.set' }, { action: 'hold.place' }])
})
