/**
 * Read-only mode of the archive store on a real full file system (a loop-mounted ext4 made
 * by the test; store-read-only.ts has the design): a commit that fails because the volume
 * filled is STORE_FULL whatever errno LMDB gives, the store turns read-only with reads and
 * search going on, and returns to read-write (reopening the environment) once space is
 * freed, with every acknowledged message intact. Starting on a full volume gives a
 * read-only store too.
 */
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { hasCode } from '../../../firmware/common/errors.js'
import { createArchiveStore } from '../../../firmware/archive/store.js'
import { createArchiveIndexer, createIndex } from '../../../firmware/index/index.js'
import { mountSmallVolume, smallVolumeUnavailable, type SmallVolume } from '../../helpers/small-volume.js'
import { requestFor } from './fixtures/messages.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const mib = 1024 * 1024
const skip = (await smallVolumeUnavailable()) ?? false
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

/** A message of about 60 KB that does not compress, with a word of its own to search for. */
function bulkyMessage(word: string): Buffer {
  return Buffer.from(`Subject: ${word}\r\nFrom: alice@example.com\r\n\r\n${randomBytes(45_000).toString('base64')}\r\n`, 'latin1')
}

/**
 * A store with the search index in its transactions, on `volume`. The clock is manual: the
 * free-space reading taken at start is trusted until the test advances it, so a volume
 * filled behind the store's back fails real commits instead of the check before them.
 */
async function storeOn(t: TestContext, volume: SmallVolume) {
  const logger = createMemoryLogger()
  const clock = createManualClock()
  const index = createIndex({ logger, clock })
  const store = createArchiveStore(
    { logger, clock, volume: async () => ({ freeBytes: await volume.freeBytes() }) },
    {
      path: join(volume.path, 'archive'),
      mapSizeBytes: 1024 * mib,
      freeBytesMin: 2 * mib,
      readOnlyMarginBytes: mib,
      // Only the test drives the watcher (recheckSpace), never its timer.
      readOnlyRecheckMs: 600_000,
      messageBytesMax: 8 * mib,
      indexer: createArchiveIndexer(index, { logger }),
    },
  )
  await store.start()
  t.teardown(() => store.stop())
  return { store, index, logger, clock }
}

