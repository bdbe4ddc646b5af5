import assert from 'node:assert/strict'
import type { Database, RootDatabase } from 'lmdb'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { ArchiveStore } from '../archive/types.js'
import { canonicalJson, hmacHex, sha256Hex } from './canonical.js'
import { PolicyError } from './errors.js'
import type { AuditLog } from './audit-log.js'
import { describePolicySettings } from './fingerprint.js'
import { factsOf, planPurge, queriesOf, validateHold, validatePolicy, type QueryMatches } from './rules.js'
import type { AuditEntry, AuditVerifyReport, DueItem, Hold, KeptItem, MessageFacts, Policy, PolicySettingsDescription, PurgePlan } from './types.js'

/** Named database of policies and holds in the archive's environment. */
export const policyDatabaseName = 'policy/settings'
/** Items of each list a preview shows (the counts cover all). */
export const previewItemsMax = 1_000
/** Ids read per page while scanning the archive. */
const scanPageIds = 1_000
/** Change-log entries read per page. */
const changesPageEntries = 10_000

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

/** A preview: the plan's figures with the first `previewItemsMax` items of each list. */
export interface PurgePreview {
  nowMs: number
  scanned: number
  retained: number
  dueMessages: number
  dueBytes: number
  duePerPolicy: Record<string, number>
  heldMessages: number
  mirrorPendingMessages: number
  /** Past retention but not in the search index while queries are in use: kept until `index rebuild`. */
  unindexedMessages: number
  due: DueItem[]
  kept: KeptItem[]
  truncated: boolean
}

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

