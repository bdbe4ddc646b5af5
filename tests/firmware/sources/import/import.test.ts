/**
 * Bulk import: the format readers on their own (mbox framing, quoting, CRLF, chunk
 * boundaries, limits), format detection, and the import service against a fake ingest
 * pipeline: byte-exact archiving, exact counts, re-import, cancel and resume, STORE_FULL,
 * oversize and refused messages, and the service's own limits.
 */
import t from 'tap'
import { appendFile, chmod, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createManualClock, createRandom, systemClock } from '../../../../firmware/common/clock.js'
import { createMemoryLogger } from '../../../../firmware/common/logger.js'
import {
  checkpointFileName,
  createImportFrontier,
  createImportService,
  detectImportFormat,
  findRenamedMaildirFile,
  ImportError,
  listMessageFiles,
  loadCheckpoint,
  readMbox,
  type ImportJobStatus,
  type ImportService,
  type ImportServiceOptions,
  type MboxEntry,
} from '../../../../firmware/sources/import/index.js'
import { createFakePipeline, type FakePipeline } from './fixtures/fake-pipeline.js'
import { buildEmlFolder, buildMaildir, buildMbox, handMadeMessages, loadCorpusMessages, sha256, toCrlf } from './fixtures/mail.js'
import { waitUntil } from '../../../helpers/wait.js'
import { testSeed } from '../../../helpers/random.js'

const { seed } = testSeed(t, 'the chunk sizes, orders, delays and cancel points')

/** What the shared assertion helpers need of a tap test. */
type Assertions = Pick<typeof t, 'equal' | 'fail' | 'ok' | 'notOk'>

let workDir: string
let corpus: Buffer[]

t.before(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'mailkeep-import-'))
  corpus = await loadCorpusMessages(160)
})

t.teardown(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true })
})

let placeCounter = 0
/** A fresh folder under the work directory. */
async function place(name: string): Promise<string> {
  const path = join(workDir, `${++placeCounter}-${name}`)
  await mkdir(path, { recursive: true })
  return path
}

async function readAll(path: string, options: Parameters<typeof readMbox>[1]): Promise<MboxEntry[]> {
  const entries: MboxEntry[] = []
  for await (const entry of readMbox(path, options)) entries.push(entry)
  return entries
}

function rawOf(entry: MboxEntry | undefined): Buffer {
  if (entry?.kind !== 'message') throw new Error(`expected a message entry, got ${entry?.kind}`)
  return Buffer.from(entry.raw)
}

/** A distinct message per tag and number, for tests that need many small ones. */
function smallMessages(tag: string, count: number): Buffer[] {
  return Array.from({ length: count }, (_, index) =>
    Buffer.from(`From: a${index}@example.test\nSubject: ${tag} ${index}\nMessage-ID: <${tag}.${index}@example.test>\n\nbody ${index}\n`, 'latin1'),
  )
}

function assertContiguous(t: Assertions, entries: MboxEntry[], fileBytes: number, fromOffset = 0): void {
  t.equal(entries[0]?.startOffset, fromOffset, 'first entry starts where reading started')
  for (let index = 1; index < entries.length; index++) {
    if (entries[index]!.startOffset !== entries[index - 1]!.endOffset) t.fail(`entry ${index} does not start where entry ${index - 1} ends`)
  }
  t.equal(entries.at(-1)?.endOffset, fileBytes, 'last entry ends at the end of the file')
}

t.test('readMbox: LF and CRLF files give every message byte-exact, quoting kept, offsets contiguous', async (t) => {
  const messages = [...handMadeMessages('read'), ...corpus.slice(0, 60)]
  for (const crlf of [false, true]) {
    const built = buildMbox(messages, { crlf })
    const path = join(await place('mbox'), crlf ? 'crlf.mbox' : 'lf.mbox')
    await writeFile(path, built.bytes)
    const entries = await readAll(path, { messageBytesMax: 10_000_000 })
    t.equal(entries.length, built.expected.length, `${crlf ? 'CRLF' : 'LF'}: one entry per message`)
    t.same(
      entries.map((entry) => sha256(rawOf(entry))),
      built.expected.map(sha256),
      `${crlf ? 'CRLF' : 'LF'}: every message byte-exact, in order`,
    )
    assertContiguous(t, entries, built.bytes.length)
    const quoted = rawOf(entries[0]).toString('latin1')
    t.match(quoted, crlf ? /\r\n>From the desk of the CEO\r\n>>From an mboxrd writer\r\n/ : /\n>From the desk of the CEO\n>>From an mboxrd writer\n/, '>From lines are not un-quoted')
    t.match(rawOf(entries[1]).toString('latin1'), /From now on the office opens/, 'a From line inside a paragraph does not split the message')
    t.ok(
      rawOf(entries[2])
        .toString('latin1')
        .endsWith(crlf ? 'empty lines\r\n\r\n\r\n' : 'empty lines\n\n\n'),
      'trailing empty lines of a message are kept; only the framing line is dropped',
    )
  }
})

