/**
 * Journal pull (IMAP via imapflow, POP3 via our client) against a real Dovecot started
 * for this file, with a fake ingest pipeline. One Dovecot user per test keeps them apart.
 */
import t from 'tap'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { createServer, type AddressInfo } from 'node:net'
import { join } from 'node:path'
import { startDovecot, seedMailbox, readMailbox, withImap, type RunningDovecot, type DovecotUser } from '../../../helpers/dovecot.js'
import { createJournalSource, nextPullDelayMs } from '../../../../firmware/sources/journal/journal-source.js'
import { JournalError } from '../../../../firmware/sources/journal/errors.js'
import { archivedKeyword, toSequenceSet } from '../../../../firmware/sources/journal/imap-pass.js'
import { pop3StatePath } from '../../../../firmware/sources/journal/pop3-archived-state.js'
import type { JournalSourceOptions, PullReport } from '../../../../firmware/sources/journal/types.js'
import { ArchiveError } from '../../../../firmware/archive/errors.js'
import { createMemoryLogger } from '../../../../firmware/common/logger.js'
import { createManualClock, systemClock, type Clock, type Random } from '../../../../firmware/common/clock.js'
import { createFakePipeline, type FakePipeline } from './fixtures/fake-pipeline.js'
import { makeLargeMessage, makeMessages, sha256 } from './fixtures/messages.js'
import { waitUntil } from '../../../helpers/wait.js'

const users = {
  imapDelete: { name: 'imap-delete', password: 'pw-imap-delete-7f3a' },
  imapFlag: { name: 'imap-flag', password: 'pw-imap-flag-91cc' },
  imapNone: { name: 'imap-none', password: 'pw-imap-none-2b2b' },
  pop3Delete: { name: 'pop3-delete', password: 'pw-pop3-delete-55aa' },
  pop3Flag: { name: 'pop3-flag', password: 'pw-pop3-flag-c0de' },
  authFail: { name: 'auth-fail', password: 'pw-auth-right-0001' },
  retry: { name: 'retry', password: 'pw-retry-8e8e' },
  pop3Retry: { name: 'pop3-retry', password: 'pw-pop3-retry-4d4d' },
  large: { name: 'large', password: 'pw-large-1234' },
  pop3Large: { name: 'pop3-large', password: 'pw-pop3-large-9876' },
  stop: { name: 'stop', password: 'pw-stop-abab' },
  abandon: { name: 'abandon', password: 'pw-abandon-cdcd' },
  readOnly: { name: 'read-only', password: 'pw-read-only-e1e1' },
} satisfies Record<string, DovecotUser>

let dovecot: RunningDovecot
let stateDir: string

t.before(async () => {
  dovecot = await startDovecot({ users: Object.values(users) })
  stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-journal-state-'))
})

t.teardown(async () => {
  await dovecot?.stop()
  if (stateDir) await rm(stateDir, { recursive: true, force: true })
})

type Overrides = Partial<JournalSourceOptions> & Pick<JournalSourceOptions, 'protocol'>

function sourceOptions(user: DovecotUser, overrides: Overrides): JournalSourceOptions {
  const tls = overrides.tls ?? 'implicit'
  const protocol = overrides.protocol
  const port = protocol === 'imap' ? (tls === 'implicit' ? dovecot.ports.imaps : dovecot.ports.imap) : tls === 'implicit' ? dovecot.ports.pop3s : dovecot.ports.pop3
  return {
    name: user.name,
    host: dovecot.host,
    port,
    tls,
    tlsRejectUnauthorized: false,
    user: user.name,
    password: user.password,
    mailbox: 'INBOX',
    intervalMs: 60_000,
    afterArchive: 'delete',
    batchMessagesMax: 100,
    enabled: true,
    stateDir,
    ...overrides,
  }
}

function createSource(user: DovecotUser, overrides: Overrides, pipeline: FakePipeline = createFakePipeline(), clock: Clock = systemClock, random?: Random) {
  const logger = createMemoryLogger()
  const source = createJournalSource({ logger, clock, pipeline, random }, sourceOptions(user, overrides))
  return { source, pipeline, logger }
}

