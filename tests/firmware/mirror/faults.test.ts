import tap from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { createRandom } from '../../../firmware/common/clock.js'
import { ArchiveError } from '../../../firmware/archive/errors.js'
import { makeMessage, sha256Hex } from './fakes.js'
import { startFaultProxy, type Fault } from '../../helpers/fault-proxy.js'
import { copiesFrom, createTestNode, stopAll, type TestNode } from './nodes.js'
import { waitUntil } from '../../helpers/wait.js'
import { senderStopTimeoutMs } from '../../../firmware/mirror/sender.js'
import { testSeed } from '../../helpers/random.js'

const t = tap
const { seed, random } = testSeed(t, 'the fault plan, content and jitter')
const host = '127.0.0.1'

/** Every message of `raws` is on `node` exactly once, with exactly one delivery, from `origin`. */
function exactlyOnce(t: Pick<typeof tap, 'equal' | 'ok'>, node: TestNode, origin: string, raws: Buffer[]): void {
  const copies = copiesFrom(node, origin)
  t.equal(copies.length, raws.length, `${raws.length} copies`)
  t.ok(
    raws.every((raw) => Buffer.from(node.archive.messages.get(sha256Hex(raw))?.raw ?? []).equals(raw)),
    'all byte-identical',
  )
  t.ok(
    copies.every((copy) => copy.meta.deliveries.length === 1),
    'one delivery each: resends were not recorded twice',
  )
  const ingests = node.archive.log.filter((entry) => entry.kind === 'ingest' && entry.origin === origin).length
  t.equal(ingests, raws.length, 'one ingest entry each')
}

t.test('through a fault proxy (reset, stall, truncate, one-way drop, latency): everything arrives exactly once', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  // The first connections each get a fault from a seeded plan (every kind at least once), then the link heals.
  // Precomputed from the seed, so the plan does not depend on timing. Thresholds are small
  // enough that each fault fires: server → client carries ~3 KB of handshake plus small acks.
  // Every fault but the last ends its connection; the last one (latency) carries the rest.
  // Resets and drops go up on even connections and down (acknowledgements) on odd ones.
  const kinds: Fault['kind'][] = ['reset', 'reset', 'truncate', 'stall', 'drop', 'drop', 'reset', 'truncate']
  const planRandom = createRandom(seed + 1)
  const faults: Fault[] = Array.from({ length: 14 }, (_, index): Fault => {
    const kind = index === 13 ? 'latency' : (kinds[index] ?? kinds[planRandom.int(kinds.length)]!)
    const upBytes = 1_500 + planRandom.int(40_000)
    const downBytes = 2_500 + planRandom.int(3_000)
    switch (kind) {
      case 'reset':
      case 'drop':
        return index % 2 === 0 ? { kind, afterBytes: upBytes, direction: 'up' } : { kind, afterBytes: downBytes, direction: 'down' }
      case 'latency':
        return { kind, delayMs: 5 + planRandom.int(30) }
      default:
        return { kind, afterBytes: upBytes }
    }
  })
  const plan = (index: number): Fault => faults[index] ?? { kind: 'pass' }
  t.comment(`fault plan: ${faults.map((fault) => JSON.stringify(fault)).join(' ')}`)
  const proxy = await startFaultProxy(b.port, plan)
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: proxy.port }] })
  stopAll(t, a, b)
  t.teardown(() => proxy.close())
  const raws: Buffer[] = []
  const started = Date.now()
  // Ingest in small bursts while the faults happen, until the healed link is in use.
  while (proxy.connections < faults.length && Date.now() - started < 40_000) {
    const burst = Array.from({ length: 20 }, () => makeMessage(`fault-${raws.length}-${random.int(1e9)}`, 300 + random.int(3_000), random))
    raws.push(...burst)
    await Promise.all(burst.map((raw) => a.ingest(raw)))
    await sleep(30 + random.int(60))
  }
  await waitUntil(() => a.peer(proxy.port)!.cursor === a.archive.lastSequence(), { what: 'cursor at the end', timeoutMs: 50_000 })
  t.comment(`${proxy.connections} connections, ${proxy.faultsTriggered} faults triggered, ${b.pipeline.submits.length} submits on B for ${raws.length} messages, ${Date.now() - started} ms`)
  t.ok(proxy.faultsTriggered >= 10, 'faults happened')
  t.ok(proxy.connections >= faults.length, 'the whole plan ran')
  exactlyOnce(t, b, 'MK650-A', raws)
  const status = a.peer(proxy.port)!
  t.equal(status.state, 'connected')
  t.equal(status.queueMessages, 0)
  const codes = new Set(a.logger.records.filter((record) => /will retry|still unavailable/.test(record.msg)).map((record) => record.code))
  t.comment(`failure codes seen: ${[...codes].join(', ')}`)
  t.ok(codes.has('ACK_TIMEOUT') || codes.has('TIMEOUT'), 'a stalled or one-way link is detected by a timeout')
})