t.test('readMbox: the result does not depend on where reads cut the file', async (t) => {
  const random = createRandom(seed)
  const small = buildMbox([...handMadeMessages('chunks').slice(0, 3), ...smallMessages('chunks', 4)], { crlf: false })
  const smallCrlf = buildMbox(smallMessages('chunks-crlf', 5), { crlf: true, lastWithoutNewline: true })
  for (const [name, built] of [
    ['lf', small],
    ['crlf', smallCrlf],
  ] as const) {
    const path = join(await place('chunks'), `${name}.mbox`)
    await writeFile(path, built.bytes)
    const expected = built.expected.map(sha256)
    let mismatches = 0
    for (let chunkBytes = 1; chunkBytes <= 16; chunkBytes++) {
      const entries = await readAll(path, { messageBytesMax: 1_000_000, chunkBytes })
      if (JSON.stringify(entries.map((entry) => sha256(rawOf(entry)))) !== JSON.stringify(expected)) {
        mismatches++
        t.fail(`${name}: chunks of ${chunkBytes} bytes give other messages`)
      }
    }
    t.equal(mismatches, 0, `${name}: every chunk size from 1 to 16 bytes gives the same messages`)
  }
  const large = buildMbox(corpus.slice(0, 40))
  const path = join(await place('chunks'), 'corpus.mbox')
  await writeFile(path, large.bytes)
  for (let round = 0; round < 4; round++) {
    const chunkBytes = 16 + random.int(20_000)
    const entries = await readAll(path, { messageBytesMax: 1_000_000, chunkBytes })
    t.same(
      entries.map((entry) => sha256(rawOf(entry))),
      large.expected.map(sha256),
      `corpus with chunks of ${chunkBytes} bytes`,
    )
  }
})

t.test('readMbox: edges of the framing', async (t) => {
  const folder = await place('edges')
  const write = async (name: string, text: string): Promise<string> => {
    const path = join(folder, name)
    await writeFile(path, Buffer.from(text, 'latin1'))
    return path
  }
  const texts = async (path: string, messageBytesMax = 1_000): Promise<(string | null)[]> =>
    (await readAll(path, { messageBytesMax })).map((entry) => (entry.kind === 'message' ? Buffer.from(entry.raw).toString('latin1') : null))

  t.same(
    await texts(await write('no-newline.mbox', 'From a\nSubject: one\n\nbody\n\nFrom b\nSubject: two\n\nlast line')),
    ['Subject: one\n\nbody\n', 'Subject: two\n\nlast line'],
    'a final message without a trailing newline is kept as it is',
  )
  t.same(await texts(await write('no-framing.mbox', 'From a\nSubject: one\n\nbody\n')), ['Subject: one\n\nbody\n'], 'a final message without the framing empty line keeps its last line end')
  t.same(
    await texts(await write('empty.mbox', 'From a\n\nFrom b\nSubject: b\n\nx\n\n')),
    ['', 'Subject: b\n\nx\n'],
    'two separators in a row give an empty message (reported by the service)',
  )
  t.same(await texts(await write('bare-from.mbox', 'From a\nSubject: a\n\nx\n\nFrom b')), ['Subject: a\n\nx\n', ''], 'a From line cut before its line end is an empty message')
  t.same(
    await texts(await write('no-blank.mbox', 'From a\nSubject: a\n\nline\nFrom b\nstill a\n')),
    ['Subject: a\n\nline\nFrom b\nstill a\n'],
    'a From line without an empty line before it is no separator',
  )
  t.same(
    await texts(await write('unquoted.mbox', 'From a\nSubject: a\n\npara\n\nFrom the desk: split here\nmore\n\n')),
    ['Subject: a\n\npara\n', 'more\n'],
    'an unquoted From line after an empty line is a separator (RFC 4155; writers quote it)',
  )
  t.same(
    await texts(await write('mixed.mbox', 'From a\r\nSubject: a\r\n\r\nx\r\n\nFrom b\nSubject: b\n\ny\n')),
    ['Subject: a\r\n\r\nx\r\n', 'Subject: b\n\ny\n'],
    'a LF empty line after a CRLF message is framing too',
  )

  const sizes = await write('sizes.mbox', 'From a\nSubject: small\n\nx\n\nFrom b\nSubject: big\n\n' + 'y'.repeat(300) + '\n\nFrom c\nSubject: after\n\nz\n')
  for (const chunkBytes of [7, 64, 4096]) {
    const entries = await readAll(sizes, { messageBytesMax: 100, chunkBytes })
    t.same(
      entries.map((entry) => entry.kind),
      ['message', 'oversize', 'message'],
      `chunks of ${chunkBytes}: an oversize message is yielded without bytes, the next one intact`,
    )
    t.equal(entries[1]?.sizeBytes, 'Subject: big\n\n'.length + 301, 'the oversize entry tells its size')
    t.equal(rawOf(entries[2]).toString('latin1'), 'Subject: after\n\nz\n')
  }
})

