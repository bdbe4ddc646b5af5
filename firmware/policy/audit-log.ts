import assert from 'node:assert/strict'
import { timingSafeEqual } from 'node:crypto'
import type { Database, RootDatabase } from 'lmdb'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { canonicalJson, hmacHex, sha256Hex } from './canonical.js'
import { PolicyError } from './errors.js'
import type { AuditEntry, AuditEvent, AuditVerifyReport } from './types.js'

/** Named databases of the audit log in the archive's environment. */
export const auditDatabaseNames = { entries: 'audit/entries', state: 'audit/state' } as const
/** prevHash of the first entry. */
export const genesisHash = '0'.repeat(64)
/** Events kept in memory while the archive is not open yet (boot) before they are dropped (and the drop audited). */
export const pendingEventsMaxDefault = 1_000
/** Most problems one verify() lists. */
export const auditProblemsMax = 100
/** Most entries one entries() call returns. */
export const auditPageEntriesMax = 1_000
/** Longest text of one entry's details, in characters; longer details are refused (programmer error). */
export const detailsCharsMax = 4 * 1024 * 1024

interface HeadRecord {
  seq: number
  hash: string
  mac?: string
}

/** The chained fields; the hash covers exactly these. */
function hashOf(entry: Omit<AuditEntry, 'hash' | 'mac'>): string {
  const { seq, atMs, actor, action, details, prevHash } = entry
  return sha256Hex(canonicalJson({ seq, atMs, actor, action, details, prevHash }))
}

