import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { systemClock } from '../../../firmware/common/clock.js'
import type { ChangeEntry } from '../../../firmware/archive/types.js'
import {
  acknowledge,
  addRejected,
  addRequeued,
  nextLane,
  pendingRanges,
  rejectedCopiesMax,
  rejectedMessageLengthMax,
  removeRequeued,
  shouldSplit,
  split,
  type LaneLoad,
  type LanePositions,
} from '../../../firmware/mirror/copy-lanes.js'
import { createCopyBatches } from '../../../firmware/mirror/copy-batches.js'
import { createBacklogTracker } from '../../../firmware/mirror/backlog.js'
import { createPeerStateStore, freshPeerRecord } from '../../../firmware/mirror/peer-state.js'
import type { MirrorArchive } from '../../../firmware/mirror/types.js'
import { createMemoryArchive, localDelivery, makeMessage, sha256Hex } from './fakes.js'
import { copiesFrom, createTestNode, stopAll, type TestNode } from './nodes.js'
import { waitUntil } from '../../helpers/wait.js'
import { testSeed } from '../../helpers/random.js'

const { seed, random } = testSeed(t)
const host = '127.0.0.1'
const messages = (tag: string, count: number, sizeMax = 400): Buffer[] => Array.from({ length: count }, (_, index) => makeMessage(`${tag}-${index}`, 200 + random.int(sizeMax), random))

// ---------------------------------------------------------------- pure parts

t.test('lane positions: split at the head, live and backfill acknowledged apart, merged at the split', async (t) => {
  let positions: LanePositions = { cursor: 10, liveFrom: null, liveCursor: null }
  t.same(pendingRanges(positions), [{ afterSequence: 10, throughSequence: null }])
  t.equal(shouldSplit(positions, 10, 210, 200), false, 'exactly the threshold: one lane')
  t.equal(shouldSplit(positions, 10, 211, 200), true)
  t.equal(shouldSplit(positions, 100, 211, 200), false, 'measured from what was sent')
  positions = split(positions, 211)
  t.same(positions, { cursor: 10, liveFrom: 211, liveCursor: 211 })
  t.equal(shouldSplit(positions, 211, 5_000, 200), false, 'once until merged')
  t.throws(() => split(positions, 300), 'no second split')
  t.same(pendingRanges(positions), [
    { afterSequence: 10, throughSequence: 211 },
    { afterSequence: 211, throughSequence: null },
  ])
  positions = acknowledge(positions, 'live', 250)
  t.same(acknowledge(positions, 'requeue', 999), positions, 'a requeue batch moves nothing')
  positions = acknowledge(positions, 'backfill', 100)
  t.same(positions, { cursor: 100, liveFrom: 211, liveCursor: 250 })
  t.same(pendingRanges(positions), [
    { afterSequence: 100, throughSequence: 211 },
    { afterSequence: 250, throughSequence: null },
  ])
  t.throws(() => acknowledge(positions, 'backfill', 212), 'backfill never passes the split')
  t.throws(() => acknowledge(positions, 'backfill', 99), 'the cursor never moves back')
  t.throws(() => acknowledge(positions, 'live', 249), 'the live cursor never moves back')
  positions = acknowledge(positions, 'backfill', 211)
  t.same(positions, { cursor: 250, liveFrom: null, liveCursor: null }, 'merged: cursor = live cursor')
  positions = acknowledge(positions, 'live', 260)
  t.same(positions, { cursor: 260, liveFrom: null, liveCursor: null }, 'one lane: live moves the cursor')
  t.throws(() => acknowledge(positions, 'backfill', 270), 'no backfill without a split')
  t.throws(() => split({ cursor: 5, liveFrom: null, liveCursor: null }, 5), 'a split needs a backlog')
  // A live lane that was never acknowledged merges to the split point itself.
  t.same(acknowledge({ cursor: 0, liveFrom: 50, liveCursor: 50 }, 'backfill', 50), { cursor: 50, liveFrom: null, liveCursor: null })
})

