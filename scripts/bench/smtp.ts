/**
 * SMTP durable-ingest benchmark: boots the real appliance in-process (temporary data dir,
 * ports 0, the search index on, as the appliance runs), sends the real corpus over
 * `sessions` concurrent SMTP sessions, and counts a message only when its 250 (given after
 * the durable write) arrives. Reports messages/s, MB/s, the parse worker threads used, and
 * the disk bytes per raw byte: the archive's own databases, the index's, and the whole
 * data directory (allocated blocks of every file in it).
 *
 * The senders run in a child process (this script with `--senders`), as real senders are
 * other machines: on the appliance's event loop they would take time from the service
 * they measure. They still share this machine's cores with it.
 *
 * A warm-up pass of distinct messages comes first, untimed: the figure is the sustained rate
 * of a running appliance, not the JIT compiling a cold one.
 *
 * Run alone: `node_modules/.bin/bun scripts/bench/smtp.ts [messages] [sessions] [warm-up messages]`.
 */
import { spawn } from 'node:child_process'
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { open } from 'lmdb'
import { validateConfig } from '../../config/load.js'
import { createLogger } from '../../firmware/common/logger.js'
import { databaseNames } from '../../firmware/archive/layout.js'
import { indexDatabaseNames } from '../../firmware/index/search-index.js'
import { createAppliance } from '../../boot/appliance.js'
import { SmtpSession } from '../lib/smtp-client.js'
import { loadCorpus } from './parse.js'
import { threadCpuBetween, threadCpuSnapshot, type ThreadCpu } from './thread-cpu.js'

export interface SmtpBenchResult {
  messages: number
  sessions: number
  seconds: number
  messagesPerSecond: number
  megabytesPerSecond: number
  /** Raw bytes archived in the timed pass (as sent, CRLF). */
  rawBytes: number
  /** Messages sent before the timed pass (archived too; counted in the disk ratios). */
  warmupMessages: number
  /** LMDB pages of the archive's own databases (blobs, records, deliveries, log) over the raw bytes. */
  storeBytesPerRawByte: number
  /** LMDB pages of the search index's databases over the raw bytes. */
  indexBytesPerRawByte: number
  /** Allocated bytes of every file under the data directory over the raw bytes. */
  dataDirBytesPerRawByte: number
  /** Pages of each LMDB database over the raw bytes. */
  databaseBytesPerRawByte: Record<string, number>
  refused: number
  /** Parse worker threads the appliance ran (0: parsing on the event loop). */
  parseWorkers: number
  /** Messages parsed on workers, and on the event loop. */
  parsedOnWorkers: number
  parsedInProcess: number
  /** Whether the workers ran the index's prepare step. */
  indexPrepareOnWorkers: boolean
  /** CPU time of the appliance process (all its threads: event loop, parse workers, LMDB, JIT) per message, in ms. */
  applianceCpuMsPerMessage: number
  /** CPU time of the sender process per message, in ms (it shares the machine's cores). */
  senderCpuMsPerMessage: number
  /** The appliance's CPU per message by thread (Linux; 10 ms clock ticks), busiest first. */
  threadCpuMsPerMessage: Array<{ thread: string; userMs: number; systemMs: number }>
}

/** SMTP needs CRLF line endings; the corpus files have LF. */
export function toCrlf(raw: Uint8Array): Buffer {
  return Buffer.from(Buffer.from(raw).toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1')
}

/** Allocated bytes (512-byte blocks) of every file under `directory`. */
async function allocatedBytes(directory: string): Promise<number> {
  let total = 0
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name)
    if (entry.isDirectory()) total += await allocatedBytes(path)
    else if (entry.isFile()) total += (await stat(path)).blocks * 512
  }
  return total
}

