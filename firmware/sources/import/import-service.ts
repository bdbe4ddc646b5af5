import { mkdir, realpath } from 'node:fs/promises'
import { isAbsolute } from 'node:path'
import { MailkeepError } from '../../common/errors.js'
import { detectImportFormat } from './detect.js'
import { ImportError, errorText, importErrorFromFs } from './errors.js'
import { createJob, finishJob, snapshotJob, type Job, type JobOutcome } from './import-job.js'
import { resolveImportOptions, validateImportOptions } from './import-options.js'
import { JobRegistry } from './job-registry.js'
import { runImportJob, type JobRunContext } from './job-runner.js'
import type { ImportJobStatus, ImportService, ImportServiceDeps, ImportServiceOptions } from './types.js'

/*
 * The service is a façade over named units, each testable alone:
 * - import-options.ts: defaults and validation of the options;
 * - import-source.ts: walking an mbox, a maildir, a folder of .eml files or one .eml file;
 * - job-runner.ts: one run of a job, its messages submitted with bounded concurrency;
 * - job-checkpoints.ts: where a run resumes, and its checkpoint writes;
 * - import-job.ts: a job's status and how it ends; job-registry.ts: the jobs a service knows.
 */

type ServiceState = 'created' | 'running' | 'stopping' | 'stopped'

/** What launching a job needs of the service. */
interface LaunchContext {
  run: JobRunContext
  registry: JobRegistry
  state(): ServiceState
}

/**
 * The real path of an import path: it names the job and its checkpoint, so two spellings
 * of one file (a symbolic link, `..`) are one job.
 *
 * @throws ImportError PATH_NOT_ABSOLUTE, PATH_NOT_FOUND, PATH_UNREADABLE
 */
async function realImportPath(path: string): Promise<string> {
  if (!isAbsolute(path)) {
    throw new ImportError('PATH_NOT_ABSOLUTE', `${path} is not an absolute path; the import runs in the service, whose working directory is not yours`, { fields: { path } })
  }
  try {
    return await realpath(path)
  } catch (error) {
    throw importErrorFromFs(error, path)
  }
}

/** Records a job's end: its final status, and its path free for the next job. */
function endJob(context: LaunchContext, job: Job, outcome: JobOutcome): void {
  finishJob(job, outcome, context.run.clock.now(), context.run.logger)
  context.registry.release(job)
}

/**
 * Detects the format of `absolute`, registers a job for it and runs the job in the
 * background. Resolves with the job's first status.
 *
 * @throws ImportError FORMAT_UNKNOWN, SOURCE_EMPTY, PATH_*, NOT_RUNNING when the service began stopping meanwhile
 */
async function launchJob(context: LaunchContext, absolute: string): Promise<ImportJobStatus> {
  const { run, registry } = context
  const format = await detectImportFormat(absolute)
  if (context.state() !== 'running') throw new ImportError('NOT_RUNNING', 'the import service is stopping', { fields: { state: context.state() } })
  const startedAtMs = run.clock.now()
  const job = createJob(registry.nextId(startedAtMs), absolute, format, startedAtMs)
  registry.add(job)
  job.finished = runImportJob(run, job)
    .then((outcome) => endJob(context, job, outcome))
    .catch((error: unknown) => {
      if (job.status.state !== 'running') return
      const typed = error instanceof MailkeepError ? error : null
      if (!typed) run.logger.error('import job failed unexpectedly', { jobId: job.status.id, path: absolute, error })
      endJob(context, job, { state: 'failed', error: { code: typed?.code ?? 'INTERNAL', message: typed?.message ?? errorText(error), retryable: typed?.retryable ?? false } })
    })
  return snapshotJob(job)
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
  const resolved = resolveImportOptions(options)
  const run: JobRunContext = { logger: deps.logger.child('import'), clock: deps.clock, pipeline: deps.pipeline, options: resolved }
  const registry = new JobRegistry(resolved.finishedJobsKept)
  let state: ServiceState = 'created'
  const context: LaunchContext = { run, registry, state: () => state }

  return {
    async start() {
      if (state !== 'created') return
      const problems = validateImportOptions(resolved)
      if (problems.length > 0) throw new ImportError('INVALID_OPTIONS', problems.join('; '), { fields: { problems } })
      await mkdir(resolved.stateDir, { recursive: true, mode: 0o700 })
      state = 'running'
      run.logger.info('import service started', { stateDir: resolved.stateDir, concurrency: resolved.concurrency, jobsMax: resolved.jobsMax })
    },

    async stop() {
      if (state === 'stopped' || state === 'stopping') return
      state = 'stopping'
      const running = registry.running()
      for (const job of running) job.requestStop({ code: 'CANCELLED', message: 'the service is stopping; import the path again to resume', retryable: true })
      await Promise.allSettled(registry.starting())
      await Promise.allSettled([...registry.running(), ...running].map((job) => job.finished))
      state = 'stopped'
    },

    async startJob(path) {
      if (state !== 'running') throw new ImportError('NOT_RUNNING', 'the import service is not running', { fields: { state } })
      const absolute = await realImportPath(path)
      const running = registry.runningAt(absolute)
      if (running) return snapshotJob(running)
      const starting = registry.startingAt(absolute)
      if (starting) return starting
      if (registry.activeCount >= resolved.jobsMax) {
        throw new ImportError('TOO_MANY_JOBS', `${resolved.jobsMax} import jobs are running already; wait for one to finish`, { fields: { jobsMax: resolved.jobsMax } })
      }
      return registry.trackStart(absolute, launchJob(context, absolute))
    },

    jobStatus: (id) => snapshotJob(registry.find(id)),

    jobs: () => registry.all().map(snapshotJob),

    async cancelJob(id) {
      const job = registry.find(id)
      if (job.status.state === 'running') {
        job.requestStop({ code: 'CANCELLED', message: 'cancelled; import the path again to resume', retryable: true })
        await job.finished
      }
      return snapshotJob(job)
    },
  }
}
