/**
 * Durability of the archive store, with child processes under Bun (the appliance runtime):
 * SIGKILL at random points, sync and write failures injected with strace, the order of
 * acknowledgement and sync, and Node reading what Bun wrote (and back).
 */
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { systemClock } from '../../../firmware/common/clock.js'
import { createArchiveStore } from '../../../firmware/archive/store.js'
import { bunPath, tempDir } from '../../helpers/service.js'
import { generatedMessage, requestFor } from './fixtures/messages.js'
import { recomputedDigest } from './fixtures/digest.js'
import { testSeed } from '../../helpers/random.js'

const childScript = join(import.meta.dirname, 'fixtures', 'store-child.ts')
const mib = 1024 * 1024
const hasStrace = spawnSync('strace', ['-V']).status === 0
/** Bound on one child process, in ms. */
const childTimeoutMs = 60_000

interface ChildRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Runs the child script under Bun, optionally under strace, and collects its output. */
function runChild(options: Record<string, unknown>, strace: string[] = []): Promise<ChildRun> {
  const args = [bunPath, childScript, JSON.stringify(options)]
  const command = strace.length > 0 ? 'strace' : args.shift()!
  const child = spawn(command, strace.length > 0 ? [...strace, ...args] : args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')))
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')))
  const timer = setTimeout(() => child.kill('SIGKILL'), childTimeoutMs)
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr })
    })
  })
}

function openStore(path: string) {
  return createArchiveStore({ logger: createMemoryLogger(), clock: systemClock }, { path, mapSizeBytes: 1024 * mib, freeBytesMin: 0, messageBytesMax: 16 * mib })
}

const lastJson = (run: ChildRun): Record<string, unknown> => JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>

t.test('Node reads what Bun wrote, and Bun what Node wrote', async (t) => {
  const path = join(await tempDir('mailkeep-archive-'), 'archive')
  const written = await runChild({ mode: 'write', path, seed: 101, count: 40 })
  t.equal(written.code, 0, `bun writer exits 0 ${written.stderr.slice(0, 400)}`)
  const ids = lastJson(written).ids as string[]
  t.equal(ids.length, 40)
  const store = openStore(path)
  await store.start()
  for (let index = 0; index < 40; index++) {
    const raw = generatedMessage(101, index)
    const id = createHash('sha256').update(raw).digest('hex')
    t.ok(ids.includes(id), `message ${index} acknowledged by Bun`)
    t.ok(Buffer.from((await store.getRaw(id))!).equals(raw), `message ${index} reads byte-identical under Node`)
  }
  for (let index = 40; index < 60; index++) await store.ingest(requestFor(generatedMessage(101, index)))
  await store.stop()
  const checked = await runChild({ mode: 'check', path })
  const { report, stats } = lastJson(checked) as { report: { checked: number; corrupt: number; countersConsistent: boolean }; stats: { messages: number } }
  t.same([report.checked, report.corrupt, report.countersConsistent, stats.messages], [60, 0, true, 60], 'Bun verifies all 60, 20 of them written by Node')
})

t.test('a digest snapshot under Bun sees one point in time while writes commit', async (t) => {
  const path = join(await tempDir('mailkeep-archive-'), 'archive')
  const run = await runChild({ mode: 'snapshot', path, seed: 601, count: 40 })
  t.equal(run.code, 0, run.stderr.slice(0, 400))
  const result = lastJson(run) as { runtime: string; old: Record<string, number>; now: Record<string, number>; onlyNow: number; onlyOld: number }
  t.equal(result.runtime, 'bun')
  t.same(result.old, { lastSequence: 40, count: 40, listedDuring: 40, listedAfter: 40 }, 'the old snapshot keeps its sequence, root and ids after 43 more changes')
  t.same(result.now, { lastSequence: 83, count: 77, storeLastSequence: 83 }, 'a new snapshot sees them')
  t.same([result.onlyNow, result.onlyOld], [40, 3], 'the comparison finds the 40 added and the 3 purged ids')
})

t.test('SIGKILL at random points: every acknowledged message is present and intact', async (t) => {
  const { seed, random } = testSeed(t, 'the kill points')
  const path = join(await tempDir('mailkeep-archive-'), 'archive')
  const rounds = 5
  const acknowledged = new Set<string>()
  for (let round = 0; round < rounds; round++) {
    const child = spawn(bunPath, [childScript, JSON.stringify({ mode: 'loop', path, seed: seed + round, writers: 8 })], { stdio: ['ignore', 'pipe', 'pipe'] })
    let buffered = ''
    let acks = 0
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')))
    const killAfterAcks = 20 + random.int(400)
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()))
    const safety = setTimeout(() => child.kill('SIGKILL'), childTimeoutMs)
    child.stdout.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8')
      const lines = buffered.split('\n')
      buffered = lines.pop()!
      for (const line of lines) {
        if (!line.startsWith('ack ')) continue
        acknowledged.add(line.slice(4))
        if (++acks === killAfterAcks) child.kill('SIGKILL')
      }
    })
    await exited
    clearTimeout(safety)
    t.ok(acks >= killAfterAcks, `round ${round}: killed after ${acks} acknowledgements ${stderr.slice(0, 300)}`)

    const store = openStore(path)
    await store.start()
    let missing = 0
    for (const id of acknowledged) if (!store.has(id)) missing++
    t.equal(missing, 0, `round ${round} (seed ${seed}): all ${acknowledged.size} acknowledged ids present`)
    const report = await store.verify()
    t.same([report.corrupt, report.countersConsistent], [0, true], `round ${round} (seed ${seed}): ${report.checked} messages verify, counters consistent`)
    const snapshot = await store.digestSnapshot()
    const root = snapshot.node('')
    snapshot.close()
    const recomputed = recomputedDigest(store)
    t.ok(
      root.count === recomputed.root.count && root.bytes === recomputed.root.bytes && Buffer.from(root.hash).equals(Buffer.from(recomputed.root.hash)),
      `round ${round} (seed ${seed}): the id digest equals one recomputed from the ${root.count} ids`,
    )
    const changes = store.changes(0, 10_000)
    t.same(
      changes.map((entry) => entry.sequence),
      Array.from({ length: changes.length }, (_, index) => index + 1),
      `round ${round}: change log has no gaps`,
    )
    await store.stop()
  }
})

