import t from 'tap'
import { phraseStreamOf } from '../../../firmware/index/phrase-stream.js'
import { createHash } from 'node:crypto'
import { inflateRawSync } from 'node:zlib'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { open, type RootDatabase } from 'lmdb'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createRandom, systemClock, type Clock } from '../../../firmware/common/clock.js'
import { createIndex, defaultIndexOptions, type IndexOptions, type SearchIndex } from '../../../firmware/index/search-index.js'
import { sortByUtf8 } from '../../../firmware/index/flush-build.js'
import { analyzeDocument, analyzeSequential } from '../../../firmware/index/document-analysis.js'
import { bodyStreamOf } from '../../../firmware/index/display-record.js'
import { indexInputFromMeta, type IndexInput } from '../../../firmware/index/index-input.js'
import { isPreparedDocument, prepareDocument } from '../../../firmware/index/prepared-document.js'
import { postingsOf } from '../../../firmware/index/forward-record.js'
import { tokenHash } from '../../../firmware/index/term-table.js'
import { IndexError, QuerySyntaxError } from '../../../firmware/index/errors.js'
import { createArchiveIndexer } from '../../../firmware/index/archive-indexer.js'
import { createSearchRoute } from '../../../firmware/index/search-route.js'
import { createIndexMaintenance } from '../../../firmware/index/maintenance.js'
import { allMatches } from '../../../boot/policy-query.js'
import { indexPrepareModule } from '../../../boot/compose-store.js'
import { createArchiveStore } from '../../../firmware/archive/store.js'
import { createIngestPipeline } from '../../../firmware/sources/pipeline.js'
import { createMimeParser, defaultMimeParserOptions } from '../../../firmware/mime/parser.js'
import type { Address, ParsedAttachment, ParsedMessage } from '../../../firmware/mime/types.js'

/** tap's test object, as the callback of t.test receives it. */
type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const day = (iso: string): number => Date.parse(`${iso}T12:00:00Z`)
const idOf = (name: string): string => createHash('sha256').update(name).digest('hex')

function address(text: string): Address {
  const match = /^(.*?)\s*<(.+)>$/.exec(text)
  return match ? { name: match[1]!, address: match[2]!.toLowerCase() } : { name: '', address: text.toLowerCase() }
}

interface Spec {
  from?: string
  to?: string[]
  cc?: string[]
  bcc?: string[]
  subject?: string
  text?: string
  date?: string | null
  attachments?: Array<{ filename: string; text?: string }>
}

function parsedOf(spec: Spec): ParsedMessage {
  const attachments: ParsedAttachment[] = (spec.attachments ?? []).map((attachment) => ({
    filename: attachment.filename,
    contentType: 'application/octet-stream',
    sizeBytes: 10,
    sha256: idOf(attachment.filename),
    text: attachment.text ?? null,
  }))
  return {
    messageId: null,
    dateMs: spec.date ? day(spec.date) : null,
    from: spec.from ? [address(spec.from)] : [],
    to: (spec.to ?? []).map(address),
    cc: (spec.cc ?? []).map(address),
    bcc: (spec.bcc ?? []).map(address),
    subject: spec.subject ?? null,
    text: spec.text ?? '',
    attachments,
    flags: [],
  }
}

const archivedAtMs = day('2024-03-01')

function inputOf(name: string, spec: Spec, envelope: { to?: string[]; bcc?: string[] } = {}): IndexInput {
  return { id: idOf(name), parsed: parsedOf(spec), envelopeTo: envelope.to, envelopeBcc: envelope.bcc, archivedAtMs }
}

/** The hand-made set: names are the letters used in expectations. */
const corpus: Record<string, Spec> = {
  A: {
    from: 'Alice Smith <alice@example.com>',
    to: ['bob@example.org'],
    subject: 'Quarterly report',
    text: 'The quarterly numbers are in. Revenue grew in Zürich.',
    date: '2024-01-10',
    attachments: [{ filename: 'report.pdf' }],
  },
  B: {
    from: 'Bob <bob@example.org>',
    to: ['Alice Smith <alice@example.com>'],
    cc: ['carol@sub.example.com'],
    subject: 'Re: Quarterly report',
    text: 'Thanks, the numbers look good. Lunch on Friday?',
    date: '2024-02-01',
  },
  C: {
    from: 'carol@sub.example.com',
    to: ['team@example.net'],
    subject: 'Lunch',
    text: 'Lunch friday at the café <b>tomorrow</b>',
    date: '2024-02-15',
    attachments: [{ filename: 'menu.txt', text: 'pizza margherita special' }],
  },
  D: { from: 'spammer@spam.biz', to: ['victim@example.net'], subject: 'FREE MONEY', text: 'free money now, click here', date: '2023-12-01' },
  E: { from: 'dave@example.com', to: ['team@example.net'], bcc: ['secret@example.com'], subject: 'Numbers', text: 'numbers quarterly draft', date: '2024-01-10' },
  F: { from: 'erin@example.net', subject: 'undated', text: 'undated message about revenue', date: null },
}
const names = Object.keys(corpus)
const nameOfId = new Map([...names, 'G', 'H'].map((name) => [idOf(name), name]))

interface Harness {
  root: RootDatabase
  index: SearchIndex
  /** Names of the hits of a query, in result order (all pages). */
  query(query: string): string[]
}

/**
 * A fresh index in its own environment. Flushes happen inside the ingest that fills the
 * tail unless `options.flushInBackground` says otherwise: most tests here check what a
 * flush writes at a known point; the background mode has tests of its own.
 */
function makeHarness(t: TestContext, options: Partial<IndexOptions> = {}, clock: Clock = systemClock, logger = createMemoryLogger('info')): Harness {
  // A path with a dot is a file to lmdb: give it a folder name without one.
  const root = open({ path: join(t.testdir(), 'lmdb'), maxDbs: 12 })
  t.teardown(() => root.close())
  const index = createIndex({ logger, clock }, { flushInBackground: false, ...options })
  index.databases(root)
  return {
    root,
    index,
    query(query) {
      const out: string[] = []
      let cursor: string | null = null
      do {
        const page = index.searchBlocking(query, { limit: 2, cursor })
        out.push(...page.hits.map((hit) => nameOfId.get(hit.id) ?? hit.id))
        cursor = page.nextCursor
      } while (cursor)
      return out
    },
  }
}

function indexAll(harness: Harness): void {
  harness.root.transactionSync(() => {
    for (const name of names) harness.index.indexMessage(inputOf(name, corpus[name]!))
  })
}

const expectations: Array<[string, string[]]> = [
  ['quarterly', ['B', 'E', 'A']],
  ['Quarterly REPORT', ['B', 'A']],
  ['"quarterly report"', ['B', 'A']],
  ['"report quarterly"', []],
  ['"numbers are"', ['A']],
  ['numbers -draft', ['B', 'A']],
  ['numbers NOT draft', ['B', 'A']],
  ['lunch OR pizza', ['C', 'B']],
  ['(free OR lunch) -click', ['C', 'B']],
  ['FREE money', ['D']],
  ['from:alice', ['A']],
  ['from:alice@example.com', ['A']],
  ['from:"Alice Smith"', ['A']],
  ['from:example.org', ['B']],
  ['from:example.com', ['C', 'E', 'A']],
  ['to:example.com', ['B', 'E']],
  ['to:secret@example.com', ['E']],
  ['to:team@example.net', ['C', 'E']],
  ['subject:lunch', ['C']],
  ['subject:"quarterly report" -from:bob', ['A']],
  ['attachment:report.pdf', ['A']],
  ['attachment:pdf', ['A']],
  ['attachment:menu', ['C']],
  ['has:attachment', ['C', 'A']],
  ['pizza', ['C']],
  ['"pizza margherita"', ['C']],
  ['zurich', ['A']],
  ['ZÜRICH', ['A']],
  ['cafe', ['C']],
  ['café tomorrow', ['C']],
  ['after:2024-01-10 before:2024-02-01', ['E', 'A']],
  ['after:2024-02-01', ['F', 'C', 'B']],
  ['before:2024-01-10', ['D']],
  ['revenue', ['F', 'A']],
  ['revenue -after:2024-02-01', ['A']],
  ['revenue after:2024-02-01', ['F']],
  ['nothingmatches', []],
  ['quarterly nothingmatches', []],
]

