import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import { loadCheckpoint, removeCheckpoint, saveCheckpoint, type ImportFrontier } from './checkpoint.js'
import type { Job } from './import-job.js'
import type { ResolvedImportOptions } from './import-options.js'
import type { PreparedSource } from './import-source.js'

/** What a job's checkpoints need: where they live, how often to write, a clock and a logger. */
export interface CheckpointDeps {
  logger: Logger
  clock: Clock
  options: Pick<ResolvedImportOptions, 'stateDir' | 'checkpointIntervalMs'>
}

/** Where a run starts: a checkpoint position and the source bytes before it. */
export interface ResumePoint {
  position: number
  bytesBefore: number
}

/**
 * Where a job starts: the checkpoint's position when it belongs to this very source (same
 * format and fingerprint, a position the source can resume from), else 0. Never throws for
 * a missing or unusable checkpoint; each reason to start over is logged.
 */
export async function findResumePoint(deps: CheckpointDeps, job: Job, source: PreparedSource): Promise<ResumePoint> {
  const { logger } = deps
  const { path, format } = job.status
  const loaded = await loadCheckpoint(deps.options.stateDir, path)
  if (loaded.kind === 'unusable') logger.warn('checkpoint unusable, importing from the start', { jobId: job.status.id, path, reason: loaded.reason })
  if (loaded.kind !== 'found') return { position: 0, bytesBefore: 0 }
  const checkpoint = loaded.checkpoint
  if (checkpoint.format !== format || checkpoint.fingerprint !== source.fingerprint) {
    logger.info('source changed since its checkpoint, importing from the start', { jobId: job.status.id, path })
    return { position: 0, bytesBefore: 0 }
  }
  if (!(await source.canResumeAt(checkpoint.position))) {
    logger.warn('checkpoint position is not a message boundary, importing from the start', { jobId: job.status.id, path, position: checkpoint.position })
    return { position: 0, bytesBefore: 0 }
  }
  return { position: checkpoint.position, bytesBefore: source.bytesBefore(checkpoint.position) }
}

/** The checkpoint writes of one job. A failed write is logged, never thrown: dedup absorbs a resume from earlier. */
export interface Checkpointer {
  /** Writes the frontier in the background unless a write runs or the last one is under `checkpointIntervalMs` old. */
  maybeSave(): void
  /** Writes the frontier now (after the writes queued before). */
  save(): Promise<void>
  /** Removes the checkpoint (after the writes queued before): the source is done. */
  remove(): Promise<void>
}

/** Durable checkpoint writes of one job, one at a time, at most every `checkpointIntervalMs` while it runs. */
export function createCheckpointer(deps: CheckpointDeps, job: Job, fingerprint: string, frontier: ImportFrontier): Checkpointer {
  const { logger, clock, options } = deps
  let chain: Promise<void> = Promise.resolve()
  let writing = false
  let savedPosition = job.status.resumedFrom
  let lastWriteMs = clock.monotonicMs()
  const write = (): Promise<void> => {
    const position = frontier.position
    const bytesBefore = frontier.bytesBefore
    chain = chain.then(async () => {
      if (position === savedPosition) return
      try {
        await saveCheckpoint(options.stateDir, { version: 1, path: job.status.path, format: job.status.format, fingerprint, position, bytesBefore, updatedAtMs: clock.now() })
        savedPosition = position
      } catch (error) {
        // A missed checkpoint only means a resumed run starts earlier; dedup absorbs that.
        logger.warn('checkpoint not written', { jobId: job.status.id, path: job.status.path, error })
      }
    })
    return chain
  }
  return {
    maybeSave(): void {
      if (writing || frontier.position === savedPosition) return
      if (clock.monotonicMs() - lastWriteMs < options.checkpointIntervalMs) return
      writing = true
      lastWriteMs = clock.monotonicMs()
      void write().finally(() => {
        writing = false
      })
    },
    save: write,
    async remove(): Promise<void> {
      chain = chain.then(async () => {
        try {
          await removeCheckpoint(options.stateDir, job.status.path)
        } catch (error) {
          logger.warn('checkpoint not removed; the next import of this path resumes from it', { jobId: job.status.id, path: job.status.path, error })
        }
      })
      return chain
    },
  }
}