t.test('readMbox: resuming from an entry offset, and refusing other offsets', async (t) => {
  const built = buildMbox(corpus.slice(60, 80))
  const path = join(await place('resume'), 'resume.mbox')
  await writeFile(path, built.bytes)
  const all = await readAll(path, { messageBytesMax: 1_000_000 })
  const middle = all[7]!
  const rest = await readAll(path, { messageBytesMax: 1_000_000, fromOffset: middle.startOffset, chunkBytes: 333 })
  t.same(
    rest.map((entry) => sha256(rawOf(entry))),
    built.expected.slice(7).map(sha256),
    'from an entry offset: the remaining messages, byte-exact',
  )
  assertContiguous(t, rest, built.bytes.length, middle.startOffset)
  const upTo = await readAll(path, { messageBytesMax: 1_000_000, toOffset: all[3]!.endOffset })
  t.same(
    upTo.map((entry) => sha256(rawOf(entry))),
    built.expected.slice(0, 4).map(sha256),
    'toOffset at a boundary stops there with whole messages',
  )
  t.same(await readAll(path, { messageBytesMax: 1_000_000, fromOffset: built.bytes.length }), [], 'from the end of the file: nothing')
  await t.rejects(readAll(path, { messageBytesMax: 1_000_000, fromOffset: middle.startOffset + 3 }), { code: 'OFFSET_NOT_AT_MESSAGE' }, 'an offset inside a message is refused')
  const notMbox = join(await place('resume'), 'plain.txt')
  await writeFile(notMbox, 'Subject: hello\n\nbody\n')
  await t.rejects(readAll(notMbox, { messageBytesMax: 1_000 }), { code: 'OFFSET_NOT_AT_MESSAGE', message: /does not start with a "From " line/ })
  await t.rejects(readAll(join(workDir, 'missing.mbox'), { messageBytesMax: 1_000 }), { code: 'PATH_NOT_FOUND' })

  // A mail client rewriting the file (expunge) while it is read must not yield a cut message.
  const shrinking = join(await place('resume'), 'shrinking.mbox')
  await writeFile(shrinking, built.bytes)
  const reader = readMbox(shrinking, { messageBytesMax: 1_000_000, chunkBytes: 4096 })
  t.equal((await reader.next()).done, false)
  await truncate(shrinking, all[2]!.endOffset + 10)
  await t.rejects(
    (async () => {
      for (;;) if ((await reader.next()).done) return
    })(),
    { code: 'READ_FAILED', message: /became shorter while it was read/ },
  )
})

