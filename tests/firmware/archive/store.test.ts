import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { deflateRawSync } from 'node:zlib'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { open, type Database } from 'lmdb'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { hasCode } from '../../../firmware/common/errors.js'
import type { ArchiveError } from '../../../firmware/archive/errors.js'
import { createArchiveStore, type ArchiveStoreOptions } from '../../../firmware/archive/store.js'
import { blobPartKey, blobParts, databaseNames, idKey, pageHeaderBytes } from '../../../firmware/archive/layout.js'
import type { ArchiveIndexer, MessageMeta } from '../../../firmware/archive/types.js'
import { tempDir } from '../../helpers/service.js'
import { deliveryFor, generatedMessage, parsedFor, requestFor } from './fixtures/messages.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const mib = 1024 * 1024
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

async function newStore(t: TestContext, overrides: Partial<ArchiveStoreOptions> = {}, volume?: () => Promise<{ freeBytes: number }>) {
  const path = overrides.path ?? (await tempDir('mailkeep-archive-'))
  const logger = createMemoryLogger()
  const clock = createManualClock()
  const store = createArchiveStore({ logger, clock, volume }, { path, mapSizeBytes: 1024 * mib, freeBytesMin: 64 * mib, messageBytesMax: 8 * mib, ...overrides })
  await store.start()
  t.teardown(() => store.stop())
  return { store, path, logger, clock }
}

async function rejectsWith(t: TestContext, promise: Promise<unknown>, code: string, retryable: boolean, message: string) {
  try {
    await promise
    t.fail(`${message}: resolved, expected ${code}`)
  } catch (error) {
    t.ok(hasCode(error, code), `${message}: ${code} (got ${(error as Error).message})`)
    t.equal((error as ArchiveError).retryable, retryable, `${message}: retryable ${retryable}`)
  }
}

t.test('blob layout: parts cover the blob exactly, head fills whole pages, tail chunks fit four to a page', async (t) => {
  for (const length of [0, 1, 995, 996, 997, 4071, 4072, 4073, 8168, 10_000, 123_457]) {
    const parts = blobParts(length, 4096)
    let offset = 0
    for (const [start, end] of parts) {
      t.equal(start, offset, `length ${length}: contiguous`)
      t.ok(end > start, `length ${length}: non-empty part`)
      offset = end
    }
    t.equal(offset, length, `length ${length}: parts cover the blob`)
    const [first] = parts
    if (length + pageHeaderBytes >= 4096) t.equal((first![1] + pageHeaderBytes) % 4096, 0, `length ${length}: head is whole overflow pages`)
    for (const [start, end] of parts.slice(length + pageHeaderBytes >= 4096 ? 1 : 0)) t.ok(end - start <= 996, `length ${length}: tail chunk of ${end - start} bytes`)
  }
})

t.test('round trip is byte-identical for binary, 8-bit, NUL, CRLF, empty, incompressible and large messages', async (t) => {
  const { store } = await newStore(t)
  const messages = [
    Buffer.concat([Buffer.from('Subject: bin\r\n\r\n'), Buffer.from([0, 0, 1, 0xff, 0xfe, 0x80, 0x0d, 0x0a, 0x0d, 0x0d, 0x0a, 0x0a, 0])]),
    Buffer.from('Subject: Grüße\n\nnaïve café — 8-bit body\nbare LF\r\nCRLF\r\n', 'latin1'),
    Buffer.alloc(0),
    Buffer.from([0xfb, 0xfc, 0xfd, 0xfe, 0xff]),
    randomBytes(300_000),
    generatedMessage(7, 0),
    Buffer.from('x'.repeat(2 * mib)),
  ]
  for (const raw of messages) {
    const result = await store.ingest(requestFor(raw, {}, 'round trip'))
    t.equal(result.id, sha256(raw), 'id is the SHA-256 of the raw bytes')
    t.equal(result.duplicate, false)
    const back = await store.getRaw(result.id)
    t.ok(back && Buffer.from(back).equals(raw), `${raw.byteLength} bytes come back identical`)
    t.equal(store.has(result.id), true)
    t.equal(store.getMeta(result.id)?.sizeBytes, raw.byteLength)
  }
  const stats = store.stats()
  t.equal(stats.messages, messages.length)
  t.equal(
    stats.rawBytes,
    messages.reduce((sum, raw) => sum + raw.byteLength, 0),
  )
  t.ok(stats.storedBytes < stats.rawBytes / 2, `compressed: ${stats.storedBytes} of ${stats.rawBytes} bytes`)
  t.equal(await store.getRaw('0'.repeat(64)), undefined, 'absent id')
  t.equal(store.getMeta('not-an-id'), undefined, 'malformed id is simply absent')
  t.equal(store.has('0'.repeat(64)), false)
})

