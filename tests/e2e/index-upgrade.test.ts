import t from 'tap'
import { join } from 'node:path'
import { open } from 'lmdb'
import { hashPassword } from '../../firmware/common/password.js'
import { indexLayoutVersion } from '../../firmware/index/index.js'
import { tempDir, writeConfig, startService, cliJson, portOf } from '../helpers/service.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'
import { waitUntil } from '../helpers/wait.js'

const technicianPassword = 'e2e-index-upgrade-pass'

const message = (subject: string) =>
  Buffer.from(
    `From: alice@corp.example\r\nTo: bob@corp.example\r\nSubject: ${subject}\r\nDate: Sun, 29 Nov 2026 01:00:00 +0000\r\nMessage-ID: <${subject.replace(/\W/g, '')}@e2e>\r\n\r\nbody of ${subject}\r\n`,
  )

/** Rewrites the index's state record of a stopped service (what older firmware, or a rebuild cut short, leaves). */
async function setIndexState(dataDir: string, change: Record<string, unknown>): Promise<void> {
  const root = open({ path: join(dataDir, 'archive'), maxDbs: 32 })
  try {
    const keys = root.openDB<Record<string, unknown>, string>('index-keys', { encoding: 'msgpack' })
    await keys.put('state', { ...keys.get('state')!, ...change })
  } finally {
    await root.close()
  }
}

/** The paced-search counters of an index that has answered no search since its start. */
const noSearches = { running: 0, waiting: 0, tooExpensive: 0, busy: 0, restarts: 0 }

interface IndexStatus {
  documents: number
  rebuilding: boolean
  pending: number
  flushes: number
}

t.test('an index of another layout, or a rebuild cut short, is rebuilt at start; purges by query wait for it', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) }, retention: { purgeIntervalMs: 0 } })
  let service = await startService(config)
  t.teardown(() => service.stop())
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const ids: string[] = []
  for (const subject of ['quarterly numbers', 'merger rumours', 'lunch plans']) {
    const reply = await session.send('alice@corp.example', ['bob@corp.example'], message(subject))
    t.equal(reply.code, 250, reply.text)
    ids.push(archivedId(reply)!)
  }
  session.close()
  const technician = (args: string[]) => cliJson(config, [...args, '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal((await technician(['hold', 'add', 'inquiry', '--reason', 'inquiry', '--by', 'counsel', '--query', 'subject:merger'])).code, 0)
  const indexStatus = async (): Promise<IndexStatus> => ((await cliJson(config, ['show', 'status'])).json as { index: IndexStatus }).index
  t.same(await indexStatus(), { documents: 3, rebuilding: false, layoutCurrent: true, pending: 3, flushes: 0, removedSinceRebuild: 0, rebuildIndexed: null, searches: noSearches })
  // A planned stop writes the pending tail's postings: nothing is left to load after the start.
  await service.stop()
  t.ok(
    service.lines.some((line) => line.includes('search index tail flushed at stop')),
    'the flush at stop is logged',
  )
  service = await startService(config)
  t.same(
    await indexStatus(),
    { documents: 3, rebuilding: false, layoutCurrent: true, pending: 0, flushes: 1, removedSinceRebuild: 0, rebuildIndexed: null, searches: noSearches },
    'the tail was flushed at stop',
  )
  t.same(
    ((await cliJson(config, ['search', 'subject:merger'])).json as { hits: Array<{ id: string }> }).hits.map((hit) => hit.id),
    [ids[1]],
    'found in the flushed postings',
  )

  // An unplanned stop (SIGKILL) leaves a tail: the next start writes it in the background.
  const again = await SmtpSession.open(portOf(service, 'smtp'))
  for (const subject of ['board minutes', 'holiday rota']) {
    const reply = await again.send('alice@corp.example', ['bob@corp.example'], message(subject))
    t.equal(reply.code, 250, reply.text)
    ids.push(archivedId(reply)!)
  }
  again.close()
  t.match(await indexStatus(), { documents: 5, pending: 2, flushes: 1 })
  await service.stop('SIGKILL')
  service = await startService(config)
  const afterCrash = await waitUntil(
    async () => {
      const status = await indexStatus()
      return status.pending === 0 && status
    },
    { what: 'the tail left by the crash flushed', timeoutMs: 10_000, intervalMs: 100, observe: indexStatus },
  )
  t.match(afterCrash, { documents: 5, pending: 0, flushes: 2 }, 'the tail left by the crash was flushed after the start')
  t.ok(
    service.lines.some((line) => line.includes('search index tail left by an unplanned stop') && line.includes('"documents":2')),
    'and that is logged',
  )
  t.same(
    ((await cliJson(config, ['search', 'subject:minutes'])).json as { hits: Array<{ id: string }> }).hits.map((hit) => hit.id),
    [ids[3]],
    'found in the postings written after the crash',
  )

  for (const [label, change] of [
    ['layout of older firmware', { v: indexLayoutVersion - 1 }],
    ['rebuild cut short', { rebuilding: true }],
  ] as const) {
    await service.stop()
    await setIndexState(service.dataDir, change)
    service = await startService(config)
    // Started in the background at boot: wait (bounded) for it to finish.
    const status = await waitUntil(
      async () => {
        const current = await indexStatus()
        return !current.rebuilding && current
      },
      { what: `${label}: the rebuild at start to finish`, timeoutMs: 10_000, intervalMs: 100, observe: indexStatus },
    )
    t.equal(status.rebuilding, false, `${label}: rebuilt at start`)
    t.equal(status.documents, 5, `${label}: every archived message indexed again`)
    t.ok(
      service.lines.some((line) => line.includes('search index rebuild started')),
      `${label}: the rebuild is logged`,
    )
    const search = (await cliJson(config, ['search', 'subject:merger'])).json as { total: number; hits: Array<{ id: string }> }
    t.same(
      search.hits.map((hit) => hit.id),
      [ids[1]],
      `${label}: searchable again`,
    )
    const preview = await cliJson(config, ['policy', 'preview'])
    t.equal(preview.code, 0, `${label}: the purge preview (which evaluates the hold's query) runs again: ${preview.stderr}`)
  }
  // The technician's rebuild still works, and the status reports it done.
  const rebuilt = await technician(['index', 'rebuild'])
  t.equal(rebuilt.code, 0, rebuilt.stderr)
  t.match(rebuilt.json, { indexed: 5 })
})
