/**
 * Mirror copy benchmark: catch-up rate after a peer was offline, beside the local ingest rate
 * of the same durable pipeline, and steady-state replication lag. Two mirror services over
 * real TLS on 127.0.0.1: A in the main thread, B in a worker thread (its own event loop, as
 * a separate appliance would have), both over in-memory archives; B stores through a fake
 * durable pipeline that appends each group of messages to a file and fdatasyncs it once
 * (group commit, like the store). The parse and LMDB costs of the real store are not in these
 * figures; the lead measures end to end with real stores. This isolates what copying adds.
 *
 *   node_modules/.bin/bun scripts/bench/mirror-copy.ts                   (Bun, the appliance runtime)
 *   node --import @tapjs/typescript/import scripts/bench/mirror-copy.ts    (Node 20)
 *
 * Then new mail first: B is paused on A while a backlog is archived, and on resume A archives
 * at the steady rate while the backlog drains; the lag of that new mail (with the copy lanes,
 * and with BENCH_MIRROR_COMPARE=1 also with one lane, the order before) beside the steady lag
 * without a backlog, and the backlog's drain rate beside the local ingest rate.
 *
 * Env: BENCH_MIRROR_MESSAGES (default 10000), BENCH_MIRROR_STEADY_RATE (messages/s, default
 * 200), BENCH_MIRROR_STEADY_MS (default 5000), BENCH_MIRROR_BACKLOG (messages, default 20000;
 * 0 skips), BENCH_MIRROR_COMPARE (1: one-lane run too). Prints one JSON line.
 */
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads'
import { createRandom } from '../../firmware/common/clock.js'
import { mirrorServiceDefaults } from '../../firmware/mirror/mirror-service.js'
import { laneSplitThresholdEntries } from '../../firmware/mirror/copy-lanes.js'
import { deriveMirrorSecret, generateSharedSecret } from '../../firmware/mirror/secret.js'
import { createMemoryArchive, createMemoryPipeline, localDelivery, makeMessage, sha256Hex, type MemoryPipelineOptions } from '../../tests/firmware/mirror/fakes.js'
import { createTestNode, waitFor, type TestNode } from '../../tests/firmware/mirror/nodes.js'

export interface MirrorBenchOptions {
  /** Messages in A's archive when B is added (the offline backlog). */
  messages?: number
  /** Mean message size, in bytes (sizes vary ±50%). */
  messageBytesMean?: number
  /** Local submits in flight when measuring the local ingest rate (concurrent SMTP sessions). */
  localConcurrency?: number
  /** Steady-state ingest rate on A, in messages per second. */
  steadyRatePerSecond?: number
  /** Length of the steady-state phase, in milliseconds. */
  steadyDurationMs?: number
  batchMessagesMax?: number
  batchBytesMax?: number
  inflightBatchesMax?: number
  seed?: number
  /** Messages queued for B while it is paused, drained beside new mail (0 skips the phase). */
  backlogMessages?: number
  /** Also measure the backlog phase with one lane (the order before the copy lanes). */
  compareSingleLane?: boolean
}

/** New mail archived on A while a backlog for B drains. */
export interface BacklogLagResult {
  lanes: 'two' | 'one'
  backlogMessages: number
  /** From resume to the last backlog copy durable on B, with the steady load beside it. */
  drain: { messagesPerSecond: number; seconds: number }
  /** New mail archived while the backlog was draining: durable and notified on A → durable on B. */
  lag: { messages: number; p50Ms: number; p95Ms: number; maxMs: number; ratePerSecond: number }
  /** Backlog copies stored on B after the last new message (0: new mail waited for all of it). */
  backlogLeftAtLastNewMail: number
}

