import type { Database, RootDatabase } from 'lmdb'

/**
 * The archive store's LMDB handles and the one record every write reads and rewrites: the
 * counters of `archive/state` (layout.ts has every key and value). Opened by
 * store-lifecycle.ts; read and written by every other store-*.ts unit.
 */

/** The store's named databases in one environment, and the environment's page size. */
export interface Databases {
  root: RootDatabase
  /** Values: encodeMessageRecord arrays. */
  messages: Database<unknown, Buffer>
  blobs: Database<Buffer, Buffer>
  /** Values: encodeDelivery arrays. */
  deliveries: Database<unknown, Buffer>
  deliveryKeys: Database<number, Buffer>
  /** Values: encodeChange arrays. */
  changes: Database<unknown, Buffer>
  /** Values: id digest leaves (digest-tree.ts). */
  digest: Database<Buffer, Buffer>
  /** Values: purge records (purge-records.ts). */
  purged: Database<unknown, Buffer>
  state: Database<unknown, string>
  pageSizeBytes: number
}

/** The `counters` record of `archive/state`: stats() and the last change-log sequence, written with every change entry. */
export interface CounterRecord {
  messages: number
  deliveries: number
  rawBytes: number
  storedBytes: number
  lastSequence: number
  flaggedMessages: number
}

const zeroCounters: CounterRecord = { messages: 0, deliveries: 0, rawBytes: 0, storedBytes: 0, lastSequence: 0, flaggedMessages: 0 }

/** A copy of the counters as the current transaction sees them (zero for a new archive), for the caller to change and put back. */
export function readCounters(databases: Pick<Databases, 'state'>): CounterRecord {
  const stored = databases.state.get('counters') as CounterRecord | undefined
  return stored ? { ...stored } : { ...zeroCounters }
}

/** Entries in one named database, from LMDB's statistics (no scan). */
export function entryCount(database: Database): number {
  return (database.getStats() as { entryCount: number }).entryCount
}