/** Login lines of one user in Dovecot's log, to tell TLS sessions from cleartext ones. */
async function loginLines(user: DovecotUser): Promise<string[]> {
  return (await dovecot.log()).split('\n').filter((line) => line.includes('-login: Info: Login:') && line.includes(`user=<${user.name}>`))
}

function hashes(messages: readonly Uint8Array[]): string[] {
  return messages.map(sha256).sort()
}

t.test('IMAP, implicit TLS, delete: every message archived once, byte-identical, in batches, then removed at the server', async (t) => {
  const user = users.imapDelete
  const seeded = makeMessages('imap-delete', 7)
  await seedMailbox(dovecot, user, seeded)
  const { source, pipeline, logger } = createSource(user, { protocol: 'imap', tls: 'implicit', batchMessagesMax: 3 })

  const reports: PullReport[] = []
  for (let pass = 0; pass < 4; pass++) reports.push(await source.pullOnce())
  t.same(
    reports.map((report) => [report.archived, report.acknowledged, report.remaining, report.error]),
    [
      [3, 3, 4, null],
      [3, 3, 1, null],
      [1, 1, 0, null],
      [0, 0, 0, null],
    ],
    'batches of batchMessagesMax, the backlog shrinking',
  )
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes(seeded), 'every seeded message, byte-identical, each once')
  t.equal(pipeline.accepted.filter((entry) => entry.raw.equals(seeded[1]!)).length, 1, 'the dot-line message is intact')
  const delivery = pipeline.accepted[0]!.delivery
  t.match(delivery, { source: 'journal', sourceName: user.name, envelopeFrom: null, envelopeTo: [], remoteAddress: dovecot.host })
  t.match(delivery.deliveryKey, /^imap:127\.0\.0\.1:INBOX:\d+:\d+$/)
  t.equal(new Set(pipeline.accepted.map((entry) => entry.delivery.deliveryKey)).size, seeded.length, 'one delivery key per message')
  t.same(await readMailbox(dovecot, user), [], 'nothing left at the server')

  const health = source.healthcheck()
  t.equal(health.ok, true)
  t.equal(health.consecutiveFailures, 0)
  t.ok(health.lastSuccessAtMs)
  const status = source.status()
  t.match(status, { name: user.name, protocol: 'imap', state: 'created', totals: { passes: 4, archived: 7, acknowledged: 7 } })
  t.notOk(JSON.stringify([status, logger.records, reports]).includes(user.password), 'no password in status, logs or reports')
  await source.stop()
  await source.stop()
  await t.rejects(source.pullOnce(), { code: 'STOPPED' }, 'no pass after stop')
})

t.test('IMAP, STARTTLS, flag: messages stay flagged, later passes archive only new ones', async (t) => {
  const user = users.imapFlag
  const seeded = makeMessages('imap-flag', 4)
  await seedMailbox(dovecot, user, seeded)
  const { source, pipeline } = createSource(user, { protocol: 'imap', tls: 'starttls', afterArchive: 'flag' })

  const first = await source.pullOnce()
  t.match(first, { archived: 4, acknowledged: 4, remaining: 0, error: null })
  const onServer = await readMailbox(dovecot, user)
  t.equal(onServer.length, 4, 'messages stay on the server')
  t.ok(
    onServer.every((message) => message.flags.includes(archivedKeyword)),
    `each carries ${archivedKeyword}`,
  )
  t.ok(
    onServer.every((message) => !message.flags.includes('\\Seen')),
    'fetching did not mark them seen',
  )

  const second = await source.pullOnce()
  t.match(second, { archived: 0, acknowledged: 0, error: null }, 'a second pass archives nothing new')

  const later = makeMessages('imap-flag-later', 1)
  await seedMailbox(dovecot, user, later)
  const third = await source.pullOnce()
  t.match(third, { archived: 1, duplicates: 0, error: null })
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes([...seeded, ...later]))
  const logins = await dovecot.logins(user.name, dovecot.ports.imap)
  t.ok(logins.length >= 3 && logins.every((line) => line.includes(', TLS')), 'STARTTLS upgraded every session before login')
})