t.test('next lane: live first, requeue before backfill, bulk bounded beside live work', async (t) => {
  const load = (inflight: Partial<LaneLoad['inflight']>, unsent: Partial<Omit<LaneLoad, 'inflight'>>): LaneLoad => ({
    inflight: { live: 0, backfill: 0, requeue: 0, ...inflight },
    liveUnsent: false,
    requeueUnsent: false,
    backfillUnsent: false,
    ...unsent,
  })
  t.equal(nextLane(load({}, {}), 4), undefined, 'nothing to do')
  t.equal(nextLane(load({}, { liveUnsent: true, requeueUnsent: true, backfillUnsent: true }), 4), 'live')
  t.equal(nextLane(load({ live: 3 }, { liveUnsent: true }), 4), 'live', 'live may use every slot')
  t.equal(nextLane(load({ live: 4 }, { liveUnsent: true }), 4), undefined, 'never more than inflightBatchesMax')
  t.equal(nextLane(load({ backfill: 3 }, { liveUnsent: true }), 4), 'live', 'bulk leaves a slot for new mail')
  t.equal(nextLane(load({}, { requeueUnsent: true, backfillUnsent: true }), 4), 'requeue', 'requeued ids before the backfill')
  t.equal(nextLane(load({ backfill: 1 }, { backfillUnsent: true }), 4), 'backfill')
  t.equal(nextLane(load({ backfill: 2 }, { backfillUnsent: true }), 4), undefined, 'bulk: bulkInflightBatchesMax at most')
  t.equal(nextLane(load({ backfill: 1 }, { backfillUnsent: true }), 2), undefined, 'bulk keeps one slot free')
  t.equal(nextLane(load({ live: 1 }, { backfillUnsent: true }), 4), 'backfill', 'the backfill always progresses')
  t.equal(nextLane(load({ live: 1, backfill: 1 }, { backfillUnsent: true }), 4), undefined, 'one bulk batch beside live work')
  t.equal(nextLane(load({ live: 1, requeue: 1 }, { backfillUnsent: true, requeueUnsent: true }), 4), undefined)
  t.equal(nextLane(load({}, { backfillUnsent: true }), 1), 'backfill', 'one slot: bulk still goes')
  t.equal(nextLane(load({ backfill: 1 }, { liveUnsent: true }), 1), undefined)
})

t.test('requeue and rejected lists: each id once, bounded, newest refusals kept', async (t) => {
  t.same(addRequeued(['a', 'b'], ['b', 'c', 'c', 'd']), ['a', 'b', 'c', 'd'])
  t.same(addRequeued(['a', 'b'], ['c', 'd'], 3), undefined, 'over the limit: nothing added')
  t.same(addRequeued(['a', 'b'], ['a', 'b'], 2), ['a', 'b'], 'ids already queued do not count again')
  t.same(removeRequeued(['a', 'b', 'c'], ['b', 'x']), ['a', 'c'])
  const refusal = (index: number) => ({ id: `id${index}`, code: 'MESSAGE_TOO_LARGE', message: 'm'.repeat(1_000), atMs: index })
  const kept = addRejected([refusal(0)], [refusal(1), refusal(2)], 2)
  t.same(
    kept.map((item) => item.id),
    ['id1', 'id2'],
    'the newest',
  )
  t.equal(kept[0]!.message.length, rejectedMessageLengthMax)
  t.equal(
    addRejected(
      [],
      Array.from({ length: rejectedCopiesMax + 5 }, (_, index) => refusal(index)),
    ).length,
    rejectedCopiesMax,
  )
})

