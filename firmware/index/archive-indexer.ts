import type { RootDatabase } from 'lmdb'
import type { Logger } from '../common/logger.js'
import type { MessageMeta } from '../archive/types.js'
import type { ParsedMessage } from '../mime/types.js'
import { indexInputFromMeta } from './document.js'
import { indexDatabaseNames, type SearchIndex } from './search-index.js'

/**
 * What the archive store calls, inside its own write transactions, to keep the index in
 * step with it (ARCHITECTURE: a message is searchable as soon as it is acknowledged).
 * Every method is synchronous and joins the transaction that is open when it is called:
 * if the archive's transaction aborts, the index change aborts with it.
 */
export interface ArchiveIndexer {
  /** Named databases the index adds to the archive's LMDB environment (add to its `maxDbs`). */
  readonly databasesNeeded: number
  /** Opens the index's databases on the archive's root, once, after the environment is open. */
  open(root: RootDatabase): void
  /**
   * A message was stored, or a new delivery of a stored one was recorded: `meta` holds
   * every delivery so far (their envelope recipients, BCC included, become searchable).
   * Call inside the ingest's write transaction. Throws what the index throws (an LMDB
   * error, INDEX_CORRUPT on an unreadable record), which should abort the ingest like any
   * store failure; an index of another layout version is skipped instead (see below).
   */
  messageStored(meta: MessageMeta, parsed: ParsedMessage): void
  /** A message was purged (retention). Call inside the purge's write transaction. */
  messageRemoved(id: string): void
}

/**
 * The adapter between the archive's indexer hook and the search index.
 *
 * @param index a created index (`createIndex`); `open` calls its `databases`
 * @param deps.logger where the layout warning goes
 */
export function createArchiveIndexer(index: SearchIndex, deps: { logger: Logger }): ArchiveIndexer {
  const logger = deps.logger.child('index')
  let layoutWarned = false
  /**
   * An index written by other firmware (another layout) must not stop the archive from
   * taking mail: such messages are archived unindexed, with one warning, until
   * `rebuild` (which `verify` would also ask for: they show as missing).
   */
  const usable = (): boolean => {
    if (index.layoutCurrent()) return true
    if (!layoutWarned) logger.warn('the search index has another layout version: messages are archived unindexed until `mailkeep index rebuild`')
    layoutWarned = true
    return false
  }
  return {
    databasesNeeded: Object.keys(indexDatabaseNames).length,
    open(root) {
      index.databases(root)
    },
    messageStored(meta, parsed) {
      if (usable()) index.indexMessage(indexInputFromMeta(meta, parsed))
    },
    messageRemoved(id) {
      if (usable()) index.removeMessage(id)
    },
  }
}
