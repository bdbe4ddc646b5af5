import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createRandom, systemClock } from '../../../firmware/common/clock.js'
import type { ChangeEntry, Delivery, MessageMeta } from '../../../firmware/archive/types.js'
import { decodeDelivery, encodeDelivery } from '../../../firmware/archive/records.js'
import { deliveryFields } from '../../../firmware/archive/delivery-fields.js'
import { deriveMirrorSecret, generateSharedSecret } from '../../../firmware/mirror/secret.js'
import { bareCopiedDelivery, copiedDelivery, fitHeader, isCopied, mirrorDeliveryKey, retryDelayMs, selectDeliveries, toWireDelivery } from '../../../firmware/mirror/copy-plan.js'
import {
  decodeAck,
  decodeBatchEnd,
  decodePolicy,
  encodePolicy,
  decodeMessageFrame,
  encodeAck,
  encodeBatchEnd,
  encodeMessageFrame,
  encodeMessageHeader,
  messageHeaderBytesMax,
  type MessageHeader,
} from '../../../firmware/mirror/copy-protocol.js'
import { createBacklogTracker } from '../../../firmware/mirror/backlog.js'
import { createCoalescingWriter, createPeerStateStore, effectivePeers } from '../../../firmware/mirror/peer-state.js'
import { noLocalSourceWarning } from '../../../firmware/mirror/mirror-service.js'
import { createMemoryArchive, localDelivery, makeMessage, sha256Hex } from './fakes.js'
import { startFaultProxy } from '../../helpers/fault-proxy.js'
import { copiesFrom, createTestNode, failedAttempts, stopAll, type TestNode } from './nodes.js'
import { waitUntil } from '../../helpers/wait.js'
import { testSeed } from '../../helpers/random.js'

const { seed, random } = testSeed(t)
const host = '127.0.0.1'

const messages = (tag: string, count: number, sizeMax = 4_000): Buffer[] => Array.from({ length: count }, (_, index) => makeMessage(`${tag}-${index}`, 200 + random.int(sizeMax), random))

function meta(deliveries: Delivery[]): MessageMeta {
  return {
    id: 'x',
    sizeBytes: 1,
    messageId: null,
    dateMs: null,
    from: [],
    to: [],
    cc: [],
    bcc: [],
    subject: null,
    attachments: [],
    flags: [],
    deliveries,
    firstArchivedAtMs: 0,
    origin: null,
  }
}

// ---------------------------------------------------------------- pure parts

t.test('retry delay: doubles from the minimum, capped, jittered down by at most half; refused waits the cap', async (t) => {
  const limits = { retryDelayMsMin: 100, retryDelayMsMax: 10_000 }
  const jitter = createRandom(seed)
  for (let failures = 1; failures <= 20; failures++) {
    const base = Math.min(10_000, 100 * 2 ** (failures - 1))
    const delay = retryDelayMs(failures, limits, jitter)
    t.ok(delay <= base && delay >= base / 2, `failure ${failures}: ${delay} ms within [${base / 2}, ${base}]`)
  }
  const refused = retryDelayMs(1, limits, jitter, true)
  t.ok(refused >= 5_000 && refused <= 10_000, 'refused: the capped delay')
  t.throws(() => retryDelayMs(0, limits, jitter), 'failures start at 1')
})

t.test('which entries and deliveries are copied', async (t) => {
  const entry = (kind: ChangeEntry['kind'], origin: string | null, atMs = 1_000): ChangeEntry => ({ sequence: 1, kind, id: 'x', atMs, origin })
  t.equal(isCopied(entry('ingest', null)), true)
  t.equal(isCopied(entry('delivery', null)), true)
  t.equal(isCopied(entry('ingest', 'MK650-B')), false, 'copies from peers are not forwarded')
  t.equal(isCopied(entry('purge', null)), false, 'purges stay local')

  const first = localDelivery(1, 100)
  const fromPeer: Delivery = { ...localDelivery(2, 200), source: 'mirror', sourceName: 'MK650-B' }
  const second = localDelivery(3, 300)
  const late = localDelivery(4, 5_000)
  const all = meta([first, fromPeer, second, late])
  t.same(selectDeliveries(entry('ingest', null), all), [toWireDelivery(first)], 'ingest: the first delivery')
  t.same(selectDeliveries(entry('delivery', null, 1_000), all), [toWireDelivery(second)], 'delivery: later local ones received by then')
  t.same(selectDeliveries(entry('delivery', null, 9_000), all), [toWireDelivery(second), toWireDelivery(late)])
  t.same(selectDeliveries(entry('ingest', null), meta([fromPeer, second])), [toWireDelivery(second)], 'first local one when the first came from a peer')

  const wire = toWireDelivery(first)
  const reordered = Object.fromEntries(Object.entries(first).reverse()) as unknown as Delivery
  t.equal(mirrorDeliveryKey('MK650-A', wire), mirrorDeliveryKey('MK650-A', toWireDelivery(reordered)), 'stable key, whatever the field order')
  t.not(mirrorDeliveryKey('MK650-A', wire), mirrorDeliveryKey('MK650-A', toWireDelivery(second)), 'distinct deliveries, distinct keys')
  const recorded = copiedDelivery('MK650-A', wire)
  t.equal(recorded.source, 'mirror')
  t.equal(recorded.sourceName, 'MK650-A')
  t.same(recorded.envelopeBcc, first.envelopeBcc)
  t.equal(recorded.receivedAtMs, first.receivedAtMs)
})

