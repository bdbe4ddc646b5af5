import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { decodeBlob } from '../../../firmware/archive/codec.js'
import { availableParallelism } from 'node:os'
import { createMemoryLogger, type Logger } from '../../../firmware/common/logger.js'
import { hasCode } from '../../../firmware/common/errors.js'
import { createMimeParser, defaultMimeParserOptions } from '../../../firmware/mime/parser.js'
import { createArchiveStore } from '../../../firmware/archive/store.js'
import type { ArchiveIndexer, MessageMeta } from '../../../firmware/archive/types.js'
import type { ParsedMessage } from '../../../firmware/mime/types.js'
import { createPrepareJob, type PreparedMessage } from '../../../firmware/sources/parse-job.js'
import { createParsePool, parsePoolDefaults, parseWorkersDefault, type ParsePool, type ParsePoolOptions } from '../../../firmware/sources/parse-pool.js'
import { createIngestPipeline } from '../../../firmware/sources/pipeline.js'
import { tempDir } from '../../helpers/service.js'
import { deliveryFor } from '../archive/fixtures/messages.js'
import { exchangeJournalReport } from '../../helpers/journal-report.js'
import { waitUntil } from '../../helpers/wait.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')
const fixtureModule = new URL('./fixtures/prepare-index.ts', import.meta.url)
const mimeFixture = (name: string) => readFile(new URL(`../mime/fixtures/${name}`, import.meta.url))

function message(subject: string, body = 'Hello there.\r\n'): Buffer {
  return Buffer.from(
    `From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: ${subject}\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\nMessage-ID: <${sha256(Buffer.from(subject)).slice(0, 12)}@example.com>\r\n\r\n${body}`,
    'latin1',
  )
}

const journalOriginal = message('quarterly numbers', 'The numbers.\r\n')
const journalReport = exchangeJournalReport(journalOriginal)

function inProcessJob(logger: Logger) {
  return createPrepareJob({ logger, parser: createMimeParser({ logger }, { ...defaultMimeParserOptions }) })
}

async function startedPool(t: TestContext, overrides: Partial<ParsePoolOptions> = {}): Promise<{ pool: ParsePool; logger: ReturnType<typeof createMemoryLogger> }> {
  const logger = createMemoryLogger()
  const pool = createParsePool(
    { logger, inProcess: inProcessJob(logger) },
    {
      ...parsePoolDefaults,
      workers: 1,
      mime: { ...defaultMimeParserOptions },
      indexPrepare: { moduleUrl: fixtureModule, exportName: 'prepareSubjectWords', options: { limit: 7 } },
      ...overrides,
    },
  )
  await pool.start()
  t.teardown(() => pool.stop())
  return { pool, logger }
}

/** Waits until the pool's workers are ready (a worker loads TypeScript under tap: seconds). */
async function ready(pool: ParsePool, workers = 1): Promise<void> {
  await waitUntil(() => pool.stats().ready >= workers, { what: `${workers} parse workers ready`, timeoutMs: 60_000, intervalMs: 20, observe: () => pool.stats() })
}

async function assertEncodedMatches(t: TestContext, prepared: PreparedMessage, label: string): Promise<void> {
  t.ok(prepared.encoded, `${label}: compressed on the worker`)
  const encoded = prepared.encoded!
  t.equal(encoded.rawSha256, sha256(prepared.bytes), `${label}: the blob is bound to the bytes by their SHA-256`)
  const restored = await decodeBlob(encoded.codec, encoded.bytes, prepared.bytes.byteLength)
  t.equal(Buffer.compare(Buffer.from(restored), Buffer.from(prepared.bytes)), 0, `${label}: the blob restores the bytes exactly`)
}