/** Lets the event loop run (a background flush build takes a turn per slice). */
const turns = async (count = 20): Promise<void> => {
  for (let turn = 0; turn < count; turn++) await new Promise((resolve) => setImmediate(resolve))
}

for (const [pendingDocumentsMax, flushInBackground] of [
  [1_000, false],
  [2, false],
  [2, true],
] as const) {
  t.test(`every query form (pending tail of ${pendingDocumentsMax}${flushInBackground ? ', flushes built in the background' : ''})`, async (t) => {
    const harness = makeHarness(t, { pendingDocumentsMax, flushInBackground })
    if (flushInBackground) {
      // One transaction per message with event-loop turns between, as the archive ingests.
      for (const name of names) {
        harness.root.transactionSync(() => harness.index.indexMessage(inputOf(name, corpus[name]!)))
        await turns()
      }
      // A build may still be under way on a loaded machine (CI once read one flush of four
      // documents and two pending): wait for it; then a flush of at least three was written.
      await harness.index.settled()
    } else indexAll(harness)
    const stats = harness.index.stats()
    t.equal(stats.documents, names.length)
    if (flushInBackground) t.ok(stats.flushes >= 1 && stats.pending <= names.length - 3, `postings flushed in the background: ${JSON.stringify(stats)}`)
    else t.ok(pendingDocumentsMax === 2 ? stats.flushes >= 2 && stats.pending < 2 : stats.flushes === 0, 'postings flushed as configured')
    for (const [query, expected] of expectations) {
      t.same(harness.query(query), expected, query)
      const page = harness.index.searchBlocking(query, { limit: 100 })
      t.equal(page.total, expected.length, `${query}: total`)
      t.equal(page.nextCursor, null)
    }
    const hit = harness.index.searchBlocking('zurich').hits[0]!
    t.equal(hit.subject, 'Quarterly report')
    t.equal(hit.from, 'Alice Smith <alice@example.com>')
    t.equal(hit.dateMs, day('2024-01-10'))
    t.match(hit.snippet, /Revenue grew in <mark>Zürich<\/mark>\./)
    const escaped = harness.index.searchBlocking('tomorrow').hits[0]!
    t.match(escaped.snippet, /café &lt;b&gt;<mark>tomorrow<\/mark>&lt;\/b&gt;/, 'snippets are HTML-escaped')
    const undated = harness.index.searchBlocking('undated').hits[0]!
    t.equal(undated.dateMs, archivedAtMs, 'no Date header: ordered by archive time')
  })
}

t.test('pagination: pages concatenate to the full result, stable while messages arrive', async (t) => {
  const harness = makeHarness(t, { pendingDocumentsMax: 7, searchLimitMax: 50 })
  const dated = (n: number): IndexInput => ({
    id: idOf(`page-${n}`),
    parsed: parsedOf({ subject: `page item ${n}`, text: 'common words here', date: `2020-01-${String(1 + (n % 5)).padStart(2, '0')}` }),
    archivedAtMs,
  })
  for (let n = 0; n < 40; n++) harness.index.indexMessage(dated(n))
  const full = harness.index.searchBlocking('common', { limit: 100 })
  t.equal(full.total, 40)
  t.equal(full.hits.length, 40)
  for (let index = 1; index < full.hits.length; index++) {
    t.ok(full.hits[index - 1]!.dateMs >= full.hits[index]!.dateMs, 'newest first')
  }
  const seen: string[] = []
  let cursor: string | null = null
  let pages = 0
  let added = 40
  do {
    const page = harness.index.searchBlocking('common', { limit: 6, cursor })
    t.ok(page.hits.length <= 6)
    seen.push(...page.hits.map((hit) => hit.id))
    cursor = page.nextCursor
    pages++
    // New mail between pages, dated before, between and after the pages already seen.
    for (let extra = 0; extra < 3; extra++) harness.index.indexMessage(dated(added++))
  } while (cursor && pages < 50)
  t.equal(new Set(seen).size, seen.length, 'no duplicates across pages')
  const originals = new Set(full.hits.map((hit) => hit.id))
  t.equal(seen.filter((id) => originals.has(id)).length, 40, 'every message present at the start is on exactly one page')
  t.equal(harness.index.searchBlocking('common', { limit: 1 }).total, added, 'total counts the new messages')

  t.throws(() => harness.index.searchBlocking('common', { cursor: 'not-a-cursor!' }), { code: 'BAD_CURSOR' })
  t.throws(() => harness.index.searchBlocking('common', { cursor: Buffer.from('9.1.1').toString('base64url') }), { code: 'BAD_CURSOR' })
  t.equal(harness.index.searchBlocking('common', { limit: 100_000 }).hits.length, harness.index.options.searchLimitMax, 'limit is capped')
  t.equal(harness.index.searchBlocking('common', { limit: 0 }).hits.length, 1, 'limit is at least 1')
})

for (const pendingDocumentsMax of [1_000, 1]) {
  t.test(`remove and re-index (pending tail of ${pendingDocumentsMax})`, async (t) => {
    const harness = makeHarness(t, { pendingDocumentsMax })
    indexAll(harness)
    t.same(harness.query('quarterly'), ['B', 'E', 'A'])
    t.ok(harness.index.removeMessage(idOf('B')))
    t.notOk(harness.index.removeMessage(idOf('B')), 'removing twice reports false')
    t.same(harness.query('quarterly'), ['E', 'A'])
    t.equal(harness.index.searchBlocking('quarterly').total, 2)
    t.same(harness.query('to:example.com'), ['E'])
    t.same(harness.query('after:2024-02-01'), ['F', 'C'], 'date scans skip removed messages')
    t.notOk(harness.index.has(idOf('B')))
    t.equal(harness.index.stats().documents, names.length - 1)

    // A later delivery of E (journal report) names a BCC recipient the first did not.
    t.same(harness.query('to:late@example.com'), [])
    const again = harness.index.indexMessage(inputOf('E', corpus.E!, { bcc: ['late@example.com'] }))
    t.ok(again.changed)
    t.same(harness.query('to:late@example.com'), ['E'])
    t.same(harness.query('to:late'), ['E'])
    t.same(harness.query('quarterly'), ['E', 'A'], 'a re-indexed message keeps its place and is not duplicated')
    t.notOk(harness.index.indexMessage(inputOf('E', corpus.E!, { bcc: ['late@example.com'] })).changed, 'same content: nothing written')
  })
}

t.test('indexing joins the caller transaction: an aborted ingest leaves nothing searchable', async (t) => {
  const harness = makeHarness(t)
  t.throws(() =>
    harness.root.transactionSync(() => {
      harness.index.indexMessage(inputOf('A', corpus.A!))
      throw new Error('archive write failed')
    }),
  )
  t.notOk(harness.index.has(idOf('A')))
  t.equal(harness.index.searchBlocking('quarterly').total, 0)
  await harness.root.transaction(() => {
    harness.index.indexMessage(inputOf('A', corpus.A!))
  })
  t.same(harness.query('quarterly'), ['A'], 'searchable once the archive transaction commits')
})

t.test('per-document records fill their pages: new docids are appended, not split into half-empty pages', async (t) => {
  const harness = makeHarness(t)
  // Words drawn at random so the deflated snippet text stays ~1.2 KB: three display records
  // fit a 4 KiB page, and a page split in half on every append would leave it half empty.
  const random = createRandom(7)
  const word = (): string => random.int(2 ** 31).toString(36)
  const count = 400
  await harness.root.transaction(() => {
    for (let n = 0; n < count; n++) harness.index.indexMessage(inputOf(`fill-${n}`, { subject: `fill ${n}`, text: Array.from({ length: 260 }, word).join(' '), date: '2024-01-10' }))
  })
  // Records are stored in parts (docid, part): their bytes are every value's bytes.
  const documents = harness.root.openDB<Buffer, Buffer>('index-documents', { encoding: 'binary', keyEncoding: 'binary' })
  let recordBytes = 0
  for (const { value } of documents.getRange({})) recordBytes += value.byteLength
  t.ok(recordBytes / count > 1000 && recordBytes / count < 1900, `display records are 1–1.9 KB (got ${Math.round(recordBytes / count)} B on average)`)
  const disk = harness.index.diskBytes()
  t.ok(disk.documents < recordBytes * 1.15, `display records' pages ${disk.documents} B for ${recordBytes} B of records`)
})