t.test('a delivery through both encoders (stored record, copy to a peer): one field list, formats pinned', async (t) => {
  const journal: Delivery = {
    source: 'journal',
    sourceName: 'exchange-1',
    receivedAtMs: 1_700_000_000_123,
    envelopeFrom: 'Émile <emile@example.com>',
    envelopeTo: ['a@example.com', 'list-member@example.com'],
    envelopeBcc: ['secret@example.com'],
    remoteAddress: '2001:db8::7',
    journalEnvelopeText: 'Sender: emile@example.com\r\nRecipient: a@example.com',
    deliveryKey: 'imap:exchange-1:INBOX:17:42',
  }
  // No deliveryKey at all: both encodings write null.
  const smtp: Delivery = { source: 'smtp', sourceName: null, receivedAtMs: 5, envelopeFrom: null, envelopeTo: [], envelopeBcc: [], remoteAddress: null, journalEnvelopeText: null }
  // The stored record (on disk): version 1, the fields in order, the source by its position.
  t.same(encodeDelivery(journal), [
    1,
    1,
    'exchange-1',
    1_700_000_000_123,
    'Émile <emile@example.com>',
    ['a@example.com', 'list-member@example.com'],
    ['secret@example.com'],
    '2001:db8::7',
    'Sender: emile@example.com\r\nRecipient: a@example.com',
    'imap:exchange-1:INBOX:17:42',
  ])
  t.same(encodeDelivery(smtp), [1, 0, null, 5, null, [], [], null, null, null])
  // Delivery keys of copies (on disk at every peer): the digest of the fields in the same order.
  const keys = { journal: 'mirror:MK650-A:journal:37bd4e95a2346a57ecd5d3d982cd7e65', smtp: 'mirror:MK650-A:smtp:45695c26415d59ee12e3af2b86fbfc14' }
  const raw = Buffer.from('x')
  for (const delivery of [journal, smtp]) {
    const stored = decodeDelivery(encodeDelivery(delivery))
    t.same(stored, { ...delivery, deliveryKey: delivery.deliveryKey ?? null }, `${delivery.source}: stored record round trip`)
    t.same(Object.keys(stored), deliveryFields, 'decoded in field order')
    // The copy: in a MESSAGE header on the wire, decoded by the peer, recorded and stored there.
    const header: MessageHeader = { sequence: 3, id: 'a'.repeat(64), kind: 'ingest', sizeBytes: 1, deliveries: [toWireDelivery(stored)] }
    const received = decodeMessageFrame(encodeMessageFrame(encodeMessageHeader(header), raw)).header.deliveries[0]!
    t.same(received, toWireDelivery(delivery), `${delivery.source}: wire round trip`)
    const wireJson = `{"source":"${delivery.source}","sourceName":${JSON.stringify(delivery.sourceName)},"receivedAtMs":${delivery.receivedAtMs},"envelopeFrom":${JSON.stringify(delivery.envelopeFrom)},"envelopeTo":${JSON.stringify(delivery.envelopeTo)},"envelopeBcc":${JSON.stringify(delivery.envelopeBcc)},"remoteAddress":${JSON.stringify(delivery.remoteAddress)},"journalEnvelopeText":${JSON.stringify(delivery.journalEnvelopeText)},"deliveryKey":${JSON.stringify(delivery.deliveryKey ?? null)}}`
    t.equal(encodeMessageHeader(header).toString(), `{"sequence":3,"id":"${'a'.repeat(64)}","kind":"ingest","sizeBytes":1,"deliveries":[${wireJson}]}`, 'wire bytes: fields in order')
    const key = keys[delivery.source as 'journal' | 'smtp']
    t.equal(mirrorDeliveryKey('MK650-A', received), key, `${delivery.source}: delivery key unchanged`)
    const recorded = copiedDelivery('MK650-A', received)
    t.same(recorded, { ...delivery, source: 'mirror', sourceName: 'MK650-A', deliveryKey: key })
    t.same(encodeDelivery(recorded), [1, 3, 'MK650-A', ...encodeDelivery(delivery).slice(3, -1), key], 'the copy as the peer stores it')
    t.same(decodeDelivery(encodeDelivery(recorded)), recorded)
  }
  const bare = bareCopiedDelivery('MK650-A', 'b'.repeat(64), '192.0.2.1', 9)
  t.same(encodeDelivery(bare), [1, 3, 'MK650-A', 9, null, [], [], '192.0.2.1', null, `mirror:MK650-A:none:${'b'.repeat(64)}`])
  // Both decoders check the same fields the same way.
  t.throws(() => decodeDelivery([1, 4, ...encodeDelivery(smtp).slice(2)]), { name: 'RecordShapeError' }, 'stored: unknown source position')
  t.throws(() => decodeDelivery([1, ...encodeDelivery(smtp).slice(1, -1)]), { name: 'RecordShapeError' }, 'stored: a field missing')
  const badWire = (change: Record<string, unknown>) =>
    encodeMessageFrame(Buffer.from(JSON.stringify({ sequence: 3, id: 'a'.repeat(64), kind: 'ingest', sizeBytes: 1, deliveries: [{ ...toWireDelivery(smtp), ...change }] })), raw)
  t.throws(() => decodeMessageFrame(badWire({ source: 'fax' })), { code: 'PROTOCOL' }, 'wire: unknown source')
  t.throws(() => decodeMessageFrame(badWire({ receivedAtMs: null })), { code: 'PROTOCOL' }, 'wire: a field of the wrong type')
  t.same(decodeMessageFrame(badWire({ deliveryKey: undefined })).header.deliveries[0]!.deliveryKey, null, 'wire: an absent deliveryKey is null')
})

t.test('copy frames: round trip, strict decoding, oversized headers trimmed', async (t) => {
  const raw = makeMessage('frame', 3_000, random)
  const header: MessageHeader = { sequence: 7, id: sha256Hex(raw), kind: 'ingest', sizeBytes: raw.length, deliveries: [toWireDelivery(localDelivery(1))] }
  const decoded = decodeMessageFrame(encodeMessageFrame(encodeMessageHeader(header), raw))
  t.same(decoded.header, header)
  t.ok(decoded.chunk.equals(raw))
  t.same(decodeBatchEnd(encodeBatchEnd({ batch: 3, afterSequence: 10, throughSequence: 20, messages: 5 })), { batch: 3, afterSequence: 10, throughSequence: 20, messages: 5 })
  const ack = { batch: 3, throughSequence: 20, stored: 4, duplicates: 0, rejected: [{ sequence: 12, id: 'ab', code: 'MESSAGE_TOO_LARGE', message: 'too big' }] }
  t.same(decodeAck(encodeAck(ack)), ack)

  const protocolError = { code: 'PROTOCOL' }
  t.throws(() => decodeMessageFrame(encodeMessageFrame(encodeMessageHeader({ ...header, id: 'not-a-hash' }), raw)), protocolError, 'bad id')
  t.throws(() => decodeMessageFrame(encodeMessageFrame(encodeMessageHeader({ ...header, sizeBytes: 10 }), raw)), protocolError, 'more bytes than announced')
  t.throws(() => decodeMessageFrame(Buffer.from([0, 0, 0, 200, 1, 2])), protocolError, 'header length beyond the frame')
  t.throws(() => decodeBatchEnd(encodeBatchEnd({ batch: 1, afterSequence: 20, throughSequence: 10, messages: 0 })), protocolError, 'range backwards')
  t.throws(
    () => decodeMessageFrame(encodeMessageFrame(encodeMessageHeader({ ...header, deliveries: [{ ...header.deliveries[0]!, envelopeTo: 'x' as unknown as string[] }] }), raw)),
    protocolError,
  )

  const settings = { fingerprint: 'f1', policies: [{ name: 'default', retentionDays: 365, criteria: 'from:*@acme.example' }], holds: [{ name: 'case-12', active: false }] }
  t.same(decodePolicy(encodePolicy(settings)), settings, 'POLICY round trip')
  const policyJson = (value: unknown) => Buffer.from(JSON.stringify(value))
  t.throws(() => decodePolicy(policyJson({ policyFingerprint: 'f', policies: [{ name: 'x', retentionDays: -1, criteria: '' }], holds: [] })), protocolError, 'negative retention')
  t.throws(() => decodePolicy(policyJson({ policyFingerprint: 'f', policies: [], holds: [{ name: 'x' }] })), protocolError, 'hold without active')
  t.throws(
    () => decodePolicy(policyJson({ policyFingerprint: 'f', policies: Array.from({ length: 1_025 }, () => ({ name: 'x', retentionDays: 1, criteria: '' })), holds: [] })),
    protocolError,
    'too many policies',
  )
  t.throws(() => decodePolicy(policyJson({ policyFingerprint: 'f' })), protocolError, 'lists missing')

  const huge = { ...toWireDelivery(localDelivery(2)), journalEnvelopeText: 'x'.repeat(messageHeaderBytesMax) }
  const fitted = fitHeader({ ...header, deliveries: [toWireDelivery(localDelivery(1)), huge] })
  t.equal(fitted.trimmed, true)
  t.ok(Buffer.byteLength(JSON.stringify(fitted.header)) <= messageHeaderBytesMax)
  t.equal(fitted.header.deliveries.length, 1, 'oldest delivery dropped, then the envelope text')
  t.equal(fitted.header.deliveries[0]!.journalEnvelopeText, null)
  t.equal(fitHeader(header).trimmed, false)
})