t.test('precompressed bytes (from a parse worker) are used only when bound to the raw bytes by their SHA-256', async (t) => {
  const { store, logger } = await newStore(t)
  const raw = generatedMessage(11, 3)
  const good = deflateRawSync(raw)
  const used = await store.ingest({ ...requestFor(raw, {}, 'precompressed'), encoded: { codec: 'deflate-raw', bytes: good, rawSha256: sha256(raw) } })
  t.equal(store.stats().storedBytes, good.byteLength, 'the given blob is what is stored')
  t.ok(Buffer.from((await store.getRaw(used.id))!).equals(raw), 'and it restores the raw bytes')

  // A blob made from other bytes (a mix-up between messages) must not be stored under this id.
  const other = generatedMessage(11, 4)
  const wrong = { codec: 'deflate-raw' as const, bytes: deflateRawSync(generatedMessage(11, 5)), rawSha256: sha256(generatedMessage(11, 5)) }
  const ignored = await store.ingest({ ...requestFor(other, {}, 'mismatched'), encoded: wrong })
  t.ok(Buffer.from((await store.getRaw(ignored.id))!).equals(other), 'a mismatched blob is ignored: the raw bytes are compressed again and come back exactly')
  t.ok(
    logger.records.some((record) => record.level === 'warn' && /precompressed/.test(record.msg)),
    'and the mix-up is logged',
  )
  const identity = generatedMessage(11, 6)
  const shortIdentity = await store.ingest({ ...requestFor(identity, {}, 'identity'), encoded: { codec: 'identity', bytes: identity.subarray(1), rawSha256: sha256(identity) } })
  t.ok(Buffer.from((await store.getRaw(shortIdentity.id))!).equals(identity), 'an identity blob of the wrong length is ignored too')
  t.equal((await store.verify()).corrupt, 0, 'verify finds every message intact')
})

t.test('a duplicate is stored once and every delivery is recorded, with envelope and BCC', async (t) => {
  const { store, clock } = await newStore(t)
  const raw = generatedMessage(11, 3)
  const first = await store.ingest({ raw, parsed: parsedFor('dup', ['no-date']), delivery: deliveryFor({ source: 'smtp', envelopeTo: ['a@x.test'] }) })
  const storedBytes = store.stats().storedBytes
  clock.advance(5000)
  const second = await store.ingest({
    raw: Buffer.from(raw),
    parsed: parsedFor('dup', ['no-date']),
    delivery: deliveryFor({
      source: 'journal',
      sourceName: 'exchange',
      envelopeFrom: 'carol@x.test',
      envelopeTo: ['a@x.test', 'secret@x.test'],
      envelopeBcc: ['secret@x.test'],
      journalEnvelopeText: 'Sender: carol@x.test',
      deliveryKey: 'imap:inbox:1:42',
    }),
  })
  t.same([first.duplicate, second.duplicate], [false, true])
  t.equal(second.id, first.id)
  t.equal(second.sequence, first.sequence + 1)
  t.equal(store.stats().storedBytes, storedBytes, 'no second blob')
  const again = await store.ingest({ raw, parsed: parsedFor('dup'), delivery: deliveryFor({ deliveryKey: 'imap:inbox:1:42' }) })
  t.same(again, { id: first.id, duplicate: true, sequence: second.sequence }, 'a delivery key already recorded adds nothing')

  const meta = store.getMeta(first.id) as MessageMeta
  t.equal(meta.deliveries.length, 2)
  t.same(
    meta.deliveries.map((delivery) => delivery.source),
    ['smtp', 'journal'],
    'oldest first',
  )
  t.same(meta.deliveries[1]!.envelopeBcc, ['secret@x.test'])
  t.equal(meta.deliveries[1]!.journalEnvelopeText, 'Sender: carol@x.test')
  t.same(meta.flags, ['no-date'])
  t.equal(meta.firstArchivedAtMs, 1_700_000_000_000)
  t.same(meta.from, ['alice@example.com'])
  const stats = store.stats()
  t.same([stats.messages, stats.deliveries, stats.flaggedMessages, stats.lastSequence], [1, 2, 1, 2])

  // Concurrent copies of new bytes: exactly one stores them.
  const raw2 = generatedMessage(11, 4)
  const results = await Promise.all(Array.from({ length: 10 }, (_, index) => store.ingest(requestFor(raw2, { sourceName: `s${index}` }))))
  t.equal(results.filter((result) => !result.duplicate).length, 1, 'one of ten concurrent copies stores the bytes')
  t.equal(store.getMeta(results[0]!.id)?.deliveries.length, 10)
  t.equal(store.stats().messages, 2)
})

