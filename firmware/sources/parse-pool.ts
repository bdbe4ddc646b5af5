import assert from 'node:assert/strict'
import { availableParallelism } from 'node:os'
import type { Logger } from '../common/logger.js'
import { ArchiveError } from '../archive/errors.js'
import type { PreparedMessage, PrepareMessage } from './parse-job.js'
import { createPoolFallback } from './parse-pool-fallback.js'
import { dispatchJobs, emptySlot, poolUsable, type PoolCore } from './parse-pool-queue.js'
import type { ParsePool, ParsePoolOptions, ParsePoolStats } from './parse-pool-types.js'
import { startWorkers, stopWorkers } from './parse-pool-workers.js'

export {
  indexPreparePlugin,
  parsePoolDefaults,
  type IndexPreparePlugin,
  type PrepareOptionsOf,
  type ParsePool,
  type ParsePoolOptions,
  type ParsePoolStats,
  type ParseWorkerData,
  type ToPool,
  type ToWorker,
} from './parse-pool-types.js'

/**
 * A small, bounded pool of worker threads that does the CPU work of ingest off the event
 * loop: journal unwrap, MIME parse, SHA-256 and deflate of the raw bytes, and the index's
 * prepare step (parse-job.ts, the same code the event loop would run). Bun and Node run
 * JavaScript on one thread per isolate; with the parse on workers, the event loop is left
 * with the protocol, the LMDB write transaction and the index's writes, and a second core
 * does the rest (measured with `npm run bench -- --only parse,store,smtp`; notes in
 * firmware/sources/smtp/README.md).
 *
 * Guarantees:
 * - `prepare` never rejects except with a retryable ArchiveError STORE_UNAVAILABLE when
 *   `queueDepthMax` messages already wait (the source answers 4xx and the sender retries)
 *   or the pool is stopped; the parse keeps its never-throws contract and its flags.
 * - No message is lost to a worker: a worker that crashes (exits, runs out of its heap)
 *   gives its messages back to the queue and is restarted; a message that was on a worker
 *   during two crashes, or that outlives `jobTimeoutMs`, is taken as the cause: its
 *   worker is terminated, and it is archived as received with header metadata only,
 *   flagged `parse-failed` (parsed on the event loop with a header-only parser).
 * - When workers cannot start at all (e.g. a firmware image without the worker file), the
 *   pool runs every message on the event loop with the same job (`inProcess`), as before
 *   the pool existed, and says so in the log and in `stats()`.
 *
 * Parts: parse-pool-types.ts (options, API, worker messages; re-exported here),
 * parse-pool-queue.ts (state, dispatch, time limits, lost messages), parse-pool-workers.ts
 * (worker threads, crashes, restarts, start/stop), parse-pool-fallback.ts (event loop and
 * header-only fallbacks).
 */

/** The default worker entry, beside this module (its bundled name in a firmware image). */
function defaultWorkerUrl(): URL {
  return new URL(process.env.MAILKEEP_BUILD === '1' ? './parse-worker.js' : './parse-worker.ts', import.meta.url)
}

/**
 * Worker threads for this machine: one per core. Not one less for the event loop: the event
 * loop, the JIT and LMDB's threads leave a worker's core idle part of the time, and a second
 * worker fills it. Measured on 2 cores (corpus twice through the appliance pipeline, 64 in
 * flight): 2 workers 965–981 msg/s with the index and 1,394–1,515 without, against 806–877
 * and 1,249–1,329 with one; the SMTP bench 622–633 against 600–618 msg/s.
 */
export function parseWorkersDefault(): number {
  return Math.max(1, availableParallelism())
}

/** Queues one message for a worker; before start and after stop, runs it on the event loop. */
function prepareMessage(core: PoolCore, inProcess: PrepareMessage, raw: Uint8Array): Promise<PreparedMessage> {
  if (core.state !== 'running' && core.state !== 'stopping') {
    // Before start or after stop (tests, tools): the same job on the event loop.
    core.counters.inProcess++
    return inProcess(raw)
  }
  const { queue, options } = core
  if (queue.length >= options.queueDepthMax) {
    return Promise.reject(new ArchiveError('STORE_UNAVAILABLE', `${queue.length} messages already wait for parsing; try again later`, { fields: { queueDepthMax: options.queueDepthMax } }))
  }
  return new Promise<PreparedMessage>((resolve) => {
    queue.push({ jobId: core.nextJobId++, raw, crashes: 0, resolve })
    dispatchJobs(core)
  })
}

function poolStats(core: PoolCore): ParsePoolStats {
  const { slots } = core
  return {
    workers: slots.length,
    ready: slots.filter((slot) => slot.ready).length,
    indexPrepare: core.indexPrepare,
    queued: core.queue.length,
    inFlight: slots.reduce((sum, slot) => sum + slot.jobs.size, 0),
    ...core.counters,
  }
}

function poolHealth(core: PoolCore): { ok: boolean; detail: string } {
  const workers = core.slots.length
  const ready = core.slots.filter((slot) => slot.ready).length
  if (workers === 0) return { ok: true, detail: 'no workers: parsing on the event loop' }
  if (!poolUsable(core)) return { ok: true, detail: 'workers cannot start: parsing on the event loop (slower)' }
  return { ok: true, detail: `${ready}/${workers} workers ready, ${core.queue.length} queued` }
}

/**
 * Creates the pool. Pure: starts no thread until start().
 *
 * @param deps.inProcess the same job on the event loop (used when no worker can run)
 * @throws AssertionError on invalid options
 */
export function createParsePool(deps: { logger: Logger; inProcess: PrepareMessage }, options: ParsePoolOptions): ParsePool {
  const workers = options.workers ?? parseWorkersDefault()
  assert.ok(Number.isSafeInteger(workers) && workers >= 0 && workers <= 64, 'workers must be 0…64')
  for (const name of ['queueDepthMax', 'jobsPerWorkerMax', 'jobTimeoutMs', 'restartDelayMs', 'startFailuresMax', 'heapMbMax'] as const) {
    assert.ok(Number.isSafeInteger(options[name]) && options[name] > 0, `${name} must be a positive integer`)
  }
  const { logger } = deps
  const counters = { completed: 0, inProcess: 0, poisoned: 0, crashes: 0 }
  const fallback = createPoolFallback({ logger, inProcess: deps.inProcess, counters }, options.mime)
  const core: PoolCore = {
    logger,
    options,
    workerUrl: options.workerUrl ?? defaultWorkerUrl(),
    slots: Array.from({ length: workers }, (_, number) => emptySlot(number)),
    queue: [],
    counters,
    state: 'created',
    indexPrepare: false,
    nextJobId: 1,
    poisoned: fallback.poisoned,
    runInProcess: fallback.runInProcess,
  }
  return {
    start: async () => startWorkers(core),
    stop: () => stopWorkers(core),
    prepare: (raw) => prepareMessage(core, deps.inProcess, raw),
    stats: () => poolStats(core),
    healthcheck: () => poolHealth(core),
  }
}