/** Bytes of the LMDB pages held by each named database group of the archive environment. */
async function databaseBytes(path: string): Promise<{ store: number; index: number; byDatabase: Record<string, number> }> {
  const root = open({ path, readOnly: true })
  const pagesOf = (name: string): number => {
    // Read-only, a database that was never created opens as undefined.
    const database = root.openDB(name, {}) as ReturnType<typeof root.openDB> | undefined
    if (!database) return 0
    const stats = database.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number }
    return (stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages) * stats.pageSize
  }
  try {
    const byDatabase: Record<string, number> = {}
    for (const name of [...Object.values(databaseNames), ...Object.values(indexDatabaseNames)]) byDatabase[name] = pagesOf(name)
    return {
      store: Object.values(databaseNames).reduce((sum, name) => sum + byDatabase[name]!, 0),
      index: Object.values(indexDatabaseNames).reduce((sum, name) => sum + byDatabase[name]!, 0),
      byDatabase,
    }
  } finally {
    await root.close()
  }
}

interface SenderReport {
  cpuMs: number
  /** The appliance process's CPU while the senders ran, filled in by the parent. */
  applianceCpuMs?: number
  /** The same per thread of the appliance process (Linux), busiest first. */
  threads?: ThreadCpu[]
  seconds: number
  rawBytes: number
  refused: number
  messages: number
}

/** Starts the sender process, waits until it has its corpus ready, starts it and waits for its report. */
async function runSenders(port: number, sessions: number, messages: number, warmupMessages: number): Promise<SenderReport> {
  const script = fileURLToPath(import.meta.url)
  const child = spawn(process.execPath, [script, '--senders', String(port), String(sessions), String(messages), String(warmupMessages)], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = createInterface({ input: child.stdout! })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  try {
    const iterator = lines[Symbol.asyncIterator]()
    const first = await iterator.next()
    if (first.done || first.value !== 'ready') throw new Error(`sender process did not get ready (${String(first.value)})`)
    child.stdin!.write('go\n')
    const measuring = await iterator.next()
    if (measuring.done || measuring.value !== 'measuring') throw new Error(`sender process did not start measuring (${String(measuring.value)})`)
    const cpuBefore = process.cpuUsage()
    const threadsBefore = threadCpuSnapshot()
    const report = await iterator.next()
    const cpu = process.cpuUsage(cpuBefore)
    const threads = threadCpuBetween(threadsBefore, threadCpuSnapshot())
    if (report.done) throw new Error(`sender process ended without a report (exit ${await exited})`)
    return { ...(JSON.parse(report.value) as SenderReport), applianceCpuMs: (cpu.user + cpu.system) / 1000, threads }
  } finally {
    child.stdin!.end()
    lines.close()
  }
}

/** The sender process: loads the corpus, says `ready`, waits for `go`, sends, prints its report. */
async function senderMain(port: number, sessions: number, limit: number, warmupMessages: number): Promise<void> {
  const corpus = (await loadCorpus(undefined, limit)).map(toCrlf)
  process.stdout.write('ready\n')
  await new Promise<void>((resolve) => process.stdin.once('data', () => resolve()))
  if (warmupMessages > 0) {
    // Distinct bytes (a header in front), so the measured pass below is not deduplicated against them.
    const warmup = corpus.slice(0, warmupMessages).map((raw, index) => Buffer.concat([Buffer.from(`X-Bench-Warmup: ${index}\r\n`), raw]))
    await sendAll(port, sessions, warmup)
  }
  process.stdout.write('measuring\n')
  const cpuBefore = process.cpuUsage()
  const startedMs = performance.now()
  const { refused, rawBytes } = await sendAll(port, sessions, corpus)
  const seconds = (performance.now() - startedMs) / 1000
  const cpu = process.cpuUsage(cpuBefore)
  process.stdout.write(JSON.stringify({ seconds, rawBytes, refused, messages: corpus.length, cpuMs: (cpu.user + cpu.system) / 1000 } satisfies SenderReport) + '\n')
}

async function sendAll(port: number, sessions: number, corpus: Buffer[]): Promise<{ refused: number; rawBytes: number }> {
  let next = 0
  let refused = 0
  let rawBytes = 0
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      const session = await SmtpSession.open(port)
      for (let index = next++; index < corpus.length; index = next++) {
        const raw = corpus[index]!
        const reply = await session.sendPipelined('sender@bench.local', ['journal@bench.local'], raw)
        if (reply.code === 250) rawBytes += raw.byteLength
        else refused += 1
      }
      session.close()
    }),
  )
  return { refused, rawBytes }
}