t.test('a receiver that cannot store: the batch fails, is retried, and nothing is lost; a message it refuses for good is skipped', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed, pipelineOptions: { messageBytesMax: 50_000 } })
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: b.port }] })
  stopAll(t, a, b)
  await waitUntil(() => a.peer(b.port)?.state === 'connected', { what: 'connected' })
  b.pipeline.failNext(3, new ArchiveError('STORE_UNAVAILABLE', 'disk write failed'))
  const raws = Array.from({ length: 30 }, (_, index) => makeMessage(`store-${index}`, 500 + random.int(2_000), random))
  const tooLarge = makeMessage('too-large', 80_000, random)
  for (const raw of raws.slice(0, 15)) await a.ingest(raw)
  await a.ingest(tooLarge)
  for (const raw of raws.slice(15)) await a.ingest(raw)
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'cursor at the end' })
  exactlyOnce(t, b, 'MK650-A', raws)
  t.equal(b.archive.messages.has(sha256Hex(tooLarge)), false)
  const status = a.peer(b.port)!
  t.equal(status.messagesRejected, 1, 'the refused message is counted')
  t.equal(status.messagesSent, 30)
  // The failures were retried and the peer is healthy again: the error is cleared, its recovery kept.
  t.equal(status.lastError, null, 'lastError cleared once healthy')
  t.ok(status.lastRecoveredAtMs !== null && status.lastRecoveredAtMs > 0, 'lastRecoveredAtMs kept')
  t.ok(
    a.logger.records.some((record) => record.code === 'BATCH_FAILED' && /STORE_UNAVAILABLE/.test(String(record.error))),
    'the failure was logged',
  )
  t.ok(a.logger.records.some((record) => record.level === 'error' && /refused a copy for good/.test(record.msg) && record.code === 'MESSAGE_TOO_LARGE'))
  t.match(b.service.status().inbound[0], { messagesRejected: 1 })
})

t.test('acknowledged only when durable: the cursor waits for a slow store', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: b.port }] })
  stopAll(t, a, b)
  await waitUntil(() => a.peer(b.port)?.state === 'connected', { what: 'connected' })
  const slow = makeMessage('slow', 1_000, random)
  const held = b.pipeline.hold(sha256Hex(slow))
  const first = await a.ingest(slow)
  const others = Array.from({ length: 10 }, (_, index) => makeMessage(`after-slow-${index}`, 1_000, random))
  for (const raw of others) await a.ingest(raw)
  await waitUntil(() => b.archive.messages.has(sha256Hex(slow)), { what: 'committed on B' })
  // Everything after it is durable on B: B has done all it can, only the slow one holds the acknowledgement.
  await waitUntil(() => others.every((raw) => b.pipeline.durable.has(sha256Hex(raw))), { what: 'the others durable on B', observe: () => b.pipeline.durable.size })
  t.ok(a.peer(b.port)!.cursor < first.sequence, `cursor ${a.peer(b.port)!.cursor} stays before ${first.sequence} while the store has not made it durable`)
  t.equal(b.pipeline.durable.has(sha256Hex(slow)), false)
  held.release()
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'cursor moves on once durable' })
  exactlyOnce(t, b, 'MK650-A', [slow, ...others])
})