t.test('queue tracker: exact per cursor, follows the lowest cursor, estimates beyond its cap', async (t) => {
  const archive = createMemoryArchive()
  const sizes: number[] = []
  for (let index = 0; index < 50; index++) {
    const raw = makeMessage(`tracked-${index}`, 100 + random.int(1_000), random)
    archive.ingest(raw, localDelivery(index), index % 5 === 4 ? 'MK650-B' : null)
    if (index % 5 !== 4) sizes.push(raw.length)
  }
  const tracker = createBacklogTracker({ archive, logger: createMemoryLogger() }, { scanStepEntries: 7 })
  const sum = (values: number[]) => values.reduce((total, value) => total + value, 0)
  t.same(tracker.depth(0), { messages: 50, bytes: 50 * 50_000, estimated: true }, 'before the scan: every entry, assumed size')
  await tracker.refresh()
  t.same(tracker.depth(0), { messages: 40, bytes: sum(sizes), estimated: false }, 'local ingests only')
  t.same(tracker.depth(25), { messages: 20, bytes: sum(sizes.slice(20)), estimated: false })
  tracker.retain(25)
  t.equal(tracker.stats().tracked, 20)
  t.same(tracker.depth(30), { messages: 16, bytes: sum(sizes.slice(24)), estimated: false })
  tracker.retain(0)
  await tracker.refresh()
  t.same(tracker.depth(0).messages, 40, 'a lower cursor rescans')

  const capped = createBacklogTracker({ archive, logger: createMemoryLogger() }, { entriesMax: 10 })
  await capped.refresh()
  const depth = capped.depth(0)
  t.equal(depth.estimated, true)
  t.ok(depth.messages >= 40 && depth.messages <= 50, `estimated ${depth.messages} covers the untracked part`)
})

t.test('peer state: durable records, technician overlay, corrupt files quarantined', async (t) => {
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-peer-state-'))
  const logger = createMemoryLogger()
  const store = createPeerStateStore({ logger, clock: systemClock }, { stateDir })
  const peer = { host: 'Peer.Example', port: 9443 }
  t.match(await store.read(peer), { cursor: 0, serial: null, paused: false }, 'fresh')
  await store.write({ ...(await store.read(peer)), cursor: 42, serial: 'MK650-B' })
  t.match(await store.read({ host: 'peer.example', port: 9443 }), { cursor: 42, serial: 'MK650-B' }, 'host case does not matter')
  const [file] = (await readdir(stateDir)).filter((name) => name.startsWith('peer-'))
  await writeFile(join(stateDir, file!), '{"version":1,"cursor":')
  t.match(await store.read(peer), { cursor: 0 }, 'corrupt: fresh (backfill)')
  t.ok(
    (await readdir(stateDir)).some((name) => name.includes('.corrupt-')),
    'corrupt file set aside',
  )
  t.ok(logger.records.some((record) => record.level === 'error' && /unusable/.test(record.msg)))

  await store.writeOverlay({ added: [{ host: 'c', port: 1 }], removed: [{ host: 'A', port: 2 }] })
  const overlay = await store.readOverlay()
  t.same(
    effectivePeers(
      [
        { host: 'a', port: 2 },
        { host: 'b', port: 3 },
        { host: 'B', port: 3 },
      ],
      overlay,
    ),
    [
      { host: 'b', port: 3, configuredBy: 'config' },
      { host: 'c', port: 1, configuredBy: 'added' },
    ],
  )

  const written: number[] = []
  let release!: () => void
  const gate = new Promise<void>((resolve) => (release = resolve))
  const writer = createCoalescingWriter<number>(
    async (value) => {
      written.push(value)
      if (value === 1) await gate
    },
    () => undefined,
  )
  writer.schedule(1)
  writer.schedule(2)
  writer.schedule(3)
  release()
  await writer.flush()
  t.same(written, [1, 3], 'values scheduled during a write collapse into the latest')
})

// ---------------------------------------------------------------- services over TLS

t.test('two nodes: local mail crosses both ways byte-identical, with origin, BCC and deliveries kept once', async (t) => {
  const a = await createTestNode({ serial: 'MK650-A', seed })
  const b = await createTestNode({ serial: 'MK650-B', seed })
  stopAll(t, a, b)
  await a.service.addPeer({ host, port: b.port })
  await b.service.addPeer({ host, port: a.port })
  const fromA = messages('a', 30)
  const fromB = messages('b', 10)
  await Promise.all([...fromA.map((raw) => a.ingest(raw)), ...fromB.map((raw) => b.ingest(raw))])
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 30 && copiesFrom(a, 'MK650-B').length === 10, { what: 'copies both ways' })
  t.ok(
    fromA.every((raw) => Buffer.from(b.archive.messages.get(sha256Hex(raw))!.raw).equals(raw)),
    'A → B byte-identical',
  )
  t.ok(
    fromB.every((raw) => Buffer.from(a.archive.messages.get(sha256Hex(raw))!.raw).equals(raw)),
    'B → A byte-identical',
  )
  const copy = b.archive.messages.get(sha256Hex(fromA[3]!))!.meta
  t.equal(copy.origin, 'MK650-A')
  t.equal(copy.deliveries.length, 1)
  t.match(copy.deliveries[0], { source: 'mirror', sourceName: 'MK650-A', envelopeBcc: [/^hidden\d+@example.com$/], remoteAddress: '192.0.2.10' })
  t.match(copy.deliveries[0]!.deliveryKey, /^mirror:MK650-A:smtp:[0-9a-f]{32}$/)

  // A second local delivery of a message B already has: recorded on B once, as a delivery.
  const again = { ...localDelivery(99), envelopeBcc: ['late@example.com'], envelopeTo: ['late@example.com'] }
  await a.pipeline.submit(fromA[0]!, again)
  await waitUntil(() => b.archive.messages.get(sha256Hex(fromA[0]!))!.meta.deliveries.length === 2, { what: 'second delivery on B' })
  t.same(b.archive.messages.get(sha256Hex(fromA[0]!))!.meta.deliveries[1]!.envelopeBcc, ['late@example.com'])
  // No echo: A's copies from B (origin B) are not sent back to B, B's archive holds exactly A's and its own.
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence() && b.peer(a.port)!.cursor === b.archive.lastSequence(), { what: 'both cursors at the end' })
  t.equal(b.archive.messages.size, 40)
  t.equal(a.archive.messages.size, 40)
  t.equal(b.pipeline.submits.filter((submit) => submit.delivery.source === 'mirror').length, 31, 'B received 30 messages and 1 delivery, nothing echoed')
  const status = a.service.status()
  t.match(status.peers[0], { state: 'connected', serial: 'MK650-B', queueMessages: 0, queueBytes: 0, messagesSent: 31, configuredBy: 'added', reasonCode: null })
  t.ok(status.peers[0]!.lastSuccessAtMs! > 0)
  t.match(
    b.service.status().inbound.find((peer) => peer.serial === 'MK650-A'),
    { connected: true, messagesStored: 30, messagesDuplicate: 1 },
  )
  t.equal(status.warning, null)
  t.match(a.service.healthcheck(), { ok: true, detail: /1 connected/ })
})

