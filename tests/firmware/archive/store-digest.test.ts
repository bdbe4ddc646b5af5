/**
 * The store's id digest (firmware/archive/store-digest.ts) on real LMDB stores in temp dirs:
 * kept in the transaction of every ingest and purge, equal to a digest recomputed from
 * listIds, built at start when missing or stale, and read through snapshots that see one
 * point in time and are bounded in number and age.
 */
import t from 'tap'
import { open, type Database } from 'lmdb'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { hasCode } from '../../../firmware/common/errors.js'
import { createArchiveStore, digestSnapshotsOpenMax, type ArchiveStoreOptions } from '../../../firmware/archive/store.js'
import { databaseNames } from '../../../firmware/archive/layout.js'
import { answerChildren, answerIds, compareDigests, remoteOverBytes, type DigestView, type RemoteDigestView } from '../../../firmware/archive/id-digest.js'
import type { ArchiveIndexer, ArchiveStore, DigestSnapshot } from '../../../firmware/archive/types.js'
import { tempDir } from '../../helpers/service.js'
import { generatedMessage, requestFor } from './fixtures/messages.js'
import { recomputedDigest, storedEntries } from './fixtures/digest.js'
import { testSeed } from '../../helpers/random.js'
import { waitUntil } from '../../helpers/wait.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const mib = 1024 * 1024

async function newStore(t: TestContext, overrides: Partial<ArchiveStoreOptions> = {}) {
  const path = overrides.path ?? (await tempDir('mailkeep-digest-'))
  const logger = createMemoryLogger()
  const clock = createManualClock()
  const store = createArchiveStore({ logger, clock }, { path, mapSizeBytes: 1024 * mib, freeBytesMin: 0, messageBytesMax: 8 * mib, ...overrides })
  await store.start()
  t.teardown(() => store.stop())
  return { store, path, logger, clock }
}

function remoteOf(view: DigestView): RemoteDigestView {
  return remoteOverBytes({ children: async (request) => answerChildren(view, request), ids: async (request) => answerIds(view, request) })
}

/** Asserts that the store's digest equals one recomputed from scratch from its ids. */
async function digestMatchesIds(t: TestContext, store: ArchiveStore, label: string): Promise<void> {
  const entries = storedEntries(store)
  const expected = recomputedDigest(store)
  const snapshot = await store.digestSnapshot()
  try {
    const root = snapshot.node('')
    t.same(
      [root.count, root.bytes, Buffer.from(root.hash).toString('hex')],
      [expected.root.count, expected.root.bytes, Buffer.from(expected.root.hash).toString('hex')],
      `${label}: the root equals the digest of listIds (${root.count} ids)`,
    )
    const comparison = await compareDigests(snapshot, remoteOf(expected))
    t.same([comparison.agree, comparison.onlyLocal, comparison.onlyRemote], [true, [], []], `${label}: compareDigests agrees with the recomputed digest`)
    const leaves = new Set(entries.map((entry) => entry.id.slice(0, 4)))
    for (const leaf of leaves) {
      if (!Buffer.from(snapshot.node(leaf).hash).equals(Buffer.from(expected.node(leaf).hash)) || snapshot.node(leaf).count !== expected.node(leaf).count)
        t.fail(`${label}: leaf ${leaf} differs`)
    }
    t.same(snapshot.idsInBucket(''), entries, `${label}: the snapshot lists every id with its size`)
  } finally {
    snapshot.close()
  }
}

const rootOf = async (store: ArchiveStore) => {
  const snapshot = await store.digestSnapshot()
  const root = snapshot.node('')
  snapshot.close()
  return { count: root.count, bytes: root.bytes, hash: Buffer.from(root.hash).toString('hex') }
}

