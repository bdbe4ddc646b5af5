/**
 * `mirror verify` benchmark (issue 18's proof of agreement, the whole exchange): two sides
 * of 1,000,000 ids (in-memory digests), the peer lacking 0, 1, 10 or 1,000 of them; the real
 * initiator (runVerify) and responder (createVerifyResponder) talk over an in-memory channel
 * pair that counts every frame. Measures what verify costs on top of the digest comparison:
 * BEGIN, EXPLAIN, the report signed by both RSA keys and SIGN.
 *
 *   node_modules/.bin/bun scripts/bench/verify.ts        (Bun, the appliance runtime)
 *   npm run bench -- --only verify
 *
 * Env: BENCH_VERIFY_IDS (default 1,000,000). No network: on a link each round trip adds its latency.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createMemoryDigest } from '../../firmware/archive/id-digest.js'
import { withoutSome } from './digest.js'
import { idBytes } from '../../firmware/archive/layout.js'
import type { DigestSnapshot } from '../../firmware/archive/types.js'
import { createMemoryLogger } from '../../firmware/common/logger.js'
import { createRandom, systemClock } from '../../firmware/common/clock.js'
import { loadOrCreateIdentityCertificate, type IdentityCertificate } from '../../firmware/mirror/certificate.js'
import type { MirrorChannel, MirrorPeer } from '../../firmware/mirror/channel.js'
import { frameHeaderBytes, type MirrorFrame } from '../../firmware/mirror/protocol.js'
import type { VerifyArchive, VerifyLocalDeps, VerifyPeerQueue } from '../../firmware/mirror/verify-facts.js'
import { runVerify } from '../../firmware/mirror/verify-initiator.js'
import { VerifyFrameType } from '../../firmware/mirror/verify-protocol.js'
import { createVerifyResponder } from '../../firmware/mirror/verify-responder.js'

export interface VerifyBenchRun {
  /** Ids the peer lacks. */
  differences: number
  outcome: string
  unexplained: number
  /** VERIFY frames both ways, and their bytes with framing. */
  frames: number
  bytes: number
  /** Time of runVerify (snapshots opened, compared, explained, signed twice, audited), in ms. */
  verifyMs: number
}

export interface VerifyBenchResult {
  runtime: string
  ids: number
  runs: VerifyBenchRun[]
}

/** Two connected in-memory channels; `traffic` counts frames and bytes both ways. */
function channelPair(peerOfA: MirrorPeer, peerOfB: MirrorPeer) {
  const traffic = { frames: 0, bytes: 0 }
  const make = (peer: MirrorPeer, direction: 'inbound' | 'outbound') => {
    const inbox: MirrorFrame[] = []
    const waiting: Array<(frame: MirrorFrame | null) => void> = []
    let open = true
    let closeResolve!: (value: null) => void
    const closed = new Promise<null>((resolve) => (closeResolve = resolve))
    const channel: MirrorChannel & { deliver(frame: MirrorFrame | null): void } = {
      peer,
      direction,
      get isOpen() {
        return open
      },
      closed,
      async send(type, payload) {
        traffic.frames++
        traffic.bytes += frameHeaderBytes + payload.byteLength
        other(channel).deliver({ type, payload: Buffer.from(payload) })
      },
      sendJson(type, value) {
        return channel.send(type, Buffer.from(JSON.stringify(value)))
      },
      async receive() {
        const frame = inbox.shift()
        if (frame) return frame
        if (!open) return null
        return new Promise<MirrorFrame | null>((resolve) => waiting.push(resolve))
      },
      async *[Symbol.asyncIterator]() {
        for (;;) {
          const frame = await channel.receive()
          if (frame === null) return
          yield frame
        }
      },
      async close() {
        if (!open) return
        open = false
        for (const resolve of waiting.splice(0)) resolve(null)
        other(channel).deliver(null)
        closeResolve(null)
      },
      deliver(frame) {
        if (frame === null) {
          void channel.close()
          return
        }
        const next = waiting.shift()
        if (next) next(frame)
        else inbox.push(frame)
      },
    }
    return channel
  }
  const a = make(peerOfA, 'outbound')
  const b = make(peerOfB, 'inbound')
  const other = (channel: unknown) => (channel === a ? b : a)
  return { a, b, traffic }
}