/**
 * @param options.warmupMessages sent first and not timed (distinct bytes: a header in front), so
 *   the figure is the sustained rate and not the JIT compiling a cold service; default 6000
 *   (about the corpus once: measured here, the JIT threads still took 0.25 CPU-ms per message
 *   over the first 12,000 messages and 0.10 over 48,000)
 */
export async function runSmtpBench(options: { messages?: number; sessions?: number; warmupMessages?: number } = {}): Promise<SmtpBenchResult> {
  const sessions = options.sessions ?? 10
  const warmupMessages = options.warmupMessages ?? 6000
  const limit = options.messages ?? Number.POSITIVE_INFINITY
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-bench-smtp-'))
  const config = validateConfig({
    dataDir,
    smtp: { port: 0, archiveRecipients: ['journal@bench.local'] },
    http: { port: 0 },
    https: { port: 0 },
    mirror: { port: 0 },
    logging: { level: 'warn' },
  })
  const appliance = createAppliance({ config, logger: createLogger('bench', { level: 'error', write: () => undefined }) })
  await appliance.boot()
  try {
    const status = (await appliance.status()) as unknown as { listeners: Record<string, string> }
    const port = Number(String(status.listeners.smtp).split(':').pop())
    const report = await runSenders(port, sessions, limit === Number.POSITIVE_INFINITY ? 1e9 : limit, warmupMessages)
    const after = (await appliance.status()) as unknown as {
      store: { rawBytes: number }
      parsePool?: { workers: number; completed: number; inProcess: number; indexPrepare: boolean }
    }
    await appliance.stop()
    const databases = await databaseBytes(join(dataDir, 'archive'))
    // Every message archived, the warm-up ones included.
    const rawBytes = Math.max(1, after.store.rawBytes)
    return {
      messages: report.messages,
      warmupMessages,
      sessions,
      seconds: report.seconds,
      messagesPerSecond: report.messages / report.seconds,
      megabytesPerSecond: report.rawBytes / 1e6 / report.seconds,
      rawBytes: report.rawBytes,
      storeBytesPerRawByte: databases.store / rawBytes,
      indexBytesPerRawByte: databases.index / rawBytes,
      dataDirBytesPerRawByte: (await allocatedBytes(dataDir)) / rawBytes,
      databaseBytesPerRawByte: Object.fromEntries(Object.entries(databases.byDatabase).map(([name, bytes]) => [name, bytes / rawBytes])),
      refused: report.refused,
      parseWorkers: after.parsePool?.workers ?? 0,
      parsedOnWorkers: after.parsePool?.completed ?? 0,
      parsedInProcess: after.parsePool?.inProcess ?? 0,
      indexPrepareOnWorkers: after.parsePool?.indexPrepare ?? false,
      applianceCpuMsPerMessage: (report.applianceCpuMs ?? 0) / report.messages,
      senderCpuMsPerMessage: report.cpuMs / report.messages,
      threadCpuMsPerMessage: (report.threads ?? []).map((thread) => ({
        thread: `${thread.name} ${thread.tid}`,
        userMs: thread.userMs / report.messages,
        systemMs: thread.systemMs / report.messages,
      })),
    }
  } finally {
    await appliance.stop()
    await rm(dataDir, { recursive: true, force: true })
  }
}

// Bun sets import.meta.main for the entry script.
if ((import.meta as { main?: boolean }).main) {
  if (process.argv[2] === '--senders') {
    await senderMain(Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5]), Number(process.argv[6] ?? 0))
    process.exit(0)
  }
  const result = await runSmtpBench({
    messages: Number(process.argv[2] ?? Number.POSITIVE_INFINITY),
    sessions: Number(process.argv[3] ?? 10),
    warmupMessages: process.argv[4] === undefined ? undefined : Number(process.argv[4]),
  })
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}