t.test('batches: a backfill batch stops at the split, also on a sparse change log; requeue batches', async (t) => {
  const memory = createMemoryArchive()
  const raws = messages('sparse', 5)
  raws.forEach((raw, index) => memory.ingest(raw, localDelivery(index), null))
  // Sequences 10, 20, … 50: the real store's need not be dense.
  const sparse: MirrorArchive = {
    ...memory,
    changes: (after, limit) =>
      memory.log
        .map((entry): ChangeEntry => ({ ...entry, sequence: entry.sequence * 10 }))
        .filter((entry) => entry.sequence > after)
        .slice(0, limit),
    lastSequence: () => memory.log.length * 10,
  }
  const wide = createCopyBatches({ archive: sparse, logger: createMemoryLogger(), batchMessagesMax: 100, batchBytesMax: 1 << 20 })
  const first = await wide.plan('backfill', 0, 35)
  t.match(first, { lane: 'backfill', afterSequence: 0, throughSequence: 35 }, 'every entry up to the split seen: ends at it')
  t.equal(first!.copies.length, 3)
  t.equal(await wide.plan('backfill', 35, 35), undefined, 'nothing after the split')
  t.match(await wide.plan('live', 35, null), { throughSequence: 50, copies: { length: 2 } })
  t.equal(await wide.plan('live', 50, null), undefined)
  const narrow = createCopyBatches({ archive: sparse, logger: createMemoryLogger(), batchMessagesMax: 2, batchBytesMax: 1 << 20 })
  t.match(await narrow.plan('backfill', 0, 35), { throughSequence: 20, copies: { length: 2 } }, 'bounded by batchMessagesMax')
  t.match(await narrow.plan('backfill', 20, 35), { throughSequence: 35, copies: { length: 1 } })

  const foreign = makeMessage('foreign', 300, random)
  memory.ingest(foreign, { ...localDelivery(9), source: 'mirror', sourceName: 'MK650-C' }, 'MK650-C')
  memory.purge(sha256Hex(raws[1]!))
  const requeue = await wide.planRequeue([sha256Hex(raws[0]!), sha256Hex(raws[1]!), sha256Hex(foreign), 'not-an-id', sha256Hex(raws[2]!)], 0, 'MK650-B')
  t.match(requeue, { lane: 'requeue', afterSequence: 0, throughSequence: 0 })
  t.same(
    requeue.copies.map((copy) => copy.id),
    [sha256Hex(raws[0]!), sha256Hex(raws[2]!)],
    'purged, foreign and malformed ids are taken without a copy',
  )
  t.equal(requeue.requeued.length, 5, 'all taken, so their acknowledgement drops them')
  const header = JSON.parse(requeue.copies[0]!.headerJson.toString('utf8'))
  t.match(header, { sequence: 1, kind: 'ingest', deliveries: [{ source: 'smtp', envelopeBcc: ['hidden0@example.com'] }] }, 'the first delivery; sequence at least 1')
  t.equal((await narrow.planRequeue(requeue.requeued, 7, 'MK650-B')).requeued.length, 2, 'bounded by batchMessagesMax')
  const home = await wide.planRequeue([sha256Hex(foreign)], 0, 'MK650-C')
  t.same(
    home.copies.map((copy) => copy.id),
    [sha256Hex(foreign)],
    "the peer's own message goes back to it (a repair)",
  )
  t.same(JSON.parse(home.copies[0]!.headerJson.toString('utf8')).deliveries, [], 'without deliveries: the receiver records a bare copy')
})

