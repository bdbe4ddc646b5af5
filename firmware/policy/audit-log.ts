import assert from 'node:assert/strict'
import type { Database, RootDatabase } from 'lmdb'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { chainEntry, genesisHash, verifyAuditChain, type HeadRecord } from './audit-chain.js'
import { PolicyError } from './errors.js'
import type { AuditEntry, AuditEvent, AuditVerifyReport } from './types.js'

export { auditProblemsMax, detailsCharsMax, genesisHash } from './audit-chain.js'

/** Named databases of the audit log in the archive's environment. */
export const auditDatabaseNames = { entries: 'audit/entries', state: 'audit/state' } as const
/** Events kept in memory while the archive is not open yet (boot) before they are dropped (and the drop audited). */
export const pendingEventsMaxDefault = 1_000
/** Most entries one entries() call returns. */
export const auditPageEntriesMax = 1_000
/** Most entries one search by actor reads before it answers with what it found. */
export const auditActorScanEntriesMax = 1_000_000

/** Whether an entry's actor is `name`: `name` itself, or `name@ADDRESS` (HTTP actors). */
export function actorIs(actor: string, name: string): boolean {
  return actor === name || actor.startsWith(`${name}@`)
}

export type AuditLog = ReturnType<typeof createAuditLog>

/** The log's open databases. */
interface AuditDatabases {
  root: RootDatabase
  entries: Database<string, number>
  state: Database<unknown, string>
}

/** The log's databases on the archive's root, usable between open() and close(). */
function createAuditDatabases() {
  let current: AuditDatabases | undefined
  let open = false
  return {
    isOpen: (): boolean => open,
    open(root: RootDatabase): void {
      current = {
        root,
        entries: root.openDB<string, number>(auditDatabaseNames.entries, { keyEncoding: 'uint32', encoding: 'string' }),
        state: root.openDB<unknown, string>(auditDatabaseNames.state, {}),
      }
      open = true
    },
    close(): void {
      open = false
    },
    /** @throws PolicyError UNAVAILABLE when not open */
    get(): AuditDatabases {
      if (!open || !current) throw new PolicyError('UNAVAILABLE', 'the audit log is not open (the archive is not open)')
      return current
    },
  }
}

/** Events given before the archive opened: at most `eventsMax` kept (stamped with `clock`), the rest counted. */
function createPendingEvents(clock: Clock, eventsMax: number) {
  const pending: { event: AuditEvent; atMs: number }[] = []
  let droppedEvents = 0
  return {
    isEmpty: (): boolean => pending.length === 0 && droppedEvents === 0,
    hold(event: AuditEvent): void {
      if (pending.length < eventsMax) pending.push({ event, atMs: clock.now() })
      else droppedEvents++
    },
    /** Hands every held event to `append` in order, then one `audit.dropped` event if any were dropped. */
    drainInto(append: (event: AuditEvent, atMs?: number) => unknown): void {
      for (const { event, atMs } of pending.splice(0)) append(event, atMs)
      if (droppedEvents > 0) {
        append({ actor: 'system', action: 'audit.dropped', details: { events: droppedEvents, reason: `more than ${eventsMax} events before the archive opened` } })
        droppedEvents = 0
      }
    },
  }
}