t.test('three nodes, full mesh: copies reach every peer from their origin and are never forwarded', async (t) => {
  const nodes = await Promise.all(['MK650-A', 'MK650-B', 'MK650-C'].map((serial) => createTestNode({ serial, seed, acceptJoins: false })))
  stopAll(t, ...nodes)
  const [a, b, c] = nodes as [TestNode, TestNode, TestNode]
  for (const from of nodes) for (const to of nodes) if (from !== to) await from.service.addPeer({ host, port: to.port })
  const fromA = messages('mesh-a', 15)
  const fromB = messages('mesh-b', 5)
  await Promise.all([...fromA.map((raw) => a.ingest(raw)), ...fromB.map((raw) => b.ingest(raw))])
  await waitUntil(() => copiesFrom(c, 'MK650-A').length === 15 && copiesFrom(c, 'MK650-B').length === 5 && copiesFrom(b, 'MK650-A').length === 15, { what: 'mesh copies' })
  await waitUntil(() => nodes.every((node) => node.service.status().peers.every((peer) => peer.cursor === node.archive.lastSequence())), { what: 'all cursors at the end' })
  // C got each of A's messages from A only: one delivery, sourceName A, one submit.
  const submitsOnC = c.pipeline.submits.filter((submit) => submit.delivery.source === 'mirror')
  t.equal(submitsOnC.length, 20, 'C stored each message once (no copy via B)')
  t.ok(
    submitsOnC.every((submit) => fromA.some((raw) => sha256Hex(raw) === submit.id) === (submit.delivery.sourceName === 'MK650-A')),
    'from the origin',
  )
  t.equal(c.service.status().inbound.find((peer) => peer.serial === 'MK650-B')!.messagesStored, 5, 'B sent C only its own mail')
  t.ok(b.archive.log.filter((entry) => entry.origin === 'MK650-A').length === 15, "B's change log marks A's copies with their origin")
  t.equal(b.service.status().peers.find((peer) => peer.port === c.port)!.messagesSent, 5, "B's sender skipped A's copies")
})

t.test('a peer that is down gets everything once when it returns; queue figures in between', async (t) => {
  let b = await createTestNode({ serial: 'MK650-B', seed })
  const proxy = await startFaultProxy(b.port, () => ({ kind: 'pass' }))
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: proxy.port }] })
  t.teardown(() => proxy.close())
  await waitUntil(() => a.peer(proxy.port)?.state === 'connected', { what: 'connected' })
  await b.stop()
  const raws = messages('offline', 60)
  for (const raw of raws) await a.ingest(raw)
  // B's stop answers a session it is in with BUSY ("the mirror listener is stopping"); the
  // attempts after that meet the proxy with nothing behind it. Wait for one of those.
  const down = await waitUntil(
    () => {
      const peer = a.peer(proxy.port)!
      return peer.state === 'retrying' && peer.queueMessages === 60 && !peer.queueEstimated && peer.reasonCode !== 'BUSY' && peer
    },
    { what: 'retrying with a queue of 60, after an attempt with B gone' },
  )
  t.equal(
    down.queueBytes,
    raws.reduce((total, raw) => total + raw.length, 0),
    'queue bytes = raw sizes',
  )
  t.match(down.reasonCode, /^(TLS_FAILED|CONNECTION_CLOSED)$/, 'the proxy accepts, the peer behind it is gone')
  t.ok(down.nextRetryAtMs! > 0 && down.lastError !== null)
  await failedAttempts(a, proxy.port, 1, 'another attempt with B gone')
  // B returns (another port behind the same address), keeping its archive.
  b = await createTestNode({ serial: 'MK650-B', seed, archive: b.archive, pipeline: b.pipeline, stateDir: b.stateDir })
  proxy.setTarget(b.port)
  stopAll(t, a, b)
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 60, { what: 'all 60 on B' })
  await waitUntil(() => a.peer(proxy.port)!.queueMessages === 0, { what: 'queue drained' })
  t.equal(b.pipeline.submits.length, 60, 'each exactly once')
  t.ok(copiesFrom(b, 'MK650-A').every((copy) => copy.meta.deliveries.length === 1))
})

t.test('backfill: a newly added peer receives the existing archive; purged and foreign entries skipped', async (t) => {
  const a = await createTestNode({ serial: 'MK650-A', seed })
  const b = await createTestNode({ serial: 'MK650-B', seed })
  stopAll(t, a, b)
  const raws = messages('backfill', 250)
  for (const raw of raws) await a.ingest(raw)
  a.archive.purge(sha256Hex(raws[7]!))
  // Copies A holds from a third peer must not be passed on.
  for (const raw of messages('foreign', 5)) a.archive.ingest(raw, { ...localDelivery(0), source: 'mirror', sourceName: 'MK650-C' }, 'MK650-C')
  const added = await a.service.addPeer({ host, port: b.port })
  t.equal(added.cursor, 0)
  t.equal(added.configuredBy, 'added')
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 249, { what: '249 copies' })
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'cursor past the foreign entries' })
  t.equal(b.archive.messages.size, 249, 'nothing purged, nothing foreign')
  t.equal(b.archive.messages.has(sha256Hex(raws[7]!)), false)
  // Mail archived without a notify() (the fallback poll finds it), and a stored message whose
  // bytes no longer match its id (not sent: the peer would refuse the batch forever).
  const unnotified = makeMessage('unnotified', 600, random)
  a.archive.ingest(unnotified, localDelivery(1), null)
  const damaged = makeMessage('damaged', 600, random)
  a.archive.ingest(damaged, localDelivery(2), null)
  const damagedBytes = a.archive.messages.get(sha256Hex(damaged))!.raw
  damagedBytes[10] = damagedBytes[10]! ^ 0xff
  await waitUntil(() => b.archive.messages.has(sha256Hex(unnotified)), { what: 'copied by the poll' })
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'cursor past the damaged message' })
  t.equal(copiesFrom(b, 'MK650-A').length, 250, 'the damaged message is not copied')
  t.ok(a.logger.records.some((record) => record.level === 'error' && /failed its integrity check/.test(record.msg)))
  await t.rejects(a.service.addPeer({ host, port: b.port }), { code: 'PEER_EXISTS' })
  await t.rejects(a.service.addPeer({ host: '', port: 0 }), { code: 'PEER_INVALID' })
  await t.rejects(a.service.pausePeer({ host, port: 1 }), { code: 'PEER_UNKNOWN' })
})

t.test('restart of the sender: the cursor survives, nothing acknowledged is sent again', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-restart-'))
  let a = await createTestNode({ serial: 'MK650-A', seed, stateDir, peers: [{ host, port: b.port }] })
  const raws = messages('restart', 40)
  for (const raw of raws) await a.ingest(raw)
  await waitUntil(() => a.peer(b.port)!.cursor === 40, { what: 'acknowledged' })
  await a.stop()
  await a.stop()
  const saved = JSON.parse(await readFile(join(stateDir, `peer-127.0.0.1-${b.port}.json`), 'utf8'))
  t.match(saved, {
    version: 3,
    cursor: 40,
    liveFrom: null,
    liveCursor: null,
    requeued: [],
    rejected: [],
    serial: 'MK650-B',
    storeId: b.archive.storeId(),
    fingerprint: /^[0-9a-f]{64}$/,
    pendingIdentity: null,
    paused: false,
  })
  const submitsBefore = b.pipeline.submits.length
  const restartedAtMs = Date.now()
  a = await createTestNode({ serial: 'MK650-A', seed, stateDir, archive: a.archive, pipeline: a.pipeline, peers: [{ host, port: b.port }] })
  stopAll(t, a, b)
  await waitUntil(() => a.peer(b.port)!.state === 'connected', { what: 'reconnected' })
  t.equal(a.peer(b.port)!.cursor, 40)
  // The restarted sender's session has begun and told B its queue: empty, nothing to send again.
  const reportOfA = () => b.service.completeness().peers.find((peer) => peer.serial === 'MK650-A')
  await waitUntil(() => (reportOfA()?.asOfMs ?? 0) >= restartedAtMs && reportOfA()?.queuedMessages === 0, { what: 'the restarted A to report an empty queue to B', observe: reportOfA })
  t.equal(b.pipeline.submits.length, submitsBefore, 'no resend after restart')
  await a.ingest(makeMessage('after-restart', 500, random))
  await waitUntil(() => b.pipeline.submits.length === submitsBefore + 1, { what: 'the new one' })
  // Acknowledged: A's session is past the new one, so nothing more is coming.
  await waitUntil(() => a.peer(b.port)!.cursor === a.archive.lastSequence(), { what: 'the new one acknowledged' })
  t.equal(b.pipeline.submits.length, submitsBefore + 1, 'only the new one')
})