t.test('queue figures per range: exact where tracked', async (t) => {
  const archive = createMemoryArchive()
  const sizes: number[] = []
  for (let index = 0; index < 40; index++) {
    const raw = makeMessage(`range-${index}`, 100 + random.int(500), random)
    archive.ingest(raw, localDelivery(index), index % 4 === 3 ? 'MK650-B' : null)
    sizes.push(index % 4 === 3 ? 0 : raw.length)
  }
  const tracker = createBacklogTracker({ archive, logger: createMemoryLogger() })
  await tracker.refresh()
  const expected = (after: number, through: number) => {
    const part = sizes.slice(after, through).filter((size) => size > 0)
    return { messages: part.length, bytes: part.reduce((total, size) => total + size, 0), estimated: false }
  }
  t.same(tracker.rangeDepth(5, 20), expected(5, 20))
  t.same(tracker.rangeDepth(20, null), expected(20, 40))
  t.same(tracker.rangeDepth(0, null), tracker.depth(0))
  t.same(tracker.rangeDepth(20, 20), { messages: 0, bytes: 0, estimated: false })
  t.same(tracker.rangeDepth(30, 500), expected(30, 40), 'through beyond the head: up to the head')
})

t.test('peer state version 3: lanes and lists kept; version 2 files read as one lane; inconsistent lanes set aside', async (t) => {
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-lanes-state-'))
  const logger = createMemoryLogger()
  const store = createPeerStateStore({ logger, clock: systemClock }, { stateDir })
  const peer = { host: 'peer.example', port: 9443 }
  const path = join(stateDir, 'peer-peer.example-9443.json')
  const version2 = {
    version: 2,
    host: 'peer.example',
    port: 9443,
    serial: 'MK650-B',
    storeId: 'ab'.repeat(16),
    fingerprint: 'cd'.repeat(32),
    pendingIdentity: null,
    cursor: 42,
    paused: false,
    previousSerials: [],
    updatedAtMs: 1,
  }
  await writeFile(path, JSON.stringify(version2))
  t.match(await store.read(peer), { cursor: 42, serial: 'MK650-B', liveFrom: null, liveCursor: null, requeued: [], rejected: [] }, 'version 2: one lane, empty lists')
  const id = 'e'.repeat(64)
  const record = { ...freshPeerRecord(peer, 1), cursor: 42, liveFrom: 500, liveCursor: 520, requeued: [id], rejected: [{ id, code: 'MESSAGE_TOO_LARGE', message: 'too big', atMs: 5 }] }
  await store.write(record)
  t.match(JSON.parse(await readFile(path, 'utf8')), { version: 3, liveFrom: 500, liveCursor: 520 })
  t.match(await store.read(peer), { cursor: 42, liveFrom: 500, liveCursor: 520, requeued: [id], rejected: [{ id, code: 'MESSAGE_TOO_LARGE', atMs: 5 }] })
  for (const [what, broken] of [
    ['split at or below the cursor', { liveFrom: 42, liveCursor: 50 }],
    ['live cursor below the split', { liveFrom: 500, liveCursor: 499 }],
    ['half a split', { liveFrom: 500, liveCursor: null }],
    ['a requeued id that is not one', { requeued: ['nope'] }],
  ] as const) {
    await store.write({ ...record, ...broken } as typeof record)
    t.match(await store.read(peer), { cursor: 0, liveFrom: null }, `${what}: set aside, fresh`)
  }
  t.equal((await readdir(stateDir)).filter((name) => name.includes('.corrupt-')).length, 4)
})

// ---------------------------------------------------------------- services over TLS

/** A node that stores slowly (each group commit takes `commitMs`), so a backlog takes a while. */
const slowNode = (serial: string, commitMs: number, options: Partial<Parameters<typeof createTestNode>[0]> = {}) =>
  createTestNode({ serial, seed, pipelineOptions: { commit: async () => void (await sleep(commitMs)) }, ...options })

/** Local ingest entries of `node` in the ranges a status names (what its queue figure must count). */
function unacknowledgedIngests(node: TestNode, peer: { cursor: number; backfillThroughSequence: number | null; liveCursor: number | null }): number {
  const inRange = (sequence: number) =>
    peer.backfillThroughSequence === null ? sequence > peer.cursor : (sequence > peer.cursor && sequence <= peer.backfillThroughSequence) || sequence > peer.liveCursor!
  return node.archive.log.filter((entry) => entry.kind === 'ingest' && entry.origin === null && node.archive.messages.has(entry.id) && inRange(entry.sequence)).length
}