t.test('IMAP without TLS (tls: none) works and warns', async (t) => {
  const user = users.imapNone
  const seeded = makeMessages('imap-none', 2)
  await seedMailbox(dovecot, user, seeded)
  const { source, pipeline, logger } = createSource(user, { protocol: 'imap', tls: 'none', enabled: false })
  await source.start()
  t.equal(source.status().state, 'disabled', 'a disabled source is not scheduled')
  t.equal(source.status().nextPullAtMs, null)
  t.match(await source.pullOnce(), { archived: 2, acknowledged: 2, error: null }, 'an explicit pull still works')
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes(seeded))
  const logins = await dovecot.logins(user.name, dovecot.ports.imap)
  t.ok(logins.length >= 1 && logins.every((line) => !line.includes(', TLS')), 'cleartext as configured')
  t.ok(logger.records.some((record) => record.level === 'warn' && /cleartext/.test(record.msg)))
  await source.stop()
})

t.test('POP3, implicit TLS, delete: byte-identical, removed at the server after QUIT', async (t) => {
  const user = users.pop3Delete
  const seeded = makeMessages('pop3-delete', 6)
  await seedMailbox(dovecot, user, seeded)
  const { source, pipeline } = createSource(user, { protocol: 'pop3', tls: 'implicit', batchMessagesMax: 4 })

  const first = await source.pullOnce()
  t.match(first, { protocol: 'pop3', serverMessages: 6, archived: 4, acknowledged: 4, remaining: 2, error: null })
  t.equal((await readMailbox(dovecot, user)).length, 2, 'the first batch is gone')
  const second = await source.pullOnce()
  t.match(second, { archived: 2, acknowledged: 2, remaining: 0, error: null })
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes(seeded), 'byte-identical, each once (dot-stuffing undone)')
  t.match(pipeline.accepted[0]!.delivery.deliveryKey, new RegExp(`^pop3:127\\.0\\.0\\.1:${user.name}:\\S+$`))
  t.same(await readMailbox(dovecot, user), [])
  const logins = await dovecot.logins(user.name, dovecot.ports.pop3s)
  t.ok(logins.length === 2 && logins.every((line) => line.includes(', TLS')), 'two TLS sessions on the pop3s port')
})

t.test('POP3, STLS, flag: archived UIDLs kept durably and pruned, later passes archive only new ones', async (t) => {
  const user = users.pop3Flag
  const seeded = makeMessages('pop3-flag', 3)
  await seedMailbox(dovecot, user, seeded)
  const { source, pipeline } = createSource(user, { protocol: 'pop3', tls: 'starttls', afterArchive: 'flag' })

  t.match(await source.pullOnce(), { archived: 3, acknowledged: 3, error: null })
  t.equal((await readMailbox(dovecot, user)).length, 3, 'messages stay on the server')
  const statePath = pop3StatePath(stateDir, user.name)
  const state = JSON.parse(await readFile(statePath, 'utf8')) as { uidls: string[]; host: string; user: string }
  t.equal(state.uidls.length, 3)
  t.match(state, { host: dovecot.host, user: user.name })
  t.notOk((await readFile(statePath, 'utf8')).includes(user.password), 'no password in the state file')

  // A new source object (as after a restart) reads the state file.
  const restarted = createSource(user, { protocol: 'pop3', tls: 'starttls', afterArchive: 'flag' }, pipeline)
  t.match(await restarted.source.pullOnce(), { archived: 0, error: null }, 'nothing new after a restart')

  // Someone removes a message at the server: its UIDL leaves the state file.
  await withImap(dovecot, user, async (client) => {
    await client.mailboxOpen('INBOX')
    await client.messageDelete('1')
  })
  const later = makeMessages('pop3-flag-later', 1)
  await seedMailbox(dovecot, user, later)
  t.match(await restarted.source.pullOnce(), { archived: 1, error: null })
  const pruned = JSON.parse(await readFile(statePath, 'utf8')) as { uidls: string[] }
  t.equal(pruned.uidls.length, 3, 'two old + one new: the removed message was pruned')
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes([...seeded, ...later]))
  const logins = await dovecot.logins(user.name, dovecot.ports.pop3)
  t.ok(logins.length === 3 && logins.every((line) => line.includes(', TLS')), 'STLS before every login')
})

