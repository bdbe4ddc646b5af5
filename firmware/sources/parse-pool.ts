import assert from 'node:assert/strict'
import { availableParallelism } from 'node:os'
import { Worker } from 'node:worker_threads'
import type { Logger, LogFields, LogLevel } from '../common/logger.js'
import { mimeFlagOrder, type MimeFlag } from '../mime/types.js'
import { createMimeParser, type MimeParserOptions } from '../mime/parser.js'
import { ArchiveError } from '../archive/errors.js'
import type { PreparedMessage, PrepareMessage } from './parse-job.js'

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
 */

/** What the pool tells a worker at start (structured-cloneable). */
export interface ParseWorkerData {
  workerNumber: number
  mime: MimeParserOptions
  /** A pure index prepare function exported by a module, called as `fn(parsed, options)`. */
  indexPrepare?: IndexPrepareModule
}

/** Where a worker finds the index's prepare step: `(await import(moduleUrl))[exportName](parsed, options)`. */
export interface IndexPrepareModule {
  moduleUrl: string
  exportName: string
  /** Structured-cloneable second argument (limits). */
  options?: unknown
}

export type ToWorker = { kind: 'job'; jobId: number; raw: Uint8Array }
export type ToPool =
  | { kind: 'ready'; indexPrepare: boolean }
  | { kind: 'done'; jobId: number; result: PreparedMessage }
  | { kind: 'failed'; jobId: number; reason: string }
  | { kind: 'log'; level: LogLevel; message: string; fields: LogFields }

export interface ParsePoolOptions {
  /** Worker threads. Default: the cores less one for the event loop, at least 1. 0 runs everything on the event loop. */
  workers?: number
  /** Messages waiting for a worker, at most; beyond it `prepare` is refused (retryable). */
  queueDepthMax: number
  /** Messages handed to one worker at once (more hides the message round trip; a crash sends more back to the queue). */
  jobsPerWorkerMax: number
  /**
   * Time a message may spend on a worker without the worker returning any result, in ms
   * (counted from when it was handed over, or from the worker's last result if later); then
   * the worker is terminated and the message archived with headers only.
   */
  jobTimeoutMs: number
  /** First delay before restarting a crashed worker, in ms; doubles on each crash in a row up to 32 times. */
  restartDelayMs: number
  /** Starts in a row that fail before a worker is ready, after which that worker is given up. */
  startFailuresMax: number
  /** Heap of one worker, in MiB: a message built to exhaust memory ends its worker (a crash, see above), not the appliance. */
  heapMbMax: number
  mime: MimeParserOptions
  indexPrepare?: IndexPrepareModule
  /** The worker entry; parse-worker.ts beside this file by default (parse-worker.js in a firmware image). */
  workerUrl?: URL
}

/** Defaults for the composition root. */
export const parsePoolDefaults = Object.freeze({
  queueDepthMax: 4096,
  // Measured (corpus through the pipeline, 1 worker): with 2 the worker waited on the event
  // loop between messages; 8 took ingest with the index from 595–668 to 745–790 msg/s.
  jobsPerWorkerMax: 8,
  jobTimeoutMs: 60_000,
  restartDelayMs: 100,
  startFailuresMax: 3,
  // Parsing is bounded by parseBytesMax (32 MiB) and the text limits; this leaves room for that.
  heapMbMax: 1024,
})

export interface ParsePoolStats {
  /** Worker threads configured. */
  workers: number
  /** Workers ready now. */
  ready: number
  /** Whether the workers run the index's prepare step. */
  indexPrepare: boolean
  queued: number
  inFlight: number
  /** Messages prepared on workers since start. */
  completed: number
  /** Messages prepared on the event loop because no worker could run. */
  inProcess: number
  /** Messages archived with headers only after crashing or outliving a worker. */
  poisoned: number
  crashes: number
}

export interface ParsePool {
  start(): Promise<void>
  /** Finishes what is queued (on the event loop if need be), then ends the workers. Idempotent. */
  stop(): Promise<void>
  /** @throws ArchiveError STORE_UNAVAILABLE (retryable) when the queue is full or the pool is stopped */
  prepare: PrepareMessage
  stats(): ParsePoolStats
  healthcheck(): { ok: boolean; detail: string }
}

interface Job {
  jobId: number
  raw: Uint8Array
  /** Crashes of the worker this message was on. */
  crashes: number
  resolve(result: PreparedMessage): void
  timer?: NodeJS.Timeout
}