export interface MirrorBenchResult {
  runtime: string
  messages: number
  bytes: number
  /**
   * B's durable pipeline fed by `localConcurrency` local submitters, in B's thread. CPU per
   * message (the whole process) is the figure to compare on a busy machine, where wall-clock
   * rates swing with other load.
   */
  localIngest: { messagesPerSecond: number; seconds: number; cpuMsPerMessage: number }
  /** From adding B as a peer to the last copy durable on B; CPU of both sides (A and B). */
  catchUp: { messagesPerSecond: number; megabytesPerSecond: number; seconds: number; cpuMsPerMessage: number }
  /** Catch-up rate over local ingest rate (target ≥ 0.8). */
  catchUpRatio: number
  /** From durable and notified on A to durable on B. */
  steadyLag: { messages: number; p50Ms: number; p95Ms: number; maxMs: number; ratePerSecond: number }
  /** New mail while a backlog drains (absent when backlogMessages is 0). */
  backlog: BacklogLagResult[]
  settings: { batchMessagesMax: number; batchBytesMax: number; inflightBatchesMax: number }
}

/** Messages between the main thread (A) and the worker (B). */
type ToPeer = { command: 'local'; raws: Uint8Array[]; concurrency: number } | { command: 'start'; service: Record<string, number> } | { command: 'stop' }
type FromPeer = { event: 'local'; seconds: number } | { event: 'started'; port: number } | { event: 'stored'; id: string; atMs: number } | { event: 'stopped' }

const workerRole = 'mailkeep-mirror-bench-peer'

/** Wall-clock milliseconds comparable across threads, sub-millisecond resolution. */
const nowMs = (): number => performance.timeOrigin + performance.now()

/** A fake durable commit in `directory`: append every message of a group to one file, then one fdatasync. */
async function durableCommit(directory: string): Promise<{ commit: NonNullable<MemoryPipelineOptions['commit']>; close(): Promise<void> }> {
  await mkdir(directory, { recursive: true })
  const handle = await open(join(directory, 'commits.bin'), 'a')
  return {
    async commit(raws) {
      for (const raw of raws) await handle.write(raw)
      await handle.datasync()
    },
    close: () => handle.close(),
  }
}

/** The worker side: B, with a durable pipeline; reports every stored copy. */
async function runPeer(directory: string, secretText: string): Promise<void> {
  const secret = await deriveMirrorSecret(secretText)
  const port = parentPort!
  const post = (message: FromPeer): void => port.postMessage(message)
  let node: TestNode | undefined
  const disk = await durableCommit(join(directory, 'b'))
  port.on('message', async (message: ToPeer) => {
    if (message.command === 'local') {
      // The local ingest rate of the same kind of pipeline, on this thread, on its own disk file.
      const localDisk = await durableCommit(join(directory, 'local'))
      const pipeline = createMemoryPipeline(createMemoryArchive(), { commit: localDisk.commit })
      let next = 0
      const started = performance.now()
      await Promise.all(
        Array.from({ length: message.concurrency }, async () => {
          while (next < message.raws.length) {
            const index = next++
            await pipeline.submit(message.raws[index]!, localDelivery(index))
          }
        }),
      )
      post({ event: 'local', seconds: (performance.now() - started) / 1000 })
      await localDisk.close()
    } else if (message.command === 'start') {
      node = await createTestNode({ serial: 'MK650-BENCH-B', secret, pipelineOptions: { commit: disk.commit }, service: message.service })
      node.pipeline.addListener((result, delivery) => {
        if (delivery.source === 'mirror') post({ event: 'stored', id: result.id, atMs: nowMs() })
      })
      post({ event: 'started', port: node.port })
    } else {
      await node?.stop()
      await disk.close()
      post({ event: 'stopped' })
      port.close()
    }
  })
}

function percentile(sorted: number[], fraction: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!
}

function runtimeName(): string {
  const bun = (globalThis as { Bun?: { version: string } }).Bun
  return bun ? `bun ${bun.version}` : `node ${process.versions.node}`
}

/** Process CPU time (user + system, all threads) since `start`, in milliseconds. */
function cpuMsSince(start: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(start)
  return (used.user + used.system) / 1000
}