t.test('wrong password: typed AUTH_FAILED, retried with capped backoff, password never logged', async (t) => {
  const wrongPassword = 'Wr0ng-Pa55word-XyZ'
  const clock = createManualClock()
  const noJitter: Random = { seed: 0, next: () => 0, int: () => 0 }
  for (const protocol of ['imap', 'pop3'] as const) {
    const { source, logger } = createSource(
      users.authFail,
      // Long delays, so that no timer fires while the test drives the passes itself.
      { protocol, password: wrongPassword, intervalMs: 60_000, retryDelayMsMax: 120_000, firstPullDelayMsMax: 0 },
      createFakePipeline(),
      clock,
      noJitter,
    )
    await source.start()
    // The first scheduled pass starts right away (first-pull delay 0).
    await waitUntil(() => source.status().lastReport !== null, { what: `${protocol}: the first pass`, intervalMs: 20, observe: () => source.status() })
    const first = source.status()
    t.match(first.lastError, { code: 'AUTH_FAILED', retryable: false }, `${protocol}: typed auth error`)
    t.equal(first.nextPullAtMs, clock.now() + 60_000, `${protocol}: first retry after intervalMs`)
    const delays = [first.nextPullAtMs! - clock.now()]
    const reports: PullReport[] = []
    for (let attempt = 0; attempt < 2; attempt++) {
      const report = await source.pullOnce()
      reports.push(report)
      t.ok(report.error instanceof JournalError && report.error.code === 'AUTH_FAILED')
      delays.push(source.status().nextPullAtMs! - clock.now())
    }
    t.same(delays, [60_000, 120_000, 120_000], `${protocol}: exponential backoff capped at retryDelayMsMax`)
    const health = source.healthcheck()
    t.match(health, { ok: false, consecutiveFailures: 3, lastError: { code: 'AUTH_FAILED' } }, `${protocol}: unhealthy at once (auth does not heal itself)`)
    const everything = JSON.stringify([logger.records, reports, source.status(), health, reports.map((report) => [report.error?.message, report.error?.fields])])
    t.notOk(everything.includes(wrongPassword), `${protocol}: the password is in no log record, report, error or status`)
    t.ok(logger.records.some((record) => record.level === 'warn' && (record.error as { code?: string })?.code === 'AUTH_FAILED'))
    await source.stop()
    t.equal(source.status().nextPullAtMs, null, `${protocol}: stop() cancels the schedule`)
  }
  t.notOk((await dovecot.log()).includes(wrongPassword), 'nor in the server log')
})

t.test('backoff: exponential, capped, never below intervalMs as cap, jittered down by at most half', async (t) => {
  const half: Random = { seed: 0, next: () => 0.5, int: () => 0 }
  t.equal(nextPullDelayMs(0, 60_000, 900_000, half), 60_000, 'no failure: the interval')
  t.equal(nextPullDelayMs(3, 60_000, 900_000, half), 180_000, '4× interval, less 25% jitter')
  t.equal(nextPullDelayMs(40, 60_000, 900_000, half), 675_000, 'capped at retryDelayMsMax, jittered')
  t.equal(nextPullDelayMs(5, 3_600_000, 900_000, { seed: 0, next: () => 0, int: () => 0 }), 3_600_000, 'the cap is never below the interval')
  t.equal(toSequenceSet([1, 2, 3, 5, 7, 8]), '1:3,5,7:8')
})

t.test('TLS refused: self-signed certificate with tlsRejectUnauthorized', async (t) => {
  for (const [protocol, tls] of [
    ['imap', 'implicit'],
    ['imap', 'starttls'],
    ['pop3', 'implicit'],
    ['pop3', 'starttls'],
  ] as const) {
    const { source, logger } = createSource(users.authFail, { protocol, tls, tlsRejectUnauthorized: true })
    const report = await source.pullOnce()
    t.ok(report.error instanceof JournalError, `${protocol}/${tls}: typed error`)
    t.match(report.error, { code: 'TLS_FAILED', retryable: false }, `${protocol}/${tls}: TLS_FAILED`)
    t.notOk(JSON.stringify([logger.records, report.error]).includes(users.authFail.password), `${protocol}/${tls}: no password in logs or the error`)
  }
  t.same(await loginLines(users.authFail), [], 'never logged in')
})