t.test('a worker prepares what the event loop would: parse and flags, journal unwrap, blob, index prepare', async (t) => {
  const { pool, logger } = await startedPool(t)
  const reference = inProcessJob(createMemoryLogger())
  const samples: [string, Buffer][] = [
    ['clean', message('plain words here')],
    ['nul bytes', await mimeFixture('nul-bytes.eml')],
    ['8-bit headers', await mimeFixture('eight-bit-latin1-headers.eml')],
    ['no headers', await mimeFixture('no-headers.txt')],
    ['unclosed boundary', await mimeFixture('unclosed-boundary.eml')],
    ['attachments', await mimeFixture('text-and-html-attachments.eml')],
    ['empty', Buffer.alloc(0)],
    ['journal report', journalReport],
  ]
  const results = await Promise.all(samples.map(([, raw]) => pool.prepare(raw)))
  for (const [index, [label, raw]] of samples.entries()) {
    const prepared = results[index]!
    const expected = await reference(raw)
    t.same(prepared.parsed, expected.parsed, `${label}: same parse result and flags as on the event loop`)
    t.equal(Buffer.compare(Buffer.from(prepared.bytes), Buffer.from(expected.bytes)), 0, `${label}: same bytes to archive`)
    await assertEncodedMatches(t, prepared, label)
    t.same(
      prepared.indexPrepared,
      { words: (expected.parsed.subject ?? '').toLowerCase().split(/\s+/).filter(Boolean), options: { limit: 7 }, thread: (prepared.indexPrepared as { thread: number }).thread },
      `${label}: index prepared on the worker with its options`,
    )
    t.not((prepared.indexPrepared as { thread: number }).thread, 0, `${label}: on a worker thread, not the event loop`)
  }
  const journal = results[samples.length - 1]!
  t.equal(Buffer.from(journal.bytes).toString('latin1'), journalOriginal.toString('latin1').replace(/\r\n$/, ''), 'journal report: the original is cut out byte-exact')
  t.same(journal.journal?.bcc, ['carol.hidden@example.com'], 'journal report: envelope BCC recipients come back')
  t.ok(results[0]!.parsed.flags.length === 0 && results[1]!.parsed.flags.includes('nul-bytes'), 'flags survive the trip between threads')
  t.equal(samples[0]![1].byteLength > 0 && Buffer.from(samples[0]![1]).toString('latin1').includes('plain words'), true, "the caller's bytes are untouched (copied to the worker, not moved)")
  const stats = pool.stats()
  t.equal(stats.completed, samples.length, 'every message went through the worker')
  t.equal(stats.inProcess, 0)
  t.equal(stats.indexPrepare, true)

  const throwing = await pool.prepare(message('THROW-PREPARE now'))
  t.equal(throwing.indexPrepared, undefined, 'a prepare step that throws gives no prepared result (the index works in the transaction)')
  t.equal(throwing.parsed.subject, 'THROW-PREPARE now', 'the message is parsed anyway')
  t.ok(
    logger.records.some((record) => record.level === 'warn' && /index prepare failed/.test(record.msg)),
    'and it is logged',
  )
})

t.test('a message that crashes its worker twice, or outlives jobTimeoutMs, is archived with headers only; the others it shared the worker with are not harmed', async (t) => {
  const { pool, logger } = await startedPool(t, { restartDelayMs: 10, jobTimeoutMs: 2_000 })
  await ready(pool)
  const crashing = message('CRASH-WORKER please')
  const innocents = [message('innocent one'), message('innocent two'), message('innocent three')]
  const results = await Promise.all([pool.prepare(crashing), ...innocents.map((raw) => pool.prepare(raw))])
  const poisoned = results[0]!
  t.equal(poisoned.parsed.subject, 'CRASH-WORKER please', 'header metadata is still read')
  t.ok(poisoned.parsed.flags.includes('parse-failed'), 'flagged parse-failed')
  t.notOk(poisoned.parsed.flags.includes('oversize-for-parse'), 'without the header-only parser’s own flag')
  t.equal(Buffer.compare(Buffer.from(poisoned.bytes), crashing), 0, 'its bytes are kept as received')
  t.equal(poisoned.encoded, undefined, 'the store compresses it itself')
  for (const [index, raw] of innocents.entries()) {
    const result = results[index + 1]!
    t.same(result.parsed.flags, [], `innocent ${index + 1}: fully parsed, no flags`)
    t.equal(Buffer.compare(Buffer.from(result.bytes), raw), 0, `innocent ${index + 1}: bytes intact`)
    await assertEncodedMatches(t, result, `innocent ${index + 1}`)
  }
  const stats = pool.stats()
  t.equal(stats.poisoned, 1, 'one message was taken as the cause')
  t.ok(stats.crashes >= 2, `the worker crashed twice and was restarted (${stats.crashes} crashes)`)
  t.ok(
    logger.records.some((record) => record.level === 'error' && /crashed or outlived/.test(record.msg)),
    'the poisoned message is logged as an error',
  )
  await ready(pool)
  const after = await pool.prepare(message('after the crashes'))
  t.equal(after.parsed.subject, 'after the crashes', 'the restarted worker parses the next message')
  t.equal(pool.stats().completed, innocents.length + 1)

  // A message that outlives jobTimeoutMs: its worker is terminated, the message archived with headers only.
  const [hung, next] = await Promise.all([pool.prepare(message('HANG-WORKER forever')), pool.prepare(message('queued behind it'))])
  t.equal(hung.parsed.flags[0], 'parse-failed', 'the hanging message is flagged parse-failed')
  t.equal(hung.parsed.subject, 'HANG-WORKER forever')
  t.same(next.parsed.flags, [], 'the message that shared its worker is parsed by the new worker')
  t.equal(pool.stats().poisoned, 2)
})