function sameHex(a: string | undefined, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false
  return timingSafeEqual(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1'))
}

export type AuditLog = ReturnType<typeof createAuditLog>

/**
 * The append-only, hash-chained audit log, kept in the archive's LMDB environment (its own
 * named databases, opened through the archive's indexer hook so they live and die with the
 * archive's transactions).
 *
 * Each entry carries `prevHash` (the hash of the entry before) and `hash`, the SHA-256 of
 * its canonical JSON; with an audit key (a random secret in the data dir) each entry also
 * carries an HMAC of its hash, and a head record (last seq, hash, HMAC) is written in the
 * same transaction as every entry. verify() walks the chain and detects an altered entry
 * (hash), a removed or reordered one (sequence and prevHash), a truncated tail (head) and,
 * with the key, an entry or head rewritten by someone without the key (HMAC).
 *
 * What it cannot detect (README says so too): someone who holds the key (root on the box)
 * can rewrite the whole log consistently; and rolling the whole environment back to an
 * older copy (log and head together) is consistent in itself. Only a copy of the head kept
 * elsewhere (a peer, a syslog server) would show those.
 *
 * Events given before the archive is open (a login failure during boot) wait in memory
 * (at most `pendingEventsMax`) and are written when it opens.
 */
export function createAuditLog(deps: { logger: Logger; clock: Clock; key?: Uint8Array | null }, options: { pendingEventsMax?: number } = {}) {
  const logger = deps.logger
  const key = deps.key ?? null
  const pendingEventsMax = options.pendingEventsMax ?? pendingEventsMaxDefault
  let root: RootDatabase | undefined
  let entriesDb: Database<string, number> | undefined
  let stateDb: Database<unknown, string> | undefined
  let open = false
  const pending: { event: AuditEvent; atMs: number }[] = []
  let droppedEvents = 0

  const macOf = (hash: string) => (key ? hmacHex(key, `entry:${hash}`) : undefined)
  const headMacOf = (seq: number, hash: string) => (key ? hmacHex(key, `head:${seq}:${hash}`) : undefined)

  function databases() {
    if (!open || !root || !entriesDb || !stateDb) throw new PolicyError('UNAVAILABLE', 'the audit log is not open (the archive is not open)')
    return { root, entries: entriesDb, state: stateDb }
  }

  /** Appends inside the caller's write transaction (synchronous; lmdb-js transaction callback). */
  function appendInTransaction(event: AuditEvent, atMs = deps.clock.now()): AuditEntry {
    assert.ok(typeof event.actor === 'string' && event.actor.length > 0, 'an audit event needs an actor')
    assert.ok(typeof event.action === 'string' && event.action.length > 0, 'an audit event needs an action')
    const { entries, state } = databases()
    const head = (state.get('head') as HeadRecord | undefined) ?? { seq: 0, hash: genesisHash }
    const base = { seq: head.seq + 1, atMs, actor: event.actor, action: event.action, details: JSON.parse(JSON.stringify(event.details ?? {})) as Record<string, unknown>, prevHash: head.hash }
    const hash = hashOf(base)
    const entry: AuditEntry = { ...base, hash }
    const mac = macOf(hash)
    if (mac) entry.mac = mac
    const text = canonicalJson(entry)
    assert.ok(text.length <= detailsCharsMax, `audit entry of ${text.length} characters is over ${detailsCharsMax}`)
    entries.putSync(entry.seq, text)
    const newHead: HeadRecord = { seq: entry.seq, hash }
    const headMac = headMacOf(entry.seq, hash)
    if (headMac) newHead.mac = headMac
    state.putSync('head', newHead)
    return entry
  }

  function flushPendingInTransaction(): void {
    for (const { event, atMs } of pending.splice(0)) appendInTransaction(event, atMs)
    if (droppedEvents > 0) {
      appendInTransaction({ actor: 'system', action: 'audit.dropped', details: { events: droppedEvents, reason: `more than ${pendingEventsMax} events before the archive opened` } })
      droppedEvents = 0
    }
  }

  return {
    /** Named databases this log adds to the archive's environment. */
    databasesNeeded: Object.keys(auditDatabaseNames).length,

    /** Opens the log's databases on the archive's root (the archive's indexer hook calls it at start). */
    open(rootDatabase: RootDatabase): void {
      root = rootDatabase
      entriesDb = root.openDB<string, number>(auditDatabaseNames.entries, { keyEncoding: 'uint32', encoding: 'string' })
      stateDb = root.openDB<unknown, string>(auditDatabaseNames.state, {})
      open = true
    },

    /** Writes the events queued before the archive opened. @throws PolicyError UNAVAILABLE when not open */
    async flushPending(): Promise<void> {
      const { root: database } = databases()
      if (pending.length === 0 && droppedEvents === 0) return
      await database.childTransaction(() => flushPendingInTransaction())
    },

    /** The archive is closing: later events are queued in memory (and lost if it never reopens). */
    close(): void {
      open = false
    },

    /**
     * Appends one event durably (the archive's transactions are synced before they resolve).
     * Before the archive is open the event is queued and null returned.
     * @throws archive write errors (disk full, disk failure)
     */
    async append(event: AuditEvent): Promise<AuditEntry | null> {
      if (!open) {
        if (pending.length < pendingEventsMax) pending.push({ event, atMs: deps.clock.now() })
        else droppedEvents++
        return null
      }
      const { root: database } = databases()
      return database.childTransaction(() => {
        flushPendingInTransaction()
        return appendInTransaction(event)
      }) as Promise<AuditEntry>
    },

    appendInTransaction,

    /** Entries with seq above `afterSeq`, oldest first, at most `limit` (≤ auditPageEntriesMax). @throws PolicyError UNAVAILABLE, CORRUPT */
    entries(afterSeq: number, limit: number): AuditEntry[] {
      assert.ok(Number.isSafeInteger(afterSeq) && afterSeq >= 0 && Number.isSafeInteger(limit) && limit > 0 && limit <= auditPageEntriesMax, 'entries(afterSeq ≥ 0, 1 ≤ limit ≤ auditPageEntriesMax)')
      const { entries } = databases()
      const list: AuditEntry[] = []
      for (const { key: seq, value } of entries.getRange({ start: afterSeq + 1, limit })) {
        try {
          list.push(JSON.parse(value) as AuditEntry)
        } catch (error) {
          throw new PolicyError('CORRUPT', `audit entry ${seq} is undecodable`, { fields: { seq }, cause: error })
        }
      }
      return list
    },

    /** Sequence of the last entry per the head record (0 when empty). */
    lastSeq(): number {
      const head = databases().state.get('head') as HeadRecord | undefined
      return head?.seq ?? 0
    },

    /** The state database, for small records that belong with the log (the config digest). */
    state(): Database<unknown, string> {
      return databases().state
    },

    /**
     * Walks the whole chain. Reports (does not throw) every kind of damage it finds.
     * @throws PolicyError UNAVAILABLE when not open
     */
    verify(): AuditVerifyReport {
      const { entries, state } = databases()
      const report: AuditVerifyReport = { ok: true, entries: 0, lastSeq: 0, headSeq: null, macChecked: key !== null, problems: [] }
      const problem = (seq: number | null, code: string, message: string) => {
        report.ok = false
        if (report.problems.length < auditProblemsMax) report.problems.push({ seq, code, message })
      }
      let expectedSeq = 1
      let prevHash = genesisHash
      for (const { key: storedSeq, value } of entries.getRange({})) {
        report.entries++
        let entry: AuditEntry
        try {
          entry = JSON.parse(value) as AuditEntry
        } catch {
          problem(storedSeq, 'UNDECODABLE', `entry at key ${storedSeq} is not JSON`)
          expectedSeq = storedSeq + 1
          prevHash = ''
          continue
        }
        if (storedSeq !== expectedSeq) problem(storedSeq, 'SEQUENCE_GAP', `expected entry ${expectedSeq}, found key ${storedSeq} (entries removed)`)
        if (entry.seq !== storedSeq) problem(storedSeq, 'OUT_OF_ORDER', `entry stored at key ${storedSeq} says seq ${entry.seq} (moved or reordered)`)
        const hash = hashOf(entry)
        if (hash !== entry.hash) problem(storedSeq, 'HASH_MISMATCH', `entry ${storedSeq} does not hash to its recorded hash (altered)`)
        if (entry.prevHash !== prevHash) problem(storedSeq, 'CHAIN_BROKEN', `entry ${storedSeq} does not follow the entry before it (prevHash differs: removed, inserted or reordered)`)
        if (key && !sameHex(entry.mac, hmacHex(key, `entry:${entry.hash}`))) problem(storedSeq, 'MAC_MISMATCH', `entry ${storedSeq} has no valid HMAC under this appliance's audit key (rewritten)`)
        prevHash = entry.hash
        expectedSeq = storedSeq + 1
        report.lastSeq = storedSeq
      }
      const head = state.get('head') as HeadRecord | undefined
      report.headSeq = head?.seq ?? null
      if (!head) {
        if (report.entries > 0) problem(null, 'HEAD_MISSING', `the log has ${report.entries} entries but no head record`)
      } else {
        if (head.seq !== report.lastSeq || head.hash !== prevHash) problem(head.seq, 'TRUNCATED', `the head record names entry ${head.seq}, the log ends at ${report.lastSeq} (entries removed from the end, or the head altered)`)
        if (key && !sameHex(head.mac, hmacHex(key, `head:${head.seq}:${head.hash}`))) problem(head.seq, 'HEAD_MAC_MISMATCH', 'the head record has no valid HMAC under this appliance\'s audit key')
      }
      if (!report.ok) logger.error('audit log verification failed', { problems: report.problems.slice(0, 5), entries: report.entries })
      return report
    },
  }
}