t.test('a commit that fails on a full ext4 is STORE_FULL; the store recovers without a restart, every acknowledged message intact', { skip }, async (t) => {
  const volume = await mountSmallVolume(t, 48 * mib)
  const { store, index, logger } = await storeOn(t, volume)
  const acknowledged = new Map<string, Buffer>()
  for (let number = 0; number < 20; number++) {
    const raw = bulkyMessage(`before${number}`)
    acknowledged.set((await store.ingest(requestFor(raw, {}, `before${number}`))).id, raw)
  }
  // Room for a few more: ext4 takes their writes into delayed allocation and then fails the
  // sync with EIO (measured: every failing commit gave errno 5 when some space was left).
  await volume.fill(600 * 1024)

  // Three writers on the filling volume, eight messages each: group commits fail for real.
  const refused: Error[] = []
  let acknowledgedDuring = 0
  await Promise.all(
    Array.from({ length: 3 }, async (_, writer) => {
      for (let number = writer * 8; number < writer * 8 + 8; number++) {
        const raw = bulkyMessage(`during${number}`)
        try {
          const result = await store.ingest(requestFor(raw, {}, `during${number}`))
          acknowledged.set(result.id, raw)
          acknowledgedDuring++
        } catch (error) {
          refused.push(error as Error)
        }
      }
    }),
  )
  t.ok(refused.length > 0 && acknowledgedDuring > 0, `${acknowledgedDuring} of 24 acknowledged, ${refused.length} refused as the volume filled`)
  t.ok(
    refused.every((error) => hasCode(error, 'STORE_FULL')),
    `every refusal is STORE_FULL: ${[...new Set(refused.map((error) => (error as { code?: string }).code))].join(', ')}`,
  )
  t.ok(store.writeActivity().failedCommits > 0, `a real commit failed (${store.writeActivity().failedCommits})`)
  t.equal(store.readOnly()?.cause, 'commit-failed')
  t.match(store.healthcheck(), { ok: false, detail: /^read-only: a commit failed with the data volume full/ })
  const entered = logger.records.filter((record) => record.msg === 'archive store is read-only: the data volume is full').map((record) => record.reason)
  t.equal(entered.length, 1, `entered once: ${String(entered[0])}`)
  // The environment is reopened at once (a failed meta write would refuse reads too).
  for (let waitedMs = 0; store.readOnly()?.reopen !== false && waitedMs < 5000; waitedMs += 10) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(store.readOnly()?.reopen, false, 'reopened while read-only')
  t.ok(logger.records.some((record) => record.msg === 'archive environment reopened'))

  // Read-only: reads and search go on, writes are refused before they start.
  const [firstId, firstRaw] = [...acknowledged][0]!
  t.same(Buffer.from((await store.getRaw(firstId))!), firstRaw, 'raw bytes readable while read-only')
  t.equal((await index.search('before3')).total, 1, 'search answers while read-only')
  const whileFull = await store.ingest(requestFor(bulkyMessage('refused'), {}, 'refused')).catch((error: unknown) => error)
  t.ok(hasCode(whileFull, 'STORE_FULL') && (whileFull as { retryable: boolean }).retryable, 'a write while read-only is STORE_FULL, retryable')
  t.not(await store.recheckSpace(), null, 'still read-only while the volume is full')

  await volume.unfill()
  t.equal(await store.recheckSpace(), null, 'writable again once space is back, without a restart')
  for (const [id, raw] of acknowledged) t.same(Buffer.from((await store.getRaw(id)) ?? []), raw, `acknowledged ${id.slice(0, 8)} intact`)
  const report = await store.verify()
  t.same([report.checked, report.corrupt, report.countersConsistent], [acknowledged.size, 0, true], `${acknowledged.size} acknowledged, all verify`)
  t.equal(store.stats().messages, acknowledged.size, 'nothing refused was stored')
  for (let number = 0; number < 24; number++) {
    const id = [...acknowledged].find(([, raw]) => raw.includes(`Subject: during${number}\r\n`))?.[0]
    t.equal((await index.search(`during${number}`)).total, id ? 1 : 0, `the index agrees on during${number} (${id ? 'acknowledged' : 'refused'})`)
  }
  const after = bulkyMessage('after')
  const stored = await store.ingest(requestFor(after, {}, 'after'))
  t.equal(stored.id, sha256(after), 'new mail is archived after the recovery')
  t.equal((await index.search('after')).total, 1)
})

t.test('a store that starts on a full volume is read-only, serves reads, and takes writes once there is room', { skip }, async (t) => {
  const volume = await mountSmallVolume(t, 32 * mib)
  const first = await storeOn(t, volume)
  const raw = bulkyMessage('kept')
  const { id } = await first.store.ingest(requestFor(raw, {}, 'kept'))
  await first.store.stop()
  await volume.fill(512 * 1024)

  const { store, index, clock } = await storeOn(t, volume)
  t.match(store.readOnly(), { cause: 'volume-full', reopen: false }, 'read-only from the start')
  t.same(Buffer.from((await store.getRaw(id))!), raw, 'raw bytes readable')
  t.equal((await index.search('kept')).total, 1, 'search answers')
  const refused = await store.ingest(requestFor(bulkyMessage('new'), {}, 'new')).catch((error: unknown) => error)
  t.ok(hasCode(refused, 'STORE_FULL'), 'ingest refused with STORE_FULL')

  await volume.unfill()
  clock.advance(1000)
  const stored = await store.ingest(requestFor(bulkyMessage('new'), {}, 'new'))
  t.ok(stored.id, 'the next ingest after freeSpaceCacheMs finds room and is archived')
  t.equal(store.readOnly(), null)
  t.equal(store.stats().messages, 2)
})
