import assert from 'node:assert/strict'
import type { RootDatabase } from 'lmdb'
import type { ArchiveStore } from '../archive/types.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { AuditLog } from './audit-log.js'
import { PolicyError } from './errors.js'
import { createExclusiveLock } from './exclusive.js'
import { describePolicySettings } from './fingerprint.js'
import { PolicySettings } from './policy-settings.js'
import { findPurgeAuditEntry } from './purge-audit.js'
import { planArchivePurge, previewOf, type PurgePreview } from './purge-planner.js'
import { PurgeSchedule, runPurge, type PurgeDeps, type PurgeRunReport } from './purge-job.js'
import { recordConfigChange, recoverUnauditedPurges } from './startup-audit.js'
import type { AuditEntry, AuditVerifyReport, Policy, Hold, PolicySettingsDescription } from './types.js'

/*
 * The service is a façade over named units, each testable alone:
 * - policy-settings.ts: policies and holds, each change audited in its transaction;
 * - purge-planner.ts: the plan over the archive (rules.ts per message) and its preview;
 * - purge-job.ts: the purge in batches, and its schedule;
 * - startup-audit.ts: unaudited purges and configuration changes, audited at start;
 * - audit-log.ts: the hash-chained audit log the service's changes and purges are written to;
 * - exclusive.ts: the lock that keeps setting changes and purge batches apart.
 */

export interface PolicyServiceOptions {
  /** How often the scheduled purge runs, in ms; 0: never (purge only on request). */
  purgeIntervalMs: number
  /** Most messages one purge batch removes (one audit entry per batch). */
  batchMessagesMax: number
  /** Bound on stop() waiting for a batch in flight, in ms. */
  stopTimeoutMs: number
  /** The effective configuration; a change since the last boot is audited (which paths, not values). */
  config?: unknown
}

export interface PolicyServiceDeps {
  logger: Logger
  clock: Clock
  archive: Pick<ArchiveStore, 'listIds' | 'getMeta' | 'delete' | 'changes' | 'lastSequence'>
  audit: AuditLog
  /** Ids of the archived messages a search query matches (the search index, all pages). */
  matchQuery: (query: string) => Promise<ReadonlySet<string>> | ReadonlySet<string>
  /**
   * Lowest change-log sequence every mirror peer has acknowledged; null when there are no
   * peers. Messages with a change above it are not purged yet, so no peer loses a copy it
   * is still being sent.
   */
  mirrorLowWatermark?: () => number | null
  /** HMAC key for the config digests (the audit key); without it plain SHA-256. */
  digestKey?: Uint8Array | null
}

export type { PurgePreview, PurgeRunReport }

export type PolicyService = ReturnType<typeof createPolicyService>

/** Waits up to `timeoutMs` for `settled`; true when it settled in time. */
async function settlesWithin(settled: Promise<unknown>, timeoutMs: number): Promise<boolean> {
  let bound: NodeJS.Timeout | undefined
  const outcome = await Promise.race([settled.then(() => 'done' as const), new Promise<'timeout'>((resolve) => (bound = setTimeout(() => resolve('timeout'), timeoutMs).unref()))])
  clearTimeout(bound)
  return outcome === 'done'
}

/** The service's members over policies and holds, bound to `settings`. */
function settingsMembers(settings: PolicySettings) {
  return {
    /** Policies by name, the default one included when set. */
    policies: (): Policy[] => settings.policies(),
    /** Holds by name, released ones included (their record stays). */
    holds: (): Hold[] => settings.holds(),
    /** Creates a policy or replaces the one with the same name; audited (`policy.set`, with the previous version). @throws PolicyError INVALID, UNAVAILABLE */
    setPolicy: (input: unknown, actor: string): Promise<Policy> => settings.setPolicy(input, actor),
    /** Removes a policy (the default one: mail no policy selects is then kept forever). @throws PolicyError NOT_FOUND, UNAVAILABLE */
    removePolicy: (name: string, actor: string): Promise<Policy> => settings.removePolicy(name, actor),
    /** Places a hold; it protects matching mail at every later purge, mail that arrives later included. @throws PolicyError INVALID, EXISTS, UNAVAILABLE */
    placeHold: (input: unknown, actor: string): Promise<Hold> => settings.placeHold(input, actor),
    /** Releases an active hold: its mail is subject to retention again at the next purge. @throws PolicyError NOT_FOUND (also when already released), UNAVAILABLE */
    releaseHold: (name: string, actor: string): Promise<Hold> => settings.releaseHold(name, actor),
  }
}

/** The service's members over purge plans that remove nothing: the preview, the settings peers compare, what holds keep. */
function planMembers(settings: PolicySettings, plan: (ids: readonly string[] | null) => ReturnType<typeof planArchivePurge>) {
  return {
    /** The purge plan for now: what a purge would remove and what it keeps, without removing anything. @throws PolicyError UNAVAILABLE */
    async preview(): Promise<PurgePreview> {
      settings.databases()
      return previewOf(await plan(null))
    },
    /** The settings peers compare (describePolicySettings). Empty until the archive is open. */
    describe: (): PolicySettingsDescription => describePolicySettings(settings.policies(), settings.holds()),
    /**
     * The ids among `ids` that are past their retention here and kept only because active
     * holds cover them, with those holds' names (mirror verify's "held" difference).
     * @throws PolicyError UNAVAILABLE
     */
    async holdsKeeping(ids: readonly string[]): Promise<Map<string, string[]>> {
      settings.databases()
      const kept = new Map<string, string[]>()
      for (const item of (await plan(ids)).kept) if (item.reason === 'held') kept.set(item.id, [...(item.holds ?? [])])
      return kept
    },
  }
}