t.test('posting chunks fill their pages: each flush appends after the previous ones', async (t) => {
  // Flushes of 50 documents sharing some words and each with rare ones: keyed by token first,
  // every flush would insert between the earlier flushes' keys and split pages in half; and a
  // key per token costs more than most tokens' postings.
  const harness = makeHarness(t, { pendingDocumentsMax: 50 })
  const random = createRandom(11)
  const word = (): string => {
    const drawn = random.int(2 ** 31)
    return (drawn % 3 === 0 ? 'common' : '') + drawn.toString(36)
  }
  const count = 600
  await harness.root.transaction(() => {
    for (let n = 0; n < count; n++) harness.index.indexMessage(inputOf(`chunk-${n}`, { subject: `chunk ${n}`, text: Array.from({ length: 40 }, word).join(' '), date: '2024-01-10' }))
  })
  t.ok(harness.index.stats().flushes >= 10, 'several flushes')
  const postings = harness.root.openDB<Buffer, Buffer>('index-postings', { encoding: 'binary', keyEncoding: 'binary' })
  let blockBytes = 0
  let blocks = 0
  // LMDB's own cost per entry (node header and slot, 10 bytes) is counted: what is left is page fill.
  for (const { key, value } of postings.getRange({})) {
    blockBytes += key.byteLength + value.byteLength + 10
    blocks++
  }
  const disk = harness.index.diskBytes()
  t.ok(disk.postings < blockBytes * 1.15, `posting pages ${disk.postings} B for ${blockBytes} B of blocks`)
  t.ok(blocks < harness.index.stats().flushes * 40, `tokens packed into blocks (${blocks} blocks)`)
  t.equal(harness.index.searchBlocking('chunk').total, count, 'a word of every document: found in every flush')
  t.same(harness.query('subject:"chunk 123"'), [idOf('chunk-123')], 'a word of one flush')
})

t.test('sortByUtf8 orders tokens as their UTF-8 bytes', async (t) => {
  // Characters from each range where UTF-16 and UTF-8 orders part: ASCII, below and above the surrogates, astral.
  const alphabet = ['a', 'z', '\u00e9', '\ud7ff', '\ue000', '\ufa0e', '\uffff', '\u{10000}', '\u{20000}', '\u{1f600}']
  const random = createRandom(7)
  for (let round = 0; round < 20; round++) {
    const tokens = Array.from({ length: 200 }, () => Array.from({ length: 1 + random.int(4) }, () => alphabet[random.int(alphabet.length)]!).join(''))
    const expected = [...tokens].sort((left, right) => Buffer.compare(Buffer.from(left), Buffer.from(right)))
    t.same(sortByUtf8([...tokens]), expected, `round ${round}`)
  }
  t.same(sortByUtf8(['b', 'a', 'ab']), ['a', 'ab', 'b'], 'ASCII only')
})

t.test('flushed tokens whose UTF-16 and UTF-8 orders differ are found', async (t) => {
  // U+FA0E is a CJK ideograph that folding keeps (no decomposition); U+20000 is astral: as
  // UTF-16 the astral one sorts first, as UTF-8 (the key order) after.
  const harness = makeHarness(t, { pendingDocumentsMax: 2 })
  const texts = ['\u{FA0E} plain', '\u{20000} plain', 'zebra \u{FA0E} \u{20000}', 'filler', 'filler']
  await harness.root.transaction(() => {
    texts.forEach((text, n) => harness.index.indexMessage(inputOf(`order-${n}`, { subject: `order ${n}`, text, date: `2024-01-1${n}` })))
  })
  t.ok(harness.index.stats().flushes >= 2, 'flushed')
  t.same(harness.query('\u{FA0E}'), [idOf('order-2'), idOf('order-0')])
  t.same(harness.query('\u{20000}'), [idOf('order-2'), idOf('order-1')])
  t.same(harness.query('zebra'), [idOf('order-2')])
})

t.test('a tail left by an unplanned stop is flushed in the background on request, and answers stay the same', async (t) => {
  const root = open({ path: join(t.testdir(), 'lmdb'), maxDbs: 12 })
  t.teardown(() => root.close())
  const before = createIndex({ logger: createMemoryLogger('error'), clock: systemClock }, { pendingDocumentsMax: 1_000 })
  before.databases(root)
  await root.transaction(() => {
    for (const name of names) before.indexMessage(inputOf(name, corpus[name]!))
  })
  const queries = ['quarterly', 'from:alice@example.com', '"quarterly report"', 'has:attachment', 'zurich']
  const answers = queries.map((query) => before.searchBlocking(query, { limit: 100 }).hits.map((hit) => hit.id))
  t.equal(before.stats().pending, names.length, 'all in the tail')
  t.ok(
    answers.every((ids) => ids.length > 0),
    'every query has hits',
  )
  // The process "crashed": a new index object over the same environment, nothing in memory.
  const after = createIndex({ logger: createMemoryLogger('error'), clock: systemClock }, { pendingDocumentsMax: 1_000 })
  after.databases(root)
  t.equal(after.flushPendingInBackground(), names.length, 'a flush of the whole tail starts')
  t.equal(after.flushPendingInBackground(), 0, 'not a second one while it runs')
  await after.settled()
  t.match(after.stats(), { pending: 0, flushes: 1, documents: names.length })
  t.same(
    queries.map((query) => after.searchBlocking(query, { limit: 100 }).hits.map((hit) => hit.id)),
    answers,
    'the same answers from the flushed postings',
  )
  t.equal(after.flushPendingInBackground(), 0, 'nothing left to flush')
  const off = createIndex({ logger: createMemoryLogger('error'), clock: systemClock }, { flushInBackground: false })
  off.databases(root)
  await root.transaction(() => off.indexMessage(inputOf('late', { subject: 'late budget', text: 'late', date: '2024-02-01' })))
  t.equal(off.flushPendingInBackground(), 0, 'with background flushes off, nothing starts')
  t.equal(off.stats().pending, 1)
})

t.test('prepare: the module boot hands the parse workers is this prepareDocument', async (t) => {
  // The workers load it by path: a path left behind by a move would only make them skip the
  // step (logged), and the index would analyse every message in the write transaction.
  const source = fileURLToPath(indexPrepareModule.moduleUrl).replace(/\.js$/, '.ts')
  const module = (await import(pathToFileURL(source).href)) as Record<string, unknown>
  t.equal(module[indexPrepareModule.exportName], prepareDocument)
})

