import type { Delivery } from '../../archive/types.js'
import type { Clock } from '../../common/clock.js'
import { MailkeepError } from '../../common/errors.js'
import type { Logger } from '../../common/logger.js'
import type { IngestPipeline } from '../types.js'
import { createImportFrontier, type ImportFrontier } from './checkpoint.js'
import { ImportError, errorText } from './errors.js'
import { recordMessageFailure, type Job, type JobOutcome } from './import-job.js'
import type { ResolvedImportOptions } from './import-options.js'
import { prepareSource, type PreparedSource, type WorkItem } from './import-source.js'
import { createCheckpointer, findResumePoint, type Checkpointer, type ResumePoint } from './job-checkpoints.js'

/** What running a job needs from the service. */
export interface JobRunContext {
  logger: Logger
  clock: Clock
  pipeline: IngestPipeline
  options: ResolvedImportOptions
}

function delay(ms: number): Promise<void> {
  return new Promise((resolveDelay) => setTimeout(resolveDelay, ms).unref())
}

/** The Delivery of one imported message; its key makes a message re-sent after a crash one delivery. */
export function importDelivery(path: string, keySuffix: string, receivedAtMs: number): Delivery {
  return {
    source: 'import',
    sourceName: path,
    receivedAtMs,
    envelopeFrom: null,
    envelopeTo: [],
    envelopeBcc: [],
    remoteAddress: null,
    journalEnvelopeText: null,
    deliveryKey: `import:${path}:${keySuffix}`,
  }
}

/**
 * Runs one job to its end: prepares the source, resumes at its checkpoint, submits its
 * messages in order with up to `concurrency` in flight and settles the checkpoint. Resolves
 * with the outcome for the service to record; rejects only when the source cannot be
 * prepared (its typed error) or on a defect.
 */
export async function runImportJob(context: JobRunContext, job: Job): Promise<JobOutcome> {
  const source = await prepareSource(job.status.path, job.status.format, context.options)
  const start = await findResumePoint(context, job, source)
  const { status } = job
  // Set together: a status with `total` set has its `resumedFrom` too.
  status.total = source.total
  status.totalUnit = source.totalUnit
  status.bytesTotal = source.bytesTotal
  status.resumedFrom = start.position
  status.bytesProcessed = start.bytesBefore
  context.logger.info('import started', { jobId: status.id, path: status.path, format: status.format, total: status.total, totalUnit: status.totalUnit, resumedFrom: status.resumedFrom })
  const run = new JobRun(context, job, source, start)
  const exhausted = await run.submitAll()
  return run.settle(exhausted)
}

/**
 * One run of a job over a prepared source. Messages finish out of order; the frontier keeps
 * the checkpoint before the first one that is not finished (durable, or failed for good).
 */
export class JobRun {
  readonly #context: JobRunContext
  readonly #job: Job
  readonly #source: PreparedSource
  readonly #start: ResumePoint
  readonly #frontier: ImportFrontier
  readonly #checkpointer: Checkpointer
  readonly #inFlight = new Set<Promise<void>>()

  constructor(context: JobRunContext, job: Job, source: PreparedSource, start: ResumePoint) {
    this.#context = context
    this.#job = job
    this.#source = source
    this.#start = start
    this.#frontier = createImportFrontier(start.position, start.bytesBefore)
    this.#checkpointer = createCheckpointer(context, job, source.fingerprint, this.#frontier)
  }