t.test('refusals: model, firmware and secret mismatches show their reason on both sides; a fixed peer recovers', async (t) => {
  const a = await createTestNode({ serial: 'MK650-A', seed })
  const otherModel = await createTestNode({ serial: 'MK850-C', model: 850, seed, peers: [{ host, port: a.port }] })
  let otherFirmware = await createTestNode({ serial: 'MK650-D', firmwareVersion: '1.0.1', seed })
  const otherSecret = await createTestNode({ serial: 'MK650-E', seed, secret: await deriveMirrorSecret(generateSharedSecret()) })
  const proxy = await startFaultProxy(otherFirmware.port, () => ({ kind: 'pass' }))
  t.teardown(() => proxy.close())
  for (const port of [otherModel.port, proxy.port, otherSecret.port]) await a.service.addPeer({ host, port })
  const refused = (node: TestNode, port: number, code: string) =>
    waitUntil(
      () => {
        const peer = node.peer(port)
        return peer?.state === 'refused' && peer.reasonCode === code && peer
      },
      { what: `${node.serial} → ${port} refused ${code}` },
    )
  t.match(await refused(a, otherModel.port, 'MODEL_MISMATCH'), { expected: 850, actual: 650 })
  t.match(await refused(a, proxy.port, 'FIRMWARE_MISMATCH'), { expected: '1.0.1', actual: '1.0.0' })
  t.match(await refused(a, otherSecret.port, 'AUTH_FAILED'), { serial: null })
  // The other side of each: the listener's refusal, and C's own sender to A.
  t.match(await refused(otherModel, a.port, 'MODEL_MISMATCH'), { expected: 650, actual: 850 })
  const inboundOf = (node: TestNode, code: string) =>
    waitUntil(() => node.service.status().inboundRefusals.find((refusal) => refusal.code === code), { what: `${node.serial} inbound ${code}` })
  t.match(await inboundOf(otherModel, 'MODEL_MISMATCH'), { serial: 'MK650-A', expected: 850, actual: 650 })
  t.match(await inboundOf(otherFirmware, 'FIRMWARE_MISMATCH'), { serial: 'MK650-A', expected: '1.0.1', actual: '1.0.0' })
  t.match(await inboundOf(otherSecret, 'AUTH_FAILED'), { serial: 'MK650-A' })
  t.match(await inboundOf(a, 'MODEL_MISMATCH'), { serial: 'MK850-C', expected: 650, actual: 850 })
  t.ok(
    a.audits.some((event) => event.direction === 'outbound' && event.code === 'FIRMWARE_MISMATCH'),
    'audited',
  )

  // D is updated to the same firmware: A notices on its next (capped) retry and copies.
  await a.ingest(makeMessage('after-fix', 500, random))
  await otherFirmware.stop()
  otherFirmware = await createTestNode({ serial: 'MK650-D', seed, archive: otherFirmware.archive, pipeline: otherFirmware.pipeline })
  proxy.setTarget(otherFirmware.port)
  stopAll(t, a, otherModel, otherFirmware, otherSecret)
  await waitUntil(() => a.peer(proxy.port)!.state === 'connected', { what: 'recovered' })
  await waitUntil(() => copiesFrom(otherFirmware, 'MK650-A').length === 1, { what: 'copied after the fix' })
  t.equal(a.peer(proxy.port)!.reasonCode, null)
  t.equal(otherSecret.archive.messages.size, 0, 'nothing ever reached the peer with another secret')
})

t.test('pause and resume survive a restart; removed and added peers too', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const c = await createTestNode({ serial: 'MK650-C', seed })
  const stateDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-ops-'))
  const config = [
    { host, port: b.port },
    { host, port: c.port },
  ]
  let a = await createTestNode({ serial: 'MK650-A', seed, stateDir, peers: config })
  await waitUntil(() => a.peer(b.port)?.state === 'connected', { what: 'connected' })
  t.match(await a.service.pausePeer({ host, port: b.port }), { state: 'paused' })
  const raws = messages('paused', 5)
  for (const raw of raws) await a.ingest(raw)
  await waitUntil(() => copiesFrom(c, 'MK650-A').length === 5, { what: 'C still gets copies' })
  t.equal(copiesFrom(b, 'MK650-A').length, 0, 'B gets nothing while paused')
  t.match(a.peer(b.port), { state: 'paused', queueMessages: 5, queueEstimated: false })
  await a.service.removePeer({ host, port: c.port })
  const d = await createTestNode({ serial: 'MK650-D', seed })
  await a.service.addPeer({ host, port: d.port })
  await a.stop()

  a = await createTestNode({ serial: 'MK650-A', seed, stateDir, archive: a.archive, pipeline: a.pipeline, peers: config })
  stopAll(t, a, b, c, d)
  t.same(
    a.service.status().peers.map((peer) => [peer.port, peer.configuredBy]),
    [
      [b.port, 'config'],
      [d.port, 'added'],
    ],
    'C stays removed, D stays added',
  )
  // D's backfill shows the restarted service's senders ran; B's stayed paused meanwhile.
  await waitUntil(() => copiesFrom(d, 'MK650-A').length === 5, { what: 'D backfilled' })
  t.equal(a.peer(b.port)!.state, 'paused', 'still paused after restart')
  await a.service.resumePeer({ host, port: b.port })
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 5, { what: 'B gets them after resume' })
  await waitUntil(() => a.peer(b.port)!.queueMessages === 0, { what: 'queue empty' })
  // A removed config peer comes back with addPeer, as a config peer again.
  t.match(await a.service.addPeer({ host, port: c.port }), { configuredBy: 'config', cursor: 0 })
})