interface Slot {
  number: number
  worker: Worker | undefined
  ready: boolean
  /** Set when this worker was terminated on purpose (timeout, stop), so its exit is not a crash. */
  retired: boolean
  jobs: Map<number, Job>
  crashesInRow: number
  startFailures: number
  givenUp: boolean
  restartTimer?: NodeJS.Timeout
}

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
  const logger = deps.logger
  const workerUrl = options.workerUrl ?? defaultWorkerUrl()
  const headerOnly = createMimeParser({ logger: logger.child('mime') }, { ...options.mime, parseBytesMax: 1 })
  const slots: Slot[] = Array.from({ length: workers }, (_, number) => ({ number, worker: undefined, ready: false, retired: false, jobs: new Map(), crashesInRow: 0, startFailures: 0, givenUp: false }))
  const queue: Job[] = []
  const stats = { completed: 0, inProcess: 0, poisoned: 0, crashes: 0 }
  let indexPrepare = false
  let nextJobId = 1
  let state: 'created' | 'running' | 'stopping' | 'stopped' = 'created'

  const usable = (): boolean => slots.some((slot) => !slot.givenUp)

  /** A message that crashed or outlived a worker: archived as received, header metadata only, flagged. */
  async function poisoned(job: Job, reason: string): Promise<void> {
    stats.poisoned++
    logger.error('a message crashed or outlived its parse worker; archiving it with header metadata only', { reason, sizeBytes: job.raw.byteLength })
    const parsed = await headerOnly.parse(job.raw)
    const flags = new Set<MimeFlag>(parsed.flags.filter((flag) => flag !== 'oversize-for-parse'))
    flags.add('parse-failed')
    job.resolve({ bytes: job.raw, journal: null, parsed: { ...parsed, flags: mimeFlagOrder.filter((flag) => flags.has(flag)) }, indexPrepared: undefined })
  }

  function runInProcess(job: Job): void {
    stats.inProcess++
    void deps.inProcess(job.raw).then(job.resolve, (error: unknown) => poisoned(job, `in-process job failed: ${String(error)}`))
  }

  function dispatch(): void {
    if (!usable()) {
      // No worker can run: everything waiting runs on the event loop.
      for (const job of queue.splice(0)) runInProcess(job)
      return
    }
    while (queue.length > 0) {
      // A message that was on a crashed worker runs alone, so a second crash names it
      // and not the messages that happened to share its worker.
      const suspect = queue[0]!.crashes > 0
      // The least busy worker that may take it: a few messages in flight spread over the
      // workers rather than queueing on the first (each may hold jobsPerWorkerMax).
      let target: Slot | undefined
      for (const slot of slots) {
        if (!slot.ready || !slot.worker || slot.jobs.size >= options.jobsPerWorkerMax) continue
        if ((suspect && slot.jobs.size > 0) || [...slot.jobs.values()].some((running) => running.crashes > 0)) continue
        if (target === undefined || slot.jobs.size < target.jobs.size) target = slot
      }
      if (target === undefined) return
      const job = queue.shift()!
      target.jobs.set(job.jobId, job)
      armTimer(target, job)
      const copy = new Uint8Array(job.raw)
      target.worker!.postMessage({ kind: 'job', jobId: job.jobId, raw: copy } satisfies ToWorker, [copy.buffer])
    }
  }

  function finishJob(slot: Slot, jobId: number): Job | undefined {
    const job = slot.jobs.get(jobId)
    if (!job) return undefined
    slot.jobs.delete(jobId)
    clearTimeout(job.timer)
    // The worker made progress: the messages it still holds get their full time from now,
    // so one queued behind slow ones is not taken for stuck (the limit is for a worker
    // that stops answering, not for a busy one).
    for (const waiting of slot.jobs.values()) armTimer(slot, waiting)
    return job
  }

  function armTimer(slot: Slot, job: Job): void {
    clearTimeout(job.timer)
    job.timer = setTimeout(() => timedOut(slot, job), options.jobTimeoutMs)
    job.timer.unref()
  }

  function timedOut(slot: Slot, job: Job): void {
    if (!finishJob(slot, job.jobId)) return
    void poisoned(job, `no result within ${options.jobTimeoutMs} ms`)
    // The worker may be stuck in a loop that never yields: end it; its other messages go back to the queue.
    retire(slot, 'a message outlived its time limit')
  }

  function retire(slot: Slot, reason: string): void {
    const worker = slot.worker
    if (!worker) return
    slot.retired = true
    lost(slot, reason, false)
    void worker.terminate()
  }

  /** Messages of a worker that is gone go back to the front of the queue, or are taken as its cause. */
  function lost(slot: Slot, reason: string, crash: boolean): void {
    const jobs = [...slot.jobs.values()]
    slot.jobs.clear()
    // slot.worker stays until its 'exit' event, which restarts the slot.
    slot.ready = false
    for (const job of jobs.reverse()) {
      clearTimeout(job.timer)
      if (crash) job.crashes++
      if (job.crashes >= 2) void poisoned(job, `its worker crashed twice (${reason})`)
      else queue.unshift(job)
    }
  }

  function onMessage(slot: Slot, message: ToPool): void {
    switch (message.kind) {
      case 'ready':
        slot.ready = true
        slot.startFailures = 0
        indexPrepare = message.indexPrepare
        dispatch()
        return
      case 'done': {
        const job = finishJob(slot, message.jobId)
        if (!job) return
        slot.crashesInRow = 0
        stats.completed++
        job.resolve(message.result)
        dispatch()
        return
      }
      case 'failed': {
        const job = finishJob(slot, message.jobId)
        if (job) void poisoned(job, message.reason)
        dispatch()
        return
      }
      case 'log':
        logger[message.level](message.message, message.fields)
        return
    }
  }

  function startWorker(slot: Slot): void {
    if (state !== 'running' || slot.givenUp) return
    const data: ParseWorkerData = { workerNumber: slot.number, mime: options.mime, indexPrepare: options.indexPrepare }
    let worker: Worker
    try {
      worker = new Worker(workerUrl, { workerData: data, resourceLimits: { maxOldGenerationSizeMb: options.heapMbMax } })
    } catch (error) {
      onExit(slot, undefined, `cannot start: ${String(error)}`)
      return
    }
    slot.worker = worker
    slot.retired = false
    worker.on('message', (message: ToPool) => onMessage(slot, message))
    worker.on('error', (error) => logger.error('parse worker failed', { worker: slot.number, error }))
    worker.on('exit', (code) => onExit(slot, worker, `exited with code ${code}`))
  }

  function onExit(slot: Slot, worker: Worker | undefined, reason: string): void {
    if (worker !== undefined && slot.worker !== worker) return
    const wasReady = slot.ready
    const retired = slot.retired
    lost(slot, reason, !retired)
    slot.worker = undefined
    if (state !== 'running') return
    if (!retired) {
      stats.crashes++
      slot.crashesInRow++
      if (!wasReady) slot.startFailures++
      logger.error('parse worker ended; restarting it', { worker: slot.number, reason, crashesInRow: slot.crashesInRow })
    }
    if (slot.startFailures >= options.startFailuresMax) {
      slot.givenUp = true
      logger.error('parse worker cannot start; its share of messages is parsed on the event loop', { worker: slot.number, reason, workerUrl: workerUrl.href })
      dispatch()
      return
    }
    const delayMs = retired ? 0 : options.restartDelayMs * 2 ** Math.min(5, slot.crashesInRow - 1)
    // Not unref()ed: messages may wait for this worker, and stop() clears the timer.
    slot.restartTimer = setTimeout(() => startWorker(slot), delayMs)
    dispatch()
  }

  return {
    async start() {
      if (state === 'running') return
      assert.ok(state === 'created' || state === 'stopped', `cannot start while ${state}`)
      state = 'running'
      for (const slot of slots) {
        slot.givenUp = false
        slot.startFailures = 0
        slot.crashesInRow = 0
        startWorker(slot)
      }
      logger.info('parse pool started', { workers, workerUrl: workerUrl.href })
    },

    async stop() {
      if (state !== 'running') return
      state = 'stopping'
      // Nothing new arrives (sources stop first); what is queued or on a worker still completes.
      while (queue.length > 0 || slots.some((slot) => slot.jobs.size > 0)) {
        if (!slots.some((slot) => slot.ready)) for (const job of queue.splice(0)) runInProcess(job)
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      for (const slot of slots) {
        clearTimeout(slot.restartTimer)
        slot.retired = true
        const worker = slot.worker
        slot.worker = undefined
        slot.ready = false
        if (worker) await worker.terminate()
      }
      state = 'stopped'
    },

    prepare(raw) {
      if (state !== 'running' && state !== 'stopping') {
        // Before start or after stop (tests, tools): the same job on the event loop.
        stats.inProcess++
        return deps.inProcess(raw)
      }
      if (queue.length >= options.queueDepthMax) {
        return Promise.reject(
          new ArchiveError('STORE_UNAVAILABLE', `${queue.length} messages already wait for parsing; try again later`, { fields: { queueDepthMax: options.queueDepthMax } }),
        )
      }
      return new Promise<PreparedMessage>((resolve) => {
        queue.push({ jobId: nextJobId++, raw, crashes: 0, resolve })
        dispatch()
      })
    },

    stats() {
      return {
        workers,
        ready: slots.filter((slot) => slot.ready).length,
        indexPrepare,
        queued: queue.length,
        inFlight: slots.reduce((sum, slot) => sum + slot.jobs.size, 0),
        ...stats,
      }
    },

    healthcheck() {
      const ready = slots.filter((slot) => slot.ready).length
      if (workers === 0) return { ok: true, detail: 'no workers: parsing on the event loop' }
      if (!usable()) return { ok: true, detail: 'workers cannot start: parsing on the event loop (slower)' }
      return { ok: true, detail: `${ready}/${workers} workers ready, ${queue.length} queued` }
    },
  }
}