t.test('jobTimeoutMs counts from the last result of the worker: messages queued behind slow ones on a busy worker are not timed out', async (t) => {
  // Four messages of 700 ms each handed to one worker at once: the last finishes ~2.8 s after
  // it was handed over, past the 1.5 s limit, but the worker finished one every 700 ms.
  const { pool } = await startedPool(t, { jobTimeoutMs: 1_500, jobsPerWorkerMax: 4 })
  await ready(pool)
  const results = await Promise.all([1, 2, 3, 4].map((n) => pool.prepare(message(`SLOW-WORKER ${n}`))))
  t.same(
    results.map((result) => result.parsed.flags),
    [[], [], [], []],
    'all parsed, none taken for stuck',
  )
  t.equal(pool.stats().poisoned, 0)
  t.equal(pool.stats().crashes, 0)
})

t.test('messages in flight spread over the workers instead of queueing on the first', async (t) => {
  const { pool } = await startedPool(t, { workers: 2 })
  await ready(pool, 2)
  const results = await Promise.all([1, 2, 3, 4].map((n) => pool.prepare(message(`spread ${n}`))))
  const threads = new Set(results.map((result) => (result.indexPrepared as { thread: number }).thread))
  t.equal(threads.size, 2, 'four messages on two workers')
  t.notOk(threads.has(0), 'none on the event loop')
})

t.test('without a worker count the pool runs one worker per core', async (t) => {
  const { pool } = await startedPool(t, { workers: undefined })
  t.equal(parseWorkersDefault(), Math.max(1, availableParallelism()))
  t.equal(pool.stats().workers, parseWorkersDefault())
  await ready(pool, parseWorkersDefault())
  const prepared = await pool.prepare(message('per core'))
  t.equal(prepared.parsed.subject, 'per core')
})

t.test('when workers cannot start, every message is prepared on the event loop', async (t) => {
  const { pool, logger } = await startedPool(t, { workerUrl: new URL('./fixtures/no-such-worker.ts', import.meta.url), restartDelayMs: 1, startFailuresMax: 1 })
  const raws = [message('first'), message('second'), journalReport]
  const results = await Promise.all(raws.map((raw) => pool.prepare(raw)))
  t.same(
    results.map((result) => result.parsed.subject),
    ['first', 'second', 'quarterly numbers'],
    'each message parsed',
  )
  for (const result of results) await assertEncodedMatches(t, result, String(result.parsed.subject))
  t.equal(pool.stats().inProcess, raws.length, 'on the event loop')
  t.equal(pool.stats().completed, 0)
  t.ok(
    logger.records.some((record) => /cannot start/.test(record.msg)),
    'the log says why',
  )
  t.equal(pool.healthcheck().ok, true, 'the pool stays healthy: mail is still archived')
  t.match(pool.healthcheck().detail, /event loop/)
})