t.test('prepare: a prepared document (cloned, as from a worker) indexes exactly like the one-pass analysis', async (t) => {
  const envelopes = [{}, { to: ['bob@example.org', 'list-member@example.net'], bcc: ['Hidden@Example.com'] }]
  for (const tokensPerDocumentMax of [defaultIndexOptions.tokensPerDocumentMax, 6, 3]) {
    for (const addressesPerDocumentMax of [defaultIndexOptions.addressesPerDocumentMax, 2]) {
      const limits = { ...defaultIndexOptions, tokensPerDocumentMax, addressesPerDocumentMax }
      for (const name of names) {
        for (const envelope of envelopes) {
          const input = { ...inputOf(name, corpus[name]!, envelope), envelopeFrom: 'Bounce@Example.org' }
          const prepared = structuredClone(prepareDocument(input.parsed, limits))
          t.ok(isPreparedDocument(prepared), 'plain data survives a structured clone')
          const { forward, record, truncated, terms, phraseStream } = analyzeDocument(input, limits, prepared)
          // A prepared document carries its text only compressed, as stored, and no body
          // stream: the one the index derives from the stored text must be the one-pass one.
          const { textDeflated, ...shown } = record
          const text = textDeflated ? inflateRawSync(textDeflated).toString('utf8') : shown.text!
          if (terms !== undefined) t.equal(forward.body, '', 'no body stream carried')
          const derived = { ...forward, body: terms === undefined ? forward.body : bodyStreamOf({ text, segments: record.segments }) }
          const sequential = analyzeSequential(input, limits)
          t.same(
            { forward: derived, record: { ...shown, text }, truncated, phraseStream: Buffer.from(phraseStream) },
            { ...sequential, phraseStream: Buffer.from(sequential.phraseStream) },
            `${name}, ${tokensPerDocumentMax} tokens, ${addressesPerDocumentMax} addresses, envelope ${JSON.stringify(envelope)}`,
          )
          if (terms !== undefined) {
            // The postings it brings (a token listed twice ORs its bits) are the one-pass document's, each with its hash.
            const list = terms.tokens === '' ? [] : terms.tokens.split(' ')
            const posted = new Map<string, number>()
            list.forEach((token, index) => posted.set(token, (posted.get(token) ?? 0) | terms.masks[index]!))
            t.same([...posted].sort(), [...postingsOf(sequential.forward)].sort(), `${name}: postings as the one-pass analysis's`)
            t.ok(terms.hashes !== undefined && list.every((token, index) => terms.hashes![index] === tokenHash(token, 0, token.length)), `${name}: hashes`)
          }
        }
      }
    }
  }
  t.notOk(isPreparedDocument({ kind: 'something else' }))
  // Terms and field bits that do not pair up (damaged in transit): the one-pass analysis runs.
  const input = inputOf(names[0]!, corpus[names[0]!]!, {})
  const prepared = prepareDocument(input.parsed, defaultIndexOptions)
  const damaged = { ...prepared, masks: prepared.masks.subarray(1) }
  t.ok(isPreparedDocument(damaged))
  const fromDamaged = analyzeDocument(input, defaultIndexOptions, damaged)
  t.same(fromDamaged.forward, analyzeSequential(input, defaultIndexOptions).forward, 'a damaged prepared document is analysed again')
  t.equal(fromDamaged.terms, undefined, 'and its terms are not taken from it')

  // Through the index: prepared and unprepared inputs answer alike, before and after flushes.
  const harness = makeHarness(t, { pendingDocumentsMax: 2 })
  harness.root.transactionSync(() => {
    names.forEach((name, index) => {
      const input = inputOf(name, corpus[name]!, { bcc: ['hidden@elsewhere.test'] })
      harness.index.indexMessage(input, index % 2 === 0 ? structuredClone(harness.index.prepare(input.parsed)) : { not: 'prepared' })
    })
  })
  for (const [query, expected] of expectations) t.same(harness.query(query), expected, query)
  t.same(harness.query('to:hidden@elsewhere.test').sort(), names, 'the envelope BCC is added to prepared documents')
})

for (const flushInBackground of [false, true]) {
  t.test(`cached sets grow over each flush: answers equal an uncached index's after every step${flushInBackground ? ' (flushes built in the background)' : ''}`, async (t) => {
    const harness = makeHarness(t, { pendingDocumentsMax: 3, flushInBackground })
    // Another index object on the same databases, made afresh for each comparison: nothing cached.
    const uncached = (): SearchIndex => {
      const index = createIndex({ logger: createMemoryLogger('info'), clock: systemClock }, { pendingDocumentsMax: 3, flushInBackground: false })
      index.databases(harness.root)
      return index
    }
    const queries = ['"red fox"', 'fox', 'red -blue', 'from:sender1.example', 'subject:"red fox"', 'fox after:2024-01-05', '"blue whale" OR "red fox"']
    const answer = (index: SearchIndex, query: string): { total: number; ids: string[] } => {
      const page = index.searchBlocking(query, { limit: 100 })
      return { total: page.total, ids: page.hits.map((hit) => hit.id) }
    }
    const texts = ['the red fox runs', 'a blue whale sings', 'red and blue fox', 'fox red', 'the red fox and the blue whale']
    let step = 0
    const compare = (label: string): void => {
      const fresh = uncached()
      for (const query of queries) t.same(answer(harness.index, query), answer(fresh, query), `${label}: ${query}`)
    }
    const check = async (label: string): Promise<void> => {
      // In the background mode, first while a build may be under way (the tail then has every
      // document the flush will write, and the phrase sets over it are taken over as they are).
      if (flushInBackground) compare(`${label}, before the build is written`)
      await harness.index.settled()
      compare(label)
    }
    for (let message = 0; message < 14; message++) {
      harness.root.transactionSync(() => {
        harness.index.indexMessage(
          inputOf(`M${message}`, {
            from: `x@sender${message % 3}.example`,
            subject: texts[(message + 1) % texts.length],
            text: texts[message % texts.length],
            date: `2024-01-${String(message + 1).padStart(2, '0')}`,
          }),
        )
      })
      step++
      await check(`after message ${message}`)
      if (message === 8) {
        // A tail document re-indexed (generation) and a flushed one removed (patched): both start parts of the cache over.
        harness.root.transactionSync(() => harness.index.indexMessage(inputOf('M7', { subject: 'nothing', text: 'red fox again', date: '2024-01-08' })))
        await check('after re-indexing M7')
        harness.root.transactionSync(() => harness.index.removeMessage(idOf('M0')))
        await check('after removing M0')
      }
    }
    t.ok(harness.index.stats().flushes >= 4, `several flushes happened (${harness.index.stats().flushes})`)
    t.equal(step, 14)
  })
}

t.test('cached search answers follow new, re-indexed and removed documents', async (t) => {
  const harness = makeHarness(t, { pendingDocumentsMax: 3 })
  harness.root.transactionSync(() => {
    for (const name of ['A', 'B', 'C', 'D']) harness.index.indexMessage(inputOf(name, corpus[name]!))
  })
  t.same(harness.query('"quarterly report"'), ['B', 'A'], 'A and B flushed (D is the tail)')
  t.same(harness.query('"quarterly report"'), ['B', 'A'], 'the same again, from the cache')
  harness.root.transactionSync(() => harness.index.indexMessage(inputOf('G', { subject: 'quarterly report again', date: '2024-02-20' })))
  t.same(harness.query('"quarterly report"'), ['G', 'B', 'A'], 'a new tail document is verified')
  harness.root.transactionSync(() => harness.index.indexMessage(inputOf('A', corpus.A!, { bcc: ['auditor@example.org'] })))
  t.same(harness.query('to:auditor@example.org'), ['A'], 'a re-indexed flushed document answers its new recipient')
  harness.root.transactionSync(() => harness.index.removeMessage(idOf('B')))
  t.same(harness.query('"quarterly report"'), ['G', 'A'], 'a removed flushed document leaves the cached phrase set')
  harness.root.transactionSync(() => harness.index.removeMessage(idOf('G')))
  t.same(harness.query('"quarterly report"'), ['A'], 'a removed tail document too')
  t.same(harness.query('quarterly'), ['A'])
})