t.test('change log: contiguous sequences in order with kind, id, time and origin; paging', async (t) => {
  const { store, clock } = await newStore(t)
  const raws = Array.from({ length: 5 }, (_, index) => generatedMessage(21, index))
  const ids: string[] = []
  for (const raw of raws) {
    clock.advance(1000)
    ids.push((await store.ingest(requestFor(raw))).id)
  }
  clock.advance(1000)
  await store.ingest(requestFor(raws[0]!))
  const fromPeer = generatedMessage(21, 99)
  await store.ingest(requestFor(fromPeer, { source: 'mirror', sourceName: 'SN650-2' }, 'peer', 'SN650-2'))
  const all = store.changes(0, 100)
  t.same(
    all.map((entry) => entry.sequence),
    [1, 2, 3, 4, 5, 6, 7],
  )
  t.same(
    all.map((entry) => entry.kind),
    ['ingest', 'ingest', 'ingest', 'ingest', 'ingest', 'delivery', 'ingest'],
  )
  t.same(
    all.slice(0, 5).map((entry) => entry.id),
    ids,
  )
  t.equal(all[5]!.id, ids[0])
  t.same(
    all.map((entry) => entry.atMs - 1_700_000_000_000),
    [1000, 2000, 3000, 4000, 5000, 6000, 6000],
  )
  t.same(
    all.map((entry) => entry.origin),
    [null, null, null, null, null, null, 'SN650-2'],
  )
  t.equal(store.getMeta(sha256(fromPeer))?.origin, 'SN650-2')
  t.same(
    store.changes(2, 3).map((entry) => entry.sequence),
    [3, 4, 5],
    'after and limit',
  )
  t.same(store.changes(7, 10), [], 'nothing after the last')
  t.equal(store.lastSequence(), 7)
})

t.test('stats are kept in the transaction, survive a restart, and listIds pages through every id', async (t) => {
  const path = await tempDir('mailkeep-archive-')
  const first = await newStore(t, { path })
  const raws = Array.from({ length: 30 }, (_, index) => generatedMessage(31, index))
  for (const raw of raws) await first.store.ingest({ raw, parsed: parsedFor('s', raws.indexOf(raw) % 3 === 0 ? ['no-from'] : []), delivery: deliveryFor() })
  await first.store.ingest(requestFor(raws[0]!))
  const before = first.store.stats()
  t.same([before.messages, before.deliveries, before.flaggedMessages, before.lastSequence], [30, 31, 10, 31])
  t.equal(
    before.rawBytes,
    raws.reduce((sum, raw) => sum + raw.byteLength, 0),
  )
  t.ok(before.fileBytes > before.storedBytes, 'file size reported')
  t.equal(first.store.healthcheck().ok, true)
  await first.store.stop()
  await first.store.stop()
  t.equal(first.store.healthcheck().ok, false, 'not healthy when stopped')
  await rejectsWith(t, first.store.ingest(requestFor(raws[1]!)), 'STORE_UNAVAILABLE', true, 'ingest after stop')
  t.throws(() => first.store.stats(), { code: 'STORE_UNAVAILABLE' }, 'reads after stop')

  const second = await newStore(t, { path })
  const after = second.store.stats()
  t.same({ ...after, fileBytes: 0 }, { ...before, fileBytes: 0 }, 'counters survive the restart')
  t.same(second.store.changes(0, 100).length, 31)
  for (const raw of raws) t.ok(Buffer.from((await second.store.getRaw(sha256(raw)))!).equals(raw))
  const ids: string[] = []
  for (let page = second.store.listIds(null, 7); page.length > 0; page = second.store.listIds(page[page.length - 1]!, 7)) ids.push(...page)
  t.same(ids, raws.map(sha256).sort(), 'every id once, in id order')
  const report = await second.store.verify()
  t.same(report, { checked: 30, corruptIds: [], corrupt: 0, countersConsistent: true })
})