t.test('detectImportFormat and the folder listings', async (t) => {
  const folder = await place('detect')
  const mbox = join(folder, 'mail.mbox')
  await writeFile(mbox, buildMbox(corpus.slice(0, 2)).bytes)
  const eml = join(folder, 'one.eml')
  await writeFile(eml, corpus[0]!)
  const maildir = await buildMaildir(join(folder, 'Maildir'), smallMessages('detect-maildir', 9), smallMessages('detect-skip', 2))
  const emlFolder = await buildEmlFolder(join(folder, 'emls'), smallMessages('detect-eml', 6), smallMessages('detect-eml-skip', 2))
  t.equal(await detectImportFormat(mbox), 'mbox')
  t.equal(await detectImportFormat(eml), 'eml')
  t.equal(await detectImportFormat(maildir.root), 'maildir')
  t.equal(await detectImportFormat(join(maildir.root, '.Sent')), 'maildir', 'a Maildir++ subfolder alone is a maildir')
  t.equal(await detectImportFormat(emlFolder.root), 'eml-folder')

  const other = join(folder, 'notes.txt')
  await writeFile(other, 'Subject: x\n\nnot an mbox\n')
  await t.rejects(detectImportFormat(other), { code: 'FORMAT_UNKNOWN', message: /neither an mbox .* nor an \.eml file/ })
  const empty = join(folder, 'empty.mbox')
  await writeFile(empty, '')
  await t.rejects(detectImportFormat(empty), { code: 'SOURCE_EMPTY', message: /empty file/ })
  await mkdir(join(folder, 'nothing'))
  await t.rejects(detectImportFormat(join(folder, 'nothing')), { code: 'SOURCE_EMPTY', message: /empty folder/ })
  await mkdir(join(folder, 'texts'))
  await writeFile(join(folder, 'texts', 'a.txt'), 'x')
  await t.rejects(detectImportFormat(join(folder, 'texts')), { code: 'FORMAT_UNKNOWN', message: /neither a maildir .* nor a folder of \.eml files/ })
  for (const store of ['cur', 'new', 'tmp']) await mkdir(join(folder, 'EmptyMaildir', store), { recursive: true })
  await t.rejects(detectImportFormat(join(folder, 'EmptyMaildir')), { code: 'SOURCE_EMPTY', message: /maildir without messages/ })
  await t.rejects(detectImportFormat(join(folder, 'absent')), { code: 'PATH_NOT_FOUND', message: /absent does not exist/ })
  if (process.getuid?.() !== 0) {
    const locked = join(folder, 'locked.mbox')
    await writeFile(locked, 'From x\n\n')
    await chmod(locked, 0o000)
    await t.rejects(detectImportFormat(locked), { code: 'PATH_UNREADABLE' })
  } else {
    t.comment('running as root: permissions cannot make a file unreadable, PATH_UNREADABLE not checked')
  }

  const listing = await listMessageFiles(maildir.root, 'maildir', { filesMax: 100 })
  t.equal(listing.files.length, 9, 'maildir: every message of cur/ and new/ in every folder, nothing from tmp/ or side files')
  t.same(
    listing.files.map((file) => file.relativePath),
    [...listing.files.map((file) => file.relativePath)].sort(),
    'sorted by relative path',
  )
  t.ok(
    listing.files.some((file) => file.relativePath.startsWith('.Sent.2020/cur/')),
    'Maildir++ sub-sub-folder included',
  )
  t.ok(
    listing.files.some((file) => file.relativePath.startsWith('Archive/2019/new/')),
    'nested file-system layout included',
  )
  t.notOk(
    listing.files.some((file) => /(^|\/)tmp\//.test(file.relativePath)),
    'tmp/ skipped',
  )
  t.ok(
    listing.files.every((file) => !file.deliveryName.includes(':') && !/(^|\/)(cur|new)\//.test(file.deliveryName)),
    'delivery names carry neither cur/new nor flags',
  )
  t.equal(
    listing.bytesTotal,
    maildir.expected.reduce((sum, raw) => sum + raw.length, 0),
    'bytesTotal is the sum of the message files',
  )
  await t.rejects(listMessageFiles(maildir.root, 'maildir', { filesMax: 5 }), { code: 'TOO_MANY_FILES' })

  const emlListing = await listMessageFiles(emlFolder.root, 'eml-folder', { filesMax: 100 })
  t.same(
    emlListing.files.map((file) => file.relativePath).filter((path) => !/\.eml$/i.test(path)),
    [],
    'only .eml files',
  )
  t.equal(emlListing.files.length, 6, 'every .eml file, nested and upper-case ones included, AppleDouble skipped')

  const flagged = listing.files.find((file) => file.relativePath.includes(':2,S'))!
  const renamedTo = flagged.relativePath.replace(':2,S', ':2,RS')
  await rename(join(maildir.root, flagged.relativePath), join(maildir.root, renamedTo))
  t.equal(await findRenamedMaildirFile(maildir.root, flagged.relativePath), renamedTo, 'a maildir file renamed for its flags is found again')
  t.equal(await findRenamedMaildirFile(maildir.root, 'cur/0000.gone:2,S'), null)
})

t.test('import frontier: the checkpoint position never passes an unfinished message', async (t) => {
  const random = createRandom(seed + 1)
  const mismatches: string[] = []
  for (let round = 0; round < 20; round++) {
    const frontier = createImportFrontier(100, 1000)
    const count = 1 + random.int(60)
    const tickets = Array.from({ length: count }, (_, index) => frontier.add(100 + (index + 1) * 10, 10))
    const finished = new Set<number>()
    const order = [...tickets].sort(() => random.next() - 0.5)
    for (const ticket of order) {
      frontier.finish(ticket)
      finished.add(ticket)
      let contiguous = 0
      while (finished.has(contiguous)) contiguous++
      if (frontier.position !== 100 + contiguous * 10 || frontier.bytesBefore !== 1000 + contiguous * 10) {
        mismatches.push(`round ${round} (seed ${seed}): position ${frontier.position}, bytesBefore ${frontier.bytesBefore} with ${contiguous} contiguous finished`)
        break
      }
    }
    if (frontier.open !== 0 || frontier.position !== 100 + count * 10) mismatches.push(`round ${round}: not at the end after all finished`)
  }
  t.same(mismatches, [], '20 random finishing orders kept position == end of the contiguous finished prefix')
  const frontier = createImportFrontier(0, 0)
  const ticket = frontier.add(10, 10)
  frontier.finish(ticket)
  t.throws(() => frontier.finish(ticket), 'a message is finished only once')
  t.throws(() => frontier.add(5, 5), 'messages are registered in source order')
})

interface Harness {
  service: ImportService
  pipeline: FakePipeline
  stateDir: string
  logger: ReturnType<typeof createMemoryLogger>
}

async function harness(overrides: Partial<ImportServiceOptions> = {}, pipeline = createFakePipeline(), stateDir?: string): Promise<Harness> {
  const logger = createMemoryLogger()
  const directory = stateDir ?? (await place('state'))
  const service = createImportService(
    { logger, clock: systemClock, pipeline },
    { stateDir: directory, concurrency: 8, messageBytesMax: 1_000_000, jobsMax: 4, checkpointIntervalMs: 0, stopTimeoutMs: 2_000, ...overrides },
  )
  await service.start()
  return { service, pipeline, stateDir: directory, logger }
}

/** The job's status once it is no longer running. */
function waitForEnd(service: ImportService, id: string): Promise<ImportJobStatus> {
  return waitUntil(
    () => {
      const status = service.jobStatus(id)
      return status.state !== 'running' && status
    },
    { what: `job ${id} to end`, timeoutMs: 30_000, intervalMs: 5, observe: () => service.jobStatus(id) },
  )
}

async function runImport(service: ImportService, path: string): Promise<ImportJobStatus> {
  const started = await service.startJob(path)
  return waitForEnd(service, started.id)
}

/** Asserts that the fake archive holds exactly these messages, byte for byte, and nothing else. */
function assertArchived(t: Assertions, pipeline: FakePipeline, expected: readonly Buffer[], excluded: readonly Buffer[] = []): void {
  const missing = expected.filter((raw) => !pipeline.store.get(sha256(raw))?.equals(raw))
  t.equal(missing.length, 0, `every one of ${expected.length} messages archived byte-exact`)
  t.equal(pipeline.store.size, new Set(expected.map(sha256)).size, 'nothing else archived')
  for (const raw of excluded) t.notOk(pipeline.store.has(sha256(raw)), 'a file that must be skipped was not archived')
}

t.test('service: mbox imported byte-exact with exact counts; importing it again counts duplicates', async (t) => {
  const { service, pipeline, stateDir } = await harness()
  const messages = [...handMadeMessages('svc-mbox'), ...corpus.slice(0, 100)]
  const built = buildMbox(messages)
  const path = join(await place('svc-mbox'), 'archive.mbox')
  await writeFile(path, built.bytes)
  pipeline.delayMs = (index) => (index * 7) % 5
  pipeline.flagsOf = (raw) => (raw.includes('eight-bit bytes') ? ['NON_ASCII_HEADERS'] : [])

  const first = await runImport(service, path)
  t.match(first, {
    path,
    format: 'mbox',
    state: 'done',
    total: built.bytes.length,
    totalUnit: 'bytes',
    processed: messages.length,
    imported: messages.length,
    duplicates: 0,
    flagged: 1,
    failed: 0,
    errors: [],
    bytesProcessed: built.bytes.length,
    bytesTotal: built.bytes.length,
    resumedFrom: 0,
    error: null,
  })
  t.ok(first.finishedAtMs !== null && first.finishedAtMs >= first.startedAtMs, 'finishedAtMs set')
  assertArchived(t, pipeline, built.expected)
  t.ok(pipeline.inFlightMax > 1 && pipeline.inFlightMax <= 8, `submits ran in parallel within the concurrency (max ${pipeline.inFlightMax})`)
  const delivery = pipeline.accepted[0]!.delivery
  t.match(delivery, { source: 'import', sourceName: path, envelopeFrom: null, envelopeTo: [], envelopeBcc: [], remoteAddress: null, journalEnvelopeText: null })
  t.ok(
    pipeline.accepted.every((entry) => /^import:.+:\d+$/.test(entry.delivery.deliveryKey ?? '')),
    'delivery keys are import:<path>:<offset>',
  )
  t.equal(pipeline.deliveryKeys.size, messages.length, 'one distinct delivery key per message')
  t.same(await readdir(stateDir), [], 'a finished import leaves no checkpoint')

  const again = await runImport(service, path)
  t.match(
    again,
    { state: 'done', processed: messages.length, imported: 0, duplicates: messages.length, failed: 0, resumedFrom: 0 },
    'a finished path runs again in full; dedup counts duplicates',
  )
  t.not(again.id, first.id)
  t.equal(pipeline.deliveryKeys.size, messages.length, 'the re-import used the same delivery keys')
  t.same(
    service.jobs().map((job) => job.id),
    [first.id, again.id],
    'jobs() lists both, oldest first',
  )
  await service.stop()
})

t.test('service: CRLF mbox with an oversize message, an empty one and a refused one; the rest imported', async (t) => {
  const { service, pipeline } = await harness({ messageBytesMax: 20_000 })
  const big = Buffer.from('Subject: huge\n\n' + 'z'.repeat(30_000) + '\n', 'latin1')
  const refused = Buffer.from('Subject: refuse me\n\nno\n', 'latin1')
  const messages = [...corpus.slice(100, 120).filter((raw) => raw.length < 19_000), big, refused, ...handMadeMessages('svc-crlf')]
  const built = buildMbox(messages, { crlf: true, lastWithoutNewline: true })
  // An empty message (two separators in a row) right after the big one.
  const bigAt = built.bytes.indexOf('Subject: huge')
  const nextSeparator = built.bytes.indexOf('\r\nFrom ', bigAt) + 2
  const bytes = Buffer.concat([built.bytes.subarray(0, nextSeparator), Buffer.from('From empty@example.test  Thu Aug 22 12:00:00 2002\r\n\r\n'), built.bytes.subarray(nextSeparator)])
  const path = join(await place('svc-crlf'), 'crlf.mbox')
  await writeFile(path, bytes)
  pipeline.refuse = (raw) => raw.includes('refuse me')

  const status = await runImport(service, path)
  const good = built.expected.filter((raw) => !raw.includes('Subject: huge') && !raw.includes('refuse me'))
  t.match(status, { state: 'done', imported: good.length, duplicates: 0, failed: 3, processed: good.length + 3, bytesProcessed: bytes.length })
  t.same(
    status.errors.map((error) => error.code),
    ['MESSAGE_TOO_LARGE', 'MESSAGE_EMPTY', 'MESSAGE_TOO_LARGE'],
    'each failure is reported with its code, in order',
  )
  t.equal(status.errors[0]!.offset, bytes.lastIndexOf('From ', bigAt), 'the oversize message is reported with its mbox offset')
  t.match(status.errors[0]!.reason, /over the limit of 20000 bytes/)
  t.equal(status.errors[2]!.reason, 'the store refuses this message', 'the refusal keeps the pipeline reason')
  t.ok(status.errors.every((error) => error.file === path))
  assertArchived(t, pipeline, good)
  await service.stop()
})

t.test('service: maildir, folder of .eml files and one .eml file', async (t) => {
  const { service, pipeline } = await harness({ concurrency: 3 })
  const maildir = await buildMaildir(join(await place('svc-maildir'), 'Maildir'), corpus.slice(0, 30), smallMessages('svc-maildir-skip', 2))
  const status = await runImport(service, maildir.root)
  t.match(status, { format: 'maildir', state: 'done', total: 30, totalUnit: 'messages', imported: 30, duplicates: 0, failed: 0, bytesTotal: status.bytesProcessed })
  assertArchived(t, pipeline, maildir.expected, maildir.excluded)
  t.ok(
    pipeline.accepted.every((entry) => !/:2,|\/(cur|new)\//.test(entry.delivery.deliveryKey ?? '')),
    'maildir delivery keys without flags or cur/new',
  )
  t.ok(pipeline.inFlightMax <= 3, 'concurrency respected')

  const emls = await buildEmlFolder(join(await place('svc-eml'), 'export'), corpus.slice(30, 50), smallMessages('svc-eml-skip', 2))
  const folderStatus = await runImport(service, emls.root)
  t.match(folderStatus, { format: 'eml-folder', state: 'done', total: 20, imported: 20, failed: 0 })
  assertArchived(t, pipeline, [...maildir.expected, ...emls.expected], [...maildir.excluded, ...emls.excluded])

  const single = join(await place('svc-one'), 'single.eml')
  await writeFile(single, toCrlf(corpus[50]!))
  const one = await runImport(service, single)
  t.match(one, { format: 'eml', state: 'done', total: 1, imported: 1 })
  t.equal(pipeline.accepted.at(-1)?.delivery.deliveryKey, `import:${single}:single.eml`)
  t.ok(pipeline.store.get(sha256(toCrlf(corpus[50]!)))?.equals(toCrlf(corpus[50]!)), 'the .eml file archived byte-exact')
  await service.stop()
})

t.test('service: a job cancelled midway resumes from its checkpoint; every message archived exactly once', async (t) => {
  for (const kind of ['mbox', 'maildir'] as const) {
    const { service, pipeline, stateDir } = await harness({ concurrency: 4 })
    const messages = corpus.slice(0, 80)
    let path: string
    let expected: Buffer[]
    if (kind === 'mbox') {
      const built = buildMbox(messages)
      path = join(await place('cancel'), 'cancel.mbox')
      await writeFile(path, built.bytes)
      expected = built.expected
    } else {
      const built = await buildMaildir(join(await place('cancel'), 'Maildir'), messages, smallMessages('cancel-skip', 2))
      path = built.root
      expected = built.expected
    }
    const random = createRandom(seed + (kind === 'mbox' ? 2 : 3))
    pipeline.delayMs = () => 1 + random.int(6)
    const cancelAfter = 20 + random.int(30)
    let cancelling: Promise<ImportJobStatus> | null = null
    const started = await service.startJob(path)
    pipeline.onSubmit = (index) => {
      if (index === cancelAfter) cancelling = service.cancelJob(started.id)
    }
    await waitForEnd(service, started.id)
    const cancelled = await (cancelling as Promise<ImportJobStatus> | null)
    t.match(cancelled, { state: 'cancelled', error: { code: 'CANCELLED', retryable: true } }, `${kind}: cancelled`)
    t.ok(cancelled!.processed < expected.length, `${kind}: stopped before the end (${cancelled!.processed} of ${expected.length})`)
    t.equal(cancelled!.processed, pipeline.accepted.length, `${kind}: in-flight messages were let finish (message boundary)`)
    const checkpoint = await loadCheckpoint(stateDir, path)
    t.equal(checkpoint.kind, 'found', `${kind}: checkpoint kept`)
    t.ok(await stat(join(stateDir, checkpointFileName(path))), 'the checkpoint file is named by the path hash')

    pipeline.onSubmit = null
    const resumed = await runImport(service, path)
    t.ok(resumed.resumedFrom > 0, `${kind}: the rerun resumed from ${resumed.resumedFrom}`)
    if (checkpoint.kind === 'found') t.equal(resumed.resumedFrom, checkpoint.checkpoint.position, `${kind}: from the checkpoint position`)
    t.match(resumed, { state: 'done', imported: expected.length - cancelled!.imported, duplicates: 0, failed: 0 }, `${kind}: the rest imported, nothing twice`)
    t.equal(resumed.bytesProcessed, resumed.bytesTotal, `${kind}: progress ends at 100%`)
    assertArchived(t, pipeline, expected)
    t.equal(pipeline.accepted.length, expected.length, `${kind}: each message submitted exactly once over both runs`)
    t.same(await readdir(stateDir), [], `${kind}: checkpoint removed when done`)
    await service.stop()
  }
})

t.test('service: STORE_FULL fails the job with its checkpoint kept before the refused message; a rerun completes', async (t) => {
  // 'full': every submit from the Nth on is refused (the volume filled up). 'one': only the
  // Nth is refused, and slowly, while later messages become durable around it.
  for (const mode of ['full', 'one'] as const) {
    const { service, pipeline, stateDir } = await harness({ concurrency: 8 })
    const built = buildMbox(corpus.slice(20, 110))
    const path = join(await place('full'), `${mode}.mbox`)
    await writeFile(path, built.bytes)
    const random = createRandom(seed + (mode === 'full' ? 4 : 5))
    const refusedAt = 30 + random.int(30)
    pipeline.delayMs = (index) => (mode === 'one' && index === refusedAt ? 30 : random.int(5))
    pipeline.storeFull = (index) => (mode === 'full' ? index >= refusedAt : index === refusedAt)

    const failed = await runImport(service, path)
    t.match(failed, { state: 'failed', error: { code: 'STORE_FULL', retryable: true, message: /import the path again to resume/ } }, `${mode}: the job failed`)
    t.equal(failed.failed, 0, `${mode}: a retryable refusal is not counted as a failed message`)
    const loaded = await loadCheckpoint(stateDir, path)
    t.equal(loaded.kind, 'found', `${mode}: checkpoint kept`)
    const position = loaded.kind === 'found' ? loaded.checkpoint.position : 0
    const entries = await readAll(path, { messageBytesMax: 1_000_000 })
    const refused = entries[refusedAt]!
    t.ok(position > 0 && position <= refused.startOffset, `${mode}: the checkpoint (${position}) advanced, and stayed before the refused message (${refused.startOffset})`)
    t.ok(
      entries.filter((entry) => entry.endOffset <= position).every((entry) => pipeline.store.has(sha256(rawOf(entry)))),
      `${mode}: every message before the checkpoint is archived`,
    )
    t.notOk(pipeline.store.has(sha256(rawOf(refused))), `${mode}: the refused message is not archived`)
    if (mode === 'one') {
      t.ok(
        entries.slice(refusedAt + 1).some((entry) => pipeline.store.has(sha256(rawOf(entry)))),
        'one: later messages became durable while the refused one was in flight',
      )
    }

    pipeline.storeFull = () => false
    const rerun = await runImport(service, path)
    t.match(rerun, { state: 'done', resumedFrom: position, failed: 0 }, `${mode}: the rerun resumed from the checkpoint and finished`)
    t.equal(rerun.imported + rerun.duplicates, entries.filter((entry) => entry.startOffset >= position).length, `${mode}: the rerun went through every message after the checkpoint`)
    assertArchived(t, pipeline, built.expected)
    t.same(await readdir(stateDir), [], `${mode}: no checkpoint left`)
    await service.stop()
  }
})

t.test('service: stop() cancels running jobs and keeps checkpoints; a new service resumes', async (t) => {
  const pipeline = createFakePipeline()
  const first = await harness({ concurrency: 2 }, pipeline)
  const built = buildMbox(corpus.slice(40, 100))
  const path = join(await place('stop'), 'stop.mbox')
  await writeFile(path, built.bytes)
  pipeline.delayMs = 3
  const started = await first.service.startJob(path)
  t.equal((await first.service.startJob(path)).id, started.id, 'the same path while running returns the running job')
  await waitUntil(() => pipeline.accepted.length >= 10, { what: '10 messages accepted', intervalMs: 2 })
  await first.service.stop()
  const stopped = first.service.jobStatus(started.id)
  t.match(stopped, { state: 'cancelled', error: { code: 'CANCELLED', message: /service is stopping/ } })
  await first.service.stop()
  await t.rejects(first.service.startJob(path), { code: 'NOT_RUNNING' }, 'a stopped service starts no job')

  pipeline.delayMs = 0
  const second = await harness({}, pipeline, first.stateDir)
  const resumed = await runImport(second.service, path)
  t.ok(resumed.resumedFrom > 0, `resumed from ${resumed.resumedFrom}`)
  t.equal(resumed.state, 'done')
  assertArchived(t, pipeline, built.expected)
  await second.service.stop()
})

t.test('service: a changed source is imported from the start', async (t) => {
  const { service, pipeline, stateDir } = await harness({ concurrency: 1 })
  const built = buildMbox(smallMessages('changed', 40))
  const path = join(await place('changed'), 'changed.mbox')
  await writeFile(path, built.bytes)
  pipeline.delayMs = 1
  const started = await service.startJob(path)
  pipeline.onSubmit = (index) => {
    if (index === 10) void service.cancelJob(started.id)
  }
  await waitForEnd(service, started.id)
  pipeline.onSubmit = null
  t.equal((await loadCheckpoint(stateDir, path)).kind, 'found')
  const extra = smallMessages('changed-extra', 1)[0]!
  await appendFile(path, Buffer.concat([Buffer.from('From late@example.test  Fri Aug 23 10:00:00 2002\n'), extra, Buffer.from('\n')]))
  const rerun = await runImport(service, path)
  t.match(rerun, { state: 'done', resumedFrom: 0, failed: 0 }, 'the grown file has a new fingerprint: no resume')
  t.equal(rerun.imported + rerun.duplicates, 41, 'the whole grown file was read again')
  t.ok(rerun.duplicates >= 10, 'what the first run archived is counted as duplicates')
  assertArchived(t, pipeline, [...built.expected, extra])
  await service.stop()
})

t.test('service: errors a technician sees', async (t) => {
  const manualClock = createManualClock()
  const pipeline = createFakePipeline()
  const stateDir = await place('errors-state')
  const service = createImportService({ logger: createMemoryLogger(), clock: manualClock, pipeline }, { stateDir, concurrency: 2, messageBytesMax: 1_000, jobsMax: 1 })
  await t.rejects(service.startJob('/nowhere'), { code: 'NOT_RUNNING' }, 'nothing before start()')
  await service.start()
  await t.rejects(service.startJob(join(workDir, 'no-such-file.mbox')), { code: 'PATH_NOT_FOUND', message: /no-such-file\.mbox does not exist/ })
  await t.rejects(service.startJob('relative/inbox.mbox'), { code: 'PATH_NOT_ABSOLUTE', message: /not an absolute path/ })
  const unknown = join(await place('errors'), 'data.bin')
  await writeFile(unknown, Buffer.from([1, 2, 3]))
  await t.rejects(service.startJob(unknown), { code: 'FORMAT_UNKNOWN', message: /data\.bin is neither an mbox/ })
  const empty = await place('errors-empty')
  await t.rejects(service.startJob(empty), { code: 'SOURCE_EMPTY' })
  t.throws(() => service.jobStatus('import-none'), { code: 'JOB_NOT_FOUND' })
  await t.rejects(service.cancelJob('import-none'), { code: 'JOB_NOT_FOUND' })

  const first = join(await place('errors-jobs'), 'a.mbox')
  const second = join(await place('errors-jobs'), 'b.mbox')
  await writeFile(first, buildMbox(smallMessages('jobs-a', 5)).bytes)
  await writeFile(second, buildMbox(smallMessages('jobs-b', 5)).bytes)
  let release: () => void = () => undefined
  pipeline.delayMs = 0
  const gate = new Promise<void>((resolve) => {
    release = resolve
  })
  const submit = pipeline.submit.bind(pipeline)
  pipeline.submit = async (raw, delivery) => {
    await gate
    return submit(raw, delivery)
  }
  const running = await service.startJob(first)
  const link = join(await place('errors-link'), 'link.mbox')
  await symlink(first, link)
  t.equal((await service.startJob(link)).id, running.id, 'another spelling of a running path (a symbolic link) returns its job')
  await t.rejects(service.startJob(second), { code: 'TOO_MANY_JOBS', retryable: true }, 'jobsMax running jobs at once')
  t.equal(running.startedAtMs, manualClock.now(), 'times come from the injected clock')
  release()
  const done = await waitForEnd(service, running.id)
  t.equal(done.state, 'done')
  t.equal((await runImport(service, second)).state, 'done', 'another job may start once one finished')
  t.equal((await service.cancelJob(running.id)).state, 'done', 'cancelling a finished job changes nothing')
  await service.stop()

  const bad = createImportService({ logger: createMemoryLogger(), clock: systemClock, pipeline }, { stateDir, concurrency: 0, messageBytesMax: 1_000, jobsMax: 1 })
  await t.rejects(bad.start(), { code: 'INVALID_OPTIONS', message: /import\.concurrency: must be a positive integer \(got 0\)/ })
  t.ok(new ImportError('READ_FAILED', 'x').retryable && !new ImportError('FORMAT_UNKNOWN', 'x').retryable, 'retryable follows the code')
})

t.test('service: a file that cannot be read is reported and the job goes on', async (t) => {
  const { service, pipeline } = await harness()
  const emls = await buildEmlFolder(join(await place('unreadable'), 'export'), smallMessages('unreadable', 8), smallMessages('unreadable-skip', 2))
  await mkdir(join(emls.root, 'zz'))
  await writeFile(join(emls.root, 'zz', 'vanishing.eml'), 'Subject: gone\n\nx\n')
  const submit = pipeline.submit.bind(pipeline)
  // The last file (sorted) is removed before any submit resolves, so after it was listed
  // and before it is read.
  let removal: Promise<void> | null = null
  pipeline.submit = async (raw, delivery) => {
    removal ??= rm(join(emls.root, 'zz', 'vanishing.eml'))
    await removal
    return submit(raw, delivery)
  }
  const status = await runImport(service, emls.root)
  t.match(status, { state: 'done', imported: 8, failed: 1 })
  t.match(status.errors, [{ code: 'MESSAGE_UNREADABLE', file: join(emls.root, 'zz', 'vanishing.eml'), offset: null, reason: /does not exist/ }])
  assertArchived(t, pipeline, emls.expected, emls.excluded)
  await service.stop()
})

t.test('service: a maildir message a mail client moved after the listing is still imported, under the same key', async (t) => {
  const { service, pipeline } = await harness()
  const maildir = await buildMaildir(join(await place('moved'), 'Maildir'), smallMessages('moved', 9), smallMessages('moved-skip', 2))
  const listing = await listMessageFiles(maildir.root, 'maildir', { filesMax: 100 })
  const last = listing.files.at(-1)!
  t.match(last.relativePath, /^new\//, 'the last file in sorted order is in new/')
  const submit = pipeline.submit.bind(pipeline)
  // Before any submit resolves (so after the listing, before the last file is read), a
  // mail client shows the message: new/unique becomes cur/unique:2,S.
  let move: Promise<void> | null = null
  pipeline.submit = async (raw, delivery) => {
    move ??= rename(join(maildir.root, last.relativePath), join(maildir.root, last.relativePath.replace(/^new\//, 'cur/') + ':2,S'))
    await move
    return submit(raw, delivery)
  }
  const status = await runImport(service, maildir.root)
  t.match(status, { state: 'done', imported: 9, failed: 0 })
  assertArchived(t, pipeline, maildir.expected, maildir.excluded)
  t.ok(pipeline.deliveryKeys.has(`import:${maildir.root}:${last.deliveryName}`), 'the moved message kept its delivery key')
  await service.stop()
})

t.test('checkpoint files: corrupt or foreign ones are ignored', async (t) => {
  const { service, pipeline, stateDir, logger } = await harness()
  const built = buildMbox(smallMessages('corrupt', 6))
  const path = join(await place('corrupt'), 'c.mbox')
  await writeFile(path, built.bytes)
  await writeFile(join(stateDir, checkpointFileName(path)), '{not json')
  const status = await runImport(service, path)
  t.match(status, { state: 'done', resumedFrom: 0, imported: 6 })
  t.ok(
    logger.records.some((record) => record.msg === 'checkpoint unusable, importing from the start'),
    'the unusable checkpoint is logged',
  )
  const text = await readFile(join(stateDir, checkpointFileName(path)), 'utf8').catch(() => null)
  t.equal(text, null, 'and removed when the import finished')
  assertArchived(t, pipeline, built.expected)
  await service.stop()
})