t.test('snippets without marks (date-only queries) are kept per hit and follow a re-index', async (t) => {
  const harness = makeHarness(t, { pendingDocumentsMax: 2 })
  harness.root.transactionSync(() => {
    for (const name of ['A', 'B', 'C']) harness.index.indexMessage(inputOf(name, corpus[name]!))
  })
  const snippetsOf = (query: string): Record<string, string> => Object.fromEntries(harness.index.searchBlocking(query, { limit: 10 }).hits.map((hit) => [nameOfId.get(hit.id)!, hit.snippet]))
  const dateOnly = 'after:2024-01-01 before:2024-03-01'
  t.same(
    snippetsOf(dateOnly),
    {
      C: 'Lunch friday at the café &lt;b&gt;tomorrow&lt;/b&gt; pizza margherita special',
      B: 'Thanks, the numbers look good. Lunch on Friday?',
      A: 'The quarterly numbers are in. Revenue grew in Zürich.',
    },
    "A and B flushed, C in the tail (the text includes the attachment's)",
  )
  t.same(snippetsOf(dateOnly), snippetsOf(dateOnly), 'the same again, from the cache')
  t.same(
    snippetsOf(`lunch ${dateOnly}`),
    { C: '<mark>Lunch</mark> friday at the café &lt;b&gt;tomorrow&lt;/b&gt; pizza margherita special', B: 'Thanks, the numbers look good. <mark>Lunch</mark> on Friday?' },
    'a query with words marks them in the same hits',
  )
  harness.root.transactionSync(() => harness.index.indexMessage(inputOf('C', { ...corpus.C!, text: 'Lunch moved to Thursday' })))
  t.same(snippetsOf(dateOnly).C, 'Lunch moved to Thursday pizza margherita special', 'a re-indexed tail document shows its new text')
  harness.root.transactionSync(() => harness.index.indexMessage(inputOf('A', { ...corpus.A!, text: 'Figures & forecasts for Q1.' })))
  t.same(
    snippetsOf(dateOnly),
    { C: 'Lunch moved to Thursday pizza margherita special', B: 'Thanks, the numbers look good. Lunch on Friday?', A: 'Figures &amp; forecasts for Q1.' },
    'a re-indexed flushed document too',
  )
})
t.test('neither the tail nor a flush takes postings from an ingest that was rolled back', async (t) => {
  const harness = makeHarness(t, { pendingDocumentsMax: 2 })
  // A is indexed (docid 1) in a transaction that aborts; B then gets docid 1 and C docid 2, which fills the tail.
  t.throws(() =>
    harness.root.transactionSync(() => {
      harness.index.indexMessage(inputOf('A', corpus.A!))
      throw new Error('archive write failed')
    }),
  )
  harness.root.transactionSync(() => harness.index.indexMessage(inputOf('B', corpus.B!)))
  t.same(harness.query('zurich'), [], 'the tail does not answer with the rolled-back document')
  t.same(harness.query('lunch'), ['B'])
  harness.root.transactionSync(() => harness.index.indexMessage(inputOf('D', corpus.D!)))
  t.equal(harness.index.stats().pending, 0, 'flushed')
  t.same(harness.query('zurich'), [], 'words only A had are not in the chunks')
  t.same(harness.query('lunch'), ['B'])
  t.same(harness.query('"free money"'), ['D'])
})

t.test('a flush writes exactly the committed tail: a rollback, a re-index, an odd address or a removal in the middle of it', async (t) => {
  // Each message has a word of its own and the word "note"; the tail is 4, so the fourth docid flushes.
  const spec = (word: string): Spec => ({ from: 'x@example.com', subject: `note ${word}`, text: `${word} body`, date: '2024-01-10' })
  const scenarios: Array<{ name: string; run(harness: Harness): void; found: Record<string, string[]> }> = [
    {
      name: 'rolled back (its docid is given to the next message)',
      run(harness) {
        add(harness, 'alpha')
        t.throws(() =>
          harness.root.transactionSync(() => {
            harness.index.indexMessage(inputOf('ghost', spec('ghost')))
            throw new Error('archive write failed')
          }),
        )
        for (const word of ['bravo', 'charlie', 'delta']) add(harness, word)
      },
      found: { ghost: [], bravo: ['bravo'], note: ['alpha', 'bravo', 'charlie', 'delta'] },
    },
    {
      name: 're-indexed with a new recipient',
      run(harness) {
        for (const word of ['alpha', 'bravo', 'charlie']) add(harness, word)
        add(harness, 'bravo', { to: ['late@example.com'] })
        add(harness, 'delta')
      },
      found: { 'to:late@example.com': ['bravo'], bravo: ['bravo'], note: ['alpha', 'bravo', 'charlie', 'delta'] },
    },
    {
      name: 'with an address token that has a space in it (its packed terms do not unpack)',
      run(harness) {
        for (const word of ['alpha', 'bravo']) add(harness, word)
        harness.root.transactionSync(() => harness.index.indexMessage(inputOf('charlie', { ...spec('charlie'), to: ['undisclosed recipients'] })))
        add(harness, 'delta')
      },
      found: { charlie: ['charlie'], note: ['alpha', 'bravo', 'charlie', 'delta'] },
    },
    {
      name: 'removed',
      run(harness) {
        for (const word of ['alpha', 'bravo']) add(harness, word)
        t.ok(harness.index.removeMessage(idOf('bravo')))
        for (const word of ['charlie', 'delta']) add(harness, word)
      },
      found: { bravo: [], note: ['alpha', 'charlie', 'delta'] },
    },
  ]
  function add(harness: Harness, word: string, envelope: { to?: string[] } = {}): void {
    harness.root.transactionSync(() => harness.index.indexMessage(inputOf(word, spec(word), envelope)))
  }
  for (const scenario of scenarios) {
    const harness = makeHarness(t, { pendingDocumentsMax: 4 })
    scenario.run(harness)
    t.equal(harness.index.stats().pending, 0, `${scenario.name}: flushed`)
    for (const [query, words] of Object.entries(scenario.found)) t.same(new Set(harness.query(query)), new Set(words.map(idOf)), `${scenario.name}: ${query}`)
    // The next tail, indexed in a row after the flush.
    for (const word of ['echo', 'foxtrot', 'golf', 'hotel']) add(harness, word)
    t.equal(harness.index.stats().flushes, 2, `${scenario.name}: flushed again`)
    for (const word of ['echo', 'foxtrot', 'golf', 'hotel']) t.same(harness.query(word), [idOf(word)], `${scenario.name}: ${word}`)
  }
})

t.test('date queries over the tail see each ingest and removal (cached date blocks)', async (t) => {
  const harness = makeHarness(t, { pendingDocumentsMax: 1_000 })
  const spec = (word: string, date: string): Spec => ({ from: 'x@example.com', subject: word, text: word, date })
  const add = (word: string, date: string): void => {
    harness.root.transactionSync(() => harness.index.indexMessage(inputOf(word, spec(word, date))))
  }
  const june = (): string[] => harness.query('after:2023-06-01 before:2023-07-01')
  const ids = (...words: string[]): string[] => words.map(idOf)
  add('alpha', '2023-06-10')
  add('bravo', '2023-05-10')
  t.same(june(), ids('alpha'))
  add('charlie', '2023-06-20')
  t.same(june(), ids('charlie', 'alpha'), 'a new document in the same date block')
  t.ok(harness.index.removeMessage(idOf('alpha')))
  t.same(june(), ids('charlie'), 'a removed one')
  for (let index = 0; index < 130; index++) add(`filler${index}`, '2023-01-01')
  add('delta', '2023-06-05')
  t.same(june(), ids('charlie', 'delta'), 'one in the next date block')
  t.same(harness.query('charlie after:2023-06-01'), ids('charlie'))
})

