/**
 * The store's purge records (firmware/archive/purge-records.ts) on real LMDB stores: written
 * in the purge's transaction, read back after a restart, and built once from the change log
 * for an archive made before them.
 */
import t from 'tap'
import { open } from 'lmdb'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { createArchiveStore } from '../../../firmware/archive/store.js'
import { databaseNames } from '../../../firmware/archive/layout.js'
import { purgedStateKey } from '../../../firmware/archive/purge-records.js'
import { tempDir } from '../../helpers/service.js'
import { generatedMessage, requestFor } from './fixtures/messages.js'

const mib = 1024 * 1024

t.test('purge records: written with the purge, kept across restarts, rebuilt from the change log for older archives', async (t) => {
  const path = await tempDir('mailkeep-purged-')
  const clock = createManualClock(Date.UTC(2026, 11, 1))
  const logger = createMemoryLogger()
  const options = { path, mapSizeBytes: 256 * mib, freeBytesMin: 0, messageBytesMax: 8 * mib }
  let store = createArchiveStore({ logger, clock }, options)
  await store.start()
  const ids: string[] = []
  for (let index = 0; index < 5; index++) ids.push((await store.ingest(requestFor(generatedMessage(18, index)))).id)
  t.equal(store.purgedAt(ids[0]!), undefined, 'never purged: no record')
  clock.advance(1000)
  const purge = await store.delete(ids[0]!)
  t.same(store.purgedAt(ids[0]!), { sequence: purge.sequence, atMs: clock.now() }, 'the purge entry and its time')
  t.equal(store.purgedAt('not-an-id'), undefined)
  // The same bytes again: held and still on record as once purged (has() is checked first).
  await store.ingest(requestFor(generatedMessage(18, 0)))
  t.equal(store.has(ids[0]!), true)
  t.equal(store.purgedAt(ids[0]!)?.sequence, purge.sequence)
  const second = await store.delete(ids[1]!)
  await store.stop()

  store = createArchiveStore({ logger, clock }, options)
  await store.start()
  t.equal(store.purgedAt(ids[1]!)?.sequence, second.sequence, 'kept across a restart')
  await store.stop()

  // An archive from firmware before the records: no state record and no records.
  const root = open({ path, maxDbs: 64 })
  const purged = root.openDB<unknown, Buffer>(databaseNames.purged, { keyEncoding: 'binary' })
  const state = root.openDB<unknown, string>(databaseNames.state, {})
  await root.transaction(() => {
    for (const { key } of purged.getRange({})) purged.removeSync(key as Buffer)
    state.removeSync(purgedStateKey)
  })
  await root.close()
  store = createArchiveStore({ logger, clock }, options)
  await store.start()
  t.teardown(() => store.stop())
  t.equal(store.purgedAt(ids[1]!)?.sequence, second.sequence, 'rebuilt from the purge entries of the change log')
  t.equal(store.purgedAt(ids[0]!)?.sequence, purge.sequence)
  t.equal(store.purgedAt(ids[2]!), undefined)
  t.ok(
    logger.records.some((record) => record.msg === 'purge records built from the change log'),
    'the build is logged',
  )
})

t.test("a peer's copy of a message purged here is stored only for a delivery received after the purge", async (t) => {
  const path = await tempDir('mailkeep-purged-copy-')
  const clock = createManualClock(Date.UTC(2026, 11, 1))
  const store = createArchiveStore({ logger: createMemoryLogger(), clock }, { path, mapSizeBytes: 256 * mib, freeBytesMin: 0, messageBytesMax: 8 * mib })
  await store.start()
  t.teardown(() => store.stop())
  const raw = generatedMessage(19, 1)
  const receivedBefore = clock.now()
  const { id } = await store.ingest(requestFor(raw, { receivedAtMs: receivedBefore }))
  clock.advance(60_000)
  await store.delete(id)
  const purgedAtMs = clock.now()
  clock.advance(1_000)
  const copy = (receivedAtMs: number) => requestFor(raw, { source: 'mirror', sourceName: 'MK650-B', receivedAtMs }, 'test', 'MK650-B')
  const old = await store.ingest(copy(purgedAtMs))
  t.match(old, { id, duplicate: true, purged: true }, 'received no later than the purge: not stored')
  t.equal(store.has(id), false)
  t.equal(store.lastSequence(), store.purgedAt(id)!.sequence, 'nothing written')
  const local = await store.ingest(requestFor(raw, { receivedAtMs: receivedBefore }))
  t.equal(local.duplicate, false, 'a local delivery is new mail whatever its time: stored')
  await store.delete(id)
  const newer = await store.ingest(copy(clock.now() + 1))
  t.match(newer, { duplicate: false }, "a peer's delivery received after the purge is new mail: stored")
  t.notOk(newer.purged)
})