/** The log's read members over its open databases (`databases` throws PolicyError UNAVAILABLE when not open). */
function auditReadMembers(deps: { logger: Logger; key: Uint8Array | null }, databases: () => AuditDatabases) {
  const readHead = (): HeadRecord | undefined => databases().state.get('head') as HeadRecord | undefined
  return {
    /** Entries with seq above `afterSeq`, oldest first, at most `limit` (≤ auditPageEntriesMax). @throws PolicyError UNAVAILABLE, CORRUPT */
    entries(afterSeq: number, limit: number): AuditEntry[] {
      assert.ok(
        Number.isSafeInteger(afterSeq) && afterSeq >= 0 && Number.isSafeInteger(limit) && limit > 0 && limit <= auditPageEntriesMax,
        'entries(afterSeq ≥ 0, 1 ≤ limit ≤ auditPageEntriesMax)',
      )
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

    /**
     * The entries of one actor (actorIs): after `afterSeq` oldest first, else the last ones;
     * at most `limit`, reading at most auditActorScanEntriesMax entries.
     * @throws PolicyError UNAVAILABLE, CORRUPT
     */
    entriesOf(actor: string, afterSeq: number | undefined, limit: number): AuditEntry[] {
      assert.ok(Number.isSafeInteger(limit) && limit > 0 && limit <= auditPageEntriesMax, '1 ≤ limit ≤ auditPageEntriesMax')
      const { entries } = databases()
      const range = afterSeq === undefined ? entries.getRange({ reverse: true, limit: auditActorScanEntriesMax }) : entries.getRange({ start: afterSeq + 1, limit: auditActorScanEntriesMax })
      const list: AuditEntry[] = []
      for (const { key: seq, value } of range) {
        let entry: AuditEntry
        try {
          entry = JSON.parse(value) as AuditEntry
        } catch (error) {
          throw new PolicyError('CORRUPT', `audit entry ${seq} is undecodable`, { fields: { seq }, cause: error })
        }
        if (!actorIs(entry.actor, actor)) continue
        list.push(entry)
        if (list.length === limit) break
      }
      return afterSeq === undefined ? list.reverse() : list
    },

    /** Sequence of the last entry per the head record (0 when empty). */
    lastSeq(): number {
      return readHead()?.seq ?? 0
    },

    /** The head: sequence and hash of the last entry (0 and the genesis hash when empty). */
    head(): { seq: number; hash: string } {
      const head = readHead()
      return { seq: head?.seq ?? 0, hash: head?.hash ?? genesisHash }
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
      const report = verifyAuditChain(entries.getRange({}), state.get('head') as HeadRecord | undefined, deps.key)
      if (!report.ok) deps.logger.error('audit log verification failed', { problems: report.problems.slice(0, 5), entries: report.entries })
      return report
    },
  }
}

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
  const key = deps.key ?? null
  const handles = createAuditDatabases()
  const pending = createPendingEvents(deps.clock, options.pendingEventsMax ?? pendingEventsMaxDefault)

  /** Appends inside the caller's write transaction (synchronous; lmdb-js transaction callback). */
  function appendInTransaction(event: AuditEvent, atMs = deps.clock.now()): AuditEntry {
    assert.ok(typeof event.actor === 'string' && event.actor.length > 0, 'an audit event needs an actor')
    assert.ok(typeof event.action === 'string' && event.action.length > 0, 'an audit event needs an action')
    const { entries, state } = handles.get()
    const head = (state.get('head') as HeadRecord | undefined) ?? { seq: 0, hash: genesisHash }
    const chained = chainEntry(head, event, atMs, key)
    entries.putSync(chained.entry.seq, chained.text)
    state.putSync('head', chained.head)
    return chained.entry
  }

  return {
    /** Named databases this log adds to the archive's environment. */
    databasesNeeded: Object.keys(auditDatabaseNames).length,

    /** Opens the log's databases on the archive's root (the archive's indexer hook calls it at start). */
    open: (rootDatabase: RootDatabase): void => handles.open(rootDatabase),

    /** Writes the events queued before the archive opened. @throws PolicyError UNAVAILABLE when not open */
    async flushPending(): Promise<void> {
      const { root } = handles.get()
      if (pending.isEmpty()) return
      await root.childTransaction(() => pending.drainInto(appendInTransaction))
    },

    /** The archive is closing: later events are queued in memory (and lost if it never reopens). */
    close: (): void => handles.close(),

    /**
     * Appends one event durably (the archive's transactions are synced before they resolve).
     * Before the archive is open the event is queued and null returned.
     * @throws archive write errors (disk full, disk failure)
     */
    async append(event: AuditEvent): Promise<AuditEntry | null> {
      if (!handles.isOpen()) {
        pending.hold(event)
        return null
      }
      const { root } = handles.get()
      return root.childTransaction(() => {
        pending.drainInto(appendInTransaction)
        return appendInTransaction(event)
      }) as Promise<AuditEntry>
    },

    appendInTransaction,

    ...auditReadMembers({ logger: deps.logger, key }, handles.get),
  }
}