t.test('an injected fdatasync failure rejects the ingest and stops writes (strace)', { skip: hasStrace ? false : 'strace not installed' }, async (t) => {
  const path = join(await tempDir('mailkeep-archive-'), 'archive')
  const before = await runChild({ mode: 'write', path, seed: 201, count: 3 })
  t.equal(before.code, 0)
  const run = await runChild({ mode: 'faults', path, seed: 202 }, ['-f', '-o', '/dev/null', '-e', 'trace=fdatasync', '-e', 'inject=fdatasync:error=EIO'])
  const { results, health, activity } = lastJson(run) as {
    results: Array<{ ok: boolean; code: string; retryable: boolean }>
    health: { ok: boolean; detail: string }
    activity: { ingests: number; failedCommits: number }
  }
  t.same(
    results.map((result) => [result.ok, result.code, result.retryable]),
    [
      [false, 'STORE_UNAVAILABLE', true],
      [false, 'STORE_UNAVAILABLE', true],
    ],
    'the ingest under a failing sync rejects; the next one is refused',
  )
  t.equal(health.ok, false)
  t.match(health.detail, /Input\/output error/)
  t.same([activity.ingests, activity.failedCommits], [0, 1])

  const store = openStore(path)
  await store.start()
  t.equal(store.stats().messages, 3, 'the earlier messages are intact, the failed one is not there')
  t.equal(store.has(createHash('sha256').update(generatedMessage(202, 0)).digest('hex')), false)
  t.same((await store.verify()).corrupt, 0)
  await store.stop()
})

t.test('an injected ENOSPC on write rejects the ingest with STORE_FULL (strace)', { skip: hasStrace ? false : 'strace not installed' }, async (t) => {
  const path = join(await tempDir('mailkeep-archive-'), 'archive')
  t.equal((await runChild({ mode: 'write', path, seed: 301, count: 3 })).code, 0)
  const run = await runChild({ mode: 'faults', path, seed: 302 }, ['-f', '-o', '/dev/null', '-e', 'trace=pwrite64,pwritev', '-e', 'inject=pwrite64,pwritev:error=ENOSPC'])
  const { results } = lastJson(run) as { results: Array<{ ok: boolean; code: string; retryable: boolean }> }
  t.same(results[0] && [results[0].ok, results[0].code, results[0].retryable], [false, 'STORE_FULL', true], 'disk full is STORE_FULL, retryable')
  t.same(results[1] && [results[1].ok, results[1].retryable], [false, true], 'then writes are refused until restart')
  const store = openStore(path)
  await store.start()
  t.same([store.stats().messages, (await store.verify()).corrupt], [3, 0], 'the archive is intact after the failed write')
  await store.stop()
})

t.test('acknowledgement never comes before the sync that covers it, and concurrent ingests share syncs (strace)', { skip: hasStrace ? false : 'strace not installed' }, async (t) => {
  const path = join(await tempDir('mailkeep-archive-'), 'archive')
  t.equal((await runChild({ mode: 'write', path, seed: 401, count: 1 })).code, 0)
  const syncDelayMs = 150
  const trace = join(await tempDir('mailkeep-strace-'), 'trace')
  const count = 40
  const run = await runChild({ mode: 'latency', path, seed: 402, count, writers: 10 }, [
    '-f',
    '-o',
    trace,
    '-e',
    'trace=fdatasync,fsync',
    '-e',
    `inject=fdatasync:delay_exit=${syncDelayMs * 1000}`,
  ])
  t.equal(run.code, 0, run.stderr.slice(0, 400))
  const { latenciesMs, activity } = lastJson(run) as { latenciesMs: number[]; activity: { ingests: number; commits: number } }
  t.equal(latenciesMs.length, count)
  const fastest = Math.min(...latenciesMs)
  t.ok(fastest >= syncDelayMs * 0.95, `every ingest waited for a sync: the fastest took ${fastest.toFixed(0)} ms with syncs delayed ${syncDelayMs} ms`)
  const syncs = (await readFile(trace, 'utf8')).split('\n').filter((line) => /\bfdatasync\(|\bfsync\(/.test(line) && !line.includes('resumed')).length
  t.ok(syncs > 0 && syncs < count, `${syncs} syncs for ${count} concurrent ingests`)
  t.ok(activity.commits < count, `${activity.commits} commits for ${count} ingests`)
})