t.test('bounded queue, stop() finishing what waits, and workers without an index prepare step', async (t) => {
  const { pool, logger } = await startedPool(t, { queueDepthMax: 2, indexPrepare: { moduleUrl: fixtureModule, exportName: 'notAFunction' } })
  // Just started: the worker is not ready yet, so everything waits in the queue.
  const accepted = [pool.prepare(message('one')), pool.prepare(message('two'))]
  try {
    await pool.prepare(message('three'))
    t.fail('a third message was queued')
  } catch (error) {
    t.ok(hasCode(error, 'STORE_UNAVAILABLE'), 'beyond queueDepthMax: refused with STORE_UNAVAILABLE')
    t.equal((error as { retryable: boolean }).retryable, true, 'retryable: the SMTP sender gets 4xx')
  }
  const results = await Promise.all(accepted)
  t.same(
    results.map((result) => result.parsed.subject),
    ['one', 'two'],
    'the queued messages complete',
  )
  t.same(
    results.map((result) => result.indexPrepared),
    [undefined, undefined],
    'no prepared result when the module exports no function',
  )
  t.equal(pool.stats().indexPrepare, false, 'stats say the workers do not prepare')
  t.ok(
    logger.records.some((record) => /index prepare step is not available/.test(record.msg)),
    'logged',
  )

  const pending = [pool.prepare(message('before stop 1')), pool.prepare(message('before stop 2'))]
  await pool.stop()
  t.same(
    (await Promise.all(pending)).map((result) => result.parsed.subject),
    ['before stop 1', 'before stop 2'],
    'stop() finishes what waits',
  )
  const after = await pool.prepare(message('after stop'))
  t.equal(after.parsed.subject, 'after stop', 'after stop, prepare runs on the event loop')
  t.equal(pool.stats().ready, 0, 'no worker left running')
})

t.test('pipeline with a pool: the store takes the worker’s blob and index prepare result; /raw stays byte-identical', async (t) => {
  const path = await tempDir('mailkeep-parse-pool-')
  const logger = createMemoryLogger()
  const seen: { id: string; prepared: unknown; subject: string | null }[] = []
  const indexer: ArchiveIndexer = {
    databasesNeeded: 0,
    open() {},
    messageStored(meta: MessageMeta, parsed: ParsedMessage, prepared?: unknown) {
      seen.push({ id: meta.id, prepared, subject: parsed.subject })
    },
    messageRemoved() {},
  }
  const archive = createArchiveStore(
    { logger, clock: { now: () => Date.now(), monotonicMs: () => performance.now() } },
    { path, mapSizeBytes: 256 * 1024 * 1024, freeBytesMin: 0, messageBytesMax: 8 * 1024 * 1024, indexer },
  )
  await archive.start()
  t.teardown(() => archive.stop())
  const { pool } = await startedPool(t)
  const pipeline = createIngestPipeline(
    { logger, parser: createMimeParser({ logger }, { ...defaultMimeParserOptions }), archive, prepare: pool.prepare },
    { messageBytesMax: 8 * 1024 * 1024 },
  )
  const raws = [message('stored via the pool'), await mimeFixture('text-and-html-attachments.eml'), journalReport]
  const results = await Promise.all(raws.map((raw) => pipeline.submit(raw, deliveryFor())))
  t.equal(results[0]!.id, sha256(raws[0]!), 'the id is the SHA-256 of the bytes')
  for (const [index, result] of results.entries()) {
    const stored = await archive.getRaw(result.id)
    const expected = index === 2 ? Buffer.from(journalOriginal.toString('latin1').replace(/\r\n$/, ''), 'latin1') : raws[index]!
    t.equal(Buffer.compare(Buffer.from(stored!), expected), 0, `message ${index + 1}: byte-identical from the store`)
  }
  t.match(
    seen[0],
    { id: results[0]!.id, prepared: { words: ['stored', 'via', 'the', 'pool'], options: { limit: 7 }, thread: Number }, subject: 'stored via the pool' },
    'the indexer got the worker’s prepare result',
  )
  t.same(archive.getMeta(results[2]!.id)?.deliveries[0]?.envelopeBcc, ['carol.hidden@example.com'], 'the journal envelope BCC is recorded')
  t.ok(archive.stats().storedBytes < archive.stats().rawBytes, 'blobs are stored compressed')
  t.equal(pool.stats().completed, raws.length)
})
