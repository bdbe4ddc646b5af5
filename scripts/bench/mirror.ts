/**
 * Mirror benchmark, store to store: two real firmware processes (Bun, their own data dirs,
 * real LMDB stores with the search index, real TLS on 127.0.0.1), driven over their real SMTP
 * and HTTP ports, all in one run:
 *
 *   1. local ingest: A alone takes `messages` corpus messages over `sessions` SMTP sessions
 *      (each counted at its 250, given after the durable write) — the local ingest rate;
 *   2. catch-up: B was offline for all of them; B starts, and the rate is messages over the
 *      time from A's sender connecting to B's store holding them all (B's boot excluded);
 *   3. steady lag: A takes `steadyRatePerSecond` messages/s over one SMTP session for
 *      `steadyDurationMs`; lag = first seen in a search on B − the 250 on A (B is polled newest
 *      first every `pollIntervalMs`, so each figure carries up to that much polling error).
 *
 * Both processes share the machine's cores (as the copy and the local ingest do not in the
 * field): catch-up is A reading and sending while B parses, indexes and commits.
 *
 *   node_modules/.bin/bun scripts/bench/mirror.ts [messages]     (prints one JSON line)
 * The copy layer alone (fake stores) is scripts/bench/mirror-copy.ts.
 */
import { rm } from 'node:fs/promises'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadCorpus } from './parse.js'
import { toCrlf } from './smtp.js'
import { SmtpSession, archivedId } from '../lib/smtp-client.js'
import { startService, tempDir, type RunningService } from '../../tests/helpers/service.js'
import { apiGet, freePort, statusOf, writeApplianceConfig } from '../../tests/helpers/mirror-appliances.js'
import { portOf } from '../../tests/helpers/service.js'

export interface MirrorBenchOptions {
  /** Messages A holds while B is offline (corpus messages, reused with a unique header when more are asked for). */
  messages?: number
  /** Concurrent SMTP sessions for the local ingest. */
  sessions?: number
  /** Steady-state SMTP rate on A, in messages per second. */
  steadyRatePerSecond?: number
  /** Length of the steady phase, in milliseconds. */
  steadyDurationMs?: number
  /** How often B is searched for new steady messages, in milliseconds. */
  pollIntervalMs?: number
  /** Progress lines go here (stderr by default). */
  progress?: (line: string) => void
}

export interface MirrorBenchResult {
  runtime: string
  messages: number
  rawBytes: number
  localIngest: { messagesPerSecond: number; seconds: number; sessions: number }
  catchUp: { messagesPerSecond: number; megabytesPerSecond: number; seconds: number }
  /** Catch-up rate over local ingest rate (target ≥ 0.8). */
  catchUpRatio: number
  steadyLag: { messages: number; ratePerSecond: number; p50Ms: number; p95Ms: number; maxMs: number; unseen: number; pollIntervalMs: number }
}

const round = (value: number, digits = 1): number => Number(value.toFixed(digits))
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function percentile(sorted: number[], fraction: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!
}

/** `count` distinct messages from the corpus: each gets an `X-Bench-Seq` header, so reused bytes still differ. */
async function benchMessages(count: number): Promise<Buffer[]> {
  const corpus = (await loadCorpus(undefined, count)).map(toCrlf)
  return Array.from({ length: count }, (_, index) => Buffer.concat([Buffer.from(`X-Bench-Seq: ${index}\r\n`), corpus[index % corpus.length]!]))
}

/** A steady-phase message dated now (search lists newest first by date). */
function steadyMessage(index: number, filler: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(
      `From: sender@bench.local\r\nTo: journal@bench.local\r\nSubject: benchsteadyword ${index}\r\nDate: ${new Date().toUTCString().replace('GMT', '+0000')}\r\nMessage-ID: <steady-${index}@bench.local>\r\n\r\n`,
    ),
    filler,
  ])
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, everyMs = 100): Promise<T> {
  const started = Date.now()
  for (;;) {
    const value = await probe().catch(() => undefined)
    if (value !== undefined) return value
    if (Date.now() - started > timeoutMs) throw new Error(`mirror bench: timed out waiting for ${what}`)
    await sleep(everyMs)
  }
}