/** The service's members over the audit log. */
function auditMembers(audit: AuditLog) {
  return {
    /** The `purge.batch` / `purge.recovered` audit entry naming the purge of `id` at `atMs`, or null. @throws PolicyError UNAVAILABLE */
    purgeAuditSeq: (id: string, atMs: number): number | null => findPurgeAuditEntry(audit, id, atMs),
    /** The audit log's head: last sequence and hash (an off-box witness when a peer records it). @throws PolicyError UNAVAILABLE */
    auditHead: () => audit.head(),
    /** @throws PolicyError UNAVAILABLE */
    auditVerify: (): AuditVerifyReport => audit.verify(),
    /** The last `limit` entries (or those after `afterSeq`), of one `actor` when given. @throws PolicyError UNAVAILABLE */
    auditEntries(query: { afterSeq?: number; limit: number; actor?: string }): AuditEntry[] {
      if (query.actor !== undefined) return audit.entriesOf(query.actor, query.afterSeq, query.limit)
      const afterSeq = query.afterSeq ?? Math.max(0, audit.lastSeq() - query.limit)
      return audit.entries(afterSeq, query.limit)
    },
  }
}

/**
 * Retention policies, litigation holds and the purge job (firmware/policy).
 *
 * Policies and holds are kept in their own named database of the archive's environment and
 * each change is written in the same transaction as its audit entry. Purging is a pure
 * plan (rules.ts) over the archive's messages, executed in batches of
 * `batchMessagesMax`: each batch is planned again right before it runs (holds placed since,
 * mirror peers' progress) and runs under the same lock as policy and hold changes, so a hold
 * placed while a purge runs protects every message the following batches reach. Each batch
 * gets one audit entry naming every purged message (id = content hash, size, policy, time).
 *
 * Crash between a batch's deletions and its audit entry: the store's change log still has
 * the `purge` entries; start() finds those past the last audited point and audits them as
 * `purge.recovered` (policy unknown).
 */
export function createPolicyService(deps: PolicyServiceDeps, options: PolicyServiceOptions) {
  assert.ok(Number.isSafeInteger(options.batchMessagesMax) && options.batchMessagesMax >= 1, 'batchMessagesMax must be a positive integer')
  assert.ok(Number.isSafeInteger(options.purgeIntervalMs) && options.purgeIntervalMs >= 0, 'purgeIntervalMs must be a non-negative integer')
  const { logger, clock, archive, audit } = deps
  const lock = createExclusiveLock()
  const settings = new PolicySettings({ clock, audit, lock })
  let state: 'created' | 'running' | 'stopping' | 'stopped' = 'created'
  const plan = (ids: readonly string[] | null) => planArchivePurge({ ...deps, policies: () => settings.policies(), holds: () => settings.holds() }, ids)
  const purge: PurgeDeps = { logger, clock, archive, audit, lock, plan, root: () => settings.databases().root, isRunning: () => state === 'running' }
  const schedule = new PurgeSchedule({ ...purge, run: (actor) => runPurge(purge, actor, options.batchMessagesMax) }, options.purgeIntervalMs)

  return {
    /** Named databases this service and its audit log add to the archive's environment. */
    databasesNeeded: 1 + audit.databasesNeeded,
    /** Opens the databases on the archive's root (through the archive's indexer hook, at archive start). */
    open(rootDatabase: RootDatabase): void {
      settings.open(rootDatabase)
      audit.open(rootDatabase)
    },
    /** Loads policies and holds, writes audit events queued during boot, audits config changes and unaudited purges, starts the schedule. Call after the archive started. @throws PolicyError UNAVAILABLE when the archive is not open */
    async start(): Promise<void> {
      if (state === 'running') return
      settings.load()
      await audit.flushPending()
      await recoverUnauditedPurges({ logger, archive, audit, root: settings.databases().root })
      if (options.config !== undefined) await recordConfigChange({ audit, root: settings.databases().root, digestKey: deps.digestKey }, options.config)
      state = 'running'
      schedule.schedule()
      logger.info('retention started', { policies: settings.policyCount, activeHolds: settings.activeHoldCount, purgeIntervalMs: options.purgeIntervalMs })
    },
    /** Stops the schedule and waits (bounded by stopTimeoutMs) for a batch in flight; idempotent. */
    async stop(): Promise<void> {
      if (state !== 'running') return
      state = 'stopping'
      schedule.cancel()
      // A batch in flight (scheduled or requested) finishes, within stopTimeoutMs; runs see
      // `stopping` and start no further batch.
      if (!(await settlesWithin(Promise.all([schedule.settled(), lock.idle()]), options.stopTimeoutMs))) {
        logger.warn('stop timed out waiting for a purge batch', { stopTimeoutMs: options.stopTimeoutMs })
      }
      audit.close()
      state = 'stopped'
    },
    healthcheck() {
      if (state !== 'running') return { ok: false, detail: state }
      const lastRun = schedule.lastRun()
      const failed = lastRun?.error ? `; last purge failed: ${lastRun.error}` : ''
      return { ok: !lastRun?.error, detail: `${settings.policyCount} policies, ${settings.activeHoldCount} active holds${failed}` }
    },
    ...settingsMembers(settings),
    ...planMembers(settings, plan),
    /** Runs a purge now (all due messages, in batches). @throws PolicyError UNAVAILABLE */
    runPurge(actor: string): Promise<PurgeRunReport> {
      if (state !== 'running') return Promise.reject(new PolicyError('UNAVAILABLE', `retention is ${state}`))
      return runPurge(purge, actor, options.batchMessagesMax)
    },
    /** One run of the scheduled job (tests call it directly). Never throws: failures are logged and kept in status. */
    tick: () => schedule.tick(),
    /** Last scheduled run, for status. */
    lastRun: () => schedule.lastRun(),
    ...auditMembers(audit),
  }
}