t.test('a peer back with a large backlog gets new mail first, the backlog beside it, everything once', async (t) => {
  const b = await slowNode('MK650-B', 20)
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: b.port }] })
  stopAll(t, a, b)
  await waitUntil(() => a.peer(b.port)?.state === 'connected', { what: 'connected' })
  await a.service.pausePeer({ host, port: b.port })
  const backlogCount = 3_000
  const backlog = messages('backlog', backlogCount)
  backlog.forEach((raw, index) => a.archive.ingest(raw, localDelivery(index), null))
  const storedOrder: string[] = []
  b.pipeline.addListener((result, delivery) => void (delivery.source === 'mirror' && storedOrder.push(result.id)))

  await a.service.resumePeer({ host, port: b.port })
  const splitStatus = await waitUntil(() => a.peer(b.port)!.backfillThroughSequence !== null && a.peer(b.port)!, { what: 'the queue split into lanes' })
  t.equal(splitStatus.backfillThroughSequence, backlogCount, 'split at the head')
  const fresh = messages('fresh', 5)
  for (const raw of fresh) await a.ingest(raw)
  const freshIds = new Set(fresh.map(sha256Hex))
  await waitUntil(() => fresh.every((raw) => b.archive.messages.has(sha256Hex(raw))), { what: 'new mail on B' })
  const backlogOnB = backlog.filter((raw) => b.archive.messages.has(sha256Hex(raw))).length
  t.ok(backlogOnB < backlogCount - 1_500, `new mail stored while ${backlogCount - backlogOnB} of the backlog were still to come`)

  // Queue figures count both lanes: the acknowledged live entries are not queued.
  const figures = await waitUntil(
    () => {
      const peer = a.peer(b.port)!
      if (peer.backfillThroughSequence === null || peer.liveCursor! <= peer.backfillThroughSequence || peer.queueEstimated) return undefined
      return { peer, expected: unacknowledgedIngests(a, peer), fromCursor: a.archive.log.filter((entry) => entry.sequence > peer.cursor).length }
    },
    { what: 'live lane acknowledged while the backfill runs' },
  )
  t.equal(figures.peer.queueMessages, figures.expected, 'queue = backfill range + live range')
  t.ok(figures.peer.queueMessages < figures.fromCursor, 'not everything after the cursor')
  t.same(a.service.peerSender({ host, port: b.port }).pendingRanges(), [
    { afterSequence: figures.peer.cursor, throughSequence: backlogCount },
    { afterSequence: figures.peer.liveCursor, throughSequence: null },
  ])

  await waitUntil(() => copiesFrom(b, 'MK650-A').length === backlogCount + fresh.length, { what: 'everything on B', timeoutMs: 120_000 })
  const merged = await waitUntil(() => a.peer(b.port)!.backfillThroughSequence === null && a.peer(b.port)!.cursor === a.archive.lastSequence() && a.peer(b.port)!, {
    what: 'lanes merged at the end',
  })
  t.match(merged, { liveCursor: null, queueMessages: 0 })
  t.equal(b.pipeline.submits.filter((submit) => submit.delivery.source === 'mirror').length, backlogCount + fresh.length, 'each exactly once')
  const lastFresh = Math.max(...storedOrder.map((id, index) => (freshIds.has(id) ? index : -1)))
  t.ok(lastFresh < storedOrder.length - 1_500, `new mail among the first stored (position ${lastFresh} of ${storedOrder.length})`)
  t.ok(a.logger.records.some((record) => /copy lanes merged/.test(record.msg)))
})

