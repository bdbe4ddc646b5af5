/**
 * Source takeover with real processes and a real Dovecot: B is configured to pull A's journal
 * mailbox only while A is unreachable (`journal.sources[].takeoverFor`). While A runs, only A
 * pulls; while A is down, B pulls; when A returns, B stops; duplicates from the overlap are
 * absorbed by dedup, and both end with every message once.
 */
import t from 'tap'
import { tempDir, startService, cliJson, type RunningService } from '../helpers/service.js'
import { startDovecot, seedMailbox, readMailbox } from '../helpers/dovecot.js'
import { appliancePolling, freePort, searchIds, sendMail, statusOf, testMessage, writeApplianceConfig } from '../helpers/mirror-appliances.js'
import { waitUntil } from '../helpers/wait.js'

interface JournalView {
  name: string
  state: string
  totals: { archived: number; duplicates: number }
  takeover: { peer: string; active: boolean } | null
}

async function journalOf(config: string): Promise<JournalView> {
  return ((await cliJson(config, ['show', 'journal'])).json as JournalView[])[0]!
}

t.test("B pulls A's journal source only while A is offline; the overlap is absorbed by dedup", async (t) => {
  const user = { name: 'journal', password: 'journal-pass-123' }
  const dovecot = await startDovecot({ users: [user] })
  t.teardown(() => dovecot.stop())
  const dir = await tempDir('mailkeep-mirror-takeover-')
  const [portA, portB] = [await freePort(), await freePort()]
  const source = {
    name: 'exchange',
    protocol: 'imap',
    host: '127.0.0.1',
    port: dovecot.ports.imap,
    tls: 'none',
    user: user.name,
    password: user.password,
    intervalMs: 1000,
    afterArchive: 'delete',
  }
  const configA = await writeApplianceConfig(dir, 'a', { serial: 'MK650-TA', mirrorPort: portA, peers: [portB], extra: { journal: { sources: [source] } } })
  const configB = await writeApplianceConfig(dir, 'b', {
    serial: 'MK650-TB',
    mirrorPort: portB,
    peers: [portA],
    extra: { journal: { sources: [{ ...source, takeoverFor: `127.0.0.1:${portA}`, takeoverAfterMs: 1500 }] } },
  })
  let a: RunningService = await startService(configA)
  const b = await startService(configB)
  t.teardown(async () => {
    await Promise.all([a.stop(), b.stop()])
  })
  const storeCount = async (service: RunningService) => (await statusOf(service)).store.messages

  // 1. A is up: A pulls, B stands by and gets the mail by mirroring.
  const first = Array.from({ length: 3 }, (_, index) => testMessage(`takeoverword first ${index}`))
  await seedMailbox(dovecot, user, first)
  await waitUntil(async () => (await storeCount(a)) === 3 && (await storeCount(b)) === 3, { ...appliancePolling, what: 'A pulled and B mirrored' })
  let journalB = await journalOf(configB)
  t.match(journalB, { state: 'standby', takeover: { peer: `127.0.0.1:${portA}`, active: false }, totals: { archived: 0 } }, 'B does not pull while A is up')

  // An overlap in the making: A archives X (by SMTP here), then X shows up in the journal mailbox
  // while A is down — as after a crash between archiving and deleting at the server.
  const overlap = testMessage('takeoverword overlap X')
  await sendMail(a, [overlap])
  await waitUntil(async () => (await storeCount(b)) === 4, { ...appliancePolling, what: 'X mirrored to B' })

  // 2. A goes down: after takeoverAfterMs, B pulls the mailbox itself.
  await a.stop()
  const during = Array.from({ length: 4 }, (_, index) => testMessage(`takeoverword during ${index}`))
  await seedMailbox(dovecot, user, [...during, overlap])
  journalB = await waitUntil(
    async () => {
      const journal = await journalOf(configB)
      return journal.totals.archived >= 5 ? journal : undefined
    },
    { ...appliancePolling, what: 'B took over' },
  )
  t.equal(journalB.takeover?.active, true, 'B shows the takeover')
  t.equal(journalB.totals.archived, 5, 'B archived all five (archived counts duplicates too)')
  t.equal(journalB.totals.duplicates, 1, 'X, already here, is a duplicate: stored once')
  t.equal(await storeCount(b), 8)
  t.same(await readMailbox(dovecot, user), [], 'B emptied the mailbox (after archiving)')
  t.ok(
    b.lines.some((line) => line.includes('pulling its journal source here (takeover)')),
    'the takeover is logged',
  )

  // 3. A returns: B stops pulling, A pulls again, and B's takeover mail reaches A once.
  a = await startService(configA)
  await waitUntil(async () => (await journalOf(configB)).state === 'standby', { ...appliancePolling, what: 'B back in standby' })
  const after = Array.from({ length: 2 }, (_, index) => testMessage(`takeoverword after ${index}`))
  await seedMailbox(dovecot, user, after)
  await waitUntil(async () => (await storeCount(a)) === 10 && (await storeCount(b)) === 10, { ...appliancePolling, what: 'both hold all 10' })
  const finalB = await journalOf(configB)
  t.equal(finalB.totals.archived, 5, 'B pulled nothing after A returned')
  t.ok(
    b.lines.some((line) => line.includes('its journal source is no longer pulled here')),
    'the end of the takeover is logged',
  )
  for (const service of [a, b]) {
    const ids = await searchIds(service, 'takeoverword')
    t.equal(ids.length, 10, 'every message found once')
    t.equal(new Set(ids).size, 10)
  }
})