t.test('policy settings: exchanged only after the proof, differences shown per peer on both sides and logged once; failed proofs audited', async (t) => {
  const secretText = generateSharedSecret()
  const settingsB = { fingerprint: 'retention-7y', policies: [{ name: 'default', retentionDays: 2555, criteria: 'all' }], holds: [{ name: 'acme-litigation', active: true }] }
  const settingsA = { fingerprint: 'retention-10y', policies: [{ name: 'default', retentionDays: 3650, criteria: 'all' }], holds: [] }
  const diffCalls: string[] = []
  // A fake of firmware/policy's diff: says which fingerprints it compared.
  const policyDiff = (local: { fingerprint: string }, peer: { fingerprint: string; holds: { name: string }[] }) => {
    diffCalls.push(`${local.fingerprint}~${peer.fingerprint}`)
    return [`${local.fingerprint} here, ${peer.fingerprint} on the peer`, ...peer.holds.map((hold) => `hold ${hold.name} only on the peer`)]
  }
  const b = await createTestNode({ serial: 'MK650-B', seed, policySettings: settingsB, policyDiff, service: { sharedSecret: secretText } })
  const a = await createTestNode({
    serial: 'MK650-A',
    seed,
    policySettings: settingsA,
    policyDiff,
    localSourcesEnabled: false,
    peers: [{ host, port: b.port }],
    service: { sharedSecret: secretText },
  })
  // D has the wrong secret: it must learn nothing of B's settings.
  const d = await createTestNode({
    serial: 'MK650-D',
    seed,
    policySettings: settingsA,
    peers: [{ host, port: b.port }],
    service: { sharedSecret: generateSharedSecret(), retryDelayMsMin: 60_000, retryDelayMsMax: 60_000 },
  })
  stopAll(t, a, b, d)
  await waitUntil(() => a.peer(b.port)?.peerPolicyFingerprint === 'retention-7y', { what: 'policy exchanged' })
  t.same(a.peer(b.port)!.policyMismatch, ['retention-10y here, retention-7y on the peer', 'hold acme-litigation only on the peer'], 'A shows the differences per peer')
  await waitUntil(() => b.service.status().inbound.find((peer) => peer.serial === 'MK650-A')?.policyMismatch.length === 1, { what: 'B sees it too' })
  t.same(b.service.status().inbound.find((peer) => peer.serial === 'MK650-A')!.policyMismatch, ['retention-7y here, retention-10y on the peer'])
  t.equal(b.service.status().inbound.find((peer) => peer.serial === 'MK650-A')!.peerPolicyFingerprint, 'retention-10y')
  // Reconnects exchange again; the warning is logged once per side.
  await a.ingest(makeMessage('policy', 300, random))
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 1, { what: 'copied' })
  const warnings = a.logger.records.filter((record) => /different retention or hold/.test(record.msg))
  t.equal(warnings.length, 1, 'logged once')
  t.match(warnings[0], { differences: ['retention-10y here, retention-7y on the peer', 'hold acme-litigation only on the peer'] })
  t.ok(diffCalls.includes('retention-10y~retention-7y') && diffCalls.includes('retention-7y~retention-10y'), "the injected diff compares ours with the peer's")
  // Never before the proof: D was refused and holds nothing of B's settings.
  await waitUntil(() => d.peer(b.port)?.state === 'refused', { what: 'D refused' })
  t.equal(d.peer(b.port)!.reasonCode, 'AUTH_FAILED')
  t.equal(d.peer(b.port)!.peerPolicyFingerprint, null)
  t.notOk(JSON.stringify([d.logger.records, d.service.status()]).includes('acme-litigation'), 'no settings reached the peer with the wrong secret')
  t.notOk(b.service.status().inbound.some((peer) => peer.serial === 'MK650-D'))
  // Failed proofs go to the audit hook on both sides (B: D's proof failed; D: B refused it).
  await waitUntil(() => b.auditEntries.length > 0 && d.auditEntries.length > 0, { what: 'audited' })
  const authFailures = (node: TestNode) => node.auditEntries.filter((entry) => entry.action === 'mirror.auth-failed')
  await waitUntil(() => authFailures(b).length > 0 && authFailures(d).length > 0, { what: 'failed proofs audited' })
  t.match(authFailures(b)[0], { action: 'mirror.auth-failed', actor: /^127\.0\.0\.1/, details: { direction: 'inbound', claimedSerial: 'MK650-D' } })
  t.match(authFailures(d)[0], { action: 'mirror.auth-failed', details: { direction: 'outbound', decidedBy: 'peer' } })
  t.notOk(authFailures(a).length, 'a successful handshake is not a failed proof')
  t.match(a.auditEntries, [{ action: 'mirror.peer-pinned', details: { actual: { serial: 'MK650-B', storeId: b.archive.storeId() } } }], 'the first contact pinned B')
  const status = a.service.status()
  t.equal(status.policyFingerprint, 'retention-10y')
  t.equal(status.warning, noLocalSourceWarning)
  t.equal(status.localSourcesEnabled, false)
  t.equal(b.service.status().warning, null)
  // The secret (given as text here) never reaches a log line or an audit event.
  const logged = JSON.stringify([...a.logger.records, ...b.logger.records, ...a.audits, ...b.audits, ...b.auditEntries])
  t.ok(logged.length > 1_000, 'there are logs to look through')
  t.notOk(logged.includes(secretText), 'no secret in logs')
  t.notOk(JSON.stringify(a.service.status()).includes(secretText), 'no secret in status')
})

t.test('lowestAcknowledgedSequence: null without peers, the lowest cursor of every peer (paused and added ones too)', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const c = await createTestNode({ serial: 'MK650-C', seed })
  const a = await createTestNode({ serial: 'MK650-A', seed }, false)
  stopAll(t, a, b, c)
  t.equal(a.service.lowestAcknowledgedSequence(), 0, 'before start: nothing is known to be copied')
  await a.service.start()
  t.equal(a.service.lowestAcknowledgedSequence(), null, 'no peer: nothing holds retention back')
  for (const raw of messages('low', 10)) await a.ingest(raw)
  await a.service.addPeer({ host, port: b.port })
  t.equal(a.service.lowestAcknowledgedSequence(), 0, 'a new peer has acknowledged nothing')
  await waitUntil(() => a.peer(b.port)!.cursor === 10, { what: 'B caught up' })
  t.equal(a.service.lowestAcknowledgedSequence(), 10)
  await a.service.addPeer({ host, port: c.port })
  await a.service.pausePeer({ host, port: c.port })
  t.equal(a.service.lowestAcknowledgedSequence(), 0, 'a paused peer holds it back')
  for (const raw of messages('low-more', 5)) await a.ingest(raw)
  await waitUntil(() => a.peer(b.port)!.cursor === 15, { what: 'B got the new ones' })
  t.equal(a.service.lowestAcknowledgedSequence(), 0)
  await a.service.resumePeer({ host, port: c.port })
  await waitUntil(() => a.service.lowestAcknowledgedSequence() === 15, { what: 'C caught up: every peer has everything' })
  t.equal(copiesFrom(c, 'MK650-A').length, 15)
  await a.service.removePeer({ host, port: c.port })
  await a.service.removePeer({ host, port: b.port })
  t.equal(a.service.lowestAcknowledgedSequence(), null, 'all peers removed')
})