t.test('a crash while the lanes are split loses nothing: the restarted sender resends from the persisted positions', async (t) => {
  const b = await slowNode('MK650-B', 30)
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-lanes-crash-'))
  const a = await createTestNode({ serial: 'MK650-A', seed, stateDir, peers: [{ host, port: b.port }] })
  t.teardown(() => b.stop())
  await waitUntil(() => a.peer(b.port)?.state === 'connected', { what: 'connected' })
  await a.service.pausePeer({ host, port: b.port })
  const backlog = messages('crash-backlog', 2_000)
  backlog.forEach((raw, index) => a.archive.ingest(raw, localDelivery(index), null))
  await a.service.resumePeer({ host, port: b.port })
  await waitUntil(() => a.peer(b.port)!.backfillThroughSequence !== null, { what: 'split' })
  const fresh = messages('crash-fresh', 5)
  for (const raw of fresh) await a.ingest(raw)
  // What a crash leaves: the state file as last written, with the lanes split and live mail acknowledged.
  const path = join(stateDir, `peer-127.0.0.1-${b.port}.json`)
  const snapshot = await waitUntil(
    async () => {
      const text = await readFile(path, 'utf8').catch(() => '')
      const saved = text ? (JSON.parse(text) as { cursor: number; liveFrom: number | null; liveCursor: number | null }) : undefined
      return saved?.liveFrom && saved.liveCursor! > saved.liveFrom && saved.cursor > 0 ? { text, cursor: saved.cursor, liveFrom: saved.liveFrom, liveCursor: saved.liveCursor! } : undefined
    },
    { what: 'a persisted split with live mail acknowledged', timeoutMs: 30_000, intervalMs: 5 },
  )
  t.ok(snapshot, 'a persisted split with live mail acknowledged and backfill under way')
  await a.stop()
  await writeFile(path, snapshot!.text)
  const backlogOnB = backlog.filter((raw) => b.archive.messages.has(sha256Hex(raw))).length
  t.ok(backlogOnB < backlog.length, `the backfill was unfinished at the crash (${backlogOnB} of ${backlog.length} on B)`)
  const later = messages('crash-later', 5)
  later.forEach((raw, index) => a.archive.ingest(raw, localDelivery(index), null))

  const a2 = await createTestNode({ serial: 'MK650-A', seed, stateDir, archive: a.archive, pipeline: a.pipeline, peers: [{ host, port: b.port }] })
  t.teardown(() => a2.stop())
  t.same(
    a2.service.peerSender({ host, port: b.port }).pendingRanges(),
    [
      { afterSequence: snapshot!.cursor, throughSequence: snapshot!.liveFrom },
      { afterSequence: snapshot!.liveCursor, throughSequence: null },
    ],
    'resumed from the persisted positions',
  )
  const total = backlog.length + fresh.length + later.length
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === total, { what: 'everything on B', timeoutMs: 120_000 })
  await waitUntil(() => a2.peer(b.port)!.backfillThroughSequence === null && a2.peer(b.port)!.cursor === a2.archive.lastSequence(), { what: 'merged, caught up' })
  t.equal(b.archive.messages.size, total, 'each message once')
  t.ok(
    [...backlog, ...fresh, ...later].every((raw) => b.archive.messages.has(sha256Hex(raw))),
    'nothing lost',
  )
})