t.test('connection refused and a missing mailbox are typed errors', async (t) => {
  const closedPort = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const address = server.address() as AddressInfo
      server.close(() => resolve(address.port))
    })
  })
  for (const protocol of ['imap', 'pop3'] as const) {
    const { source } = createSource(users.authFail, { protocol, port: closedPort })
    t.match(await source.pullOnce(), { error: { code: 'CONNECT_FAILED', retryable: true } }, `${protocol}: CONNECT_FAILED`)
  }
  const { source } = createSource(users.authFail, { protocol: 'imap', mailbox: 'Does-Not-Exist' })
  t.match(await source.pullOnce(), { error: { code: 'MAILBOX_NOT_FOUND', retryable: false } })
})

t.test('IMAP without UIDPLUS: expunges only when every \\Deleted message is archived', async (t) => {
  const user: DovecotUser = { name: 'no-uidplus', password: 'pw-no-uidplus-1111' }
  // The capability list Dovecot advertises after login, without UIDPLUS.
  const plain = await startDovecot({ users: [user], extraConfig: 'imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE' })
  t.teardown(() => plain.stop())
  const seeded = makeMessages('no-uidplus', 4)
  await seedMailbox(plain, user, seeded)
  // Another client marks the fourth message \Deleted before we archived it.
  await withImap(plain, user, async (client) => {
    await client.mailboxOpen('INBOX')
    t.equal(client.capabilities.has('UIDPLUS'), false, 'the server does not offer UIDPLUS')
    await client.messageFlagsAdd('4', ['\\Deleted'])
  })
  const pipeline = createFakePipeline()
  const source = createJournalSource(
    { logger: createMemoryLogger(), clock: systemClock, pipeline },
    { ...sourceOptions(user, { protocol: 'imap', batchMessagesMax: 2 }), port: plain.ports.imaps },
  )
  const first = await source.pullOnce()
  t.match(first, { archived: 2, acknowledged: 0, error: null }, 'a foreign \\Deleted message blocks the EXPUNGE')
  t.equal((await readMailbox(plain, user)).length, 4, 'nothing expunged, the foreign message is safe')
  const second = await source.pullOnce()
  t.match(second, { archived: 2, duplicates: 0, acknowledged: 4, error: null }, 'waiting messages are not fetched again; all four expunged together')
  t.same(await readMailbox(plain, user), [])
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes(seeded))
})

t.test('retryable pipeline error (STORE_FULL) stops the pass and deletes nothing it did not archive', async (t) => {
  for (const [protocol, user] of [
    ['imap', users.retry],
    ['pop3', users.pop3Retry],
  ] as const) {
    const seeded = makeMessages(`retry-${protocol}`, 4)
    await seedMailbox(dovecot, user, seeded)
    const pipeline = createFakePipeline()
    pipeline.failWith = new ArchiveError('STORE_FULL', 'free space below storage.freeBytesMin')
    const { source } = createSource(user, { protocol }, pipeline)

    const refused = await source.pullOnce()
    t.match(refused, { archived: 0, acknowledged: 0, error: { code: 'STORE_FULL', retryable: true } }, `${protocol}: the pass stops`)
    t.equal((await readMailbox(dovecot, user)).length, 4, `${protocol}: nothing deleted`)
    t.match(source.healthcheck(), { ok: true, consecutiveFailures: 1 }, `${protocol}: one retryable failure is not unhealthy yet`)

    // One message goes in, then the store fills up: only that one leaves the server.
    pipeline.acceptBeforeFailing = 1
    const partial = await source.pullOnce()
    t.match(partial, { archived: 1, acknowledged: 1, error: { code: 'STORE_FULL' } }, `${protocol}: stops at the first refusal`)
    t.equal((await readMailbox(dovecot, user)).length, 3, `${protocol}: only the archived message was deleted`)

    pipeline.failWith = null
    t.match(await source.pullOnce(), { archived: 3, acknowledged: 3, error: null }, `${protocol}: space again: the rest goes`)
    t.same(await readMailbox(dovecot, user), [])
    t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes(seeded))
    t.match(source.healthcheck(), { ok: true, consecutiveFailures: 0 })
  }
})