t.test('a different appliance at a peer address is refused IDENTITY_CHANGED until accepted, then gets the whole archive', async (t) => {
  const first = await createTestNode({ serial: 'MK650-B1', seed })
  const proxy = await startFaultProxy(first.port, () => ({ kind: 'pass' }))
  // acceptJoins off: the other appliance must not get in as a join either.
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: proxy.port }], acceptJoins: false })
  t.teardown(() => proxy.close())
  const raws = messages('replaced', 20)
  for (const raw of raws) await a.ingest(raw)
  await waitUntil(() => a.peer(proxy.port)!.cursor === 20, { what: 'first copied everything' })
  await first.stop()
  const second = await createTestNode({ serial: 'MK650-B2', seed })
  proxy.setTarget(second.port)
  proxy.cutAll()
  stopAll(t, a, second)
  const refused = await waitUntil(() => a.peer(proxy.port)!.reasonCode === 'IDENTITY_CHANGED' && a.peer(proxy.port)!, { what: 'refused as a changed identity' })
  t.equal(refused.state, 'refused')
  t.match(refused.expected, /^serial MK650-B1, store /)
  t.match(refused.actual, /^serial MK650-B2, store /)
  t.match(refused.pendingIdentity, { serial: 'MK650-B2', storeId: second.archive.storeId(), listenPort: second.port })
  t.equal(refused.cursor, 20, 'the queue is kept')
  await a.ingest(makeMessage('while-refused', 300, random))
  await failedAttempts(a, proxy.port, 2, 'two more attempts, refused')
  t.equal(second.pipeline.submits.length, 0, 'nothing reaches the other appliance')
  t.ok(
    a.auditEntries.some((entry) => entry.action === 'mirror.identity-changed' && (entry.details.actual as { serial: string }).serial === 'MK650-B2'),
    'audited',
  )

  const accepted = await a.service.acceptPeer({ host, port: proxy.port })
  t.match(accepted, { kind: 'identity', backfill: true, previous: { serial: 'MK650-B1' }, accepted: { serial: 'MK650-B2' } })
  await waitUntil(() => copiesFrom(second, 'MK650-A').length === 21, { what: 'the accepted replacement got everything' })
  t.equal(a.peer(proxy.port)!.serial, 'MK650-B2')
  t.equal(a.peer(proxy.port)!.pendingIdentity, null)
  t.ok(a.auditEntries.some((entry) => entry.action === 'mirror.identity-accepted' && entry.details.cursorReset === true))
  await t.rejects(a.service.acceptPeer({ host, port: proxy.port }), { code: 'NOTHING_PENDING' }, 'nothing left to accept')
  await a.stop()
  const saved = JSON.parse(await readFile(join(a.stateDir, `peer-127.0.0.1-${proxy.port}.json`), 'utf8'))
  t.same(saved.previousSerials, ['MK650-B1'])
})

t.test('an appliance that proves the secret but is not a peer is a pending join: nothing archived until accepted', async (t) => {
  const a = await createTestNode({ serial: 'MK650-A', seed, acceptJoins: false })
  const e = await createTestNode({ serial: 'MK650-E', seed, acceptJoins: false })
  stopAll(t, a, e)
  await a.ingest(makeMessage('on-a-before', 400, random))
  await e.service.addPeer({ host, port: a.port })
  const fromE = messages('join', 5)
  for (const raw of fromE) await e.ingest(raw)
  const refused = await waitUntil(() => e.peer(a.port)?.reasonCode === 'NOT_A_PEER' && e.peer(a.port)!, { what: 'E refused NOT_A_PEER' })
  t.equal(refused.state, 'refused')
  const join = await waitUntil(() => a.service.status().pendingJoins[0], { what: 'a pending join on A' })
  t.match(join, { serial: 'MK650-E', storeId: e.archive.storeId(), address: host, listenPort: e.port, model: 650, firmwareVersion: '1.0.0' })
  t.ok(join.lastSeenAtMs >= join.firstSeenAtMs)
  // E tries again (and is refused again): seen later, still one join.
  await waitUntil(() => a.service.status().pendingJoins.some((pending) => pending.lastSeenAtMs > join.lastSeenAtMs), {
    what: 'a later attempt of E',
    observe: () => a.service.status().pendingJoins,
  })
  t.equal(copiesFrom(a, 'MK650-E').length, 0, 'nothing from the join was archived')
  t.equal(a.pipeline.submits.length, 1, "only A's own message went through its pipeline")
  t.equal(a.service.status().pendingJoins.length, 1, 'listed once however often it retries')
  t.equal(a.auditEntries.filter((entry) => entry.action === 'mirror.join-requested').length, 1, 'the join is audited once')
  // Saved: a restart still lists it.
  await a.stop()
  const a2 = await createTestNode({ serial: 'MK650-A', seed, acceptJoins: false, stateDir: a.stateDir, archive: a.archive, pipeline: a.pipeline, port: a.port })
  stopAll(t, a2)
  t.match(a2.service.status().pendingJoins, [{ serial: 'MK650-E' }], 'pending joins survive a restart')
  await t.rejects(a2.service.acceptPeer({ host, port: e.port + 1 }), { code: 'NOTHING_PENDING' })
  const accepted = await a2.service.acceptPeer({ host, port: e.port })
  t.match(accepted, { kind: 'join', backfill: true, accepted: { serial: 'MK650-E' }, peer: { host, port: e.port, serial: 'MK650-E', configuredBy: 'added' } })
  t.same(a2.service.status().pendingJoins, [])
  t.ok(a2.auditEntries.some((entry) => entry.action === 'mirror.join-accepted' && entry.details.by === 'mirror accept'))
  await waitUntil(() => copiesFrom(a2, 'MK650-E').length === 5, { what: "E's mail on A once accepted" })
  await waitUntil(() => copiesFrom(e, 'MK650-A').length === 1, { what: "A's archive backfilled to E" })
})

t.test('with mirror.acceptJoins an appliance that proves the secret is added and pinned at once, and audited', async (t) => {
  const a = await createTestNode({ serial: 'MK650-A', seed, acceptJoins: true })
  const e = await createTestNode({ serial: 'MK650-E', seed, acceptJoins: false })
  stopAll(t, a, e)
  await a.ingest(makeMessage('on-a', 400, random))
  await e.service.addPeer({ host, port: a.port })
  await e.ingest(makeMessage('on-e', 400, random))
  await waitUntil(() => copiesFrom(a, 'MK650-E').length === 1, { what: 'archived on A' })
  t.match(a.service.status().peers, [{ host, port: e.port, serial: 'MK650-E', storeId: e.archive.storeId(), configuredBy: 'added' }])
  t.ok(a.auditEntries.some((entry) => entry.action === 'mirror.join-accepted' && entry.details.by === 'mirror.acceptJoins'))
  await waitUntil(() => copiesFrom(e, 'MK650-A').length === 1, { what: 'and A copies to it' })
})

t.test('a pinned peer whose impostor appeared meanwhile: the real peer is admitted again, the impostor never', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed, acceptJoins: false })
  const proxy = await startFaultProxy(b.port, () => ({ kind: 'pass' }))
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: proxy.port }], acceptJoins: false })
  t.teardown(() => proxy.close())
  stopAll(t, a, b)
  await b.service.addPeer({ host, port: a.port })
  await waitUntil(() => a.peer(proxy.port)?.state === 'connected' && b.peer(a.port)?.state === 'connected', { what: 'paired both ways' })
  // An impostor with B's serial (its own store and certificate) takes B's place.
  const impostor = await createTestNode({ serial: 'MK650-B', seed: seed + 1, acceptJoins: false, stateDir: await mkdtemp(join(tmpdir(), 'mailkeep-impostor-')) })
  // Same serial, same certificate file here (one per serial in tests): the store id tells them apart.
  t.teardown(() => impostor.stop())
  await impostor.service.addPeer({ host, port: a.port })
  proxy.setTarget(impostor.port)
  proxy.cutAll()
  const raws = messages('impostor', 3)
  for (const raw of raws) await a.ingest(raw)
  await waitUntil(() => a.peer(proxy.port)?.reasonCode === 'IDENTITY_CHANGED', { what: 'A refuses the impostor' })
  await waitUntil(() => impostor.peer(a.port)?.reasonCode === 'IDENTITY_CHANGED', { what: 'the impostor is refused inbound too (same serial as a pinned peer)' })
  await failedAttempts(a, proxy.port, 2, 'two more attempts at the impostor, refused')
  t.equal(impostor.pipeline.submits.length, 0, 'the impostor got nothing')
  const cursorBefore = a.peer(proxy.port)!.cursor
  t.ok(cursorBefore < a.archive.lastSequence(), 'the three are still queued')
  await impostor.stop()
  proxy.setTarget(b.port)
  proxy.cutAll()
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 3, { what: 'the real B gets all three' })
  await waitUntil(() => a.peer(proxy.port)?.state === 'connected' && a.peer(proxy.port)!.pendingIdentity === null, { what: 'healthy again' })
  t.ok(a.auditEntries.some((entry) => entry.action === 'mirror.identity-restored'))
})