const round = (value: number, digits = 1): number => Number(value.toFixed(digits))

/** Runs the benchmark (see the file comment). @throws when a phase does not finish within its bound */
export async function runMirrorCopyBench(options: MirrorBenchOptions = {}): Promise<MirrorBenchResult> {
  const count = options.messages ?? 10_000
  const meanBytes = options.messageBytesMean ?? 6_000
  const random = createRandom(options.seed ?? 42)
  const settings = {
    batchMessagesMax: options.batchMessagesMax ?? mirrorServiceDefaults.batchMessagesMax,
    batchBytesMax: options.batchBytesMax ?? mirrorServiceDefaults.batchBytesMax,
    inflightBatchesMax: options.inflightBatchesMax ?? mirrorServiceDefaults.inflightBatchesMax,
  }
  const service = { ...settings, ackTimeoutMs: 120_000, pollIntervalMs: 1_000, idleTimeoutMs: 60_000, handshakeTimeoutMs: 10_000 }
  const directory = await mkdtemp(join(tmpdir(), 'mailkeep-bench-mirror-'))
  const raws = Array.from({ length: count }, (_, index) => makeMessage(`bench-${index}`, Math.round(meanBytes * (0.5 + random.next())), random))
  const bytes = raws.reduce((total, raw) => total + raw.length, 0)

  // One secret for both threads (each would otherwise derive its own test secret).
  const secretText = generateSharedSecret()
  const worker = new Worker(fileURLToPath(import.meta.url), { workerData: { role: workerRole, directory, secretText } })
  const stored = new Map<string, number>()
  const replies: FromPeer[] = []
  // Backlog copies not yet stored on B (the backlog phase's progress, counted as they arrive).
  const backlogPending = new Set<string>()
  worker.on('message', (message: FromPeer) => {
    if (message.event === 'stored') {
      stored.set(message.id, message.atMs)
      backlogPending.delete(message.id)
    } else replies.push(message)
  })
  const reply = <E extends FromPeer['event']>(event: E, timeoutMs: number) =>
    waitFor(() => replies.find((message): message is Extract<FromPeer, { event: E }> => message.event === event), `peer ${event}`, timeoutMs)
  const send = (message: ToPeer): void => worker.postMessage(message)
  worker.on('error', (error) => {
    process.stderr.write(`mirror bench peer failed: ${String((error as Error).stack ?? error)}\n`)
  })

  const diskA = await durableCommit(join(directory, 'a'))
  const archiveA = createMemoryArchive()
  raws.forEach((raw, index) => archiveA.ingest(raw, localDelivery(index), null))
  let a: TestNode | undefined
  try {
    // 1. Local ingest rate of B's kind of pipeline, in B's thread.
    send({ command: 'local', raws, concurrency: options.localConcurrency ?? 64 })
    const localCpu = process.cpuUsage()
    const localSeconds = (await reply('local', 600_000)).seconds
    const localCpuMs = cpuMsSince(localCpu)

    // 2. Catch-up: A holds the backlog; B is added as a new peer (the same path as a peer back from offline).
    send({ command: 'start', service })
    const port = (await reply('started', 60_000)).port
    a = await createTestNode({
      serial: 'MK650-BENCH-A',
      secret: await deriveMirrorSecret(secretText),
      archive: archiveA,
      pipeline: createMemoryPipeline(archiveA, { commit: diskA.commit }),
      service,
    })
    const catchUpCpu = process.cpuUsage()
    const catchUpStarted = nowMs()
    await a.service.addPeer({ host: '127.0.0.1', port })
    await waitFor(() => stored.size >= count, 'catch-up', 600_000)
    const catchUpSeconds = (Math.max(...stored.values()) - catchUpStarted) / 1000
    const catchUpCpuMs = cpuMsSince(catchUpCpu)
    await waitFor(() => a!.peer(port)!.cursor === archiveA.lastSequence(), 'last acknowledgement', 60_000)

    // 3. Steady state: A archives at a fixed rate; lag = durable on B − durable and notified on A.
    const rate = options.steadyRatePerSecond ?? 200
    const steadyCount = Math.round((rate * (options.steadyDurationMs ?? 5_000)) / 1000)
    const archivedAt = new Map<string, number>()
    const makeRaws = (tag: string, total: number) => Array.from({ length: total }, (_, index) => makeMessage(`${tag}-${index}`, Math.round(meanBytes * (0.5 + random.next())), random))
    let ingested = count
    /** Archives `raws` on `node` at `rate` a second; once all are on B, their lags (sorted) and when the last was stored. */
    const ingestAtRate = async (node: TestNode, raws: Buffer[]): Promise<{ lags: number[]; lastStoredAtMs: number }> => {
      const started = performance.now()
      const submits: Promise<unknown>[] = []
      for (const [index, raw] of raws.entries()) {
        const waitMs = started + (index * 1000) / rate - performance.now()
        if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs))
        submits.push(node.ingest(raw, ingested++))
      }
      await Promise.all(submits)
      await waitFor(() => raws.every((raw) => stored.has(sha256Hex(raw))), 'copies of new mail', 600_000)
      const ids = raws.map(sha256Hex)
      return { lags: ids.map((id) => stored.get(id)! - archivedAt.get(id)!).sort((x, y) => x - y), lastStoredAtMs: Math.max(...ids.map((id) => stored.get(id)!)) }
    }
    const listen = (node: TestNode): void =>
      node.pipeline.addListener((result, delivery) => {
        if (delivery.source !== 'mirror') archivedAt.set(result.id, nowMs())
      })
    listen(a)
    const { lags } = await ingestAtRate(a, makeRaws('steady', steadyCount))
    const lagFigures = (sorted: number[]) => ({
      messages: sorted.length,
      p50Ms: round(percentile(sorted, 0.5)),
      p95Ms: round(percentile(sorted, 0.95)),
      maxMs: round(sorted[sorted.length - 1] ?? 0),
      ratePerSecond: rate,
    })

    // 4. New mail first: a backlog for B (paused on A), drained beside new mail at the steady rate.
    const backlog: BacklogLagResult[] = []
    const backlogCount = options.backlogMessages ?? 20_000
    const peer = { host: '127.0.0.1', port }
    const backlogPhase = async (node: TestNode, lanes: 'two' | 'one'): Promise<BacklogLagResult> => {
      await node.service.pausePeer(peer)
      await waitFor(() => node.peer(port)!.connectedSinceMs === null, 'paused session ended', 60_000)
      const raws = makeRaws(`backlog-${lanes}`, backlogCount)
      for (const raw of raws) {
        archiveA.ingest(raw, localDelivery(ingested++), null)
        backlogPending.add(sha256Hex(raw))
      }
      await node.service.resumePeer(peer)
      const resumedAt = nowMs()
      // Mail archived before the sender is back in session belongs to the backlog (the split is
      // at the head then): new mail starts once it is (and, with two lanes, has split).
      const splits = lanes === 'two' && backlogCount > laneSplitThresholdEntries(settings.batchMessagesMax)
      await waitFor(
        () => {
          const status = node.peer(port)!
          return status.state === 'connected' && status.connectedSinceMs !== null && (!splits || status.backfillThroughSequence !== null)
        },
        'back in session',
        60_000,
      )
      // New mail at the steady rate for as long as the backlog drains (at least one message).
      const fresh: Array<{ id: string; backlogLeft: number }> = []
      const submits: Promise<unknown>[] = []
      const started = performance.now()
      while (fresh.length === 0 || backlogPending.size > 0) {
        const waitMs = started + (fresh.length * 1000) / rate - performance.now()
        if (waitMs > 0) await new Promise((resolve) => setTimeout(resolve, waitMs))
        const raw = makeMessage(`new-${lanes}-${fresh.length}`, Math.round(meanBytes * (0.5 + random.next())), random)
        fresh.push({ id: sha256Hex(raw), backlogLeft: backlogPending.size })
        submits.push(node.ingest(raw, ingested++))
      }
      await Promise.all(submits)
      await waitFor(() => fresh.every(({ id }) => stored.has(id)), 'copies of new mail', 600_000)
      const backlogTimes = raws.map((raw) => stored.get(sha256Hex(raw))!)
      const drainSeconds = (Math.max(...backlogTimes) - resumedAt) / 1000
      const lastNewAtMs = Math.max(...fresh.map(({ id }) => stored.get(id)!))
      await waitFor(() => node.peer(port)!.cursor === archiveA.lastSequence(), 'last acknowledgement', 60_000)
      // Only mail archived while the backlog was still draining tells whether it waited behind it.
      const during = fresh.filter(({ backlogLeft }) => backlogLeft > 0).map(({ id }) => stored.get(id)! - archivedAt.get(id)!)
      return {
        lanes,
        backlogMessages: backlogCount,
        drain: { messagesPerSecond: Math.round(backlogCount / drainSeconds), seconds: round(drainSeconds, 3) },
        lag: lagFigures(during.sort((x, y) => x - y)),
        backlogLeftAtLastNewMail: backlogTimes.filter((atMs) => atMs > lastNewAtMs).length,
      }
    }
    if (backlogCount > 0) {
      backlog.push(await backlogPhase(a, 'two'))
      if (options.compareSingleLane) {
        // The same archive and peer, a sender that never splits: new mail waits behind the backlog.
        await a.stop()
        a = await createTestNode({
          serial: 'MK650-BENCH-A',
          secret: await deriveMirrorSecret(secretText),
          archive: archiveA,
          pipeline: a.pipeline,
          stateDir: a.stateDir,
          peers: [peer],
          service: { ...service, laneSplitThresholdEntries: Infinity },
        })
        listen(a)
        await waitFor(() => a!.peer(port)?.state === 'connected', 'one-lane sender connected', 60_000)
        backlog.push(await backlogPhase(a, 'one'))
      }
    }
    return {
      runtime: runtimeName(),
      messages: count,
      bytes,
      localIngest: { messagesPerSecond: Math.round(count / localSeconds), seconds: round(localSeconds, 3), cpuMsPerMessage: round(localCpuMs / count, 3) },
      catchUp: {
        messagesPerSecond: Math.round(count / catchUpSeconds),
        megabytesPerSecond: round(bytes / 1e6 / catchUpSeconds),
        seconds: round(catchUpSeconds, 3),
        cpuMsPerMessage: round(catchUpCpuMs / count, 3),
      },
      catchUpRatio: round(localSeconds / catchUpSeconds, 2),
      steadyLag: lagFigures(lags),
      backlog,
      settings,
    }
  } finally {
    await a?.stop()
    send({ command: 'stop' })
    await reply('stopped', 30_000).catch(() => undefined)
    await worker.terminate()
    await diskA.close()
    await rm(directory, { recursive: true, force: true })
  }
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === workerRole) {
  const { directory, secretText } = workerData as { directory: string; secretText: string }
  await runPeer(directory, secretText)
} else {
  const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
  if (invokedDirectly) {
    const result = await runMirrorCopyBench({
      messages: Number(process.env.BENCH_MIRROR_MESSAGES ?? 10_000),
      steadyRatePerSecond: Number(process.env.BENCH_MIRROR_STEADY_RATE ?? 200),
      steadyDurationMs: Number(process.env.BENCH_MIRROR_STEADY_MS ?? 5_000),
      backlogMessages: Number(process.env.BENCH_MIRROR_BACKLOG ?? 20_000),
      compareSingleLane: process.env.BENCH_MIRROR_COMPARE === '1',
    })
    process.stdout.write(JSON.stringify(result) + '\n')
  }
}
