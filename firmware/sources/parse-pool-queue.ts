import type { Worker } from 'node:worker_threads'
import type { Logger } from '../common/logger.js'
import type { PreparedMessage } from './parse-job.js'
import type { ParsePoolOptions, ToWorker } from './parse-pool-types.js'

/**
 * The parse pool's state and its queue: which message goes to which worker, the time limit
 * of each message on a worker, and what happens to the messages of a worker that is gone.
 * Module functions over one PoolCore, so every step names what it touches.
 */

/** One message waiting for, or on, a worker. */
export interface PoolJob {
  jobId: number
  raw: Uint8Array
  /** Crashes of the worker this message was on. */
  crashes: number
  resolve(result: PreparedMessage): void
  timer?: NodeJS.Timeout
}

/** One worker thread's place in the pool, kept across its restarts. */
export interface WorkerSlot {
  number: number
  worker: Worker | undefined
  ready: boolean
  /** Set when this worker was terminated on purpose (timeout, stop), so its exit is not a crash. */
  retired: boolean
  jobs: Map<number, PoolJob>
  crashesInRow: number
  startFailures: number
  givenUp: boolean
  restartTimer?: NodeJS.Timeout
}

/** Counters of ParsePoolStats. */
export interface PoolCounters {
  completed: number
  inProcess: number
  poisoned: number
  crashes: number
}

/** Everything the pool's parts share; created by createParsePool. */
export interface PoolCore {
  readonly logger: Logger
  readonly options: Readonly<ParsePoolOptions>
  readonly workerUrl: URL
  readonly slots: WorkerSlot[]
  /** Messages waiting for a worker, oldest first (messages of a lost worker go back to the front). */
  readonly queue: PoolJob[]
  readonly counters: PoolCounters
  state: 'created' | 'running' | 'stopping' | 'stopped'
  /** Whether the workers run the index's prepare step (the last ready worker says). */
  indexPrepare: boolean
  nextJobId: number
  /** Archives a message that crashed or outlived a worker with header metadata only (parse-pool-fallback.ts). */
  readonly poisoned: (job: PoolJob, reason: string) => Promise<void>
  /** Runs a message on the event loop (parse-pool-fallback.ts). */
  readonly runInProcess: (job: PoolJob) => void
}

/** An empty slot for worker `number`. */
export function emptySlot(number: number): WorkerSlot {
  return { number, worker: undefined, ready: false, retired: false, jobs: new Map(), crashesInRow: 0, startFailures: 0, givenUp: false }
}

/** True while at least one worker has not been given up. */
export function poolUsable(core: PoolCore): boolean {
  return core.slots.some((slot) => !slot.givenUp)
}

/** True when the slot holds a message that was on a crashed worker. */
function holdsSuspect(slot: WorkerSlot): boolean {
  for (const running of slot.jobs.values()) if (running.crashes > 0) return true
  return false
}

/**
 * The least busy ready worker that may take the next message: a few messages in flight
 * spread over the workers rather than queueing on the first (each may hold
 * `jobsPerWorkerMax`). A message that was on a crashed worker (`suspect`) runs alone, and
 * no other joins it, so a second crash names it and not the messages that happened to
 * share its worker.
 */
function pickSlot(slots: readonly WorkerSlot[], suspect: boolean, jobsPerWorkerMax: number): WorkerSlot | undefined {
  let target: WorkerSlot | undefined
  for (const slot of slots) {
    if (!slot.ready || !slot.worker || slot.jobs.size >= jobsPerWorkerMax) continue
    if ((suspect && slot.jobs.size > 0) || holdsSuspect(slot)) continue
    if (target === undefined || slot.jobs.size < target.jobs.size) target = slot
  }
  return target
}

/** Hands queued messages to workers while one may take them; with no usable worker, runs them all on the event loop. */
export function dispatchJobs(core: PoolCore): void {
  const queue = core.queue
  if (!poolUsable(core)) {
    for (const job of queue.splice(0)) core.runInProcess(job)
    return
  }
  while (queue.length > 0) {
    const target = pickSlot(core.slots, queue[0]!.crashes > 0, core.options.jobsPerWorkerMax)
    if (target === undefined) return
    const job = queue.shift()!
    target.jobs.set(job.jobId, job)
    armJobTimer(core, target, job)
    const copy = new Uint8Array(job.raw)
    target.worker!.postMessage({ kind: 'job', jobId: job.jobId, raw: copy } satisfies ToWorker, [copy.buffer])
  }
}

/** Takes a message off its worker (a result came, or its time ran out); undefined when it was not there. */
export function finishJob(core: PoolCore, slot: WorkerSlot, jobId: number): PoolJob | undefined {
  const job = slot.jobs.get(jobId)
  if (!job) return undefined
  slot.jobs.delete(jobId)
  clearTimeout(job.timer)
  // The worker made progress: the messages it still holds get their full time from now,
  // so one queued behind slow ones is not taken for stuck (the limit is for a worker
  // that stops answering, not for a busy one).
  for (const waiting of slot.jobs.values()) armJobTimer(core, slot, waiting)
  return job
}

function armJobTimer(core: PoolCore, slot: WorkerSlot, job: PoolJob): void {
  clearTimeout(job.timer)
  job.timer = setTimeout(() => jobTimedOut(core, slot, job), core.options.jobTimeoutMs)
  job.timer.unref()
}

function jobTimedOut(core: PoolCore, slot: WorkerSlot, job: PoolJob): void {
  if (!finishJob(core, slot, job.jobId)) return
  void core.poisoned(job, `no result within ${core.options.jobTimeoutMs} ms`)
  // The worker may be stuck in a loop that never yields: end it; its other messages go back to the queue.
  retireWorker(core, slot, 'a message outlived its time limit')
}

/** Terminates a worker on purpose (not a crash); its messages go back to the queue. */
export function retireWorker(core: PoolCore, slot: WorkerSlot, reason: string): void {
  const worker = slot.worker
  if (!worker) return
  slot.retired = true
  requeueLostJobs(core, slot, reason, false)
  void worker.terminate()
}

/** Messages of a worker that is gone go back to the front of the queue, or are taken as its cause. */
export function requeueLostJobs(core: PoolCore, slot: WorkerSlot, reason: string, crash: boolean): void {
  const jobs = [...slot.jobs.values()]
  slot.jobs.clear()
  // slot.worker stays until its 'exit' event, which restarts the slot.
  slot.ready = false
  for (const job of jobs.reverse()) {
    clearTimeout(job.timer)
    if (crash) job.crashes++
    if (job.crashes >= 2) void core.poisoned(job, `its worker crashed twice (${reason})`)
    else core.queue.unshift(job)
  }
}