t.test('completeness: a receiver behind its peer says so (queued count, as of), and complete once caught up', async (t) => {
  // B stores slowly, so A's backlog drains over a while.
  const b = await createTestNode({ serial: 'MK650-B', seed, pipelineOptions: { commit: async () => void (await sleep(15)) } })
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: b.port }], service: { batchMessagesMax: 20 } })
  stopAll(t, a, b)
  t.same(b.service.completeness(), { complete: true, peers: [] }, 'nothing known: nothing reported')
  await a.service.pausePeer({ host, port: b.port })
  const raws = messages('behind', 400, 500)
  for (const raw of raws) await a.ingest(raw)
  // Paused, A still tells B how much waits for it: B must not look caught up.
  const whilePaused = await waitUntil(
    () => {
      const completeness = b.service.completeness()
      return !completeness.complete && completeness.peers[0]?.queuedMessages === 400 && completeness
    },
    { what: 'B knows it is 400 behind while A is paused' },
  )
  t.match(whilePaused.peers[0], { serial: 'MK650-A', connected: true })
  t.equal(copiesFrom(b, 'MK650-A').length, 0, 'and nothing was copied while paused')
  t.equal(a.peer(b.port)!.state, 'paused')
  await a.service.resumePeer({ host, port: b.port })
  const behind = await waitUntil(
    () => {
      const completeness = b.service.completeness()
      return !completeness.complete && completeness.peers[0]!.queuedMessages > 0 && completeness
    },
    { what: 'B knows it is behind' },
  )
  t.match(behind.peers[0], { serial: 'MK650-A', queueEstimated: false, connected: true })
  t.ok(behind.peers[0]!.queuedMessages <= 400)
  t.ok(Math.abs(behind.peers[0]!.asOfMs - Date.now()) < 5_000, "as of now, by this system's clock")
  t.ok(copiesFrom(b, 'MK650-A').length < 400, 'observed while copies were still missing')
  await waitUntil(() => copiesFrom(b, 'MK650-A').length === 400, { what: 'caught up', timeoutMs: 60_000 })
  const done = await waitUntil(() => b.service.completeness().complete && b.service.completeness(), { what: 'complete once caught up' })
  t.match(done.peers, [{ serial: 'MK650-A', queuedMessages: 0 }])
})

t.test('a policy change on either side is exchanged again while the channel stands', async (t) => {
  const policyDiff = (local: { fingerprint: string }, peer: { fingerprint: string }) => (local.fingerprint === peer.fingerprint ? [] : [`${local.fingerprint} vs ${peer.fingerprint}`])
  const b = await createTestNode({ serial: 'MK650-B', seed, policyDiff })
  const a = await createTestNode({ serial: 'MK650-A', seed, peers: [{ host, port: b.port }], policyDiff })
  stopAll(t, a, b)
  await waitUntil(() => a.peer(b.port)?.state === 'connected' && a.peer(b.port)!.peerPolicyFingerprint === 'policy-v1', { what: 'connected, settings exchanged' })
  const since = a.peer(b.port)!.connectedSinceMs
  t.same(a.peer(b.port)!.policyMismatch, [])
  const inboundOnB = () => b.service.status().inbound.find((peer) => peer.serial === 'MK650-A')
  a.setPolicy({ fingerprint: 'policy-v2', policies: [{ name: 'short', retentionDays: 30, criteria: 'all' }], holds: [] })
  await waitUntil(() => inboundOnB()?.peerPolicyFingerprint === 'policy-v2', { what: "B heard A's change" })
  t.same(inboundOnB()!.policyMismatch, ['policy-v1 vs policy-v2'])
  b.setPolicy({ fingerprint: 'policy-v3', policies: [], holds: [{ name: 'case', active: true }] })
  await waitUntil(() => a.peer(b.port)?.peerPolicyFingerprint === 'policy-v3', { what: "A heard B's change" })
  t.same(a.peer(b.port)!.policyMismatch, ['policy-v2 vs policy-v3'])
  t.equal(a.peer(b.port)!.connectedSinceMs, since, 'without a reconnect')
})

t.test('peerUnreachableForMs (source takeover): grows while a peer does not answer, null while it answers or refuses', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const other = await createTestNode({ serial: 'MK850-O', model: 850, seed })
  const a = await createTestNode({
    serial: 'MK650-A',
    seed,
    peers: [
      { host, port: b.port },
      { host, port: other.port },
    ],
  })
  stopAll(t, a, other)
  t.equal(a.service.peerUnreachableForMs({ host, port: 9 }), null, 'not a peer')
  await waitUntil(() => a.peer(b.port)?.state === 'connected', { what: 'connected' })
  t.equal(a.service.peerUnreachableForMs({ host, port: b.port }), null, 'answers')
  await waitUntil(() => a.peer(other.port)?.state === 'refused', { what: 'refused' })
  t.equal(a.service.peerUnreachableForMs({ host, port: other.port }), null, 'a refusal is an answer: the peer is up')
  await b.stop()
  await waitUntil(() => a.peer(b.port)?.state === 'retrying', { what: 'B gone' })
  const first = a.service.peerUnreachableForMs({ host, port: b.port })!
  t.type(first, 'number')
  await sleep(120)
  t.ok(a.service.peerUnreachableForMs({ host, port: b.port })! >= first + 100, 'keeps growing while B is down')
  t.equal(a.peer(b.port)!.unreachableSinceMs !== null, true, 'shown in status')
  await a.service.pausePeer({ host, port: b.port })
  t.equal(a.service.peerUnreachableForMs({ host, port: b.port }), null, 'paused: unknown, no takeover')
})

t.test('a model that may not mirror does not listen, and its peer refuses it; operations need a running service', async (t) => {
  const b = await createTestNode({ serial: 'MK650-B', seed })
  const node = await createTestNode({ serial: 'MK350-Z', model: 350, seed, peers: [{ host, port: b.port }] })
  stopAll(t, b, node)
  t.equal(node.service.address(), null, 'no listener')
  t.match(node.service.status().warning, /model 350 may not mirror/)
  await waitUntil(() => node.peer(b.port)?.state === 'refused', { what: 'refused' })
  t.match(node.peer(b.port), { reasonCode: 'MODEL_NOT_ELIGIBLE', expected: '>= 450', actual: 350 })
  await waitUntil(() => b.service.status().inboundRefusals.length > 0, { what: 'B shows it' })
  t.match(b.service.status().inboundRefusals[0], { code: 'MODEL_NOT_ELIGIBLE', serial: 'MK350-Z', actual: 350 })
  await waitUntil(() => b.service.status().inboundRefusals[0]!.count >= 3, { what: 'retries counted' })
  t.equal(b.service.status().inboundRefusals.length, 1, 'a retrying peer keeps one entry, counted, so others are not pushed out')
  t.equal(node.service.healthcheck().ok, true)
  const idle = await createTestNode({ serial: 'MK650-Y', seed }, false)
  await t.rejects(idle.service.addPeer({ host, port: 1 }), { code: 'STOPPED' })
  await idle.stop()
})