t.test('a background flush is built between event-loop turns and written in its own transaction', async (t) => {
  const spec = (word: string): Spec => ({ from: 'x@example.com', subject: `note ${word}`, text: `${word} body`, date: '2024-01-10' })
  // Slices of 0 ms: one step of the build per event-loop turn, so the test can act between steps.
  const harness = makeHarness(t, { pendingDocumentsMax: 4, flushInBackground: true, flushSliceMs: 0 })
  const add = (word: string, envelope: { to?: string[] } = {}): void => {
    harness.root.transactionSync(() => harness.index.indexMessage(inputOf(word, spec(word), envelope)))
  }
  const words = (query: string): Set<string> => new Set(harness.query(query))
  for (const word of ['alpha', 'bravo', 'charlie', 'delta']) add(word)
  t.same(harness.index.stats(), { ...harness.index.stats(), pending: 4, flushes: 0 }, 'the ingest that fills the tail does not flush it')
  t.same(words('note'), new Set(['alpha', 'bravo', 'charlie', 'delta'].map(idOf)))
  // One turn: the build has read the tail and grouped its postings, and waits for its next step.
  await turns(1)
  t.equal(harness.index.stats().flushes, 0)
  // Changed after the build read the tail: bravo gains a recipient, charlie goes.
  add('bravo', { to: ['late@example.com'] })
  t.ok(harness.index.removeMessage(idOf('charlie')))
  add('echo')
  await harness.index.settled()
  t.same(harness.index.stats(), { ...harness.index.stats(), pending: 1, flushes: 1 }, 'the build wrote itself (the tail now holds only echo)')
  t.same(words('note'), new Set(['alpha', 'bravo', 'delta', 'echo'].map(idOf)), 'the removed document is not found')
  t.same(words('to:late@example.com'), new Set([idOf('bravo')]), 'the recipient added during the build is found')
  t.same(words('bravo'), new Set([idOf('bravo')]))
  t.same(words('charlie'), new Set())

  // A flush in a transaction while a build is under way: the build is dropped, nothing is written twice.
  for (const word of ['foxtrot', 'golf', 'hotel']) add(word)
  t.equal(harness.index.stats().pending, 4)
  t.ok(harness.index.flush() > 0)
  await turns()
  await harness.index.settled()
  t.same(harness.index.stats(), { ...harness.index.stats(), pending: 0, flushes: 2 }, 'the dropped build was not written')
  for (const word of ['india', 'juliett', 'kilo']) add(word)
  for (const word of ['alpha', 'echo', 'foxtrot', 'hotel', 'india', 'kilo']) t.same(harness.query(word), [idOf(word)], word)

  // The event loop never runs between ingests (one long transaction): twice the tail flushes there.
  harness.root.transactionSync(() => {
    for (const word of ['lima', 'mike', 'november', 'oscar', 'papa']) harness.index.indexMessage(inputOf(word, spec(word)))
  })
  t.same(harness.index.stats(), { ...harness.index.stats(), pending: 0, flushes: 3 }, 'flushed in the transaction at 8 pending')
  await turns()
  await harness.index.settled()
  t.equal(harness.index.stats().flushes, 3, 'the build started at 4 pending was dropped')
  t.equal(harness.index.searchBlocking('note').total, 15, 'every message but the removed one')

  // With no ingest after it, a finished build is still written.
  for (const word of ['quebec', 'romeo', 'sierra', 'tango']) add(word)
  await harness.index.settled()
  t.same(harness.index.stats(), { ...harness.index.stats(), pending: 0, flushes: 4 }, 'written with no ingest after the build')
  t.same(harness.query('sierra'), [idOf('sierra')])
})

t.test('a search after a flush keeps what it loaded of the rest of the tail, and finds each document once', async (t) => {
  const spec = (word: string): Spec => ({ from: 'x@example.com', subject: `note ${word}`, text: `${word} body`, date: '2024-01-10' })
  const harness = makeHarness(t, { pendingDocumentsMax: 4, flushInBackground: true, flushSliceMs: 0 })
  const add = (word: string): void => {
    harness.root.transactionSync(() => harness.index.indexMessage(inputOf(word, spec(word))))
  }
  for (const word of ['alpha', 'bravo', 'charlie', 'delta']) add(word)
  t.equal(harness.index.searchBlocking('note').total, 4)
  // The build has read alpha..delta; echo and foxtrot come in while it runs, and a search loads them.
  await turns(1)
  for (const word of ['echo', 'foxtrot']) add(word)
  t.equal(harness.index.searchBlocking('note').total, 6)
  await harness.index.settled()
  t.same(harness.index.stats(), { ...harness.index.stats(), flushes: 1, pending: 2 })
  const page = harness.index.searchBlocking('note', { limit: 100 })
  t.equal(page.total, 6, 'each document counted once')
  t.same(new Set(page.hits.map((hit) => hit.id)), new Set(['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot'].map(idOf)))
  t.equal(page.hits.length, 6, 'each document listed once')
  t.same(harness.query('echo'), [idOf('echo')])
  t.same(harness.query('alpha'), [idOf('alpha')])
  add('golf')
  t.equal(harness.index.searchBlocking('note').total, 7)
})

t.test('a background flush that cannot read the tail leaves the flush to an ingest, which reports it', async (t) => {
  const logger = createMemoryLogger('debug')
  const harness = makeHarness(t, { pendingDocumentsMax: 3, flushInBackground: true })
  const spec = (word: string): Spec => ({ from: 'x@example.com', subject: word, text: `${word} body`, date: '2024-01-10' })
  for (const word of ['alpha', 'bravo']) harness.root.transactionSync(() => harness.index.indexMessage(inputOf(word, spec(word))))
  // Another process (no in-memory terms) over the same data, with bravo's forward record damaged.
  const index = createIndex({ logger, clock: systemClock }, { pendingDocumentsMax: 3, flushInBackground: true })
  index.databases(harness.root)
  await harness.root.openDB<Buffer, number>('index-forward', { encoding: 'binary', keyEncoding: 'uint32', compression: true }).put(2, Buffer.from('not a forward record'))
  index.indexMessage(inputOf('charlie', spec('charlie')))
  await turns()
  t.ok(
    logger.records.some((record) => record.level === 'warn' && /building or writing a flush in the background failed/.test(record.msg)),
    'the failed build is logged',
  )
  t.throws(() => index.indexMessage(inputOf('delta', spec('delta'))), { code: 'INDEX_CORRUPT' }, 'the next ingest flushes in its transaction and reports the damage')
  t.equal(index.stats().documents, 3, 'the failed ingest wrote nothing')
})

for (const flushInBackground of [false, true]) {
  t.test(`verify finds missing, extra and stale documents; rebuild restores${flushInBackground ? ' (flushes built in the background between its batches)' : ''}`, async (t) => {
    const harness = makeHarness(t, { pendingDocumentsMax: 3, flushInBackground, rebuildBatchMessages: 2 })
    indexAll(harness)
    const archive = new Map(names.map((name) => [idOf(name), inputOf(name, corpus[name]!)]))
    const clean = await harness.index.verify(archive.keys(), (id) => archive.get(id))
    t.ok(clean.ok)
    t.equal(clean.indexed, names.length)

    // The archive gained a message the index never saw, lost one the index still has, and
    // one stored message now analyzes differently.
    archive.set(idOf('G'), inputOf('G', { from: 'gina@example.com', subject: 'missed', text: 'never indexed quokka', date: '2024-02-20' }))
    archive.delete(idOf('D'))
    archive.set(idOf('C'), inputOf('C', { ...corpus.C, text: 'changed text' }))
    const report = await harness.index.verify(archive.keys(), (id) => archive.get(id))
    t.notOk(report.ok)
    t.same(report.missing, [idOf('G')])
    t.same(report.extra, [idOf('D')])
    t.same(report.stale, [idOf('C')])
    t.same([report.missingCount, report.extraCount, report.staleCount], [1, 1, 1])

    harness.index.removeMessage(idOf('A'))
    const progress: number[] = []
    async function* inputs(): AsyncGenerator<IndexInput> {
      yield* archive.values()
    }
    const count = await harness.index.rebuild(inputs(), (indexed) => progress.push(indexed))
    t.equal(count, archive.size)
    t.equal(progress.at(-1), archive.size)
    const after = await harness.index.verify(archive.keys(), (id) => archive.get(id))
    t.ok(after.ok, 'clean after rebuild')
    t.same(harness.query('quokka'), ['G'])
    t.same(harness.query('money'), [])
    t.same(harness.query('quarterly'), ['B', 'E', 'A'], 'rebuilt from the archive, which still has A')
    t.equal(harness.index.stats().removedSinceRebuild, 0)
    await turns()
    harness.root.transactionSync(() => harness.index.indexMessage(inputOf('H', { from: 'hal@example.com', subject: 'after', text: 'after the rebuild quarterly', date: '2024-02-21' })))
    t.same(harness.query('quarterly'), ['H', 'B', 'E', 'A'], 'an ingest after the rebuild (writing any flush built meanwhile)')
    t.ok(
      (
        await harness.index.verify(
          [...archive.keys(), idOf('H')],
          (id) => archive.get(id) ?? inputOf('H', { from: 'hal@example.com', subject: 'after', text: 'after the rebuild quarterly', date: '2024-02-21' }),
        )
      ).ok,
    )
  })
}

