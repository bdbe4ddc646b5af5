import type { Database } from 'lmdb'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { decodeChange } from './records.js'
import { readSequence } from './layout.js'

/**
 * `archive/purged`: one record per id the retention purge removed, keyed like
 * `archive/messages` (the 32-byte id), value `[sequence, atMs]` of the purge's change-log
 * entry. Written in the purge's own transaction, so it is exactly as durable as the purge.
 * Mirror verify reads it to tell "purged here by policy" from a message that went missing,
 * and the copy receiver reads it so a resent copy of something purged here does not come
 * back. A later ingest of the same bytes leaves the record (the history stays true); readers
 * check `archive/messages` first.
 *
 * An archive made before this database has its records built once at start from the purge
 * entries of the change log (the `purged` state record marks the build as done).
 */

/** Key of the state record that says the purge records cover the whole change log. */
export const purgedStateKey = 'purged'
/** Version of the purge records' layout, in the state record. */
export const purgedVersion = 1
/** Change-log entries read per step of the one-time build (the build yields between steps). */
const buildEntriesPerStep = 50_000

/** When and where in the change log a message was purged. */
export interface PurgeRecord {
  /** Change-log sequence of the `purge` entry. */
  sequence: number
  atMs: number
}

export interface PurgeRecordDatabases {
  purged: Database<unknown, Buffer>
  changes: Database<unknown, Buffer>
  state: Database<unknown, string>
}

/** The record to write for a purge (inside the purge's transaction). */
export function writePurgeRecord(purged: Database<unknown, Buffer>, key: Buffer, record: PurgeRecord): void {
  purged.putSync(key, [record.sequence, record.atMs])
}

/** The purge record under `key`, or undefined (absent or not of this layout). */
export function readPurgeRecord(purged: Database<unknown, Buffer>, key: Buffer): PurgeRecord | undefined {
  const value = purged.get(key)
  if (!Array.isArray(value) || value.length < 2) return undefined
  const [sequence, atMs] = value as unknown[]
  if (typeof sequence !== 'number' || typeof atMs !== 'number') return undefined
  return { sequence, atMs }
}

/**
 * At start: builds the purge records from the change log when the state record says they
 * were never built (an archive from firmware before them). One pass, written in steps of
 * buildEntriesPerStep entries, the state record with the last step: a build cut short is
 * done again (putting a record twice is harmless).
 */
export async function ensurePurgeRecords(databases: PurgeRecordDatabases, context: { logger: Logger; clock: Clock; write(body: () => void): Promise<void> }): Promise<void> {
  if (databases.state.get(purgedStateKey) !== undefined) return
  const startedMs = context.clock.monotonicMs()
  let found = 0
  let batch: Array<{ key: Buffer; record: PurgeRecord }> = []
  const flush = async (last: boolean): Promise<void> => {
    const writing = batch
    batch = []
    await context.write(() => {
      for (const { key, record } of writing) writePurgeRecord(databases.purged, key, record)
      if (last) databases.state.putSync(purgedStateKey, { version: purgedVersion, builtAtMs: context.clock.now() })
    })
  }
  for (const { key, value } of databases.changes.getRange({})) {
    let change
    try {
      change = decodeChange(value)
    } catch {
      continue
    }
    if (change.kind !== 'purge') continue
    batch.push({ key: Buffer.from(change.id), record: { sequence: readSequence(key), atMs: change.atMs } })
    found++
    if (batch.length >= buildEntriesPerStep) await flush(false)
  }
  await flush(true)
  if (found > 0) context.logger.info('purge records built from the change log', { purged: found, durationMs: Math.round(context.clock.monotonicMs() - startedMs) })
}

/** The state record of a new, empty archive (nothing to build). */
export function emptyPurgedRecord(nowMs: number): { version: number; builtAtMs: number } {
  return { version: purgedVersion, builtAtMs: nowMs }
}