t.test('the digest follows every ingest and purge, ignores duplicates, and equals a digest recomputed from listIds', async (t) => {
  const { store } = await newStore(t)
  t.same(await rootOf(store), { count: 0, bytes: 0, hash: '0'.repeat(64) }, 'a new archive: the empty digest')
  const raws = Array.from({ length: 60 }, (_, index) => generatedMessage(501, index))
  const ids: string[] = []
  for (const raw of raws) ids.push((await store.ingest(requestFor(raw))).id)
  await digestMatchesIds(t, store, 'after 60 ingests')

  const before = await rootOf(store)
  for (const raw of raws.slice(0, 10)) t.equal((await store.ingest(requestFor(raw, { sourceName: 'again' }))).duplicate, true)
  await Promise.all(raws.slice(10, 20).map((raw, index) => store.ingest(requestFor(raw, { sourceName: `concurrent-${index}` }))))
  t.same(await rootOf(store), before, 'duplicates (one by one and concurrent) change nothing')

  const purged = ids.filter((_, index) => index % 4 === 1)
  for (const id of purged) await store.delete(id)
  const afterPurge = await rootOf(store)
  t.equal(afterPurge.count, 60 - purged.length, 'each purge removes its id from the digest')
  t.not(afterPurge.hash, before.hash)
  await digestMatchesIds(t, store, 'after 15 purges')

  await store.ingest(requestFor(raws[1]!))
  await digestMatchesIds(t, store, 'after archiving a purged message again')
  for (const id of ids.filter((id) => store.has(id))) await store.delete(id)
  t.same(await rootOf(store), { count: 0, bytes: 0, hash: '0'.repeat(64) }, 'purging everything leaves the empty digest')
})

t.test('a failing indexer: the message is written again without it, and the digest counts it once', async (t) => {
  const indexer: ArchiveIndexer = {
    databasesNeeded: 0,
    open() {},
    messageStored(_meta, parsed) {
      if (parsed.subject === 'explode') throw new Error('index bug')
    },
    messageRemoved() {
      throw new Error('index bug on removal')
    },
  }
  const { store } = await newStore(t, { indexer })
  const results = await Promise.all(['one', 'explode', 'three', 'explode'].map((subject, index) => store.ingest(requestFor(generatedMessage(502, index), {}, subject))))
  t.same(store.getMeta(results[1]!.id)?.flags, ['index-failed'])
  await digestMatchesIds(t, store, 'after ingests whose indexer threw')
  await store.delete(results[0]!.id)
  await digestMatchesIds(t, store, 'after a purge whose indexer threw')
})