t.test('corruption: a flipped byte or a lost part is detected on read and by verify()', async (t) => {
  const path = await tempDir('mailkeep-archive-')
  const { store } = await newStore(t, { path })
  const compressible = generatedMessage(41, 1)
  const incompressible = randomBytes(5000)
  const missingPart = randomBytes(9000)
  const intact = generatedMessage(41, 3)
  const damagedRecord = generatedMessage(41, 9)
  for (const raw of [compressible, incompressible, missingPart, intact, damagedRecord]) await store.ingest(requestFor(raw))
  const sequences = store.changes(0, 10).map((entry) => entry.sequence)
  await store.stop()

  const root = open({ path, maxDbs: 12 })
  const blobs = root.openDB<Buffer, Buffer>(databaseNames.blobs, { encoding: 'binary', keyEncoding: 'binary' })
  for (const sequence of sequences.slice(0, 2)) {
    const key = blobPartKey(sequence, 0)
    const part = Buffer.from(blobs.get(key)!)
    part[Math.floor(part.length / 2)]! ^= 0x01
    await blobs.put(key, part)
  }
  await blobs.remove(blobPartKey(sequences[2]!, 1))
  const messages = root.openDB<unknown, Buffer>(databaseNames.messages, { keyEncoding: 'binary' })
  const deliveries = root.openDB<unknown, Buffer>(databaseNames.deliveries, { keyEncoding: 'binary' })
  await messages.put(idKey(sha256(damagedRecord)), { not: 'a record' })
  for (const { key } of deliveries.getRange({ start: idKey(sha256(intact)), limit: 1 })) await deliveries.put(Buffer.from(key), [1, 'x'])
  await root.close()

  const reopened = await newStore(t, { path })
  for (const raw of [compressible, incompressible, missingPart]) {
    await rejectsWith(t, reopened.store.getRaw(sha256(raw)), 'STORE_CORRUPT', false, `corrupt blob of ${raw.byteLength} bytes`)
  }
  t.ok(Buffer.from((await reopened.store.getRaw(sha256(intact)))!).equals(intact), 'the intact message still reads')
  t.throws(() => reopened.store.getMeta(sha256(intact)), { code: 'STORE_CORRUPT' }, 'an undecodable delivery record is reported')
  t.throws(() => reopened.store.getMeta(sha256(damagedRecord)), { code: 'STORE_CORRUPT' }, 'an undecodable message record is reported')
  const report = await reopened.store.verify()
  t.equal(report.corrupt, 4)
  t.same([report.checked, report.countersConsistent], [5, true], 'corrupt messages are checked and counted')
  t.same(report.corruptIds.sort(), [compressible, incompressible, missingPart, damagedRecord].map(sha256).sort())
  t.ok(
    reopened.logger.records.some((record) => record.level === 'error' && record.msg.includes('integrity')),
    'corruption is logged',
  )
})

t.test('concurrent ingests share commits (group commit)', async (t) => {
  const { store } = await newStore(t)
  const count = 200
  const results = await Promise.all(Array.from({ length: count }, (_, index) => store.ingest(requestFor(generatedMessage(51, index)))))
  const activity = store.writeActivity()
  t.equal(activity.ingests, count)
  t.equal(new Set(results.map((result) => result.sequence)).size, count, 'each ingest has its own sequence')
  t.ok(activity.commits < count / 4, `${activity.commits} commits for ${count} concurrent messages`)
  t.equal(store.stats().messages, count)
})

