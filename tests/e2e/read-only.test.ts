/**
 * A full data volume, end to end: the real service under Bun on a real small file system
 * (a loop-mounted ext4 the test makes as root), driven by a real SMTP client, the HTTP API
 * and the CLI. Booting on a full volume serves search and /raw and refuses SMTP with 452
 * 4.3.1; a volume that fills during SMTP ingest gives 452 (never 451, never 250 then lost);
 * both return to read-write without a restart once space is freed, and every log line
 * stays JSON.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { cliJson, portOf, startService, tempDir, writeConfig, type RunningService } from '../helpers/service.js'
import { SmtpSession, archivedId, type SmtpReply } from '../helpers/smtp.js'
import { mountSmallVolume, smallVolumeUnavailable, type SmallVolume } from '../helpers/small-volume.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const mib = 1024 * 1024
const skip = (await smallVolumeUnavailable()) ?? false
const recipient = 'journal@archive.local'
/** Bound on waiting for the service to notice that space is back, in ms. */
const recoveryWaitMs = 10_000

/** A message of about 60 KB that does not compress, with a word of its own to search for. */
function bulkyMessage(word: string): Buffer {
  return Buffer.from(`From: alice@example.com\r\nTo: ${recipient}\r\nSubject: ${word}\r\n\r\n${word}\r\n${randomBytes(45_000).toString('base64')}\r\n`, 'latin1')
}

/** The service's config on `volume`: a guard of 4 MiB, 2 MiB of hysteresis, a watcher every 200 ms. */
async function configOn(volume: SmallVolume): Promise<string> {
  return writeConfig(await tempDir(), {
    dataDir: join(volume.path, 'data'),
    smtp: { port: 0, archiveRecipients: [recipient] },
    storage: { freeBytesMin: 4 * mib, readOnlyMarginBytes: 2 * mib, readOnlyRecheckMs: 200 },
  })
}