t.test('requeue: a message the peer lost is sent again without moving the cursor; the list survives a restart', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-requeue-'))
  let a = await createTestNode({ serial: 'MK650-A', seed, stateDir, peers: [{ host, port: b.port }] })
  t.teardown(() => b.stop())
  const raws = messages('requeue', 10)
  for (const raw of raws) await a.ingest(raw)
  const foreign = makeMessage('requeue-foreign', 300, random)
  a.archive.ingest(foreign, { ...localDelivery(0), source: 'mirror', sourceName: 'MK650-C' }, 'MK650-C')
  a.archive.purge(sha256Hex(raws[5]!))
  a.service.notify()
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'caught up' })
  const cursor = a.peer(b.port)!.cursor
  const lost = sha256Hex(raws[3]!)
  b.archive.messages.delete(lost)
  const sender = a.service.peerSender({ host, port: b.port })
  const queued = await sender.requeue([lost, lost, sha256Hex(raws[5]!), sha256Hex(foreign), 'not-an-id'])
  t.equal(queued, 1, 'purged, foreign and malformed ids dropped')
  await waitUntil(() => b.archive.messages.has(lost), { what: 'sent again' })
  await waitUntil(() => sender.requeuedIds().length === 0, { what: 'the list empties once acknowledged' })
  t.match(b.archive.messages.get(lost)!.meta.deliveries, [{ source: 'mirror', sourceName: 'MK650-A', envelopeBcc: ['hidden3@example.com'] }], 'with its first delivery')
  t.equal(a.peer(b.port)!.cursor, cursor, 'the cursor did not move')
  t.equal(b.archive.messages.has(sha256Hex(foreign)), false, 'never forwarded')

  // Saved before requeue() resolves: a paused peer's list survives a restart.
  await a.service.pausePeer({ host, port: b.port })
  const lostAgain = sha256Hex(raws[7]!)
  b.archive.messages.delete(lostAgain)
  t.equal(await sender.requeue([lostAgain]), 1)
  t.match(JSON.parse(await readFile(join(stateDir, `peer-127.0.0.1-${b.port}.json`), 'utf8')), { version: 3, requeued: [lostAgain] }, 'on disk')
  await a.stop()
  a = await createTestNode({ serial: 'MK650-A', seed, stateDir, archive: a.archive, pipeline: a.pipeline, peers: [{ host, port: b.port }] })
  t.teardown(() => a.stop())
  t.same(a.service.peerSender({ host, port: b.port }).requeuedIds(), [lostAgain])
  t.match(a.peer(b.port), { requeuedMessages: 1, queueMessages: 1, cursor })
  await a.service.resumePeer({ host, port: b.port })
  await waitUntil(() => b.archive.messages.has(lostAgain) && a.service.peerSender({ host, port: b.port }).requeuedIds().length === 0, { what: 'sent after the restart' })
  t.match(a.peer(b.port), { requeuedMessages: 0, queueMessages: 0, cursor })
})

t.test('copies the peer refuses for good are remembered, persisted, and leave the requeue list', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed, pipelineOptions: { messageBytesMax: 2_000 } })
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-rejected-'))
  const a = await createTestNode({ serial: 'MK650-A', seed, stateDir, peers: [{ host, port: b.port }] })
  t.teardown(() => b.stop())
  const small = makeMessage('fits', 500, random)
  const big = makeMessage('too-big', 5_000, random)
  await a.ingest(small)
  await a.ingest(big)
  const sender = a.service.peerSender({ host, port: b.port })
  await waitUntil(() => sender.rejectedCopies().length === 1, { what: 'refusal remembered' })
  t.match(sender.rejectedCopies(), [{ id: sha256Hex(big), code: 'MESSAGE_TOO_LARGE', message: /over the limit/, atMs: Number }])
  t.ok(b.archive.messages.has(sha256Hex(small)))
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'the cursor moves past a refused copy' })
  t.equal(await sender.requeue([sha256Hex(big)]), 1)
  await waitUntil(() => sender.rejectedCopies().length === 2 && sender.requeuedIds().length === 0, { what: 'refused again, and dropped from the list' })
  t.match(a.peer(b.port), { rejectedCopies: 2, requeuedMessages: 0, messagesRejected: 2 })
  await a.stop()
  const a2 = await createTestNode({ serial: 'MK650-A', seed, stateDir, archive: a.archive, pipeline: a.pipeline, peers: [{ host, port: b.port }] })
  t.teardown(() => a2.stop())
  t.equal(a2.service.peerSender({ host, port: b.port }).rejectedCopies().length, 2, 'persisted')
  t.equal(a2.peer(b.port)!.rejectedCopies, 2)
})