t.test('STORE_FULL when the volume is low (cached for freeSpaceCacheMs) or the archive reaches mapSizeBytes', async (t) => {
  let freeBytes = 10 * mib
  let calls = 0
  const volume = async () => {
    calls++
    if (freeBytes < 0) throw new Error('statfs failed')
    return { freeBytes }
  }
  const { store, clock, logger } = await newStore(t, { freeBytesMin: 64 * mib }, volume)
  const raw = generatedMessage(61, 0)
  await rejectsWith(t, store.ingest(requestFor(raw)), 'STORE_FULL', true, 'volume below freeBytesMin')
  freeBytes = 1024 * mib
  await rejectsWith(t, store.ingest(requestFor(raw)), 'STORE_FULL', true, 'the reading is trusted for a second')
  t.equal(calls, 1, 'one volume reading within the cache period')
  clock.advance(1000)
  await store.ingest(requestFor(raw))
  t.equal(calls, 2)
  freeBytes = -1
  clock.advance(1000)
  await store.ingest(requestFor(generatedMessage(61, 1)))
  t.ok(
    logger.records.some((record) => record.level === 'warn' && record.msg.includes('free space')),
    'an unreadable volume is logged, mail still accepted',
  )

  const small = await newStore(t, { mapSizeBytes: 2 * mib, freeBytesMin: 0 })
  let full: unknown
  for (let index = 0; index < 20 && !full; index++) {
    await small.store.ingest(requestFor(randomBytes(200_000))).catch((error: unknown) => {
      full = error
    })
  }
  t.ok(hasCode(full, 'STORE_FULL') && (full as ArchiveError).retryable, 'STORE_FULL at mapSizeBytes')
  t.ok(small.store.stats().fileBytes <= 2 * mib + 64 * 1024, `file stays near the map size: ${small.store.stats().fileBytes}`)
})

t.test('limits and lifecycle: MESSAGE_TOO_LARGE, not started, stop waits for writes in flight', async (t) => {
  const path = await tempDir('mailkeep-archive-')
  const logger = createMemoryLogger()
  const store = createArchiveStore({ logger, clock: createManualClock() }, { path, mapSizeBytes: 64 * mib, freeBytesMin: 0, messageBytesMax: 1000 })
  await rejectsWith(t, store.ingest(requestFor(Buffer.from('x'))), 'STORE_UNAVAILABLE', true, 'before start')
  t.throws(() => store.getMeta('0'.repeat(64)), { code: 'STORE_UNAVAILABLE' })
  t.equal(store.healthcheck().ok, false)
  await store.stop()
  await store.start()
  await store.start()
  await rejectsWith(t, store.ingest(requestFor(Buffer.alloc(1001))), 'MESSAGE_TOO_LARGE', false, 'over messageBytesMax')
  const inFlight = Array.from({ length: 20 }, (_, index) => store.ingest(requestFor(Buffer.from(`message ${index}`))))
  await store.stop()
  const settled = await Promise.allSettled(inFlight)
  t.same(
    settled.map((outcome) => outcome.status),
    Array(20).fill('fulfilled'),
    'writes accepted before stop complete',
  )
  await store.start()
  t.equal(store.stats().messages, 20, 'and are there after a restart')
  await store.stop()
})