t.test('a message larger than a frame chunk and a batch crosses byte-identical', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: b.port }] })
  stopAll(t, a, b)
  const large = makeMessage('large', 9 * 1024 * 1024 + 123, random)
  const small = makeMessage('small', 700, random)
  await a.ingest(small)
  await a.ingest(large)
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 2, { what: 'both copies', timeoutMs: 30_000 })
  exactlyOnce(t, b, 'MK650-A', [small, large])
})

t.test('sender restarts and link cuts during a backfill: all arrive once, resends bounded by the window in flight', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const proxy = await startFaultProxy(b.port, () => ({ kind: 'pass' }))
  t.teardown(() => proxy.close())
  let a = await createTestNode({ serial: 'MK650-A', seed })
  const raws = Array.from({ length: 2_000 }, (_, index) => makeMessage(`backfill-${index}`, 200 + random.int(1_500), random))
  for (let index = 0; index < raws.length; index += 100) await Promise.all(raws.slice(index, index + 100).map((raw) => a.ingest(raw)))
  await a.service.addPeer({ host, port: proxy.port })
  await waitUntil(() => copiesFrom(b, 'MK650-A').length >= 400, { what: 'backfill under way' })
  proxy.cutAll()
  await waitUntil(() => copiesFrom(b, 'MK650-A').length >= 900, { what: 'resumed after the cut' })
  await a.stop()
  const submitsAtStop = b.pipeline.submits.length
  const cursorAtStop = a.peer(proxy.port)!.cursor
  a = await createTestNode({ serial: 'MK650-A', seed, stateDir: a.stateDir, archive: a.archive, pipeline: a.pipeline })
  stopAll(t, a, b)
  t.equal(a.peer(proxy.port)!.cursor, cursorAtStop, 'the added peer and its cursor survive the restart')
  await waitUntil(() => a.peer(proxy.port)!.cursor === a.archive.lastSequence(), { what: 'backfill complete', timeoutMs: 40_000 })
  exactlyOnce(t, b, 'MK650-A', raws)
  const resent = b.pipeline.submits.length - raws.length
  t.comment(`${resent} messages sent twice (cut + restart); submits at stop ${submitsAtStop}, cursor at stop ${cursorAtStop}`)
  // A cut loses at most the window in flight (4 batches of 100); a clean stop waits for its acks.
  t.ok(resent <= 2 * 4 * 100, `resends (${resent}) within the windows in flight`)
})

t.test('stop is bounded while a transfer hangs on a stalled link', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const proxy = await startFaultProxy(b.port, () => ({ kind: 'stall', afterBytes: 20_000 }))
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: proxy.port }], service: { ackTimeoutMs: 60_000, idleTimeoutMs: 60_000 } })
  t.teardown(() => Promise.all([b.stop(), proxy.close()]))
  await waitUntil(() => a.peer(proxy.port)?.state === 'connected', { what: 'connected' })
  for (let index = 0; index < 50; index++) await a.ingest(makeMessage(`stalled-${index}`, 2_000, random))
  await waitUntil(() => proxy.faultsTriggered === 1, { what: 'stalled' })
  await sleep(200)
  const started = Date.now()
  await a.stop()
  const elapsedMs = Date.now() - started
  t.ok(elapsedMs < senderStopTimeoutMs + 1_000, `stop took ${elapsedMs} ms`)
  t.ok(a.peer(proxy.port)!.cursor < a.archive.lastSequence(), 'what was stuck was not acknowledged')
})
