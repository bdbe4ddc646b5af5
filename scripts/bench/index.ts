/**
 * `npm run bench`: every benchmark, on Bun (the appliance runtime), with the ceiling or
 * anchor measured in the same run beside each figure:
 *   parse      our parser (postal-mime) over the real corpus alone, on the event loop (ceiling of ingest)
 *   store      archive store API with 10 writers (no index), beside raw LMDB puts of the same bytes
 *   smtp       SMTP with 10 concurrent sessions, durable acks, index on, vs the parse ceiling (target ≥ 50%;
 *              the ceiling is the mean of the parse runs of this invocation, one of them right after SMTP),
 *              parse worker threads used, disk bytes per raw byte: archive store, index, whole data dir
 *   search     query latency p50/p95 per query class vs notmuch on the same messages, and cold phrases (each once)
 *   search-load  SMTP ack and status latency while 32-phrase queries run back to back, beside a quiet phase
 *   mirror     store to store (two firmware processes): catch-up rate after 10,000 messages offline vs local
 *              SMTP ingest (target ≥ 80%), lag archived-on-A → searchable-on-B p95 (< 1 s); then the copy layer alone,
 *              with new-mail lag while a backlog drains (two lanes, and one lane for comparison; `--backlog N`,
 *              default 20,000). `--only mirror-copy` runs the copy layer part alone.
 *   digest     proof of agreement: in-memory id digests of 1,000,000 ids (100,000 with --quick), one side lacking
 *              0, 1, 10 or 1,000; round trips, bytes exchanged and time to find them (no network)
 *   export     one export of 10,000 messages (2,000 with --quick) through the API: the service's
 *              resident and anonymous memory before and at peak beside the export's size, the rate,
 *              the manifest's signature and every .eml hash checked
 *   verify     the whole `mirror verify` exchange (initiator and responder, RSA signatures both ways) over an
 *              in-memory channel at 1,000,000 ids (100,000 with --quick), the peer lacking 0, 1, 10 or 1,000
 * `npm run bench -- --only smtp,store` runs a subset; `--quick` uses smaller sizes.
 * Search and mirror run in a process of their own each (this script again, with `--only`):
 * a latency figure then does not depend on the heap and the compiled code that the ingest
 * benches left behind (notmuch's queries run in a fresh process too).
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { runParseBench } from './parse.js'
import { runStoreBench } from './store.js'
import { runSmtpBench } from './smtp.js'
import { runSearchBench } from './search.js'
import { runSearchLoadBench } from './search-load.js'
import { runMirrorBench } from './mirror.js'
import { runMirrorCopyBench } from './mirror-copy.js'
import { runDigestBench } from './digest.js'
import { runVerifyBench } from './verify.js'
import { exportReportLines, runExportBench } from './export.js'

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const backlogIndex = args.indexOf('--backlog')
/** `--backlog N`: messages queued for the peer in the mirror copy bench's new-mail-first phase (default 20,000). */
const backlogMessages = backlogIndex >= 0 ? Number(args[backlogIndex + 1]) : undefined
const onlyIndex = args.indexOf('--only')
const only = onlyIndex >= 0 ? new Set(args[onlyIndex + 1]!.split(',')) : undefined
const wanted = (name: string) => !only || only.has(name)
const print = (line: string) => process.stdout.write(line + '\n')
const fixed = (value: number, digits = 0) => value.toFixed(digits)

async function section(name: string, run: () => Promise<void>, ownProcess = false): Promise<void> {
  if (!wanted(name)) return
  if (ownProcess && only?.size !== 1) {
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), '--only', name, ...(quick ? ['--quick'] : [])], {
      stdio: ['ignore', 'inherit', 'inherit'],
      env: { ...process.env, MAILKEEP_BENCH_CHILD: '1' },
    })
    if (child.status !== 0) {
      print(`${name} failed: its process ended with ${child.status ?? child.signal}`)
      process.exitCode = 1
    }
    return
  }
  print(`\n== ${name} ==`)
  try {
    await run()
  } catch (error) {
    print(`${name} failed: ${(error as Error).stack ?? String(error)}`)
    process.exitCode = 1
  }
}

if (!process.env.MAILKEEP_BENCH_CHILD)
  print(
    `mailkeep benchmarks on ${typeof (globalThis as { Bun?: unknown }).Bun === 'undefined' ? `node ${process.version}` : `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`}${quick ? ' (quick)' : ''}`,
  )