export type PolicyService = ReturnType<typeof createPolicyService>

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
  let root: RootDatabase | undefined
  let settings: Database<unknown, string> | undefined
  const policies = new Map<string, Policy>()
  const holds = new Map<string, Hold>()
  let state: 'created' | 'running' | 'stopping' | 'stopped' = 'created'
  let timer: NodeJS.Timeout | undefined
  let running: Promise<PurgeRunReport> | undefined
  let lastRun: { atMs: number; report?: PurgeRunReport; error?: string } | undefined
  let lock: Promise<unknown> = Promise.resolve()

  /** Runs `work` after every earlier exclusive work: policy and hold changes and purge batches never interleave. */
  function exclusive<T>(work: () => Promise<T>): Promise<T> {
    const result = lock.then(work, work)
    lock = result.catch(() => undefined)
    return result
  }

  function databases() {
    if (!root || !settings) throw new PolicyError('UNAVAILABLE', 'policies are not available until the archive is open')
    return { root, settings }
  }

  function sortedPolicies(): Policy[] {
    return [...policies.values()].sort((a, b) => (a.name < b.name ? -1 : 1))
  }
  function sortedHolds(): Hold[] {
    return [...holds.values()].sort((a, b) => (a.name < b.name ? -1 : 1))
  }

  function load(database: Database<unknown, string>): void {
    policies.clear()
    holds.clear()
    for (const { key, value } of database.getRange({})) {
      if (key.startsWith('policy:')) policies.set(key.slice(7), value as Policy)
      else if (key.startsWith('hold:')) holds.set(key.slice(5), value as Hold)
    }
  }

  // ---- planning -------------------------------------------------------------------------

  async function matchesFor(queries: string[]): Promise<QueryMatches> {
    const matches = new Map<string, ReadonlySet<string>>()
    for (const query of queries) matches.set(query, await deps.matchQuery(query))
    return matches
  }

  function mirrorPending(): Set<string> | null {
    const watermark = deps.mirrorLowWatermark?.() ?? null
    if (watermark === null) return null
    const ids = new Set<string>()
    let after = Math.max(0, Math.floor(watermark))
    for (;;) {
      const page = archive.changes(after, changesPageEntries)
      for (const change of page) if (change.kind !== 'purge') ids.add(change.id)
      if (page.length < changesPageEntries) break
      after = page[page.length - 1]!.sequence
    }
    return ids
  }

  function factsFor(ids: readonly string[]): MessageFacts[] {
    const list: MessageFacts[] = []
    for (const id of ids) {
      let meta
      try {
        meta = archive.getMeta(id)
      } catch (error) {
        // A corrupt record is reported by archive verify and kept: never purged blindly.
        logger.warn('a message record is unreadable; it is kept and not planned', { id, error })
        continue
      }
      if (meta) list.push(factsOf(meta))
    }
    return list
  }

  /**
   * Plans over the given ids, or the whole archive page by page (yielding to the event loop
   * between pages, so SMTP and the API keep running during a long scan). Messages are
   * planned independently, so the pages' plans add up to the plan of the whole.
   */
  async function plan(ids: readonly string[] | null): Promise<PurgePlan> {
    const policyList = sortedPolicies()
    const holdList = sortedHolds()
    const matches = await matchesFor(queriesOf(policyList, holdList))
    const pending = mirrorPending()
    const nowMs = clock.now()
    const total: PurgePlan = { nowMs, scanned: 0, retained: 0, due: [], kept: [], dueBytes: 0 }
    const add = (page: readonly string[]) => {
      const part = planPurge({ messages: factsFor(page), policies: policyList, holds: holdList, nowMs, matches, mirrorPending: pending })
      total.scanned += part.scanned
      total.retained += part.retained
      total.dueBytes += part.dueBytes
      for (const item of part.due) total.due.push(item)
      for (const item of part.kept) total.kept.push(item)
    }
    if (ids) {
      add(ids)
      return total
    }
    let after: string | null = null
    for (;;) {
      const page = archive.listIds(after, scanPageIds)
      add(page)
      if (page.length < scanPageIds) return total
      after = page[page.length - 1]!
      await new Promise((resolve) => setImmediate(resolve))
    }
  }

  // ---- execution ------------------------------------------------------------------------

  async function runBatch(ids: string[], actor: string, batchNumber: number, report: PurgeRunReport): Promise<void> {
    const fresh = await plan(ids)
    report.keptAtExecution += ids.length - fresh.due.length
    const results = await Promise.allSettled(fresh.due.map((item) => archive.delete(item.id)))
    const purgedAtMs = clock.now()
    const messages: Record<string, unknown>[] = []
    const failed: { id: string; code: string }[] = []
    results.forEach((result, index) => {
      const item = fresh.due[index]!
      if (result.status === 'fulfilled') {
        messages.push({ id: item.id, sha256: item.sha256, sizeBytes: item.sizeBytes, policy: item.policy, archivedAtMs: item.archivedAtMs, purgedAtMs, sequence: result.value.sequence })
        report.purged++
        report.purgedBytes += item.sizeBytes
      } else {
        const code = (result.reason as { code?: string } | null)?.code ?? 'ERROR'
        // NOT_FOUND: gone already (purged by an earlier batch after a crash); not a failure of the archive.
        failed.push({ id: item.id, code })
        report.failed.push({ id: item.id, code })
        logger.error('purging a message failed', { id: item.id, error: result.reason })
      }
    })
    if (fresh.due.length === 0) return
    const entry = (await databases().root.childTransaction(() => {
      const written = audit.appendInTransaction({
        actor,
        action: 'purge.batch',
        details: { batch: batchNumber, purged: messages.length, kept: fresh.kept.length, failed, messages },
      })
      audit.state().putSync('purge-cursor', archive.lastSequence())
      return written
    })) as AuditEntry
    report.auditSeqs.push(entry.seq)
    report.batches++
    logger.info('purge batch done', { batch: batchNumber, purged: messages.length, auditSeq: entry.seq })
  }

  async function runPurge(actor: string): Promise<PurgeRunReport> {
    databases()
    const report: PurgeRunReport = { batches: 0, purged: 0, purgedBytes: 0, keptAtExecution: 0, failed: [], auditSeqs: [] }
    const full = await plan(null)
    const ids = full.due.map((item) => item.id)
    for (let start = 0, batch = 1; start < ids.length && state === 'running'; start += options.batchMessagesMax, batch++) {
      await exclusive(() => runBatch(ids.slice(start, start + options.batchMessagesMax), actor, batch, report))
      // Let ingest and the API run between batches.
      await new Promise((resolve) => setImmediate(resolve))
    }
    return report
  }

  /** Audits purges the change log shows past the last audited point (a crash between deletion and audit). */
  async function recoverUnaudited(): Promise<void> {
    const { root: database } = databases()
    const stateDb = audit.state()
    const cursor = stateDb.get('purge-cursor') as number | undefined
    const last = archive.lastSequence()
    if (cursor === undefined) {
      // First start with retention: no purge ever ran (delete is this module's alone).
      await database.childTransaction(() => stateDb.putSync('purge-cursor', last))
      return
    }
    const orphans: { id: string; sequence: number; atMs: number }[] = []
    let after = cursor
    for (;;) {
      const page = archive.changes(after, changesPageEntries)
      for (const change of page) if (change.kind === 'purge') orphans.push({ id: change.id, sequence: change.sequence, atMs: change.atMs })
      if (page.length < changesPageEntries) break
      after = page[page.length - 1]!.sequence
    }
    await database.childTransaction(() => {
      if (orphans.length > 0) {
        audit.appendInTransaction({ actor: 'system', action: 'purge.recovered', details: { reason: 'purged before an interruption, before the batch was audited; policy not recorded', messages: orphans } })
      }
      stateDb.putSync('purge-cursor', last)
    })
    if (orphans.length > 0) logger.warn('audited purges that an interruption left unaudited', { messages: orphans.length })
  }

  /** Audits a change of the effective configuration since the last boot (paths only, never values). */
  async function recordConfig(config: unknown): Promise<void> {
    const digests: Record<string, string> = {}
    const digest = (text: string) => (deps.digestKey ? hmacHex(deps.digestKey, text) : sha256Hex(text))
    const walk = (value: unknown, path: string): void => {
      if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
        for (const [key, inner] of Object.entries(value)) walk(inner, path ? `${path}.${key}` : key)
      } else digests[path] = digest(canonicalJson(value ?? null))
    }
    walk(config, '')
    const hash = digest(canonicalJson(digests))
    const stateDb = audit.state()
    const previous = stateDb.get('config') as { hash: string; digests: Record<string, string> } | undefined
    if (previous?.hash === hash) return
    const changed = previous ? [...new Set([...Object.keys(digests), ...Object.keys(previous.digests)])].filter((path) => digests[path] !== previous.digests[path]).sort() : []
    await databases().root.childTransaction(() => {
      audit.appendInTransaction({ actor: 'system', action: previous ? 'config.changed' : 'config.initial', details: previous ? { previousHash: previous.hash, hash, changedPaths: changed } : { hash } })
      stateDb.putSync('config', { hash, digests })
    })
  }

  function schedule(): void {
    if (options.purgeIntervalMs === 0 || state !== 'running') return
    timer = setTimeout(() => {
      void tick().finally(schedule)
    }, options.purgeIntervalMs)
    timer.unref()
  }

  /** One run of the scheduled job (tests call it directly). Never throws: failures are logged and kept in status. */
  async function tick(): Promise<PurgeRunReport | undefined> {
    if (state !== 'running') return undefined
    if (running) return running
    running = runPurge('system')
    try {
      const report = await running
      lastRun = { atMs: clock.now(), report }
      return report
    } catch (error) {
      lastRun = { atMs: clock.now(), error: error instanceof Error ? error.message : String(error) }
      logger.error('scheduled purge failed', { error })
      return undefined
    } finally {
      running = undefined
    }
  }

  async function changeSettings<T>(work: (database: Database<unknown, string>) => T): Promise<T> {
    return exclusive(async () => {
      const { root: database, settings: settingsDb } = databases()
      return (await database.childTransaction(() => work(settingsDb))) as T
    })
  }

  return {
    /** Named databases this service and its audit log add to the archive's environment. */
    databasesNeeded: 1 + audit.databasesNeeded,

    /** Opens the databases on the archive's root (through the archive's indexer hook, at archive start). */
    open(rootDatabase: RootDatabase): void {
      root = rootDatabase
      settings = root.openDB<unknown, string>(policyDatabaseName, {})
      audit.open(rootDatabase)
    },

    /** Loads policies and holds, writes audit events queued during boot, audits config changes and unaudited purges, starts the schedule. Call after the archive started. @throws PolicyError UNAVAILABLE when the archive is not open */
    async start(): Promise<void> {
      if (state === 'running') return
      const { settings: settingsDb } = databases()
      load(settingsDb)
      await audit.flushPending()
      await recoverUnaudited()
      if (options.config !== undefined) await recordConfig(options.config)
      state = 'running'
      schedule()
      logger.info('retention started', { policies: policies.size, activeHolds: [...holds.values()].filter((hold) => hold.active).length, purgeIntervalMs: options.purgeIntervalMs })
    },

    /** Stops the schedule and waits (bounded by stopTimeoutMs) for a batch in flight; idempotent. */
    async stop(): Promise<void> {
      if (state !== 'running') return
      state = 'stopping'
      clearTimeout(timer)
      // A batch in flight (scheduled or requested) finishes, within stopTimeoutMs; runs see
      // `stopping` and start no further batch.
      let bound: NodeJS.Timeout | undefined
      const settled = Promise.all([running?.catch(() => undefined), lock])
      const outcome = await Promise.race([settled.then(() => 'done' as const), new Promise<'timeout'>((resolve) => (bound = setTimeout(() => resolve('timeout'), options.stopTimeoutMs).unref()))])
      clearTimeout(bound)
      if (outcome === 'timeout') logger.warn('stop timed out waiting for a purge batch', { stopTimeoutMs: options.stopTimeoutMs })
      audit.close()
      state = 'stopped'
    },

    healthcheck() {
      if (state !== 'running') return { ok: false, detail: state }
      const failed = lastRun?.error ? `; last purge failed: ${lastRun.error}` : ''
      return { ok: !lastRun?.error, detail: `${policies.size} policies, ${[...holds.values()].filter((hold) => hold.active).length} active holds${failed}` }
    },

    /** Policies by name, the default one included when set. */
    policies: sortedPolicies,
    /** Holds by name, released ones included (their record stays). */
    holds: sortedHolds,

    /**
     * Creates a policy or replaces the one with the same name; audited (`policy.set`, with the previous version).
     * @throws PolicyError INVALID, UNAVAILABLE
     */
    setPolicy(input: unknown, actor: string): Promise<Policy> {
      const policy = validatePolicy(input, { nowMs: clock.now(), actor })
      return changeSettings((database) => {
        const previous = policies.get(policy.name) ?? null
        database.putSync(`policy:${policy.name}`, policy)
        audit.appendInTransaction({ actor, action: 'policy.set', details: { policy, previous } })
        return policy
      }).then((stored) => (policies.set(stored.name, stored), stored))
    },

    /** Removes a policy (the default one: mail no policy selects is then kept forever). @throws PolicyError NOT_FOUND, UNAVAILABLE */
    removePolicy(name: string, actor: string): Promise<Policy> {
      return changeSettings((database) => {
        const previous = policies.get(name)
        if (!previous) throw new PolicyError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`, { fields: { name } })
        database.removeSync(`policy:${name}`)
        audit.appendInTransaction({ actor, action: 'policy.remove', details: { policy: previous } })
        return previous
      }).then((removed) => (policies.delete(name), removed))
    },

    /** Places a hold; it protects matching mail at every later purge, mail that arrives later included. @throws PolicyError INVALID, EXISTS, UNAVAILABLE */
    placeHold(input: unknown, actor: string): Promise<Hold> {
      const hold = validateHold(input, { nowMs: clock.now(), actor })
      return changeSettings((database) => {
        const existing = holds.get(hold.name)
        if (existing) throw new PolicyError('EXISTS', `a hold named ${hold.name} exists${existing.active ? '' : ' (released; hold names are not reused)'}`, { fields: { name: hold.name } })
        database.putSync(`hold:${hold.name}`, hold)
        audit.appendInTransaction({ actor, action: 'hold.place', details: { hold } })
        return hold
      }).then((stored) => (holds.set(stored.name, stored), stored))
    },

    /** Releases an active hold: its mail is subject to retention again at the next purge. @throws PolicyError NOT_FOUND (also when already released), UNAVAILABLE */
    releaseHold(name: string, actor: string): Promise<Hold> {
      return changeSettings((database) => {
        const existing = holds.get(name)
        if (!existing?.active) throw new PolicyError('NOT_FOUND', `no active hold named ${JSON.stringify(name)}`, { fields: { name } })
        const released: Hold = { ...existing, active: false, releasedAtMs: clock.now(), releasedBy: actor }
        database.putSync(`hold:${name}`, released)
        audit.appendInTransaction({ actor, action: 'hold.release', details: { name, reason: existing.reason, placedBy: existing.placedBy } })
        return released
      }).then((stored) => (holds.set(stored.name, stored), stored))
    },

    /** The purge plan for now: what a purge would remove and what it keeps, without removing anything. @throws PolicyError UNAVAILABLE */
    async preview(): Promise<PurgePreview> {
      databases()
      const full = await plan(null)
      const duePerPolicy: Record<string, number> = {}
      for (const item of full.due) duePerPolicy[item.policy] = (duePerPolicy[item.policy] ?? 0) + 1
      return {
        nowMs: full.nowMs,
        scanned: full.scanned,
        retained: full.retained,
        dueMessages: full.due.length,
        dueBytes: full.dueBytes,
        duePerPolicy,
        heldMessages: full.kept.filter((item) => item.reason === 'held').length,
        mirrorPendingMessages: full.kept.filter((item) => item.reason === 'mirror-pending').length,
        unindexedMessages: full.kept.filter((item) => item.reason === 'unindexed').length,
        due: full.due.slice(0, previewItemsMax),
        kept: full.kept.slice(0, previewItemsMax),
        truncated: full.due.length > previewItemsMax || full.kept.length > previewItemsMax,
      }
    },

    /** Runs a purge now (all due messages, in batches). @throws PolicyError UNAVAILABLE */
    runPurge(actor: string): Promise<PurgeRunReport> {
      if (state !== 'running') return Promise.reject(new PolicyError('UNAVAILABLE', `retention is ${state}`))
      return runPurge(actor)
    },

    tick,

    /** Last scheduled run, for status. */
    lastRun: () => lastRun,

    /** The settings peers compare (describePolicySettings). Empty until the archive is open. */
    describe(): PolicySettingsDescription {
      return describePolicySettings(sortedPolicies(), sortedHolds())
    },

    /** @throws PolicyError UNAVAILABLE */
    auditVerify(): AuditVerifyReport {
      return audit.verify()
    },

    /** The last `limit` entries (or those after `afterSeq`). @throws PolicyError UNAVAILABLE */
    auditEntries(query: { afterSeq?: number; limit: number }): AuditEntry[] {
      const afterSeq = query.afterSeq ?? Math.max(0, audit.lastSeq() - query.limit)
      return audit.entries(afterSeq, query.limit)
    },
  }
}