/** Runs the benchmark (see the file comment). @throws when a phase does not finish within its bound */
export async function runMirrorBench(options: MirrorBenchOptions = {}): Promise<MirrorBenchResult> {
  const count = options.messages ?? 10_000
  const sessions = options.sessions ?? 10
  const rate = options.steadyRatePerSecond ?? 100
  const steadyCount = Math.round((rate * (options.steadyDurationMs ?? 10_000)) / 1000)
  const pollIntervalMs = options.pollIntervalMs ?? 25
  const progress = options.progress ?? ((line: string) => process.stderr.write(`mirror bench: ${line}\n`))
  const raws = await benchMessages(count)
  const rawBytes = raws.reduce((total, raw) => total + raw.length, 0)
  const dir = await tempDir('mailkeep-bench-mirror-')
  const [portA, portB] = [await freePort(), await freePort()]
  const archiveRecipients = { smtp: { port: 0, archiveRecipients: ['journal@bench.local'] } }
  // A short retry cap, so A notices B's return within half a second (the catch-up clock starts at the connection anyway).
  const mirror = { retryDelayMsMin: 100, retryDelayMsMax: 500 }
  const configA = await writeApplianceConfig(dir, 'a', { serial: 'MK650-BENCH-A', mirrorPort: portA, peers: [portB], mirror, extra: archiveRecipients })
  const configB = await writeApplianceConfig(dir, 'b', { serial: 'MK650-BENCH-B', mirrorPort: portB, peers: [portA], mirror, extra: archiveRecipients })
  let a: RunningService | undefined
  let b: RunningService | undefined
  try {
    // 1. Local ingest on A while B is offline.
    a = await startService(configA, { timeoutMs: 60_000 })
    const smtpPort = portOf(a, 'smtp')
    progress(`local ingest of ${count} messages over ${sessions} SMTP sessions`)
    let next = 0
    const localStarted = performance.now()
    await Promise.all(
      Array.from({ length: sessions }, async () => {
        const session = await SmtpSession.open(smtpPort)
        for (let index = next++; index < raws.length; index = next++) {
          const reply = await session.send('sender@bench.local', ['journal@bench.local'], raws[index]!)
          if (reply.code !== 250) throw new Error(`A refused a message: ${reply.code} ${reply.text}`)
        }
        session.close()
      }),
    )
    const localSeconds = (performance.now() - localStarted) / 1000
    const held = (await statusOf(a)).store.messages
    if (held !== count) throw new Error(`A holds ${held} messages, expected ${count}`)

    // 2. Catch-up: B returns; the clock starts when A's sender is connected to it.
    progress('catch-up: starting B')
    b = await startService(configB, { timeoutMs: 60_000 })
    const connectedAtMs = await waitUntil('A connected to B', async () => (await statusOf(a!)).mirror.peers[0]?.connectedSinceMs ?? undefined, 30_000, 20)
    const caughtUpAtMs = await waitUntil('B caught up', async () => ((await statusOf(b!)).store.messages >= count ? Date.now() : undefined), 600_000, 50)
    const catchUpSeconds = Math.max(0.001, (caughtUpAtMs - connectedAtMs) / 1000)

    // 3. Steady lag: SMTP at a fixed rate on A; B searched newest first.
    progress(`steady lag: ${steadyCount} messages at ${rate} msg/s`)
    const filler = raws[0]!.subarray(raws[0]!.indexOf('\r\n\r\n') + 4)
    const ackedAt = new Map<string, number>()
    const seenAt = new Map<string, number>()
    let polling = true
    let lastAckMs = Date.now()
    const poller = (async () => {
      while (polling || seenAt.size < ackedAt.size) {
        let cursor: string | null = null
        // Page newest first until a page brings nothing new.
        for (;;) {
          const response = await apiGet(b!, `/api/v1/search?q=benchsteadyword&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
          if (!response || response.status !== 200) break
          const page = (await response.json()) as { hits: { id: string }[]; nextCursor: string | null }
          const nowMs = Date.now()
          let fresh = 0
          for (const hit of page.hits) {
            if (!seenAt.has(hit.id)) {
              seenAt.set(hit.id, nowMs)
              fresh += 1
            }
          }
          if (fresh === 0 || !page.nextCursor) break
          cursor = page.nextCursor
        }
        if (!polling && Date.now() - lastAckMs > 30_000) break
        await sleep(pollIntervalMs)
      }
    })()
    const session = await SmtpSession.open(smtpPort)
    const steadyStarted = performance.now()
    for (let index = 0; index < steadyCount; index += 1) {
      const waitMs = steadyStarted + (index * 1000) / rate - performance.now()
      if (waitMs > 0) await sleep(waitMs)
      const reply = await session.send('sender@bench.local', ['journal@bench.local'], steadyMessage(index, filler))
      lastAckMs = Date.now()
      const id = archivedId(reply)
      if (reply.code !== 250 || !id) throw new Error(`A refused a steady message: ${reply.code} ${reply.text}`)
      ackedAt.set(id, lastAckMs)
    }
    session.close()
    polling = false
    await poller
    const lags = [...ackedAt]
      .filter(([id]) => seenAt.has(id))
      .map(([id, at]) => Math.max(0, seenAt.get(id)! - at))
      .sort((x, y) => x - y)
    const bun = (globalThis as { Bun?: { version: string } }).Bun
    return {
      runtime: bun ? `bun ${bun.version}` : `node ${process.versions.node}`,
      messages: count,
      rawBytes,
      localIngest: { messagesPerSecond: Math.round(count / localSeconds), seconds: round(localSeconds, 2), sessions },
      catchUp: { messagesPerSecond: Math.round(count / catchUpSeconds), megabytesPerSecond: round(rawBytes / 1e6 / catchUpSeconds), seconds: round(catchUpSeconds, 2) },
      catchUpRatio: round(localSeconds / catchUpSeconds, 2),
      steadyLag: {
        messages: lags.length,
        ratePerSecond: rate,
        p50Ms: round(percentile(lags, 0.5)),
        p95Ms: round(percentile(lags, 0.95)),
        maxMs: round(lags[lags.length - 1] ?? 0),
        unseen: ackedAt.size - lags.length,
        pollIntervalMs,
      },
    }
  } finally {
    await Promise.all([a?.stop(), b?.stop()])
    await rm(dir, { recursive: true, force: true })
  }
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) {
  const result = await runMirrorBench({ messages: Number(process.argv[2] ?? 10_000) })
  process.stdout.write(JSON.stringify(result) + '\n')
}