t.test('phrase streams: the body phrase is checked on the stream; a document without one on its text; verify and re-index', async (t) => {
  for (const pendingDocumentsMax of [2, 1_000]) {
    const harness = makeHarness(t, { pendingDocumentsMax })
    indexAll(harness)
    const archive = new Map(names.map((name) => [idOf(name), inputOf(name, corpus[name]!)]))
    const phrases = harness.root.openDB<Buffer, number>('index-phrases', { encoding: 'binary', keyEncoding: 'uint32' })
    const docidOf = (name: string): number => harness.root.openDB<unknown, string>('index-keys', { encoding: 'msgpack' }).get(`id:${idOf(name)}`) as number
    t.ok(phrases.get(docidOf('A')), 'each document has its stream')
    // A as indexed before streams were kept; B's stream holds another text (corrupt, or an
    // older tokenizer's): the search follows the stream, verify calls it stale.
    await harness.root.transaction(() => {
      phrases.removeSync(docidOf('A'))
      phrases.putSync(docidOf('B'), Buffer.from(phraseStreamOf([['numbers', 'good', 'look']])))
    })
    const fresh = createIndex({ logger: createMemoryLogger(), clock: systemClock }, { flushInBackground: false, pendingDocumentsMax })
    fresh.databases(harness.root)
    const query = (text: string): string[] => fresh.searchBlocking(text, { limit: 50 }).hits.map((hit) => nameOfId.get(hit.id) ?? hit.id)
    t.same(query('"numbers are"'), ['A'], `${pendingDocumentsMax}: A answers from its text`)
    t.same(query('"quarterly numbers"'), ['A'])
    t.same(query('"numbers look"'), [], "B's body is checked on its (wrong) stream, not on its text")
    const report = await fresh.verify(archive.keys(), (id) => archive.get(id))
    t.same(
      report.stale.map((id) => nameOfId.get(id)),
      ['B'],
      'a stream unlike the fresh analysis is stale; no stream is not',
    )
    // Indexing a message again writes its stream where it was missing or different.
    await harness.root.transaction(() => {
      fresh.indexMessage(inputOf('A', corpus.A!))
      fresh.indexMessage(inputOf('B', corpus.B!))
    })
    t.ok(phrases.get(docidOf('A')), 'A has its stream now')
    t.ok((await fresh.verify(archive.keys(), (id) => archive.get(id))).ok, 'clean after the re-index')
    t.same(query('"numbers look"'), ['B'])
  }
})

t.test('errors: not open, time budget, syntax', async (t) => {
  const closed = createIndex({ logger: createMemoryLogger(), clock: systemClock })
  t.throws(() => closed.searchBlocking('x'), { code: 'INDEX_UNAVAILABLE' })
  await t.rejects(closed.search('x'), { code: 'INDEX_UNAVAILABLE' })
  let now = 0
  const racing: Clock = { now: () => 0, monotonicMs: () => (now += 1_000) }
  const slow = makeHarness(t, { queryTimeMsMax: 500 }, racing)
  indexAll(slow)
  const caught = (run: () => unknown): unknown => {
    try {
      run()
    } catch (error) {
      return error
    }
    return undefined
  }
  const timeout = caught(() => slow.index.searchBlocking('quarterly'))
  t.ok(timeout instanceof IndexError && timeout.code === 'QUERY_TOO_EXPENSIVE', 'over the time budget: QUERY_TOO_EXPENSIVE')
  const harness = makeHarness(t)
  const syntax = caught(() => harness.index.searchBlocking('(oops'))
  t.ok(syntax instanceof QuerySyntaxError && syntax.position === 0, 'a syntax error with its position')
})

const crlf = (text: string): Uint8Array => new TextEncoder().encode(text.replace(/\r?\n/g, '\r\n'))

/** An Exchange envelope journal report from alice to bob carrying one BCC recipient, and its original message. */
function journalReport(subject: string, bcc: string, body: string): { report: Uint8Array; original: Uint8Array } {
  const slug = subject.toLowerCase().replace(/\W+/g, '-')
  const messageId = `<${slug}@contoso.com>`
  const original = crlf(`From: Alice <alice@contoso.com>
To: bob@contoso.com
Subject: ${subject}
Date: Tue, 01 Oct 2024 09:30:05 +0000
Message-ID: ${messageId}

${body}
`)
  const head = crlf(`X-MS-Journal-Report: 
From: Alice <alice@contoso.com>
To: journal@archive.contoso.com
Subject: ${subject}
Date: Tue, 01 Oct 2024 09:30:05 +0000
Message-ID: <journal-${slug}@contoso.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="jr"

--jr
Content-Type: text/plain; charset="us-ascii"

Sender: alice@contoso.com
Subject: ${subject}
Message-Id: ${messageId}
To: bob@contoso.com
Bcc: ${bcc}

--jr
Content-Type: message/rfc822

`)
  return { report: new Uint8Array([...head, ...original, ...crlf('\n--jr--\n')]), original }
}

t.test('real messages: words only in attachments, BCC from a journal report', async (t) => {
  const parser = createMimeParser({ logger: createMemoryLogger() }, defaultMimeParserOptions)
  const harness = makeHarness(t)
  const withAttachments = crlf(`From: Ann <ann@example.com>
To: Ben <ben@example.com>
Subject: files
Date: Tue, 01 Oct 2024 09:30:05 +0000
Message-ID: <files@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain; charset=utf-8

See the attached files.
--b1
Content-Type: text/plain; charset=utf-8; name="notes.txt"
Content-Disposition: attachment; filename="notes.txt"

The xylophone is out of tune.
--b1
Content-Type: text/html; charset=utf-8; name="page.html"
Content-Disposition: attachment; filename="page.html"

<html><body><p>A <b>quokka</b> smiles.</p></body></html>
--b1--
`)
  const parsed = await parser.parse(withAttachments)
  harness.index.indexMessage({ id: idOf('attachments'), parsed, archivedAtMs })

  const { report } = journalReport('Quarterly figures', 'eve@contoso.com', 'Figures inside.')
  const unwrapped = await parser.unwrapJournal(report)
  t.ok(unwrapped, 'the journal report unwraps')
  const originalParsed = await parser.parse(unwrapped!.original)
  t.same(originalParsed.bcc, [], 'the BCC recipient is not in the message headers')
  // What the archive keeps for this delivery (see the ingest pipeline), turned into index input.
  const input = indexInputFromMeta(
    {
      id: idOf('journaled'),
      firstArchivedAtMs: archivedAtMs,
      deliveries: [
        {
          source: 'journal',
          sourceName: 'exchange',
          receivedAtMs: archivedAtMs,
          envelopeFrom: unwrapped!.envelope.sender,
          envelopeTo: unwrapped!.envelope.recipients,
          envelopeBcc: unwrapped!.envelope.bcc,
          remoteAddress: null,
          journalEnvelopeText: unwrapped!.envelope.envelopeText,
        },
      ],
    },
    originalParsed,
  )
  harness.index.indexMessage(input)

  const ids = (query: string): string[] => harness.index.searchBlocking(query).hits.map((hit) => hit.id)
  t.same(ids('xylophone'), [idOf('attachments')], 'a word only in a text attachment')
  t.same(ids('quokka'), [idOf('attachments')], 'a word only in an HTML attachment')
  t.same(ids('attachment:notes.txt'), [idOf('attachments')])
  t.same(ids('has:attachment'), [idOf('attachments')])
  t.same(ids('to:eve@contoso.com'), [idOf('journaled')], 'a BCC recipient from the journal envelope')
  t.same(ids('to:eve'), [idOf('journaled')])
  t.same(ids('to:contoso.com figures'), [idOf('journaled')])
  t.match(harness.index.searchBlocking('quokka').hits[0]!.snippet, /<mark>quokka<\/mark>/)
})