t.test('a restart keeps the digest; an archive without one, or with a stale or damaged one, gets it rebuilt at start', async (t) => {
  const path = await tempDir('mailkeep-digest-')
  const first = await newStore(t, { path })
  const ids: string[] = []
  for (let index = 0; index < 80; index++) ids.push((await first.store.ingest(requestFor(generatedMessage(503, index)))).id)
  for (const id of ids.slice(0, 5)) await first.store.delete(id)
  const expected = await rootOf(first.store)
  await first.store.stop()

  const restarted = await newStore(t, { path })
  t.same(await rootOf(restarted.store), expected, 'the same digest after a restart')
  t.notOk(
    restarted.logger.records.some((record) => record.msg.includes('building the id digest')),
    'and no rebuild',
  )
  await restarted.store.stop()

  /** Edits the stopped archive with lmdb directly, then starts it and returns what start logged. */
  const editThenStart = async (edit: (state: ReturnType<typeof stateOf>, digest: ReturnType<typeof digestOf>) => Promise<void>) => {
    const root = open({ path, maxDbs: 12 })
    await edit(stateOf(root), digestOf(root))
    await root.close()
    const started = await newStore(t, { path })
    const built = started.logger.records.find((record) => record.msg.includes('building the id digest'))
    return { ...started, reason: built ? String(built.reason) : null }
  }
  const stateOf = (root: ReturnType<typeof open>) => root.openDB<unknown, string>(databaseNames.state, {})
  const digestOf = (root: ReturnType<typeof open>) => root.openDB<Buffer, Buffer>(databaseNames.digest, { keyEncoding: 'binary', encoding: 'binary' })
  const clearDigest = async (digest: ReturnType<typeof digestOf>) => {
    for (const key of [...digest.getKeys()].map((key) => Buffer.from(key))) await digest.remove(key)
  }

  // An archive written before the digest existed: no `digest` record, no leaves.
  const upgraded = await editThenStart(async (state, digest) => {
    await state.remove('digest')
    await clearDigest(digest)
  })
  t.match(upgraded.reason, /no id digest/, 'the upgrade builds the digest at start')
  t.same(await rootOf(upgraded.store), expected, 'the built digest equals the one kept by the ingests')
  await digestMatchesIds(t, upgraded.store, 'built at the upgrade')
  t.ok(
    upgraded.logger.records.some((record) => record.msg === 'id digest built' && record.messages === 75),
    'the build is logged with its count',
  )
  await upgraded.store.stop()
  const afterUpgrade = await newStore(t, { path })
  t.notOk(
    afterUpgrade.logger.records.some((record) => record.msg.includes('building the id digest')),
    'built once: the next start keeps it',
  )
  await afterUpgrade.store.stop()

  // A build cut short: leaves half written, no record. (The build writes both in one
  // transaction, so this is what damage or a foreign writer could leave, not a crash.)
  const cutShort = await editThenStart(async (state, digest) => {
    await state.remove('digest')
    const [someKey] = [...digest.getKeys({ limit: 1 })].map((key) => Buffer.from(key))
    await digest.put(someKey!, Buffer.alloc(44, 7))
    await digest.put(Buffer.from([1, 2, 3]), Buffer.alloc(44))
  })
  t.match(cutShort.reason, /no id digest/)
  t.same(await rootOf(cutShort.store), expected, 'a build without its record is done again, stray leaves removed')
  await cutShort.store.stop()

  // Firmware without the digest archived a message meanwhile: the record is there, the leaves are stale.
  const stale = await editThenStart(async (_state, digest) => {
    const [someKey] = [...digest.getKeys({ limit: 1 })].map((key) => Buffer.from(key))
    await digest.remove(someKey!)
  })
  t.match(stale.reason, /holds 7\d ids/, 'totals that disagree with the counters make start rebuild')
  t.same(await rootOf(stale.store), expected)
  await stale.store.stop()

  const damaged = await editThenStart(async (_state, digest) => {
    const [someKey] = [...digest.getKeys({ limit: 1 })].map((key) => Buffer.from(key))
    await digest.put(someKey!, Buffer.from('short'))
  })
  t.match(damaged.reason, /damaged/, 'an undecodable leaf makes start rebuild')
  t.same(await rootOf(damaged.store), expected)
  await digestMatchesIds(t, damaged.store, 'rebuilt after damage')
})

t.test('a leaf found damaged while the store runs refuses no mail: the digest is set aside until the next start rebuilds it', async (t) => {
  // A test indexer damages the leaf of the message being purged, inside the purge's own
  // transaction (the indexer runs before the digest update).
  let digest: Database<Buffer, Buffer> | undefined
  const indexer: ArchiveIndexer = {
    databasesNeeded: 0,
    open(root) {
      digest = root.openDB<Buffer, Buffer>(databaseNames.digest, { keyEncoding: 'binary', encoding: 'binary' })
    },
    messageStored() {},
    messageRemoved(id) {
      digest!.putSync(Buffer.from(id, 'hex').subarray(0, 2), Buffer.from('damaged'))
    },
  }
  const path = await tempDir('mailkeep-digest-')
  const { store, logger } = await newStore(t, { path, indexer })
  const ids: string[] = []
  for (let index = 0; index < 10; index++) ids.push((await store.ingest(requestFor(generatedMessage(508, index)))).id)
  await store.delete(ids[4]!)
  t.equal(store.has(ids[4]!), false, 'the purge went through')
  t.ok(
    logger.records.some((record) => record.level === 'error' && record.msg.includes('id digest is damaged')),
    'the damage is logged',
  )
  await t.rejects(store.digestSnapshot(), { code: 'DIGEST_UNAVAILABLE', retryable: true }, 'snapshots are refused meanwhile')
  t.equal((await store.ingest(requestFor(generatedMessage(508, 10)))).duplicate, false, 'mail is still archived')
  await store.stop()
  const restarted = await newStore(t, { path })
  t.ok(
    restarted.logger.records.some((record) => record.msg.includes('building the id digest')),
    'the next start rebuilds it',
  )
  await digestMatchesIds(t, restarted.store, 'rebuilt after damage found at run time')
})

