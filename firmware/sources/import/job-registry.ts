import { ImportError } from './errors.js'
import type { Job } from './import-job.js'
import type { ImportJobStatus } from './types.js'

/**
 * The jobs an import service knows: those starting (format detection), those running (one
 * per path) and the last `finishedJobsKept` finished ones. Pure bookkeeping: no I/O.
 */
export class JobRegistry {
  /** Every job still known, oldest first (Map keeps insertion order). */
  readonly #jobs = new Map<string, Job>()
  /** Running jobs by absolute path. */
  readonly #runningByPath = new Map<string, Job>()
  /** Paths whose startJob is detecting the format, with the job they will produce. */
  readonly #startingByPath = new Map<string, Promise<ImportJobStatus>>()
  readonly #finishedJobsKept: number
  #jobCounter = 0

  constructor(finishedJobsKept: number) {
    this.#finishedJobsKept = finishedJobsKept
  }

  /** A new job id, unique within this service and ordered by start time. */
  nextId(startedAtMs: number): string {
    return `import-${startedAtMs.toString(36)}-${++this.#jobCounter}`
  }

  /** Jobs running or starting: what `jobsMax` bounds. */
  get activeCount(): number {
    return this.#runningByPath.size + this.#startingByPath.size
  }

  /** @throws ImportError JOB_NOT_FOUND */
  find(id: string): Job {
    const job = this.#jobs.get(id)
    if (!job) throw new ImportError('JOB_NOT_FOUND', `no import job ${id}`, { fields: { id } })
    return job
  }

  /** Every known job, oldest first. */
  all(): Job[] {
    return [...this.#jobs.values()]
  }

  /** Running jobs now. */
  running(): Job[] {
    return [...this.#runningByPath.values()]
  }

  /** Starts of jobs that are still detecting their format. */
  starting(): Promise<ImportJobStatus>[] {
    return [...this.#startingByPath.values()]
  }

  runningAt(path: string): Job | undefined {
    return this.#runningByPath.get(path)
  }

  startingAt(path: string): Promise<ImportJobStatus> | undefined {
    return this.#startingByPath.get(path)
  }

  /** Waits for `launch`, known meanwhile as the start of the job of `path`. */
  async trackStart(path: string, launch: Promise<ImportJobStatus>): Promise<ImportJobStatus> {
    this.#startingByPath.set(path, launch)
    try {
      return await launch
    } finally {
      this.#startingByPath.delete(path)
    }
  }

  /** A job that starts running now. */
  add(job: Job): void {
    this.#jobs.set(job.status.id, job)
    this.#runningByPath.set(job.status.path, job)
  }

  /** A job that ended: its path is free again, and the oldest finished jobs past `finishedJobsKept` are forgotten. */
  release(job: Job): void {
    this.#runningByPath.delete(job.status.path)
    const finished = [...this.#jobs.values()].filter((known) => known.status.state !== 'running')
    for (const old of finished.slice(0, Math.max(0, finished.length - this.#finishedJobsKept))) this.#jobs.delete(old.status.id)
  }
}
