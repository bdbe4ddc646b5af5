/**
 * Search under load (issue 20, finding 1): one appliance (the firmware under Bun, a process of
 * its own) holding the corpus `factor` times over, fed through SMTP; then two phases of the
 * same length, the first the anchor of the second:
 *   quiet  a relay delivers at a fixed rate over one SMTP session, an operator polls
 *          /api/v1/status every 100 ms;
 *   bombs  the same, while a client sends queries of 32 three-word phrases of common words
 *          joined with OR (the reported phrase bomb, each with phrases of its own so no
 *          answer comes from a cache) back to back.
 * Printed: SMTP ack and status latencies (p50, p99, max) in both phases, and how the bombs
 * ended (answered, or 503 QUERY_TOO_EXPENSIVE after the budget, `search.queryTimeMsMax`).
 * Target during the bombs: SMTP ack p99 < 500 ms, status p99 < 200 ms.
 *
 *   node_modules/.bin/bun scripts/bench/search-load.ts     (BENCH_FACTOR, default 20)
 */
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { SmtpSession, archivedId } from '../lib/smtp-client.js'
import { portOf, startService, tempDir, writeConfig, type RunningService } from '../../tests/helpers/service.js'
import { apiGet } from '../../tests/helpers/mirror-appliances.js'
import { corpusDirectoryDefault, loadCorpusMessages, syntheticRaw } from '../make-synthetic-archive.js'
import { toCrlf } from './smtp.js'
import { createRandom } from '../../firmware/common/clock.js'

export interface LatencySummary {
  count: number
  p50Ms: number
  p99Ms: number
  maxMs: number
}

export interface PhaseFigures {
  ack: LatencySummary
  status: LatencySummary
}

export interface SearchLoadReport {
  messages: number
  loadSeconds: number
  budgetMs: number
  quiet: PhaseFigures
  bombs: PhaseFigures & { outcomes: Record<string, number>; answerMs: LatencySummary }
}

/** Common words of the corpus: every three-word phrase of them has many candidates. */
const commonWords = ['the', 'and', 'to', 'of', 'you', 'for', 'this', 'that', 'is', 'in', 'your', 'with', 'it', 'on', 'are', 'be', 'we', 'have', 'not', 'all']

function summary(values: number[]): LatencySummary {
  const sorted = [...values].sort((a, b) => a - b)
  const at = (fraction: number) => sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))] ?? Number.NaN
  return { count: sorted.length, p50Ms: at(0.5), p99Ms: at(0.99), maxMs: sorted[sorted.length - 1] ?? Number.NaN }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Delivers every message over `sessions` SMTP sessions; returns the count. */
async function load(port: number, messages: Iterable<Buffer>, sessions: number): Promise<number> {
  const iterator = messages[Symbol.iterator]()
  let delivered = 0
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      const session = await SmtpSession.open(port)
      for (let next = iterator.next(); !next.done; next = iterator.next()) {
        const reply = await session.sendPipelined('sender@bench.local', ['journal@bench.local'], next.value)
        if (reply.code !== 250) throw new Error(`the appliance refused a message: ${reply.code} ${reply.text}`)
        delivered += 1
      }
      session.close()
    }),
  )
  return delivered
}

/** One phase: a relay at `ratePerSecond` and a status poll, for `durationMs`; `alongside` runs meanwhile. */
async function phase(service: RunningService, durationMs: number, ratePerSecond: number, filler: Buffer, alongside: (until: () => boolean) => Promise<void>): Promise<PhaseFigures> {
  const startedMs = performance.now()
  const running = () => performance.now() - startedMs < durationMs
  const ackMs: number[] = []
  const statusMs: number[] = []
  const relay = (async () => {
    const session = await SmtpSession.open(portOf(service, 'smtp'))
    for (let index = 0; running(); index++) {
      const waitMs = startedMs + (index * 1000) / ratePerSecond - performance.now()
      if (waitMs > 0) await sleep(waitMs)
      const raw = Buffer.concat([
        Buffer.from(
          `From: relay@bench.local\r\nTo: journal@bench.local\r\nSubject: under load ${startedMs.toFixed(0)} ${index}\r\nMessage-ID: <load-${startedMs.toFixed(0)}-${index}@bench.local>\r\n\r\n`,
        ),
        filler,
      ])
      const sentMs = performance.now()
      const reply = await session.send('relay@bench.local', ['journal@bench.local'], raw)
      ackMs.push(performance.now() - sentMs)
      if (!archivedId(reply)) throw new Error(`a relayed message was refused: ${reply.code} ${reply.text}`)
    }
    session.close()
  })()
  const operator = (async () => {
    while (running()) {
      const askedMs = performance.now()
      const response = await apiGet(service, '/api/v1/status')
      await response?.arrayBuffer()
      statusMs.push(performance.now() - askedMs)
      if (response?.status !== 200) throw new Error(`status answered ${response?.status ?? 'nothing'}`)
      await sleep(100)
    }
  })()
  await Promise.all([relay, operator, alongside(running)])
  return { ack: summary(ackMs), status: summary(statusMs) }
}