t.test('scheduled passes wait while the archive is read-only (nothing fetched or deleted) and resume once it takes mail', async (t) => {
  const seeded = makeMessages('read-only', 3)
  await seedMailbox(dovecot, users.readOnly, seeded)
  const pipeline = createFakePipeline()
  const logger = createMemoryLogger()
  let readOnly: string | null = 'the data volume has 1000 bytes free, below the minimum of 268435456 bytes'
  const source = createJournalSource(
    { logger, clock: systemClock, pipeline, archiveReadOnly: () => readOnly },
    sourceOptions(users.readOnly, { protocol: 'imap', intervalMs: 1000, firstPullDelayMsMax: 0 }),
  )
  t.teardown(() => source.stop())
  await source.start()
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.match(source.status(), { state: 'read-only', lastPullAtMs: null }, 'the first scheduled pass waits')
  t.equal(pipeline.accepted.length, 0)
  t.equal((await readMailbox(dovecot, users.readOnly)).length, 3, 'nothing deleted at the server')
  t.ok(
    logger.records.some((record) => record.level === 'warn' && record.msg.startsWith('archive read-only: journal pulls wait')),
    'the wait is logged with its reason',
  )

  readOnly = null
  for (let waitedMs = 0; pipeline.accepted.length < 3 && waitedMs < 10_000; waitedMs += 100) await new Promise((resolve) => setTimeout(resolve, 100))
  t.same(pipeline.accepted.map((entry) => entry.id).sort(), hashes(seeded), 'the next scheduled pass archives everything')
  t.same(await readMailbox(dovecot, users.readOnly), [], 'and removes it at the server')
  t.not(source.status().state, 'read-only')
})

t.test('a message over the size limit, or refused for good, is left on the server and reported on every pass', async (t) => {
  for (const [protocol, user] of [
    ['imap', users.large],
    ['pop3', users.pop3Large],
  ] as const) {
    const small = makeMessages(`large-${protocol}`, 3)
    const large = makeLargeMessage(`large-${protocol}`, 20_000)
    await seedMailbox(dovecot, user, [small[0]!, large, small[1]!, small[2]!])
    const pipeline = createFakePipeline()
    const { source, logger } = createSource(user, { protocol, messageBytesMax: 16_384, batchMessagesMax: 2 }, pipeline)

    const first = await source.pullOnce()
    t.match(first, { archived: 1, acknowledged: 1, error: null }, `${protocol}: the batch slot of the large one is used up once`)
    t.match(first.held, [{ reason: 'TOO_LARGE', sizeBytes: large.length }], `${protocol}: reported as held`)
    const second = await source.pullOnce()
    t.match(second, { archived: 2, acknowledged: 2, held: [{ reason: 'TOO_LARGE' }] }, `${protocol}: held messages take no batch slot later`)
    const onServer = await readMailbox(dovecot, user)
    t.equal(onServer.length, 1, `${protocol}: only the large message is left`)
    t.ok(onServer[0]!.source.equals(large))
    t.match(source.healthcheck(), { ok: false, heldMessages: 1 }, `${protocol}: an operator must look at it`)
    t.equal(logger.records.filter((record) => record.msg === 'message left on the server').length, 1, `${protocol}: warned once`)
    t.match(source.status().held, [{ reason: 'TOO_LARGE' }])

    // A pipeline refusal that retrying cannot fix holds the message the same way.
    const refusedMessage = makeMessages(`refused-${protocol}`, 1)
    await seedMailbox(dovecot, user, refusedMessage)
    pipeline.failWith = new ArchiveError('STORE_CORRUPT', 'integrity check failed')
    const third = await source.pullOnce()
    t.match(third, { archived: 0, error: null }, `${protocol}: a non-retryable refusal does not fail the pass`)
    t.equal(third.held.length, 2)
    t.match(
      third.held.find((entry) => entry.reason === 'REFUSED'),
      { errorCode: 'STORE_CORRUPT' },
    )
    t.equal((await readMailbox(dovecot, user)).length, 2, `${protocol}: both left on the server`)

    // Once removed at the server, a held message is no longer reported.
    await withImap(dovecot, user, async (client) => {
      await client.mailboxOpen('INBOX')
      await client.messageDelete('1:*')
    })
    pipeline.failWith = null
    const fourth = await source.pullOnce()
    t.same(fourth.held, [], `${protocol}: held list cleared when the server no longer has them`)
    t.equal(source.healthcheck().ok, true)
  }
})

