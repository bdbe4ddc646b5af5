/**
 * The index's seven databases in the archive's LMDB environment, and its state record (in
 * `index-keys`, beside the id mapping). The layout is in docs/index-layout.md.
 */

import type { Database, Key, RootDatabase } from 'lmdb'
import { putAppend } from '../common/lmdb-append.js'
import { IndexError } from './errors.js'

/** Names of the index's databases in the archive's LMDB environment (the environment needs `maxDbs` for these too). */
export const indexDatabaseNames = {
  postings: 'index-postings',
  patches: 'index-patches',
  forward: 'index-forward',
  documents: 'index-documents',
  dates: 'index-dates',
  keys: 'index-keys',
  phrases: 'index-phrases',
} as const

/** Layout version stored in the index; a different one makes `search` ask for a rebuild. */
export const indexLayoutVersion = 4

/** The index's open databases. */
export interface Databases {
  root: RootDatabase
  /** Posting blocks keyed chunk number (uint32 BE) + the block's first token (UTF-8): every flush appends after the last. */
  postings: Database<Buffer, Buffer>
  /** Patch chunks of re-indexed flushed documents, keyed [token, chunk number, docid]. */
  patches: Database<Buffer, (string | number)[]>
  forward: Database<Buffer, number>
  /** Display records, each cut into parts keyed (docid, part): see putRecord. */
  documents: Database<Buffer, Buffer>
  pageSizeBytes: number
  dates: Database<Buffer, number>
  keys: Database<unknown, string>
  /**
   * Phrase streams of the documents' bodies (phrase-stream.ts), keyed by docid. Added to
   * layout 4 without a new version: a document indexed before it has none, and its phrases
   * are checked on its text (phrase-filter.ts).
   */
  phrases: Database<Buffer, number>
}

/** Opens (creating when missing) the index's databases in `root`. */
export function openIndexDatabases(root: RootDatabase): Databases {
  return {
    root,
    postings: root.openDB<Buffer, Buffer>(indexDatabaseNames.postings, { encoding: 'binary', keyEncoding: 'binary' }),
    patches: root.openDB<Buffer, (string | number)[]>(indexDatabaseNames.patches, { encoding: 'binary' }),
    forward: root.openDB<Buffer, number>(indexDatabaseNames.forward, { encoding: 'binary', keyEncoding: 'uint32', compression: true }),
    documents: root.openDB<Buffer, Buffer>(indexDatabaseNames.documents, { encoding: 'binary', keyEncoding: 'binary' }),
    pageSizeBytes: (root.getStats() as { pageSize: number }).pageSize,
    dates: root.openDB<Buffer, number>(indexDatabaseNames.dates, { encoding: 'binary', keyEncoding: 'uint32' }),
    keys: root.openDB<unknown, string>(indexDatabaseNames.keys, { encoding: 'msgpack' }),
    phrases: root.openDB<Buffer, number>(indexDatabaseNames.phrases, { encoding: 'binary', keyEncoding: 'uint32' }),
  }
}

/** Empties every index database (a rebuild). Runs inside a write transaction. */
export function clearIndexDatabases(db: Databases): void {
  for (const store of [db.postings, db.patches, db.forward, db.documents, db.dates, db.keys, db.phrases] as Database<unknown, string>[]) store.clearSync()
}

/**
 * Bytes of LMDB pages each index database occupies (branch, leaf and overflow pages);
 * free pages of the environment are not counted.
 */
export function indexDiskBytes(db: Databases): Record<keyof typeof indexDatabaseNames, number> {
  const bytesOf = (store: { getStats(): unknown }): number => {
    const stats = store.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number }
    return (stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages) * stats.pageSize
  }
  return {
    postings: bytesOf(db.postings),
    patches: bytesOf(db.patches),
    forward: bytesOf(db.forward),
    documents: bytesOf(db.documents),
    dates: bytesOf(db.dates),
    keys: bytesOf(db.keys),
    phrases: bytesOf(db.phrases),
  }
}

/**
 * Writes a record (or a posting block) under a new key. Docids and flush numbers only grow,
 * so the put is an append (putAppend): the records fill their pages (measured on the
 * corpus: display records took 0.26 bytes of disk per raw byte with ordinary puts,
 * half-empty pages). A key not above the last one (not expected; an aborted transaction
 * leaves nothing behind) falls back to an ordinary put.
 */
export function putNew<K extends Key>(database: Database<Buffer, K>, key: K, value: Buffer): void {
  if (!putAppend(database, key, value)) database.putSync(key, value)
}

/** The index's state record, in `index-keys` under `state`. */
export interface IndexState {
  v: number
  /** Next docid to allocate (docids start at 1). */
  next: number
  /** Every docid ≤ this is in posting chunks. */
  flushed: number
  /** Flushes so far; the chunk number of the next flush. */
  chunks: number
  /** Changes to tail documents (re-index, removal), so the tail cache knows to reload. */
  generation: number
  documents: number
  removed: number
  /** Changes to flushed documents (re-index, removal), so searches know to drop what they cached; absent means 0. */
  patched?: number
  /** Set when a rebuild clears the index, cleared when it has indexed every message (see SearchIndex.complete). */
  rebuilding?: boolean
}

const stateKey = 'state'
/** Prefix of the id mapping's keys in `index-keys`: `id:<64 hex>` → docid. */
export const idKeyPrefix = 'id:'

/** The docid of an archive id, or undefined when it is not indexed. */
export function docidOf(db: Databases, id: string): number | undefined {
  return db.keys.get(idKeyPrefix + id) as number | undefined
}

/** The stored state as it is, any layout (an empty index: the state of a new one). */
export function storedState(db: Databases): IndexState {
  return (db.keys.get(stateKey) as IndexState | undefined) ?? { v: indexLayoutVersion, next: 1, flushed: 0, chunks: 0, generation: 0, documents: 0, removed: 0 }
}

/**
 * The state to work with (a copy).
 *
 * @throws IndexError INDEX_CORRUPT for another layout
 */
export function readState(db: Databases): IndexState {
  const state = storedState(db)
  if (state.v !== indexLayoutVersion) {
    throw new IndexError('INDEX_CORRUPT', `index layout ${state.v} is not ${indexLayoutVersion}: rebuild the index`, { fields: { layout: state.v } })
  }
  return { ...state }
}

/** Writes the state. Runs inside a write transaction. */
export function writeState(db: Databases, state: IndexState): void {
  db.keys.putSync(stateKey, state)
}