/** An archive whose digest is built once (the store keeps its leaves on disk; opening its snapshot is the digest bench's business). */
function memoryArchive(ids: Buffer, sizes: Float64Array, storeId: string): VerifyArchive {
  const digest = createMemoryDigest(ids, sizes)
  return {
    changes: () => [],
    lastSequence: () => 0,
    getRaw: () => undefined,
    getMeta: () => undefined,
    has: () => true,
    storeId: () => storeId,
    purgedAt: () => undefined,
    async digestSnapshot(): Promise<DigestSnapshot> {
      return {
        storeId,
        lastSequence: 0,
        node: (prefix) => digest.node(prefix),
        children: (prefix) => digest.children(prefix),
        idsInBucket: (prefix) => digest.idsInBucket(prefix),
        close: () => undefined,
      }
    },
  }
}

function localDeps(serial: string, certificate: IdentityCertificate, archive: VerifyArchive): VerifyLocalDeps {
  return {
    archive,
    serial,
    fingerprint: certificate.fingerprint,
    privateKeyPem: certificate.privateKeyPem,
    certificatePem: certificate.certificatePem,
    auditHead: () => ({ seq: 1, hash: '0'.repeat(64) }),
    policyFingerprint: () => 'bench',
    holdsKeeping: async () => new Map(),
    purgeAuditSeq: () => null,
  }
}

const queue: VerifyPeerQueue = { pendingRanges: () => [], requeuedIds: () => [], rejectedCopies: () => [], requeue: async (ids) => ids.length }

export async function runVerifyBench(options: { ids?: number; differences?: number[]; seed?: number } = {}): Promise<VerifyBenchResult> {
  const total = options.ids ?? 1_000_000
  const random = createRandom(options.seed ?? 18)
  const ids = randomBytes(total * idBytes)
  const sizes = Float64Array.from({ length: total }, () => 1000 + random.int(100_000))
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-bench-verify-'))
  const logger = createMemoryLogger('warn')
  try {
    const certificateA = await loadOrCreateIdentityCertificate({ logger, clock: systemClock }, { dataDir: join(dir, 'a'), serial: 'BENCH-A' })
    const certificateB = await loadOrCreateIdentityCertificate({ logger, clock: systemClock }, { dataDir: join(dir, 'b'), serial: 'BENCH-B' })
    const [storeA, storeB] = [randomBytes(16).toString('hex'), randomBytes(16).toString('hex')]
    const archiveA = memoryArchive(ids, sizes, storeA)
    const runs: VerifyBenchRun[] = []
    for (const differences of options.differences ?? [0, 1, 10, 1000]) {
      const { kept, keptSizes } = withoutSome(ids, sizes, differences, random)
      const local = localDeps('BENCH-A', certificateA, archiveA)
      const remote = localDeps('BENCH-B', certificateB, memoryArchive(kept, keptSizes, storeB))
      const identity = { model: 650, firmwareVersion: 'bench', listenPort: 0, port: 0, address: '127.0.0.1' }
      const pair = channelPair(
        { ...identity, serial: 'BENCH-B', storeId: storeB, fingerprint: certificateB.fingerprint },
        { ...identity, serial: 'BENCH-A', storeId: storeA, fingerprint: certificateA.fingerprint },
      )
      const responder = createVerifyResponder({ logger, local: remote, queueFor: () => queue, onReport: () => undefined }).forChannel(pair.b)
      const serving = (async () => {
        for await (const frame of pair.b) if (frame.type === VerifyFrameType.request) responder.onRequest(frame.payload)
      })()
      const startedMs = performance.now()
      const { report } = await runVerify({ logger, clock: systemClock, local, queue }, pair.a)
      const verifyMs = performance.now() - startedMs
      await pair.a.close()
      await serving
      await responder.close()
      runs.push({
        differences,
        outcome: report.outcome,
        unexplained: report.counts.unexplained,
        frames: pair.traffic.frames,
        bytes: pair.traffic.bytes,
        verifyMs: Number(verifyMs.toFixed(1)),
      })
    }
    const bun = (globalThis as { Bun?: { version: string } }).Bun
    return { runtime: bun ? `bun ${bun.version}` : `node ${process.versions.node}`, ids: total, runs }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) {
  const result = await runVerifyBench({ ids: process.env.BENCH_VERIFY_IDS ? Number(process.env.BENCH_VERIFY_IDS) : undefined })
  for (const run of result.runs) process.stdout.write(JSON.stringify({ runtime: result.runtime, ids: result.ids, ...run }) + '\n')
}