const corpusLimit = quick ? 1500 : undefined
/** Parse-alone runs of this invocation: the ceiling is their mean (the machine's speed drifts, so it is measured around the SMTP run). */
const parseRuns: number[] = []
const parseCeiling = (): number => parseRuns.reduce((sum, rate) => sum + rate, 0) / parseRuns.length
const parseAlone = async (label: string): Promise<void> => {
  const result = await runParseBench({ limit: corpusLimit })
  parseRuns.push(result.messagesPerSecond)
  print(
    `parse alone${label}: ${result.messages} messages in ${fixed(result.seconds, 2)} s = ${fixed(result.messagesPerSecond)} msg/s, ${fixed(result.megabytesPerSecond, 1)} MB/s, ${fixed(result.cpuMsPerMessage, 3)} CPU-ms/msg (1 thread, event loop)`,
  )
}

await section('parse', () => parseAlone(''))

await section('store', async () => {
  const result = await runStoreBench({ limit: corpusLimit })
  for (const run of result.runs) {
    const name = run.run === 'store' ? 'store API (no index)' : run.run === 'lmdb-put' ? 'raw LMDB put ceiling' : 'raw LMDB put, overlapping'
    print(
      `${name.padEnd(26)} ${String(run.messages).padStart(6)} msgs, ${run.writers} writers: ${fixed(run.messagesPerSecond).padStart(6)} msg/s, ${fixed(run.megabytesPerSecond, 1).padStart(5)} MB/s, disk/raw ${fixed(run.diskBytesPerRawByte, 2)}${run.commits === null ? '' : `, ${run.commits} commits`}`,
    )
  }
})

await section('smtp', async () => {
  if (parseRuns.length === 0) await parseAlone(' (before smtp)')
  const result = await runSmtpBench({ messages: corpusLimit, sessions: 10 })
  await parseAlone(' (after smtp)')
  const ceiling = parseCeiling()
  const ratio = result.messagesPerSecond / ceiling
  print(
    `smtp durable ingest, index on: ${result.messages} msgs over ${result.sessions} sessions in ${fixed(result.seconds, 2)} s = ${fixed(result.messagesPerSecond)} msg/s, ${fixed(result.megabytesPerSecond, 1)} MB/s, refused ${result.refused}`,
  )
  print(
    `  parse worker threads: ${result.parseWorkers} (${result.parsedOnWorkers} msgs parsed on workers, ${result.parsedInProcess} on the event loop; index prepare on workers: ${result.indexPrepareOnWorkers ? 'yes' : 'no'})`,
  )
  print(`  CPU-ms/msg: appliance ${fixed(result.applianceCpuMsPerMessage, 3)} (all threads), senders ${fixed(result.senderCpuMsPerMessage, 3)} (separate process, same cores)`)
  print(
    `  appliance CPU-ms/msg by thread: ${result.threadCpuMsPerMessage
      .slice(0, 6)
      .map((thread) => `${thread.thread.replace(/ \d+$/, '')} ${fixed(thread.userMs + thread.systemMs, 2)}`)
      .join(', ')}`,
  )
  print(`  vs parse ceiling ${fixed(ceiling)} msg/s (mean of ${parseRuns.map((rate) => fixed(rate)).join(', ')}): ${fixed(ratio * 100)}% (target >= 50%) ${ratio >= 0.5 ? 'MET' : 'NOT MET'}`)
  print(
    `  disk bytes per raw byte: archive store ${fixed(result.storeBytesPerRawByte, 2)}, index ${fixed(result.indexBytesPerRawByte, 2)}, whole data dir ${fixed(result.dataDirBytesPerRawByte, 2)} (target <= 1.00) ${result.dataDirBytesPerRawByte <= 1 ? 'MET' : 'NOT MET'}`,
  )
  print(
    `    by database: ${Object.entries(result.databaseBytesPerRawByte)
      .filter(([, share]) => share >= 0.005)
      .sort((a, b) => b[1] - a[1])
      .map(([name, share]) => `${name} ${fixed(share, 3)}`)
      .join(', ')}`,
  )
})

await section(
  'search',
  async () => {
    await runSearchBench({ factor: quick ? 2 : 20, write: print })
  },
  true,
)

await section(
  'search-load',
  async () => {
    await runSearchLoadBench({ factor: quick ? 2 : 20, write: print })
  },
  true,
)