/**
 * Runs the bench and prints its figures.
 *
 * @param options.factor corpus copies in the archive (20 in `npm run bench`, 2 with --quick)
 */
export async function runSearchLoadBench(options: { factor?: number; phaseMs?: number; ratePerSecond?: number; write?: (line: string) => void } = {}): Promise<SearchLoadReport> {
  const factor = options.factor ?? 20
  const phaseMs = options.phaseMs ?? 15_000
  const ratePerSecond = options.ratePerSecond ?? 50
  const write = options.write ?? ((line: string) => process.stdout.write(line + '\n'))
  const raws = await loadCorpusMessages(corpusDirectoryDefault)
  const dir = await tempDir('mailkeep-bench-search-load-')
  const config = await writeConfig(dir, { smtp: { port: 0, archiveRecipients: ['journal@bench.local'] } })
  const service = await startService(config, { timeoutMs: 60_000 })
  try {
    const budgetMs = 2_000
    write(`search under load: delivering ${raws.length * factor} messages (the corpus ${factor}x) over SMTP…`)
    const loadStartedMs = performance.now()
    const messages = function* (): Iterable<Buffer> {
      for (let copy = 0; copy < factor; copy++) for (let index = 0; index < raws.length; index++) yield toCrlf(copy === 0 ? raws[index]! : syntheticRaw(raws[index]!, copy, index))
    }
    const delivered = await load(portOf(service, 'smtp'), messages(), 10)
    const loadSeconds = (performance.now() - loadStartedMs) / 1000
    const filler = toCrlf(raws[0]!).subarray(toCrlf(raws[0]!).indexOf('\r\n\r\n') + 4)

    write('search under load: quiet phase (SMTP and status only)…')
    const quiet = await phase(service, phaseMs, ratePerSecond, filler, async () => undefined)
    write('search under load: bomb phase (the same, and 32-phrase queries back to back)…')
    const random = createRandom(20_261_205)
    const outcomes: Record<string, number> = {}
    const answerMs: number[] = []
    const bombs = await phase(service, phaseMs, ratePerSecond, filler, async (running) => {
      while (running()) {
        const phrases = Array.from(
          { length: 32 },
          () => `"${commonWords[random.int(commonWords.length)]} ${commonWords[random.int(commonWords.length)]} ${commonWords[random.int(commonWords.length)]}"`,
        )
        const askedMs = performance.now()
        const response = await apiGet(service, `/api/v1/search?q=${encodeURIComponent(phrases.join(' OR '))}&limit=20`)
        const body = (await response?.json().catch(() => ({}))) as { error?: { code: string } }
        answerMs.push(performance.now() - askedMs)
        const outcome = `${response?.status ?? 'no answer'}${body.error ? ` ${body.error.code}` : ''}`
        outcomes[outcome] = (outcomes[outcome] ?? 0) + 1
      }
    })
    const report: SearchLoadReport = { messages: delivered, loadSeconds, budgetMs, quiet, bombs: { ...bombs, outcomes, answerMs: summary(answerMs) } }
    printSearchLoad(report, ratePerSecond, write)
    return report
  } finally {
    await service.stop()
  }
}

export function printSearchLoad(report: SearchLoadReport, ratePerSecond: number, write: (line: string) => void): void {
  const ms = (value: number) => value.toFixed(1)
  const line = (figures: LatencySummary) => `p50 ${ms(figures.p50Ms)} / p99 ${ms(figures.p99Ms)} / max ${ms(figures.maxMs)} ms (${figures.count})`
  write(`search under load: ${report.messages} messages (loaded over SMTP in ${report.loadSeconds.toFixed(0)} s); a relay at ${ratePerSecond} msg/s, status every 100 ms`)
  write(`  quiet: SMTP ack ${line(report.quiet.ack)}; status ${line(report.quiet.status)}`)
  write(`  bombs: SMTP ack ${line(report.bombs.ack)}; status ${line(report.bombs.status)}`)
  write(
    `  bombs sent: ${Object.entries(report.bombs.outcomes)
      .map(([outcome, count]) => `${outcome} x${count}`)
      .join(', ')}; answered after ${line(report.bombs.answerMs)} (budget ${report.budgetMs} ms)`,
  )
  const met = report.bombs.ack.p99Ms < 500 && report.bombs.status.p99Ms < 200
  write(`  target during the bombs: SMTP ack p99 < 500 ms, status p99 < 200 ms: ${met ? 'MET' : 'NOT MET'}`)
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) await runSearchLoadBench({ factor: Number(process.env.BENCH_FACTOR ?? 20) })