  /**
   * Reads the source from the resume point and starts a submit per message, waiting while
   * `concurrency` are in flight. True when every message was started; false when the job
   * was asked to stop or reading failed (READ_FAILED).
   */
  async submitAll(): Promise<boolean> {
    const job = this.#job
    try {
      for await (const item of this.#source.items(this.#start.position)) {
        while (this.#inFlight.size >= this.#context.options.concurrency && job.stopReason === null) await Promise.race([...this.#inFlight, job.stopRequested])
        if (job.stopReason !== null) break
        this.#launch(item)
      }
      return job.stopReason === null
    } catch (error) {
      job.requestStop({ code: 'READ_FAILED', message: `reading ${job.status.path} failed: ${errorText(error)}; import the path again to resume`, retryable: true })
      return false
    }
  }

  /**
   * Waits for the submits in flight (bounded by `stopTimeoutMs` once a stop is asked for),
   * then removes the checkpoint of a source done in full or writes it for a resume.
   */
  async settle(exhausted: boolean): Promise<JobOutcome> {
    const job = this.#job
    // Submits in flight become durable or fail on their own; a cancel or stop bounds the wait.
    await Promise.race([Promise.allSettled([...this.#inFlight]), job.stopRequested.then(() => delay(this.#context.options.stopTimeoutMs))])
    job.finalized = true
    const stopReason = job.stopReason
    // Every message was read and finished (archived, or failed for good): a cancel that
    // came after the last one changes nothing.
    if (exhausted && this.#frontier.open === 0) {
      await this.#checkpointer.remove()
      return { state: 'done', error: null }
    }
    await this.#checkpointer.save()
    const reason = stopReason ?? { code: 'INTERNAL', message: 'messages were left unfinished', retryable: false }
    return { state: reason.code === 'CANCELLED' ? 'cancelled' : 'failed', error: reason }
  }

  /** Starts one message's submit; a defect in it stops the job (INTERNAL). */
  #launch(item: WorkItem): void {
    const ticket = this.#frontier.add(item.endPosition, item.sizeBytes)
    const task: Promise<void> = this.#process(item, ticket).then(
      () => {
        this.#inFlight.delete(task)
      },
      (error: unknown) => {
        this.#inFlight.delete(task)
        this.#context.logger.error('import task failed', { jobId: this.#job.status.id, error })
        this.#job.requestStop({ code: 'INTERNAL', message: errorText(error), retryable: false })
      },
    )
    this.#inFlight.add(task)
  }

  async #process(item: WorkItem, ticket: number): Promise<void> {
    const raw = await this.#load(item, ticket)
    if (raw !== null) await this.#submit(item, ticket, raw)
  }

  /** The message's bytes; null when there is nothing to submit (unreadable, too large or empty: recorded as failed). */
  async #load(item: WorkItem, ticket: number): Promise<Uint8Array | null> {
    const job = this.#job
    let content
    try {
      content = await item.load()
    } catch (error) {
      if (!job.finalized) this.#fail(item, ticket, error)
      return null
    }
    if (job.finalized) return null
    if (content.kind === 'oversize') {
      this.#fail(item, ticket, new ImportError('MESSAGE_TOO_LARGE', `message of ${content.sizeBytes} bytes is over the limit of ${this.#context.options.messageBytesMax} bytes`))
      return null
    }
    if (content.raw.byteLength === 0) {
      this.#fail(item, ticket, new ImportError('MESSAGE_EMPTY', 'the message has no bytes (two separators in a row)'))
      return null
    }
    return content.raw
  }

  /** Submits one message: counts it once durable; a retryable refusal stops the job at this message. */
  async #submit(item: WorkItem, ticket: number, raw: Uint8Array): Promise<void> {
    const job = this.#job
    const status = job.status
    const delivery = importDelivery(status.path, item.keySuffix, this.#context.clock.now())
    try {
      const result = await this.#context.pipeline.submit(raw, delivery)
      if (job.finalized) return
      if (result.duplicate) status.duplicates++
      else status.imported++
      if ((result.flags?.length ?? 0) > 0) status.flagged++
      this.#finish(item, ticket)
    } catch (error) {
      if (job.finalized) return
      if (error instanceof MailkeepError && error.retryable) {
        // The store cannot take messages now: stop at this message, keep it unfinished so
        // the checkpoint stays before it, and let the technician run the path again.
        job.requestStop({
          code: error.code,
          message: `${error.message} (at ${item.file}${item.offset === null ? '' : ` offset ${item.offset}`}); import the path again to resume`,
          retryable: true,
        })
        return
      }
      this.#fail(item, ticket, error)
    }
  }

  /** Records a message that cannot be archived and finishes it: the job goes on past it. */
  #fail(item: WorkItem, ticket: number, error: unknown): void {
    recordMessageFailure(this.#job, item, error, this.#context.options.errorsKept, this.#context.logger)
    this.#finish(item, ticket)
  }

  /** Counts a finished message and lets the checkpoint move past it. */
  #finish(item: WorkItem, ticket: number): void {
    const status = this.#job.status
    if (this.#job.finalized) return
    status.processed++
    status.bytesProcessed += item.sizeBytes
    this.#frontier.finish(ticket)
    this.#checkpointer.maybeSave()
  }
}