t.test('the indexer writes in the message transaction; a failing indexer rolls back alone', async (t) => {
  const seen: Array<{ id: string; deliveries: number }> = []
  const removed: string[] = []
  let postings: Database<string, string> | undefined
  const indexer: ArchiveIndexer = {
    databasesNeeded: 1,
    open(root) {
      postings = root.openDB<string, string>('index-test', {})
    },
    messageStored(meta, parsed) {
      seen.push({ id: meta.id, deliveries: meta.deliveries.length })
      postings!.putSync(`${meta.id}:${meta.deliveries.length}`, parsed.subject ?? '')
      if (parsed.subject === 'explode') throw new Error('index bug')
    },
    messageRemoved(id) {
      removed.push(id)
      postings!.removeSync(`${id}:1`)
    },
  }
  const { store, logger } = await newStore(t, { indexer })
  const good = await store.ingest(requestFor(generatedMessage(71, 0), {}, 'hello'))
  await store.ingest(requestFor(generatedMessage(71, 0), { sourceName: 'again' }, 'hello'))
  t.same(
    seen,
    [
      { id: good.id, deliveries: 1 },
      { id: good.id, deliveries: 2 },
    ],
    'the indexer sees every delivery so far',
  )
  t.equal(postings!.get(`${good.id}:1`), 'hello', 'postings committed with the message')
  const bad = await store.ingest(requestFor(generatedMessage(71, 1), {}, 'explode'))
  t.equal(store.has(bad.id), true, 'the message is archived although the indexer threw')
  t.equal(postings!.get(`${bad.id}:1`), undefined, "the failing indexer's writes are rolled back")
  t.same(store.getMeta(bad.id)?.flags, ['index-failed'])
  t.equal(store.stats().flaggedMessages, 1)
  t.ok(logger.records.some((record) => record.level === 'error' && record.msg.includes('indexer')))

  const purged = await store.delete(good.id)
  t.same(removed, [good.id])
  t.equal(postings!.get(`${good.id}:1`), undefined, 'postings removed in the purge transaction')
  t.equal(purged.sequence, store.lastSequence())

  // Concurrent ingests share one commit: the one whose indexer throws is written again
  // without it; the others keep their postings.
  const subjects = ['one', 'two', 'explode', 'four', 'five']
  const batch = await Promise.all(subjects.map((subject, n) => store.ingest(requestFor(generatedMessage(72, n), {}, subject))))
  batch.forEach((result, n) => {
    t.equal(store.has(result.id), true, `${subjects[n]} archived`)
    t.equal(postings!.get(`${result.id}:1`), subjects[n] === 'explode' ? undefined : subjects[n], `${subjects[n]}: postings as its indexer left them`)
    t.same(store.getMeta(result.id)?.flags, subjects[n] === 'explode' ? ['index-failed'] : [])
  })

  // A purge goes on when the indexer throws on removal (the postings stay; verify reports them).
  const failRemoval = batch[0]!.id
  indexer.messageRemoved = (id) => {
    removed.push(id)
    postings!.removeSync(`${id}:1`)
    throw new Error('index bug on removal')
  }
  await store.delete(failRemoval)
  t.equal(store.has(failRemoval), false, 'purged although the indexer threw')
  t.equal(postings!.get(`${failRemoval}:1`), 'one', "the failing indexer's removal is rolled back")
  t.equal(logger.records.filter((record) => record.level === 'error' && record.msg.includes('indexer')).length, 3, 'each failure logged')
})

t.test('delete is the purge primitive: blob, metadata and deliveries go, a purge entry is logged', async (t) => {
  const { store } = await newStore(t)
  const keep = await store.ingest(requestFor(generatedMessage(81, 0)))
  const raw = generatedMessage(81, 1)
  const gone = await store.ingest({ raw, parsed: parsedFor('x', ['no-from']), delivery: deliveryFor({ deliveryKey: 'pop3:uidl:1' }) })
  await store.ingest(requestFor(raw, { sourceName: 'second' }))
  const before = store.stats()
  const result = await store.delete(gone.id)
  t.equal(store.has(gone.id), false)
  t.equal(await store.getRaw(gone.id), undefined)
  t.equal(store.getMeta(gone.id), undefined)
  const last = store.changes(result.sequence - 1, 10)
  t.same(
    last.map((entry) => [entry.sequence, entry.kind, entry.id]),
    [[result.sequence, 'purge', gone.id]],
  )
  const after = store.stats()
  t.same(
    [after.messages, after.deliveries, after.rawBytes, after.flaggedMessages],
    [before.messages - 1, before.deliveries - 2, before.rawBytes - raw.byteLength, before.flaggedMessages - 1],
  )
  t.ok(after.storedBytes < before.storedBytes)
  await rejectsWith(t, store.delete(gone.id), 'NOT_FOUND', false, 'purging twice')
  const again = await store.ingest({ raw, parsed: parsedFor('x'), delivery: deliveryFor({ deliveryKey: 'pop3:uidl:1' }) })
  t.equal(again.duplicate, false, 'the same bytes can be archived again after a purge, delivery key included')
  t.ok(Buffer.from((await store.getRaw(again.id))!).equals(raw))
  t.ok(Buffer.from((await store.getRaw(keep.id))!).equals(generatedMessage(81, 0)), 'other messages untouched')
  t.same(await store.verify(), { checked: 2, corruptIds: [], corrupt: 0, countersConsistent: true })
})