await section(
  'mirror',
  async () => {
    const result = await runMirrorBench({ messages: quick ? 2000 : 10_000, steadyDurationMs: quick ? 5_000 : 10_000, progress: () => undefined })
    print(
      `store to store (two firmware processes, real LMDB + index, TLS): local SMTP ingest ${fixed(result.localIngest.messagesPerSecond)} msg/s over ${result.localIngest.sessions} sessions`,
    )
    print(
      `  catch-up of ${result.messages} msgs after B was offline: ${fixed(result.catchUp.messagesPerSecond)} msg/s, ${fixed(result.catchUp.megabytesPerSecond, 1)} MB/s (${fixed(result.catchUpRatio * 100)}% of local, target >= 80%) ${result.catchUpRatio >= 0.8 ? 'MET' : 'NOT MET'}`,
    )
    print(
      `  lag archived on A -> searchable on B over ${result.steadyLag.messages} msgs at ${fixed(result.steadyLag.ratePerSecond)} msg/s: p50 ${fixed(result.steadyLag.p50Ms, 1)} ms, p95 ${fixed(result.steadyLag.p95Ms, 1)} ms, max ${fixed(result.steadyLag.maxMs, 1)} ms (target p95 < 1000) ${result.steadyLag.p95Ms < 1000 && result.steadyLag.unseen === 0 ? 'MET' : 'NOT MET'}${result.steadyLag.unseen > 0 ? `, ${result.steadyLag.unseen} never seen` : ''}; search polled every ${result.steadyLag.pollIntervalMs} ms`,
    )
    await mirrorCopySection()
  },
  true,
)

/** The copy layer alone, in process (also `--only mirror-copy`, which skips the store-to-store part). */
async function mirrorCopySection(): Promise<void> {
  const copy = await runMirrorCopyBench({ messages: quick ? 2000 : 10_000, backlogMessages: backlogMessages ?? (quick ? 5_000 : 20_000), compareSingleLane: !quick })
  print(
    `copy layer alone (fake durable stores, TLS): catch-up ${fixed(copy.catchUp.messagesPerSecond)} msg/s vs local ${fixed(copy.localIngest.messagesPerSecond)} msg/s (${fixed(copy.catchUpRatio * 100)}%); steady lag p95 ${fixed(copy.steadyLag.p95Ms, 1)} ms`,
  )
  for (const run of copy.backlog) {
    print(
      `  ${run.lanes === 'two' ? 'new mail first (two lanes)' : 'one lane (before)'}: ${run.backlogMessages} queued drained at ${fixed(run.drain.messagesPerSecond)} msg/s beside new mail at ${fixed(run.lag.ratePerSecond)} msg/s; ` +
        `new-mail lag p50 ${fixed(run.lag.p50Ms, 1)} ms, p95 ${fixed(run.lag.p95Ms, 1)} ms, max ${fixed(run.lag.maxMs, 1)} ms over ${run.lag.messages} msgs (without a backlog p95 ${fixed(copy.steadyLag.p95Ms, 1)} ms)`,
    )
  }
}
if (only?.has('mirror-copy')) await section('mirror-copy', mirrorCopySection)

await section(
  'export',
  async () => {
    const report = await runExportBench({ messages: quick ? 2_000 : 10_000, write: print })
    for (const line of exportReportLines(report)) print(line)
  },
  true,
)

await section('digest', async () => {
  const result = await runDigestBench({ ids: quick ? 100_000 : 1_000_000 })
  print(
    `id digest of ${result.ids} random ids built in memory in ${fixed(result.buildMs)} ms (${fixed((result.buildMs * 1000) / result.ids, 2)} us an id); compared over the wire format, no network:`,
  )
  for (const run of result.runs) {
    const what = run.differences === 0 ? 'none missing (agreement)' : `${run.differences} missing on one side`
    print(
      `  ${what.padEnd(26)} ${String(run.roundTrips).padStart(2)} round trips, ${String(run.bytesExchanged).padStart(8)} bytes, ${fixed(run.compareMs, 1).padStart(7)} ms, found ${run.found}${run.exact ? ' (exact)' : run.truncated ? ' (TRUNCATED)' : ' (WRONG)'}`,
    )
  }
})

await section('verify', async () => {
  const result = await runVerifyBench({ ids: quick ? 100_000 : 1_000_000 })
  print(`mirror verify between two archives of ${result.ids} ids (whole exchange: cut, digest comparison, explanations, report signed by both; in-memory channel, no network):`)
  for (const run of result.runs) {
    const what = run.differences === 0 ? 'none missing (agreement)' : `${run.differences} missing on the peer`
    print(
      `  ${what.padEnd(26)} ${String(run.frames).padStart(3)} frames, ${String(run.bytes).padStart(8)} bytes, ${fixed(run.verifyMs, 1).padStart(7)} ms, outcome ${run.outcome} (${run.unexplained} unexplained)`,
    )
  }
})
