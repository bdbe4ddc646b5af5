import { mkdir, realpath, stat } from 'node:fs/promises'
import { dirname, isAbsolute, join } from 'node:path'
import type { Delivery } from '../../archive/types.js'
import { MailkeepError } from '../../common/errors.js'
import { createImportFrontier, loadCheckpoint, removeCheckpoint, saveCheckpoint, type ImportFrontier } from './checkpoint.js'
import { detectImportFormat } from './detect.js'
import { ImportError, importErrorFromFs } from './errors.js'
import { findRenamedMaildirFile, listMessageFiles, listSingleFile, readMessageFile, type MessageFile, type MessageFileContent } from './folder-reader.js'
import { mboxSeparatorAt, readMbox } from './mbox-reader.js'
import {
  importCheckpointIntervalMsDefault,
  importErrorsKeptDefault,
  importFinishedJobsKeptDefault,
  importFolderFilesMaxDefault,
  importReadChunkBytesDefault,
  importStopTimeoutMsDefault,
  type ImportFormat,
  type ImportJobError,
  type ImportJobStatus,
  type ImportMessageError,
  type ImportService,
  type ImportServiceDeps,
  type ImportServiceOptions,
} from './types.js'

/** Most submits one job keeps in flight; more only adds memory (each holds a whole message). */
export const importConcurrencyMax = 256

type ResolvedOptions = Required<ImportServiceOptions>

/** Options with every default applied. */
export function resolveImportOptions(options: ImportServiceOptions): ResolvedOptions {
  return {
    stateDir: options.stateDir,
    concurrency: options.concurrency,
    messageBytesMax: options.messageBytesMax,
    jobsMax: options.jobsMax,
    stopTimeoutMs: options.stopTimeoutMs ?? importStopTimeoutMsDefault,
    checkpointIntervalMs: options.checkpointIntervalMs ?? importCheckpointIntervalMsDefault,
    readChunkBytes: options.readChunkBytes ?? importReadChunkBytesDefault,
    folderFilesMax: options.folderFilesMax ?? importFolderFilesMaxDefault,
    finishedJobsKept: options.finishedJobsKept ?? importFinishedJobsKeptDefault,
    errorsKept: options.errorsKept ?? importErrorsKeptDefault,
  }
}

/** Every problem with the options, each as `import.key: reason (got value)`; empty when valid. */
export function validateImportOptions(options: ResolvedOptions): string[] {
  const problems: string[] = []
  const positive = ['concurrency', 'messageBytesMax', 'jobsMax', 'stopTimeoutMs', 'readChunkBytes', 'folderFilesMax'] as const
  for (const key of positive) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 1) problems.push(`import.${key}: must be a positive integer (got ${JSON.stringify(value)})`)
  }
  const nonNegative = ['checkpointIntervalMs', 'finishedJobsKept', 'errorsKept'] as const
  for (const key of nonNegative) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 0) problems.push(`import.${key}: must be a non-negative integer (got ${JSON.stringify(value)})`)
  }
  if (options.concurrency > importConcurrencyMax) problems.push(`import.concurrency: must be at most ${importConcurrencyMax} (got ${options.concurrency})`)
  if (typeof options.stateDir !== 'string' || options.stateDir.trim() === '') problems.push(`import.stateDir: must be a directory path (got ${JSON.stringify(options.stateDir)})`)
  return problems
}

/** One message of a source, in source order, read lazily so reads overlap with submits. */
interface WorkItem {
  /** Its identity at the source: the mbox offset, or the file's delivery name. */
  keySuffix: string
  /** Where it is, for the technician: the mbox path or the message file. */
  file: string
  offset: number | null
  /** Checkpoint position after this message (next mbox offset, next list index). */
  endPosition: number
  /** Source bytes it covers. */
  sizeBytes: number
  load(): Promise<MessageFileContent>
}

/** A source prepared for a run: its size, fingerprint and a reader from any position. */
interface PreparedSource {
  fingerprint: string
  total: number
  totalUnit: 'messages' | 'bytes'
  bytesTotal: number
  /** True when a checkpoint position is a place this source can resume from. */
  canResumeAt(position: number): Promise<boolean>
  /** Source bytes before a position. */
  bytesBefore(position: number): number
  items(fromPosition: number): AsyncIterable<WorkItem>
}

