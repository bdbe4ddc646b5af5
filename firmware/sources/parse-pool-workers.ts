import assert from 'node:assert/strict'
import { Worker } from 'node:worker_threads'
import type { ParseWorkerData, ToPool } from './parse-pool-types.js'
import { dispatchJobs, finishJob, requeueLostJobs, type PoolCore, type WorkerSlot } from './parse-pool-queue.js'

/**
 * The worker threads of the parse pool: starting one per slot, its messages, a crash and
 * the restart after it (with a growing delay, given up after `startFailuresMax` failed
 * starts), and the pool's start and stop.
 */

/** Starts the slot's worker thread, unless the pool is not running or the slot was given up. */
function startWorker(core: PoolCore, slot: WorkerSlot): void {
  if (core.state !== 'running' || slot.givenUp) return
  const { options } = core
  const plugin = options.indexPrepare
  const data: ParseWorkerData = {
    workerNumber: slot.number,
    mime: options.mime,
    indexPrepare: plugin && { moduleUrl: plugin.moduleUrl.href, exportName: plugin.exportName, options: plugin.options },
  }
  let worker: Worker
  try {
    worker = new Worker(core.workerUrl, { workerData: data, resourceLimits: { maxOldGenerationSizeMb: options.heapMbMax } })
  } catch (error) {
    onWorkerExit(core, slot, undefined, `cannot start: ${String(error)}`)
    return
  }
  slot.worker = worker
  slot.retired = false
  worker.on('message', (message: ToPool) => onWorkerMessage(core, slot, message))
  worker.on('error', (error) => core.logger.error('parse worker failed', { worker: slot.number, error }))
  worker.on('exit', (code) => onWorkerExit(core, slot, worker, `exited with code ${code}`))
}

function onWorkerMessage(core: PoolCore, slot: WorkerSlot, message: ToPool): void {
  switch (message.kind) {
    case 'ready':
      slot.ready = true
      slot.startFailures = 0
      core.indexPrepare = message.indexPrepare
      dispatchJobs(core)
      return
    case 'done': {
      const job = finishJob(core, slot, message.jobId)
      if (!job) return
      slot.crashesInRow = 0
      core.counters.completed++
      job.resolve(message.result)
      dispatchJobs(core)
      return
    }
    case 'failed': {
      const job = finishJob(core, slot, message.jobId)
      if (job) void core.poisoned(job, message.reason)
      dispatchJobs(core)
      return
    }
    case 'log':
      core.logger[message.level](message.message, message.fields)
      return
  }
}

/** A worker ended (or could not start): its messages go back to the queue and the slot restarts, or is given up. */
function onWorkerExit(core: PoolCore, slot: WorkerSlot, worker: Worker | undefined, reason: string): void {
  if (worker !== undefined && slot.worker !== worker) return
  const wasReady = slot.ready
  const retired = slot.retired
  requeueLostJobs(core, slot, reason, !retired)
  slot.worker = undefined
  if (core.state !== 'running') return
  if (!retired) {
    core.counters.crashes++
    slot.crashesInRow++
    if (!wasReady) slot.startFailures++
    core.logger.error('parse worker ended; restarting it', { worker: slot.number, reason, crashesInRow: slot.crashesInRow })
  }
  if (slot.startFailures >= core.options.startFailuresMax) {
    slot.givenUp = true
    core.logger.error('parse worker cannot start; its share of messages is parsed on the event loop', { worker: slot.number, reason, workerUrl: core.workerUrl.href })
    dispatchJobs(core)
    return
  }
  const delayMs = retired ? 0 : core.options.restartDelayMs * 2 ** Math.min(5, slot.crashesInRow - 1)
  // Not unref()ed: messages may wait for this worker, and stop() clears the timer.
  slot.restartTimer = setTimeout(() => startWorker(core, slot), delayMs)
  dispatchJobs(core)
}

/** Starts every worker (again after a stop). Idempotent while running. */
export function startWorkers(core: PoolCore): void {
  if (core.state === 'running') return
  assert.ok(core.state === 'created' || core.state === 'stopped', `cannot start while ${core.state}`)
  core.state = 'running'
  for (const slot of core.slots) {
    slot.givenUp = false
    slot.startFailures = 0
    slot.crashesInRow = 0
    startWorker(core, slot)
  }
  core.logger.info('parse pool started', { workers: core.slots.length, workerUrl: core.workerUrl.href })
}

/** Finishes what is queued or on a worker (on the event loop when no worker is ready), then ends the workers. Idempotent. */
export async function stopWorkers(core: PoolCore): Promise<void> {
  if (core.state !== 'running') return
  core.state = 'stopping'
  const { queue, slots } = core
  // Nothing new arrives (sources stop first); what is queued or on a worker still completes.
  while (queue.length > 0 || slots.some((slot) => slot.jobs.size > 0)) {
    if (!slots.some((slot) => slot.ready)) for (const job of queue.splice(0)) core.runInProcess(job)
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
  core.state = 'stopped'
}
