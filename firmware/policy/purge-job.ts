import type { RootDatabase } from 'lmdb'
import type { ArchiveStore, PurgeResult } from '../archive/types.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { AuditLog } from './audit-log.js'
import { purgeCursorKey } from './change-log.js'
import type { ExclusiveLock } from './exclusive.js'
import type { AuditEntry, DueItem, PurgePlan } from './types.js'

/** What one purge run did. */
export interface PurgeRunReport {
  batches: number
  purged: number
  purgedBytes: number
  /** Due in the plan but kept when the batch re-checked (a hold placed meanwhile, a peer behind). */
  keptAtExecution: number
  failed: { id: string; code: string }[]
  /** Audit sequence of each batch's entry. */
  auditSeqs: number[]
}

/** What executing a purge needs. */
export interface PurgeDeps {
  logger: Logger
  clock: Clock
  archive: Pick<ArchiveStore, 'delete' | 'lastSequence'>
  audit: AuditLog
  lock: ExclusiveLock
  /** The archive's root. @throws PolicyError UNAVAILABLE when the archive is not open */
  root(): RootDatabase
  /** The plan over these ids, or over the whole archive for null. */
  plan(ids: readonly string[] | null): Promise<PurgePlan>
  /** False once the service is stopping: no further batch starts. */
  isRunning(): boolean
}

/** One purged message as its batch's audit entry names it. */
type PurgedRecord = Pick<DueItem, 'id' | 'sha256' | 'sizeBytes' | 'policy' | 'archivedAtMs'> & { purgedAtMs: number; sequence: number }

/** Deletes the due messages; each deletion's outcome is added to `report`. */
async function deleteDue(deps: PurgeDeps, due: readonly DueItem[], report: PurgeRunReport): Promise<{ messages: PurgedRecord[]; failed: { id: string; code: string }[] }> {
  const results = await Promise.allSettled(due.map((item) => deps.archive.delete(item.id)))
  const purgedAtMs = deps.clock.now()
  const messages: PurgedRecord[] = []
  const failed: { id: string; code: string }[] = []
  results.forEach((result: PromiseSettledResult<PurgeResult>, index) => {
    const item = due[index]!
    if (result.status === 'fulfilled') {
      messages.push({ id: item.id, sha256: item.sha256, sizeBytes: item.sizeBytes, policy: item.policy, archivedAtMs: item.archivedAtMs, purgedAtMs, sequence: result.value.sequence })
      report.purged++
      report.purgedBytes += item.sizeBytes
    } else {
      const code = (result.reason as { code?: string } | null)?.code ?? 'ERROR'
      // NOT_FOUND: gone already (purged by an earlier batch after a crash); not a failure of the archive.
      failed.push({ id: item.id, code })
      report.failed.push({ id: item.id, code })
      deps.logger.error('purging a message failed', { id: item.id, error: result.reason })
    }
  })
  return { messages, failed }
}

/**
 * One batch: plans its ids again (holds placed since, mirror peers' progress), deletes what
 * is still due and writes one `purge.batch` audit entry naming every purged message, with
 * the purge cursor, in one transaction. A batch with nothing due writes no entry.
 */
export async function runPurgeBatch(deps: PurgeDeps, ids: string[], actor: string, batchNumber: number, report: PurgeRunReport): Promise<void> {
  const fresh = await deps.plan(ids)
  report.keptAtExecution += ids.length - fresh.due.length
  const { messages, failed } = await deleteDue(deps, fresh.due, report)
  if (fresh.due.length === 0) return
  const entry = (await deps.root().childTransaction(() => {
    const written = deps.audit.appendInTransaction({
      actor,
      action: 'purge.batch',
      details: { batch: batchNumber, purged: messages.length, kept: fresh.kept.length, failed, messages },
    })
    deps.audit.state().putSync(purgeCursorKey, deps.archive.lastSequence())
    return written
  })) as AuditEntry
  report.auditSeqs.push(entry.seq)
  report.batches++
  deps.logger.info('purge batch done', { batch: batchNumber, purged: messages.length, auditSeq: entry.seq })
}

/**
 * A purge of every message due now, in batches of `batchMessagesMax`, each under the lock
 * and each yielding to ingest and the API after it. Stops between batches once the service
 * is stopping. @throws PolicyError UNAVAILABLE when the archive is not open
 */
export async function runPurge(deps: PurgeDeps, actor: string, batchMessagesMax: number): Promise<PurgeRunReport> {
  deps.root()
  const report: PurgeRunReport = { batches: 0, purged: 0, purgedBytes: 0, keptAtExecution: 0, failed: [], auditSeqs: [] }
  const full = await deps.plan(null)
  const ids = full.due.map((item) => item.id)
  for (let start = 0, batch = 1; start < ids.length && deps.isRunning(); start += batchMessagesMax, batch++) {
    await deps.lock.run(() => runPurgeBatch(deps, ids.slice(start, start + batchMessagesMax), actor, batch, report))
    // Let ingest and the API run between batches.
    await new Promise((resolve) => setImmediate(resolve))
  }
  return report
}

/** The last scheduled run, for status: its report, or why it failed. */
export interface PurgeLastRun {
  atMs: number
  report?: PurgeRunReport
  error?: string
}

/** What the schedule needs: a clock, a logger, whether the service runs, and the purge itself. */
export type PurgeScheduleDeps = Pick<PurgeDeps, 'logger' | 'clock' | 'isRunning'> & { run(actor: string): Promise<PurgeRunReport> }

/**
 * The scheduled purge: one run every `purgeIntervalMs` (0: never) while the service runs,
 * never two at once. Timers are unref'd.
 */
export class PurgeSchedule {
  readonly #deps: PurgeScheduleDeps
  readonly #intervalMs: number
  #timer: NodeJS.Timeout | undefined
  #running: Promise<PurgeRunReport> | undefined
  #lastRun: PurgeLastRun | undefined

  constructor(deps: PurgeScheduleDeps, intervalMs: number) {
    this.#deps = deps
    this.#intervalMs = intervalMs
  }

  /** Arms the timer for the next run (nothing with an interval of 0 or when not running). */
  schedule(): void {
    if (this.#intervalMs === 0 || !this.#deps.isRunning()) return
    this.#timer = setTimeout(() => {
      void this.tick().finally(() => this.schedule())
    }, this.#intervalMs)
    this.#timer.unref()
  }

  /** Disarms the timer. */
  cancel(): void {
    clearTimeout(this.#timer)
  }

  /** One scheduled run (tests call it directly); joins a run in flight. Never throws: failures are logged and kept in lastRun. */
  async tick(): Promise<PurgeRunReport | undefined> {
    if (!this.#deps.isRunning()) return undefined
    if (this.#running) return this.#running
    this.#running = this.#deps.run('system')
    try {
      const report = await this.#running
      this.#lastRun = { atMs: this.#deps.clock.now(), report }
      return report
    } catch (error) {
      this.#lastRun = { atMs: this.#deps.clock.now(), error: error instanceof Error ? error.message : String(error) }
      this.#deps.logger.error('scheduled purge failed', { error })
      return undefined
    } finally {
      this.#running = undefined
    }
  }

  /** Settles when the scheduled run in flight (if any) has settled; never rejects. */
  settled(): Promise<unknown> {
    return this.#running?.catch(() => undefined) ?? Promise.resolve(undefined)
  }

  /** The last scheduled run; undefined before the first. */
  lastRun(): PurgeLastRun | undefined {
    return this.#lastRun
  }
}