t.test('a snapshot answers from one point in time while ingests and purges commit', async (t) => {
  const { store } = await newStore(t)
  const ids: string[] = []
  for (let index = 0; index < 40; index++) ids.push((await store.ingest(requestFor(generatedMessage(504, index)))).id)
  const snapshot = await store.digestSnapshot()
  t.equal(snapshot.storeId, store.storeId())
  t.equal(snapshot.lastSequence, store.lastSequence())
  const root = snapshot.node('')
  const listed = snapshot.idsInBucket('')

  const purged = ids[3]!
  const [, ...added] = await Promise.all([store.delete(purged), ...Array.from({ length: 25 }, (_, index) => store.ingest(requestFor(generatedMessage(505, index))))])
  const addedIds = added.map((result) => result.id)
  // Read between commits too: a later event-loop turn renews lmdb-js's shared read transaction.
  await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(store.has(purged), false)
  t.equal(snapshot.lastSequence + 26, store.lastSequence(), 'the store moved on by 26 changes')
  t.same(snapshot.node(''), root, 'the snapshot root is unchanged')
  t.same(snapshot.idsInBucket(''), listed, 'the snapshot lists the ids of its own time: the purged one still, the new ones not')
  for (const id of addedIds.slice(0, 5)) {
    t.notOk(
      snapshot.idsInBucket(id.slice(0, 4)).some((entry) => entry.id === id),
      `a new id is not in its bucket in the old snapshot (${id.slice(0, 4)})`,
    )
  }
  t.ok(
    snapshot.idsInBucket(purged.slice(0, 4)).some((entry) => entry.id === purged),
    'the purged id is still in its bucket in the old snapshot',
  )

  const now = await store.digestSnapshot()
  t.equal(now.lastSequence, store.lastSequence())
  const comparison = await compareDigests(now, remoteOf(snapshot))
  t.same(comparison.onlyLocal, [...addedIds].sort(), 'compared with the old snapshot, the new one holds exactly the added ids')
  t.same(comparison.onlyRemote, [purged], 'and lacks exactly the purged one')
  now.close()
  snapshot.close()
})