t.test('createArchiveIndexer: the archive hook indexes stored messages and removes purged ones', async (t) => {
  const root = open({ path: join(t.testdir(), 'lmdb'), maxDbs: 12 })
  t.teardown(() => root.close())
  const index = createIndex({ logger: createMemoryLogger(), clock: systemClock })
  const logger = createMemoryLogger()
  const hook = createArchiveIndexer(index, { logger })
  t.equal(hook.databasesNeeded, 7)
  hook.open(root)
  const delivery = {
    source: 'smtp' as const,
    sourceName: 'smtp',
    receivedAtMs: archivedAtMs,
    envelopeFrom: 'alice@example.com',
    envelopeTo: ['hidden@example.com'],
    envelopeBcc: [],
    remoteAddress: '127.0.0.1',
    journalEnvelopeText: null,
  }
  const meta = {
    id: idOf('A'),
    sizeBytes: 10,
    messageId: null,
    dateMs: day('2024-01-10'),
    from: ['alice@example.com'],
    to: ['bob@example.org'],
    cc: [],
    bcc: [],
    subject: 'Quarterly report',
    attachments: [],
    flags: [],
    deliveries: [delivery],
    firstArchivedAtMs: archivedAtMs,
    origin: null,
  }
  root.transactionSync(() => hook.messageStored(meta, parsedOf(corpus.A!)))
  t.same(
    index.searchBlocking('to:hidden@example.com').hits.map((hit) => hit.id),
    [idOf('A')],
    'an envelope-only recipient is searchable',
  )
  root.transactionSync(() => hook.messageRemoved(idOf('A')))
  t.equal(index.searchBlocking('quarterly').total, 0)

  // An index left by firmware with another layout: mail is still archived (the hook does
  // not throw), unindexed, with one warning; searches ask for a rebuild.
  const keys = root.openDB<unknown, string>('index-keys', { encoding: 'msgpack' })
  const state = keys.get('state') as Record<string, unknown>
  keys.putSync('state', { ...state, v: 999 })
  t.notOk(index.layoutCurrent())
  t.match(index.stats(), { layoutCurrent: false }, 'status figures still readable')
  root.transactionSync(() => hook.messageStored({ ...meta, id: idOf('B') }, parsedOf(corpus.B!)))
  root.transactionSync(() => hook.messageStored({ ...meta, id: idOf('C') }, parsedOf(corpus.C!)))
  t.equal(logger.records.filter((record) => record.level === 'warn').length, 1, 'warned once')
  t.throws(() => index.searchBlocking('lunch'), { code: 'INDEX_CORRUPT' })
  await index.rebuild([{ id: idOf('B'), parsed: parsedOf(corpus.B!), archivedAtMs }])
  t.ok(index.layoutCurrent())
  t.equal(index.searchBlocking('lunch').total, 1, 'rebuilt')
})

t.test('rebuild: the index says it is incomplete until the last message is in; a stopped rebuild leaves it so', async (t) => {
  const harness = makeHarness(t)
  indexAll(harness)
  t.ok(harness.index.complete())
  const seen: boolean[] = []
  const inputs = names.map((name) => inputOf(name, corpus[name]!))
  await harness.index.rebuild(inputs, () => seen.push(harness.index.complete()), undefined)
  t.ok(seen.length > 0 && seen.every((complete) => !complete), 'incomplete while it runs')
  t.ok(harness.index.complete(), 'complete once done')
  t.notOk(harness.index.stats().rebuilding)

  const stop = new AbortController()
  const stopping = async function* () {
    for (const input of inputs) {
      yield input
      stop.abort()
    }
  }
  await t.rejects(harness.index.rebuild(stopping(), undefined, stop.signal), { code: 'INDEX_UNAVAILABLE' })
  t.ok(harness.index.layoutCurrent(), 'the layout is current')
  t.notOk(harness.index.complete(), 'but the index is incomplete')
  t.ok(harness.index.stats().rebuilding)
  // Retention's query matching refuses an incomplete index (a hold by query must see every message).
  await t.rejects(allMatches(harness.index, 'quarterly'), { code: 'UNAVAILABLE' })
  const failing = async function* () {
    yield inputs[0]!
    throw new Error('archive read failed')
  }
  await t.rejects(harness.index.rebuild(failing()), /archive read failed/)
  t.notOk(harness.index.complete(), 'a failed rebuild leaves it incomplete too')
  await harness.index.rebuild(inputs)
  t.ok(harness.index.complete())
  t.same((await allMatches(harness.index, 'quarterly')).size, 3)
})

t.test('search route: query string to a page, errors typed for the API', async (t) => {
  const harness = makeHarness(t)
  indexAll(harness)
  const route = createSearchRoute(harness.index)
  const url = (query: string): { url: URL } => ({ url: new URL(`http://127.0.0.1/api/v1/search?${query}`) })
  const first = await route(url('q=quarterly&limit=2'))
  t.equal(first.total, 3)
  t.equal(first.hits.length, 2)
  const second = await route(url(`q=quarterly&limit=2&cursor=${first.nextCursor}`))
  t.same(
    second.hits.map((hit) => hit.id),
    [idOf('A')],
  )
  t.equal(second.nextCursor, null)
  await t.rejects(route(url('q=%22open')), { code: 'QUERY_SYNTAX', position: 0 })
  await t.rejects(route(url('limit=5')), { code: 'QUERY_SYNTAX' }, 'no q: empty query')
  await t.rejects(route(url('q=x&limit=ten')), { code: 'BAD_LIMIT' })
  await t.rejects(route(url('q=x&limit=0')), { code: 'BAD_LIMIT' })
})

t.test('with the real archive store: searchable once ingest resolves, BCC of a journal report, purge, verify and rebuild', async (t) => {
  const logger = createMemoryLogger('warn')
  const parser = createMimeParser({ logger }, defaultMimeParserOptions)
  const index = createIndex({ logger, clock: systemClock })
  const archive = createArchiveStore(
    { logger, clock: systemClock },
    { path: join(t.testdir(), 'archive'), mapSizeBytes: 256 * 1024 * 1024, freeBytesMin: 0, messageBytesMax: 1024 * 1024, indexer: createArchiveIndexer(index, { logger }) },
  )
  await archive.start()
  t.teardown(() => archive.stop())
  const pipeline = createIngestPipeline({ logger, parser, archive }, { messageBytesMax: 1024 * 1024 })
  const delivery = {
    source: 'journal' as const,
    sourceName: 'exchange',
    receivedAtMs: archivedAtMs,
    envelopeFrom: null,
    envelopeTo: [],
    envelopeBcc: [],
    remoteAddress: null,
    journalEnvelopeText: null,
  }
  const { report } = journalReport('Budget', 'mallory@contoso.com', 'The wombat budget is approved.')
  const journaled = await pipeline.submit(report, delivery)
  // No waiting: the ingest promise resolved after the durable commit that held the postings.
  t.same(
    index.searchBlocking('to:mallory@contoso.com').hits.map((hit) => hit.id),
    [journaled.id],
    'the BCC recipient finds it with to:',
  )
  t.same(
    index.searchBlocking('wombat').hits.map((hit) => hit.id),
    [journaled.id],
  )
  const plain = await pipeline.submit(crlf('From: carl@example.com\nTo: dana@example.com\nSubject: hello\nDate: Wed, 02 Oct 2024 10:00:00 +0000\n\nA note about wombat food.\n'), {
    ...delivery,
    source: 'smtp',
    sourceName: 'smtp',
  })
  t.same(
    index.searchBlocking('wombat').hits.map((hit) => hit.id),
    [plain.id, journaled.id],
    'newest first',
  )

  const maintenance = createIndexMaintenance({ index, archive, parser })
  t.ok((await maintenance.verify({ deep: true })).ok, 'index and archive agree')
  await archive.delete(plain.id)
  t.same(
    index.searchBlocking('wombat').hits.map((hit) => hit.id),
    [journaled.id],
    'a purged message leaves the results',
  )
  t.ok((await maintenance.verify()).ok, 'still in agreement after the purge')
  t.equal(await maintenance.rebuild(), 1)
  t.same(
    index.searchBlocking('to:mallory').hits.map((hit) => hit.id),
    [journaled.id],
    'rebuilt from the archive, envelope BCC included',
  )
})
