/**
 * Id digest benchmark (issue 18's proof of agreement): in-memory digests of 1,000,000 random
 * ids (firmware/archive/id-digest.ts), one side lacking 0, 1, 10 or 1,000 of them, compared
 * through the real wire format (answerChildren/answerIds on the peer side, remoteOverBytes
 * on ours) with no network: round trips, bytes exchanged and the time the comparison took.
 *
 *   node_modules/.bin/bun scripts/bench/digest.ts        (Bun, the appliance runtime)
 *   npm run bench -- --only digest
 *
 * Env: BENCH_DIGEST_IDS (default 1,000,000). Prints one JSON line per comparison. A round
 * trip costs nothing here: on a link, each adds its latency to the time.
 */
import { randomBytes } from 'node:crypto'
import { resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRandom } from '../../firmware/common/clock.js'
import { idBytes } from '../../firmware/archive/layout.js'
import { answerChildren, answerIds, compareDigests, createMemoryDigest, remoteOverBytes } from '../../firmware/archive/id-digest.js'

export interface DigestBenchOptions {
  /** Ids on the fuller side. Default 1,000,000. */
  ids?: number
  /** How many ids the other side lacks, one comparison each. Default [0, 1, 10, 1000]. */
  differences?: number[]
  /** Seed of the sizes and of which ids go missing. */
  seed?: number
}

export interface DigestBenchRun {
  /** Ids the remote side lacks. */
  differences: number
  roundTrips: number
  bytesExchanged: number
  /** Time of compareDigests alone (both digests built before), in ms. */
  compareMs: number
  /** Differences found; equal to `differences` when the comparison is exact. */
  found: number
  exact: boolean
  truncated: boolean
}

export interface DigestBenchResult {
  runtime: string
  ids: number
  /** Time to build the in-memory digest of all the ids (hash, leaves, sorted ids, tree), in ms. */
  buildMs: number
  runs: DigestBenchRun[]
}

/** `ids` (packed) and their sizes with `count` of them left out at random, and which. */
export function withoutSome(ids: Buffer, sizes: Float64Array, count: number, random: { int(max: number): number }): { missing: Set<number>; kept: Buffer; keptSizes: Float64Array } {
  const total = sizes.length
  const missing = new Set<number>()
  while (missing.size < count) missing.add(random.int(total))
  const kept = Buffer.alloc((total - count) * idBytes)
  const keptSizes = new Float64Array(total - count)
  for (let index = 0, position = 0; index < total; index++) {
    if (missing.has(index)) continue
    ids.copy(kept, position * idBytes, index * idBytes, (index + 1) * idBytes)
    keptSizes[position++] = sizes[index]!
  }
  return { missing, kept, keptSizes }
}

/**
 * Builds the digest of `ids` random ids, then for each count in `differences` a digest
 * lacking that many of them, and compares the full one (local) with it (remote).
 *
 * @throws AssertionError when the comparison does not find exactly the missing ids
 */
export async function runDigestBench(options: DigestBenchOptions = {}): Promise<DigestBenchResult> {
  const total = options.ids ?? 1_000_000
  const random = createRandom(options.seed ?? 18)
  const ids = randomBytes(total * idBytes)
  const sizes = Float64Array.from({ length: total }, () => 1000 + random.int(100_000))
  const buildStartedMs = performance.now()
  const local = createMemoryDigest(ids, sizes)
  const buildMs = performance.now() - buildStartedMs
  const runs: DigestBenchRun[] = []
  for (const differences of options.differences ?? [0, 1, 10, 1000]) {
    const { missing, kept, keptSizes } = withoutSome(ids, sizes, differences, random)
    const remoteDigest = createMemoryDigest(kept, keptSizes)
    const remote = remoteOverBytes({ children: async (request) => answerChildren(remoteDigest, request), ids: async (request) => answerIds(remoteDigest, request) })
    const startedMs = performance.now()
    const result = await compareDigests(local, remote)
    const compareMs = performance.now() - startedMs
    const expected = [...missing].map((index) => ids.toString('hex', index * idBytes, (index + 1) * idBytes)).sort()
    const exact = !result.truncated && result.onlyRemote.length === 0 && result.onlyLocal.join() === expected.join()
    runs.push({
      differences,
      roundTrips: result.roundTrips,
      bytesExchanged: result.bytesExchanged,
      compareMs: Number(compareMs.toFixed(1)),
      found: result.onlyLocal.length,
      exact,
      truncated: result.truncated,
    })
  }
  const bun = (globalThis as { Bun?: { version: string } }).Bun
  return { runtime: bun ? `bun ${bun.version}` : `node ${process.versions.node}`, ids: total, buildMs: Number(buildMs.toFixed(0)), runs }
}

const invokedDirectly = process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)
if (invokedDirectly) {
  const result = await runDigestBench({ ids: process.env.BENCH_DIGEST_IDS ? Number(process.env.BENCH_DIGEST_IDS) : undefined })
  for (const run of result.runs) process.stdout.write(JSON.stringify({ runtime: result.runtime, ids: result.ids, buildMs: result.buildMs, ...run }) + '\n')
}