t.test('snapshots are bounded: closed, expired, limited in number, closed by stop', async (t) => {
  const { store, clock } = await newStore(t, { digestSnapshotAgeMsMax: 5000 })
  await store.ingest(requestFor(generatedMessage(506, 0)))
  const closedWith = (snapshot: DigestSnapshot, label: string) => {
    try {
      snapshot.node('')
      t.fail(`${label}: answered`)
    } catch (error) {
      t.ok(hasCode(error, 'DIGEST_SNAPSHOT_CLOSED') && error.retryable, `${label}: DIGEST_SNAPSHOT_CLOSED, retryable (${(error as Error).message})`)
    }
  }
  const closed = await store.digestSnapshot()
  closed.close()
  closed.close()
  closedWith(closed, 'after close (twice)')

  const aging = await store.digestSnapshot()
  clock.advance(4999)
  t.equal(aging.node('').count, 1, 'answers within its maximum age')
  clock.advance(2)
  closedWith(aging, 'past its maximum age')

  const open = await Promise.all(Array.from({ length: digestSnapshotsOpenMax }, () => store.digestSnapshot()))
  await t.rejects(store.digestSnapshot(), { code: 'DIGEST_SNAPSHOTS_BUSY' }, `at most ${digestSnapshotsOpenMax} open at once`)
  open.pop()!.close()
  open.push(await store.digestSnapshot())
  t.equal(open.at(-1)!.node('').count, 1, 'closing one makes room: a new snapshot opens and answers')
  await store.stop()
  closedWith(open[0]!, 'after the store stopped')
  await t.rejects(store.digestSnapshot(), { code: 'STORE_UNAVAILABLE' }, 'no snapshot while stopped')
  await store.start()
  t.equal((await store.digestSnapshot()).node('').count, 1, 'the store restarts and snapshots again')

  // Opening snapshots count too, and stop() closes them while they open.
  const opening = Array.from({ length: digestSnapshotsOpenMax - 1 }, () => store.digestSnapshot())
  await t.rejects(store.digestSnapshot(), { code: 'DIGEST_SNAPSHOTS_BUSY' }, 'snapshots still opening count against the bound')
  await store.stop()
  for (const outcome of await Promise.allSettled(opening))
    t.ok(outcome.status === 'rejected' && hasCode(outcome.reason, 'DIGEST_SNAPSHOT_CLOSED'), 'a snapshot opening when the store stops is refused')

  // The maximum age is enforced by a timer too, without any call.
  const quick = await newStore(t, { digestSnapshotAgeMsMax: 500 })
  const forgotten = await Promise.all(Array.from({ length: digestSnapshotsOpenMax }, () => quick.store.digestSnapshot()))
  // Busy until the age timers release them (nothing here touches the forgotten ones).
  const fresh = await waitUntil(() => quick.store.digestSnapshot().catch((error: unknown) => (hasCode(error, 'DIGEST_SNAPSHOTS_BUSY') ? undefined : Promise.reject(error))), {
    what: 'a snapshot once the forgotten ones expired',
    timeoutMs: 5_000,
    intervalMs: 50,
  })
  t.equal(fresh.node('').count, quick.store.stats().messages, 'forgotten snapshots were released by their timers: a new one opens and answers')
  closedWith(forgotten[0]!, 'a forgotten snapshot')
  fresh.close()
})

t.test('two real archives: compareDigests over the wire finds exactly the ids each lacks', async (t) => {
  const { seed, random } = testSeed(t, 'the store digest comparison')
  const a = await newStore(t)
  const b = await newStore(t)
  const onlyA: string[] = []
  const onlyB: string[] = []
  for (let index = 0; index < 300; index++) {
    const raw = generatedMessage(507 + (seed % 1000), index)
    // One in ten only in A, one in ten only in B, the rest in both.
    const where = random.int(10)
    if (where !== 1) {
      const { id } = await a.store.ingest(requestFor(raw))
      if (where === 0) onlyA.push(id)
    }
    if (where !== 0) {
      const { id } = await b.store.ingest(requestFor(raw))
      if (where === 1) onlyB.push(id)
    }
  }
  const snapshotA = await a.store.digestSnapshot()
  const snapshotB = await b.store.digestSnapshot()
  const result = await compareDigests(snapshotA, remoteOf(snapshotB))
  t.same(result.onlyLocal, [...onlyA].sort(), `only in A (seed ${seed})`)
  t.same(result.onlyRemote, [...onlyB].sort(), `only in B (seed ${seed})`)
  t.same([result.localCount, result.remoteCount], [a.store.stats().messages, b.store.stats().messages])
  t.same([result.localBytes, result.remoteBytes], [a.store.stats().rawBytes, b.store.stats().rawBytes], 'digest bytes equal the raw bytes counters')
  t.comment(`${onlyA.length + onlyB.length} differences among ~300 messages: ${result.roundTrips} round trips, ${result.bytesExchanged} bytes`)
  snapshotA.close()
  snapshotB.close()
})