interface Job {
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

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}

function delay(ms: number): Promise<void> {
  return new Promise((resolveDelay) => setTimeout(resolveDelay, ms).unref())
}

/**
 * Creates the bulk import service. Pure: touches nothing until start().
 *
 * A job reads its source in order and submits up to `concurrency` messages at once to
 * the same ingest pipeline as SMTP and journal pull (parse, archive, index, mirror queue),
 * with `deliveryKey` `import:<path>:<offset or file>` so a message re-sent after a crash is
 * recorded once. Progress is checkpointed durably, never past the first message that is
 * not yet durable; importing the same path again after a crash, cancel or STORE_FULL
 * resumes there. A finished path imported again runs in full (dedup counts duplicates).
 * A message that is too large, empty, unreadable, or refused for good by the pipeline is
 * counted as failed and reported; the job goes on. A retryable pipeline error (STORE_FULL,
 * STORE_UNAVAILABLE) fails the job with its checkpoint kept.
 */
export function createImportService(deps: ImportServiceDeps, options: ImportServiceOptions): ImportService {
  const logger = deps.logger.child('import')
  const resolved = resolveImportOptions(options)
  let state: 'created' | 'running' | 'stopping' | 'stopped' = 'created'
  let jobCounter = 0
  /** Every job still known, oldest first (Map keeps insertion order). */
  const jobs = new Map<string, Job>()
  /** Running jobs by absolute path. */
  const runningByPath = new Map<string, Job>()
  /** Paths whose startJob is detecting the format, with the job they will produce. */
  const startingByPath = new Map<string, Promise<ImportJobStatus>>()

  const snapshot = (job: Job): ImportJobStatus => ({ ...job.status, errors: job.status.errors.map((error) => ({ ...error })), error: job.status.error ? { ...job.status.error } : null })

  const forgetOldJobs = (): void => {
    const finished = [...jobs.values()].filter((job) => job.status.state !== 'running')
    for (const job of finished.slice(0, Math.max(0, finished.length - resolved.finishedJobsKept))) jobs.delete(job.status.id)
  }

  const prepareSource = async (path: string, format: ImportFormat): Promise<PreparedSource> => {
    if (format === 'mbox') return prepareMbox(path)
    const list = format === 'eml' ? await listSingleFile(path) : await listMessageFiles(path, format, { filesMax: resolved.folderFilesMax })
    const root = format === 'eml' ? dirname(path) : path
    return prepareFiles(root, format, list.files, list.bytesTotal, list.fingerprint)
  }

  const prepareMbox = async (path: string): Promise<PreparedSource> => {
    let info
    try {
      info = await stat(path)
    } catch (error) {
      throw importErrorFromFs(error, path, 'mbox')
    }
    // Only the bytes present when the job began are read, so a message being appended is not half-read.
    const sizeBytes = info.size
    return {
      fingerprint: `mbox:${sizeBytes}:${Math.trunc(info.mtimeMs)}`,
      total: sizeBytes,
      totalUnit: 'bytes',
      bytesTotal: sizeBytes,
      canResumeAt: async (position) => position === sizeBytes || (position < sizeBytes && (await mboxSeparatorAt(path, position))),
      bytesBefore: (position) => position,
      items: async function* (fromPosition) {
        const entries = readMbox(path, { fromOffset: fromPosition, toOffset: sizeBytes, messageBytesMax: resolved.messageBytesMax, chunkBytes: resolved.readChunkBytes })
        for await (const entry of entries) {
          const content: MessageFileContent = entry.kind === 'message' ? { kind: 'message', raw: entry.raw } : { kind: 'oversize', sizeBytes: entry.sizeBytes }
          yield {
            keySuffix: String(entry.startOffset),
            file: path,
            offset: entry.startOffset,
            endPosition: entry.endOffset,
            sizeBytes: entry.endOffset - entry.startOffset,
            load: async () => content,
          }
        }
      },
    }
  }

  const prepareFiles = (root: string, format: ImportFormat, files: MessageFile[], bytesTotal: number, fingerprint: string): PreparedSource => {
    const read = (relativePath: string): Promise<MessageFileContent> => readMessageFile(join(root, relativePath), resolved.messageBytesMax)
    const loadFile = async (file: MessageFile): Promise<MessageFileContent> => {
      let failure: unknown
      try {
        return await read(file.relativePath)
      } catch (error) {
        failure = error
      }
      // A mail client may have renamed the maildir file (flags) or moved it from new/ to cur/.
      if (format === 'maildir' && failure instanceof ImportError && failure.code === 'PATH_NOT_FOUND') {
        const renamed = await findRenamedMaildirFile(root, file.relativePath)
        if (renamed !== null) {
          try {
            return await read(renamed)
          } catch (error) {
            failure = error
          }
        }
      }
      if (failure instanceof ImportError && failure.code === 'MESSAGE_UNREADABLE') throw failure
      throw new ImportError('MESSAGE_UNREADABLE', errorText(failure), { fields: { path: join(root, file.relativePath) }, cause: failure })
    }
    return {
      fingerprint: `${format}:${fingerprint}`,
      total: files.length,
      totalUnit: 'messages',
      bytesTotal,
      canResumeAt: async (position) => position <= files.length,
      bytesBefore: (position) => files.slice(0, position).reduce((sum, file) => sum + file.sizeBytes, 0),
      items: async function* (fromPosition) {
        for (let index = fromPosition; index < files.length; index++) {
          const file = files[index]!
          yield {
            keySuffix: file.deliveryName,
            file: join(root, file.relativePath),
            offset: null,
            endPosition: index + 1,
            sizeBytes: file.sizeBytes,
            load: () => loadFile(file),
          }
        }
      },
    }
  }

  /** Where a job starts: the checkpoint's position when it belongs to this very source, else 0. */
  const resumePoint = async (job: Job, source: PreparedSource): Promise<{ position: number; bytesBefore: number }> => {
    const { path, format } = job.status
    const loaded = await loadCheckpoint(resolved.stateDir, path)
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

  const recordFailure = (job: Job, item: WorkItem, error: unknown): void => {
    const code = error instanceof MailkeepError ? error.code : 'INGEST_FAILED'
    const reason = errorText(error)
    job.status.failed++
    if (job.status.errors.length < resolved.errorsKept) {
      const entry: ImportMessageError = { file: item.file, offset: item.offset, code, reason }
      job.status.errors.push(entry)
      logger.warn('message not imported', { jobId: job.status.id, ...entry })
    } else {
      logger.debug('message not imported', { jobId: job.status.id, file: item.file, offset: item.offset, code })
    }
  }

  const runJob = async (job: Job, format: ImportFormat): Promise<void> => {
    const { status } = job
    const path = status.path
    const source = await prepareSource(path, format)
    const start = await resumePoint(job, source)
    // Set together: a status with `total` set has its `resumedFrom` too.
    status.total = source.total
    status.totalUnit = source.totalUnit
    status.bytesTotal = source.bytesTotal
    status.resumedFrom = start.position
    status.bytesProcessed = start.bytesBefore
    logger.info('import started', { jobId: status.id, path, format, total: status.total, totalUnit: status.totalUnit, resumedFrom: status.resumedFrom })

    const frontier: ImportFrontier = createImportFrontier(start.position, start.bytesBefore)
    const checkpointer = createCheckpointer(job, source.fingerprint, frontier)
    const inFlight = new Set<Promise<void>>()

    const processItem = async (item: WorkItem, ticket: number): Promise<void> => {
      const finish = (): void => {
        if (job.finalized) return
        status.processed++
        status.bytesProcessed += item.sizeBytes
        frontier.finish(ticket)
        checkpointer.maybeSave()
      }
      let content: MessageFileContent
      try {
        content = await item.load()
      } catch (error) {
        if (job.finalized) return
        recordFailure(job, item, error)
        return finish()
      }
      if (job.finalized) return
      if (content.kind === 'oversize') {
        const tooLarge = new ImportError('MESSAGE_TOO_LARGE', `message of ${content.sizeBytes} bytes is over the limit of ${resolved.messageBytesMax} bytes`)
        recordFailure(job, item, tooLarge)
        return finish()
      }
      if (content.raw.byteLength === 0) {
        recordFailure(job, item, new ImportError('MESSAGE_EMPTY', 'the message has no bytes (two separators in a row)'))
        return finish()
      }
      const delivery: Delivery = {
        source: 'import',
        sourceName: path,
        receivedAtMs: deps.clock.now(),
        envelopeFrom: null,
        envelopeTo: [],
        envelopeBcc: [],
        remoteAddress: null,
        journalEnvelopeText: null,
        deliveryKey: `import:${path}:${item.keySuffix}`,
      }
      try {
        const result = await deps.pipeline.submit(content.raw, delivery)
        if (job.finalized) return
        if (result.duplicate) status.duplicates++
        else status.imported++
        if ((result.flags?.length ?? 0) > 0) status.flagged++
        finish()
      } catch (error) {
        if (job.finalized) return
        if (error instanceof MailkeepError && error.retryable) {
          // The store cannot take messages now: stop at this message, keep it unfinished so
          // the checkpoint stays before it, and let the technician run the path again.
          job.requestStop({ code: error.code, message: `${error.message} (at ${item.file}${item.offset === null ? '' : ` offset ${item.offset}`}); import the path again to resume`, retryable: true })
          return
        }
        recordFailure(job, item, error)
        finish()
      }
    }

    let exhausted = false
    try {
      for await (const item of source.items(start.position)) {
        while (inFlight.size >= resolved.concurrency && job.stopReason === null) await Promise.race([...inFlight, job.stopRequested])
        if (job.stopReason !== null) break
        const ticket = frontier.add(item.endPosition, item.sizeBytes)
        const task: Promise<void> = processItem(item, ticket).then(
          () => {
            inFlight.delete(task)
          },
          (error: unknown) => {
            inFlight.delete(task)
            logger.error('import task failed', { jobId: status.id, error })
            job.requestStop({ code: 'INTERNAL', message: errorText(error), retryable: false })
          },
        )
        inFlight.add(task)
      }
      exhausted = job.stopReason === null
    } catch (error) {
      job.requestStop({ code: 'READ_FAILED', message: `reading ${path} failed: ${errorText(error)}; import the path again to resume`, retryable: true })
    }

    // Submits in flight become durable or fail on their own; a cancel or stop bounds the wait.
    await Promise.race([Promise.allSettled([...inFlight]), job.stopRequested.then(() => delay(resolved.stopTimeoutMs))])
    job.finalized = true
    const stopReason = job.stopReason as ImportJobError | null
    // Every message was read and finished (archived, or failed for good): a cancel that
    // came after the last one changes nothing.
    if (exhausted && frontier.open === 0) {
      await checkpointer.remove()
      finalize(job, 'done', null)
    } else {
      await checkpointer.save()
      const reason = stopReason ?? { code: 'INTERNAL', message: 'messages were left unfinished', retryable: false }
      finalize(job, reason.code === 'CANCELLED' ? 'cancelled' : 'failed', reason)
    }
  }

  /** Durable checkpoint writes of one job, one at a time, at most every `checkpointIntervalMs` while it runs. */
  const createCheckpointer = (job: Job, fingerprint: string, frontier: ImportFrontier) => {
    let chain: Promise<void> = Promise.resolve()
    let writing = false
    let savedPosition = job.status.resumedFrom
    let lastWriteMs = deps.clock.monotonicMs()
    const write = (): Promise<void> => {
      const position = frontier.position
      const bytesBefore = frontier.bytesBefore
      chain = chain.then(async () => {
        if (position === savedPosition) return
        try {
          await saveCheckpoint(resolved.stateDir, { version: 1, path: job.status.path, format: job.status.format, fingerprint, position, bytesBefore, updatedAtMs: deps.clock.now() })
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
        if (deps.clock.monotonicMs() - lastWriteMs < resolved.checkpointIntervalMs) return
        writing = true
        lastWriteMs = deps.clock.monotonicMs()
        void write().finally(() => {
          writing = false
        })
      },
      save: write,
      async remove(): Promise<void> {
        chain = chain.then(async () => {
          try {
            await removeCheckpoint(resolved.stateDir, job.status.path)
          } catch (error) {
            logger.warn('checkpoint not removed; the next import of this path resumes from it', { jobId: job.status.id, path: job.status.path, error })
          }
        })
        return chain
      },
    }
  }

  const finalize = (job: Job, finalState: 'done' | 'failed' | 'cancelled', error: ImportJobError | null): void => {
    job.finalized = true
    job.status.state = finalState
    job.status.error = error
    job.status.finishedAtMs = deps.clock.now()
    runningByPath.delete(job.status.path)
    const { id, path, processed, imported, duplicates, flagged, failed, bytesProcessed, resumedFrom } = job.status
    const fields = { jobId: id, path, state: finalState, processed, imported, duplicates, flagged, failed, bytesProcessed, resumedFrom, error }
    if (finalState === 'done') logger.info('import finished', fields)
    else logger.warn('import ended early', fields)
    forgetOldJobs()
  }

  const createJob = (path: string, format: ImportFormat): Job => {
    const startedAtMs = deps.clock.now()
    const id = `import-${startedAtMs.toString(36)}-${++jobCounter}`
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

  const findJob = (id: string): Job => {
    const job = jobs.get(id)
    if (!job) throw new ImportError('JOB_NOT_FOUND', `no import job ${id}`, { fields: { id } })
    return job
  }

  const runningCount = (): number => runningByPath.size + startingByPath.size

  return {
    async start() {
      if (state !== 'created') return
      const problems = validateImportOptions(resolved)
      if (problems.length > 0) throw new ImportError('INVALID_OPTIONS', problems.join('; '), { fields: { problems } })
      await mkdir(resolved.stateDir, { recursive: true, mode: 0o700 })
      state = 'running'
      logger.info('import service started', { stateDir: resolved.stateDir, concurrency: resolved.concurrency, jobsMax: resolved.jobsMax })
    },

    async stop() {
      if (state === 'stopped' || state === 'stopping') return
      state = 'stopping'
      const running = [...runningByPath.values()]
      for (const job of running) job.requestStop({ code: 'CANCELLED', message: 'the service is stopping; import the path again to resume', retryable: true })
      await Promise.allSettled([...startingByPath.values()])
      await Promise.allSettled([...runningByPath.values(), ...running].map((job) => job.finished))
      state = 'stopped'
    },

    async startJob(path) {
      if (state !== 'running') throw new ImportError('NOT_RUNNING', 'the import service is not running', { fields: { state } })
      if (!isAbsolute(path)) {
        throw new ImportError('PATH_NOT_ABSOLUTE', `${path} is not an absolute path; the import runs in the service, whose working directory is not yours`, { fields: { path } })
      }
      // The real path names the job and its checkpoint, so two spellings of one file (a
      // symbolic link, `..`) are one job.
      let absolute: string
      try {
        absolute = await realpath(path)
      } catch (error) {
        throw importErrorFromFs(error, path)
      }
      const running = runningByPath.get(absolute)
      if (running) return snapshot(running)
      const starting = startingByPath.get(absolute)
      if (starting) return starting
      if (runningCount() >= resolved.jobsMax) {
        throw new ImportError('TOO_MANY_JOBS', `${resolved.jobsMax} import jobs are running already; wait for one to finish`, { fields: { jobsMax: resolved.jobsMax } })
      }
      const launch = (async (): Promise<ImportJobStatus> => {
        const format = await detectImportFormat(absolute)
        if (state !== 'running') throw new ImportError('NOT_RUNNING', 'the import service is stopping', { fields: { state } })
        const job = createJob(absolute, format)
        jobs.set(job.status.id, job)
        runningByPath.set(absolute, job)
        job.finished = runJob(job, format).catch((error: unknown) => {
          if (job.status.state !== 'running') return
          const typed = error instanceof MailkeepError ? error : null
          if (!typed) logger.error('import job failed unexpectedly', { jobId: job.status.id, path: absolute, error })
          finalize(job, 'failed', { code: typed?.code ?? 'INTERNAL', message: typed?.message ?? errorText(error), retryable: typed?.retryable ?? false })
        })
        return snapshot(job)
      })()
      startingByPath.set(absolute, launch)
      try {
        return await launch
      } finally {
        startingByPath.delete(absolute)
      }
    },

    jobStatus(id) {
      return snapshot(findJob(id))
    },

    jobs() {
      return [...jobs.values()].map(snapshot)
    },

    async cancelJob(id) {
      const job = findJob(id)
      if (job.status.state === 'running') {
        job.requestStop({ code: 'CANCELLED', message: 'cancelled; import the path again to resume', retryable: true })
        await job.finished
      }
      return snapshot(job)
    },
  }
}