async function http(service: RunningService) {
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const base = `http://127.0.0.1:${portOf(service, 'http')}`
  const headers = { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` }
  return {
    raw: async (id: string) => {
      const response = await fetch(`${base}/api/v1/messages/${id}/raw`, { headers })
      return response.status === 200 ? Buffer.from(await response.arrayBuffer()) : response.status
    },
    search: async (query: string) => {
      const response = await fetch(`${base}/api/v1/search?q=${encodeURIComponent(query)}`, { headers })
      return response.status === 200 ? ((await response.json()) as { hits: { id: string }[] }).hits.map((hit) => hit.id) : response.status
    },
    status: async () => (await (await fetch(`${base}/api/v1/status`, { headers })).json()) as Record<string, unknown>,
  }
}

interface StatusView {
  state: string
  reasons: string[]
  mode: string
  readOnly: { cause: string; reason: string } | null
  store: { messages: number }
}

const showStatus = async (config: string): Promise<StatusView> => (await cliJson(config, ['show', 'status'])).json as StatusView

/** Polls `show status` until the service is read-write again. */
async function writableAgain(config: string): Promise<StatusView> {
  const deadline = Date.now() + recoveryWaitMs
  let status = await showStatus(config)
  while (status.mode !== 'read-write' && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200))
    status = await showStatus(config)
  }
  return status
}

/** Every stdout line is one JSON object, and nothing reached stderr raw: not lmdb-js's console output, not native LMDB's fprintf (boot/native-stderr.ts). */
function assertJsonLog(t: TestContext, service: RunningService): void {
  const notJson = service.lines.filter((line) => {
    try {
      return typeof JSON.parse(line) !== 'object'
    } catch {
      return true
    }
  })
  t.same(notJson, [], `all ${service.lines.length} log lines are JSON`)
  t.equal(service.stderr(), '', 'nothing on stderr')
}

t.test('boot on a full volume: read-only, search and /raw answer, SMTP gets 452 4.3.1; writable again without restart', { skip }, async (t) => {
  const volume = await mountSmallVolume(t, 64 * mib)
  const config = await configOn(volume)
  const first = await startService(config)
  const session = await SmtpSession.open(portOf(first, 'smtp'))
  const stored = new Map<string, Buffer>()
  for (const word of ['wombatone', 'wombattwo', 'wombatthree']) {
    const raw = bulkyMessage(word)
    const reply = await session.send('alice@example.com', [recipient], raw)
    t.equal(reply.code, 250, reply.text)
    stored.set(archivedId(reply)!, raw)
  }
  session.close()
  t.equal(await first.stop(), 0)
  await volume.fill(0)
  t.equal(await volume.freeBytes(), 0, 'the volume is full')

  const service = await startService(config)
  t.teardown(() => service.stop())
  t.ok(
    service.lines.some((line) => line.includes('data volume full: booting read-only')),
    'the boot says why',
  )
  const status = await showStatus(config)
  t.equal(status.mode, 'read-only', 'show status says read-only')
  t.match(status.readOnly, { cause: 'volume-full', reason: /below the minimum of 4194304 bytes/ }, 'and why')
  t.equal(status.state, 'degraded')
  t.ok(
    status.reasons.some((reason) => /^service archive: read-only: /.test(reason)),
    status.reasons.join('; '),
  )
  const api = await http(service)
  t.match(await api.status(), { mode: 'read-only', readOnly: { cause: 'volume-full' } }, '/api/v1/status says it too')
  for (const [id, raw] of stored) t.same(await api.raw(id), raw, `/raw ${id.slice(0, 8)} byte-identical`)
  t.same(await api.search('wombattwo'), [[...stored.keys()][1]], 'search answers')

  const smtp = await SmtpSession.open(portOf(service, 'smtp'))
  const refused = await smtp.send('alice@example.com', [recipient], bulkyMessage('refused'))
  t.equal(refused.code, 452, refused.text)
  t.match(refused.text, /^4\.3\.1 /)

  await volume.unfill()
  const after = await writableAgain(config)
  t.equal(after.mode, 'read-write', 'read-write again once space is freed, no restart')
  t.equal(after.readOnly, null)
  const accepted = await smtp.send('alice@example.com', [recipient], bulkyMessage('accepted'))
  t.equal(accepted.code, 250, accepted.text)
  smtp.close()
  t.same(await api.search('accepted'), [archivedId(accepted)], 'the new message is searchable')
  t.equal(await service.stop(), 0)
  assertJsonLog(t, service)
})

t.test('the volume fills during SMTP ingest: every 250 is intact, the rest got 452 4.3.1, recovery without restart', { skip }, async (t) => {
  const volume = await mountSmallVolume(t, 48 * mib)
  const config = await configOn(volume)
  const service = await startService(config)
  t.teardown(() => service.stop())
  const api = await http(service)
  const acknowledged = new Map<string, Buffer>()
  const refusals: SmtpReply[] = []
  // Four senders; the volume fills under them (the store's free-space reading is trusted
  // for a second, so commits meet the full disk). Every sender waits at its seventh message
  // until the volume is full: otherwise, on a busy machine, the others could send all their
  // mail while the filling is still under way, and no commit would meet the full disk.
  let markFilled: () => void = () => undefined
  const volumeFull = new Promise<void>((resolve) => (markFilled = resolve))
  const senders = Array.from({ length: 4 }, async (_, sender) => {
    const session = await SmtpSession.open(portOf(service, 'smtp'))
    for (let number = 0; number < 30; number++) {
      if (number === 6) await volumeFull
      const raw = bulkyMessage(`otter${sender}x${number}`)
      const reply = await session.send('alice@example.com', [recipient], raw)
      if (reply.code === 250) acknowledged.set(archivedId(reply)!, raw)
      else refusals.push(reply)
      if (sender === 0 && number === 5) {
        await volume.fill(0)
        markFilled()
      }
    }
    session.close()
  })
  await Promise.all(senders)
  t.ok(refusals.length > 0, `${acknowledged.size} acknowledged, ${refusals.length} refused while full`)
  t.same([...new Set(refusals.map((reply) => `${reply.code} ${reply.text.slice(0, 5)}`))], ['452 4.3.1'], 'every refusal is 452 4.3.1')
  const during = await showStatus(config)
  t.equal(during.mode, 'read-only')
  // The store's free-space reading is trusted for a second: commits in that second meet the
  // full disk for real (ext4 answers EIO or ENOSPC), which is the case under test.
  t.equal(during.readOnly?.cause, 'commit-failed', `read-only after a real commit failure: ${during.readOnly?.reason}`)
  const libraryLines = service.lines.filter((line) => line.includes('"ns":"mailkeep.console"')).map((line) => JSON.parse(line) as { error?: { message?: string } })
  t.ok(
    libraryLines.length > 0 && libraryLines.every((record) => typeof record.error?.message === 'string'),
    `lmdb's own report of the failed commit is a JSON field: ${libraryLines[0]?.error?.message}`,
  )
  const nativeLines = service.lines.filter((line) => line.includes('"msg":"native code wrote to stderr"'))
  t.comment(`native LMDB lines relayed as JSON records: ${nativeLines.length}${nativeLines[0] ? ` (${nativeLines[0]})` : ''}`)

  await volume.unfill()
  const after = await writableAgain(config)
  t.equal(after.mode, 'read-write', 'read-write again without restart')
  for (const [id, raw] of acknowledged) t.same(await api.raw(id), raw, `acknowledged ${id.slice(0, 8)} intact`)
  t.equal(after.store.messages, acknowledged.size, 'exactly the acknowledged messages are stored')
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const accepted = await session.send('alice@example.com', [recipient], bulkyMessage('afterwards'))
  session.close()
  t.equal(accepted.code, 250, accepted.text)
  t.same(await api.search('afterwards'), [archivedId(accepted)])
  t.equal(await service.stop(), 0)
  assertJsonLog(t, service)
})
