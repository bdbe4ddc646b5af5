import type { Logger } from '../../common/logger.js'
import { MailkeepError } from '../../common/errors.js'
import { errorText } from './errors.js'
import type { WorkItem } from './import-source.js'
import type { ImportFormat, ImportJobError, ImportJobStatus, ImportMessageError } from './types.js'

/** One import job: its status (what the technician sees) and how it is asked to stop. */
export interface Job {
  status: ImportJobStatus
  /** Set once: why the job stops before its end (cancel, stop, retryable store error, read failure). */
  stopReason: ImportJobError | null
  /** Resolves when the job is asked to stop, so waits for slots and drains end. */
  stopRequested: Promise<void>
  requestStop(reason: ImportJobError): void
  /** True once the final state is set; results that arrive later change nothing. */
  finalized: boolean
  finished: Promise<void>
}

/** How a job ended: the final state and, unless done, why. */
export interface JobOutcome {
  state: 'done' | 'failed' | 'cancelled'
  error: ImportJobError | null
}

/** A running job with nothing counted yet; `total` stays null until its source is prepared. */
export function createJob(id: string, path: string, format: ImportFormat, startedAtMs: number): Job {
  let signalStop: () => void = () => undefined
  const stopRequested = new Promise<void>((resolveStop) => {
    signalStop = resolveStop
  })
  const job: Job = {
    status: {
      id,
      path,
      format,
      state: 'running',
      total: null,
      totalUnit: format === 'mbox' ? 'bytes' : 'messages',
      processed: 0,
      imported: 0,
      duplicates: 0,
      flagged: 0,
      failed: 0,
      errors: [],
      bytesProcessed: 0,
      bytesTotal: null,
      startedAtMs,
      finishedAtMs: null,
      resumedFrom: 0,
      error: null,
    },
    stopReason: null,
    stopRequested,
    requestStop(reason) {
      if (job.stopReason !== null) return
      job.stopReason = reason
      signalStop()
    },
    finalized: false,
    finished: Promise.resolve(),
  }
  return job
}

/** A copy of the job's status that shares no object with it. */
export function snapshotJob(job: Job): ImportJobStatus {
  return { ...job.status, errors: job.status.errors.map((error) => ({ ...error })), error: job.status.error ? { ...job.status.error } : null }
}

/** Counts a message that was not archived; the first `errorsKept` are listed in the status. */
export function recordMessageFailure(job: Job, item: WorkItem, error: unknown, errorsKept: number, logger: Logger): void {
  const code = error instanceof MailkeepError ? error.code : 'INGEST_FAILED'
  const reason = errorText(error)
  job.status.failed++
  if (job.status.errors.length < errorsKept) {
    const entry: ImportMessageError = { file: item.file, offset: item.offset, code, reason }
    job.status.errors.push(entry)
    logger.warn('message not imported', { jobId: job.status.id, ...entry })
  } else {
    logger.debug('message not imported', { jobId: job.status.id, file: item.file, offset: item.offset, code })
  }
}

/** Sets the job's final state and logs its counts; later results change nothing. */
export function finishJob(job: Job, outcome: JobOutcome, finishedAtMs: number, logger: Logger): void {
  job.finalized = true
  job.status.state = outcome.state
  job.status.error = outcome.error
  job.status.finishedAtMs = finishedAtMs
  const { id, path, processed, imported, duplicates, flagged, failed, bytesProcessed, resumedFrom } = job.status
  const fields = { jobId: id, path, state: outcome.state, processed, imported, duplicates, flagged, failed, bytesProcessed, resumedFrom, error: outcome.error }
  if (outcome.state === 'done') logger.info('import finished', fields)
  else logger.warn('import ended early', fields)
}
