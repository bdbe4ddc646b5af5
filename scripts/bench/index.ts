/**
 * `npm run bench`: every benchmark, on Bun (the appliance runtime), with the ceiling or
 * anchor measured in the same run beside each figure:
 *   parse      postal-mime parse of the real corpus alone (ceiling of ingest)
 *   store      archive store API with 10 writers, beside raw LMDB puts of the same bytes
 *   smtp       SMTP with 10 concurrent sessions and durable acks, vs the parse ceiling (target ≥ 50%)
 *   search     query latency p50/p95 per query class vs notmuch on the same messages
 *   mirror     store to store (two firmware processes): catch-up rate after 10,000 messages offline vs local
 *              SMTP ingest (target ≥ 80%), lag archived-on-A → searchable-on-B p95 (< 1 s); then the copy layer alone
 * `npm run bench -- --only smtp,store` runs a subset; `--quick` uses smaller sizes.
 */
import { runParseBench } from './parse.js'
import { runStoreBench } from './store.js'
import { runSmtpBench } from './smtp.js'
import { runSearchBench } from './search.js'
import { runMirrorBench } from './mirror.js'
import { runMirrorCopyBench } from './mirror-copy.js'

const args = process.argv.slice(2)
const quick = args.includes('--quick')
const onlyIndex = args.indexOf('--only')
const only = onlyIndex >= 0 ? new Set(args[onlyIndex + 1]!.split(',')) : undefined
const wanted = (name: string) => !only || only.has(name)
const print = (line: string) => process.stdout.write(line + '\n')
const fixed = (value: number, digits = 0) => value.toFixed(digits)

async function section(name: string, run: () => Promise<void>): Promise<void> {
  if (!wanted(name)) return
  print(`\n== ${name} ==`)
  try {
    await run()
  } catch (error) {
    print(`${name} failed: ${(error as Error).stack ?? String(error)}`)
    process.exitCode = 1
  }
}

print(`mailkeep benchmarks on ${typeof (globalThis as { Bun?: unknown }).Bun === 'undefined' ? `node ${process.version}` : `bun ${(globalThis as unknown as { Bun: { version: string } }).Bun.version}`}${quick ? ' (quick)' : ''}`)
let parseCeiling: number | undefined

await section('parse', async () => {
  const result = await runParseBench({ limit: quick ? 1500 : undefined })
  parseCeiling = result.messagesPerSecond
  print(`parse alone: ${result.messages} messages in ${fixed(result.seconds, 2)} s = ${fixed(result.messagesPerSecond)} msg/s, ${fixed(result.megabytesPerSecond, 1)} MB/s`)
})

await section('store', async () => {
  const result = await runStoreBench({ limit: quick ? 1500 : undefined })
  for (const run of result.runs) {
    print(`${run.run.padEnd(22)} ${String(run.messages).padStart(6)} msgs, ${run.writers} writers: ${fixed(run.messagesPerSecond).padStart(6)} msg/s, ${fixed(run.megabytesPerSecond, 1).padStart(5)} MB/s, disk/raw ${fixed(run.diskBytesPerRawByte, 2)}${run.commits === null ? '' : `, ${run.commits} commits`}`)
  }
})

await section('smtp', async () => {
  if (parseCeiling === undefined) parseCeiling = (await runParseBench({ limit: quick ? 1500 : undefined })).messagesPerSecond
  const result = await runSmtpBench({ messages: quick ? 1500 : undefined, sessions: 10 })
  const ratio = result.messagesPerSecond / parseCeiling
  print(`smtp durable ingest: ${result.messages} msgs over ${result.sessions} sessions in ${fixed(result.seconds, 2)} s = ${fixed(result.messagesPerSecond)} msg/s, ${fixed(result.megabytesPerSecond, 1)} MB/s, refused ${result.refused}`)
  print(`  vs parse ceiling ${fixed(parseCeiling)} msg/s: ${fixed(ratio * 100)}% (target >= 50%) ${ratio >= 0.5 ? 'MET' : 'NOT MET'}`)
  print(`  disk bytes per raw byte: ${fixed(result.diskBytesPerRawByte, 2)} (target <= 1.00) ${result.diskBytesPerRawByte <= 1 ? 'MET' : 'NOT MET'}`)
})

await section('search', async () => {
  await runSearchBench({ factor: quick ? 2 : 20, write: print })
})

await section('mirror', async () => {
  const result = await runMirrorBench({ messages: quick ? 2000 : 10_000, steadyDurationMs: quick ? 5_000 : 10_000, progress: () => undefined })
  print(`store to store (two firmware processes, real LMDB + index, TLS): local SMTP ingest ${fixed(result.localIngest.messagesPerSecond)} msg/s over ${result.localIngest.sessions} sessions`)
  print(`  catch-up of ${result.messages} msgs after B was offline: ${fixed(result.catchUp.messagesPerSecond)} msg/s, ${fixed(result.catchUp.megabytesPerSecond, 1)} MB/s (${fixed(result.catchUpRatio * 100)}% of local, target >= 80%) ${result.catchUpRatio >= 0.8 ? 'MET' : 'NOT MET'}`)
  print(`  lag archived on A -> searchable on B over ${result.steadyLag.messages} msgs at ${fixed(result.steadyLag.ratePerSecond)} msg/s: p50 ${fixed(result.steadyLag.p50Ms, 1)} ms, p95 ${fixed(result.steadyLag.p95Ms, 1)} ms, max ${fixed(result.steadyLag.maxMs, 1)} ms (target p95 < 1000) ${result.steadyLag.p95Ms < 1000 && result.steadyLag.unseen === 0 ? 'MET' : 'NOT MET'}${result.steadyLag.unseen > 0 ? `, ${result.steadyLag.unseen} never seen` : ''}; search polled every ${result.steadyLag.pollIntervalMs} ms`)
  const copy = await runMirrorCopyBench({ messages: quick ? 2000 : 10_000 })
  print(`copy layer alone (fake durable stores, TLS): catch-up ${fixed(copy.catchUp.messagesPerSecond)} msg/s vs local ${fixed(copy.localIngest.messagesPerSecond)} msg/s; steady lag p95 ${fixed(copy.steadyLag.p95Ms, 1)} ms`)
})