t.test('start fails early with typed errors on a foreign or damaged environment', async (t) => {
  const path = await tempDir('mailkeep-archive-')
  const { store } = await newStore(t, { path })
  await store.ingest(requestFor(Buffer.from('one')))
  await store.stop()
  const root = open({ path, maxDbs: 12 })
  const state = root.openDB(databaseNames.state, {})
  await state.put('format', { name: 'mailkeep-archive', version: 99, pageSizeBytes: 4096, createdAtMs: 0 })
  await root.close()
  const logger = createMemoryLogger()
  const options = { path, mapSizeBytes: 64 * mib, freeBytesMin: 0, messageBytesMax: mib }
  await rejectsWith(t, createArchiveStore({ logger, clock: createManualClock() }, options).start(), 'STORE_CORRUPT', false, 'another format version')

  const counters = await tempDir('mailkeep-archive-')
  const second = await newStore(t, { path: counters })
  await second.store.ingest(requestFor(Buffer.from('two')))
  await second.store.stop()
  const root2 = open({ path: counters, maxDbs: 12 })
  await root2.openDB(databaseNames.messages, { keyEncoding: 'binary' }).remove(idKey(sha256(Buffer.from('two'))))
  await root2.close()
  await rejectsWith(t, createArchiveStore({ logger, clock: createManualClock() }, { ...options, path: counters }).start(), 'STORE_CORRUPT', false, 'counters disagree with the contents')

  const garbage = await tempDir('mailkeep-archive-')
  await writeFile(join(garbage, 'data.mdb'), Buffer.alloc(64 * 1024, 0x5a))
  await rejectsWith(
    t,
    createArchiveStore({ logger, clock: createManualClock() }, { ...options, path: garbage }).start(),
    'STORE_CORRUPT',
    false,
    'a file that is not LMDB is refused before LMDB opens it',
  )
  const notWritable = createArchiveStore({ logger, clock: createManualClock() }, { ...options, path: join(garbage, 'data.mdb', 'archive') }).start()
  await rejectsWith(t, notWritable, 'STORE_UNAVAILABLE', true, 'directory cannot be created')
})

t.test('store id: random per archive, stable across restarts, given at first start to an archive made without one', async (t) => {
  const path = await tempDir('mailkeep-archive-')
  const first = await newStore(t, { path })
  const id = first.store.storeId()
  t.match(id, /^[0-9a-f]{32}$/, '128 bits as 32 lower-case hex digits')
  await first.store.ingest(requestFor(generatedMessage(91, 0)))
  await first.store.stop()
  t.throws(() => first.store.storeId(), { code: 'STORE_UNAVAILABLE' }, 'refused while stopped, like other reads')
  const again = await newStore(t, { path })
  t.equal(again.store.storeId(), id, 'the same after a restart')
  const other = await newStore(t)
  t.not(other.store.storeId(), id, 'another archive has another id')

  const fixed = Buffer.from('00112233445566778899aabbccddeeff', 'hex')
  const injected = createArchiveStore(
    { logger: createMemoryLogger(), clock: createManualClock(), randomBytes: () => Buffer.from(fixed) },
    { path: await tempDir('mailkeep-archive-'), mapSizeBytes: 64 * mib, freeBytesMin: 0, messageBytesMax: mib },
  )
  await injected.start()
  t.equal(injected.storeId(), fixed.toString('hex'), 'made from the injected random source')
  await injected.stop()

  // An archive written before store ids existed: the key is simply absent.
  await again.store.stop()
  const root = open({ path, maxDbs: 12 })
  await root.openDB(databaseNames.state, {}).remove('identity')
  await root.close()
  const upgraded = await newStore(t, { path })
  const given = upgraded.store.storeId()
  t.match(given, /^[0-9a-f]{32}$/)
  t.not(given, id, 'a new id: the archive lost its identity (as a wiped volume would)')
  t.ok(
    upgraded.logger.records.some((record) => record.msg.includes('store id')),
    'the new id is logged',
  )
  t.equal(upgraded.store.stats().messages, 1, 'the messages are untouched')
  await upgraded.store.stop()
  const afterUpgrade = await newStore(t, { path })
  t.equal(afterUpgrade.store.storeId(), given, 'the id given at the upgrade was written durably')
  await afterUpgrade.store.stop()

  const root2 = open({ path, maxDbs: 12 })
  await root2.openDB(databaseNames.state, {}).put('identity', { storeId: 'not hex', createdAtMs: 0 })
  await root2.close()
  await rejectsWith(
    t,
    createArchiveStore({ logger: createMemoryLogger(), clock: createManualClock() }, { path, mapSizeBytes: 64 * mib, freeBytesMin: 0, messageBytesMax: mib }).start(),
    'STORE_CORRUPT',
    false,
    'a damaged identity is refused, not replaced',
  )
})