/** Starts a pass, calls stop() once the first message is in the pipeline; returns the pass and how long stop() took. */
async function stopDuringFirstSubmit(source: ReturnType<typeof createJournalSource>, pipeline: FakePipeline): Promise<{ pass: Promise<PullReport>; stopMs: number }> {
  let submitted!: () => void
  const firstSubmit = new Promise<void>((resolve) => (submitted = resolve))
  pipeline.onSubmit = () => submitted()
  const pass = source.pullOnce()
  await firstSubmit
  const stopStartedMs = Date.now()
  await source.stop()
  return { pass, stopMs: Date.now() - stopStartedMs }
}

t.test('stop() lets the in-flight message finish and be acknowledged, then ends the pass', async (t) => {
  const user = users.stop
  const seeded = makeMessages('stop', 5)
  await seedMailbox(dovecot, user, seeded)
  const pipeline = createFakePipeline()
  pipeline.delayMs = 300
  const { source } = createSource(user, { protocol: 'imap' }, pipeline)
  const { pass, stopMs } = await stopDuringFirstSubmit(source, pipeline)
  const report = await pass
  t.ok(stopMs < 3000, `stop() returned promptly (took ${stopMs} ms)`)
  t.match(report, { stopped: true, archived: 1, acknowledged: 1, error: null })
  t.equal((await readMailbox(dovecot, user)).length, 4, 'the finished message was deleted, the rest stays')
  t.equal(source.status().state, 'stopped')
})

t.test('stop() abandons a message that does not finish in time: nothing acknowledged', async (t) => {
  const user = users.abandon
  const seeded = makeMessages('abandon', 3)
  await seedMailbox(dovecot, user, seeded)
  for (const protocol of ['imap', 'pop3'] as const) {
    const pipeline = createFakePipeline()
    pipeline.delayMs = 1500
    const { source, logger } = createSource(user, { protocol, stopTimeoutMs: 100 }, pipeline)
    const { pass, stopMs } = await stopDuringFirstSubmit(source, pipeline)
    t.ok(stopMs < 1400, `${protocol}: stop() bounded by stopTimeoutMs plus the abandon wait (took ${stopMs} ms)`)
    t.ok(logger.records.some((record) => /abandoned/.test(record.msg)))
    const report = await pass
    t.match(report, { stopped: true, acknowledged: 0 }, `${protocol}: the late archive is not acknowledged`)
    t.equal((await readMailbox(dovecot, user)).length, 3, `${protocol}: every message still at the server`)
  }
})

t.test('invalid options are refused at start() with every problem', async (t) => {
  const pipeline = createFakePipeline()
  const source = createJournalSource(
    { logger: createMemoryLogger(), clock: systemClock, pipeline },
    { ...sourceOptions(users.authFail, { protocol: 'imap' }), name: 'Bad Name', batchMessagesMax: 0, password: 'line\r\nbreak', stateDir: 'relative' },
  )
  const error = await source.start().then(
    () => null,
    (caught: unknown) => caught,
  )
  t.ok(error instanceof JournalError)
  t.match(error, { code: 'INVALID_OPTIONS', retryable: false })
  const problems = (error as JournalError).fields.problems as string[]
  t.same(
    problems.map((problem) => problem.split(':')[0]),
    ['name', 'password', 'batchMessagesMax', 'stateDir'],
  )
  t.notOk((error as JournalError).message.includes('line\r\nbreak'), 'the password is not echoed')
  await t.rejects(source.pullOnce(), { code: 'INVALID_OPTIONS' })
})
