import type { Logger } from '../common/logger.js'
import type { ArchiveIndexer, MessageMeta } from '../archive/types.js'
import type { ParsedMessage } from '../mime/types.js'
import { indexInputFromMeta } from './index-input.js'
import { indexDatabaseNames, type SearchIndex } from './search-index.js'

/** The archive's indexer hook (firmware/archive/types.ts), implemented here. */
export type { ArchiveIndexer }

/**
 * The adapter between the archive's indexer hook and the search index: pass it as the
 * archive store's `indexer` option. The store calls it inside each message's write
 * transaction, and it writes in that transaction (if indexing throws, the store rolls the
 * transaction back and archives the message without the index, flagged `index-failed`;
 * `verify` reports it missing).
 *
 * @param index a created index (`createIndex`); `open` calls its `databases`
 * @param deps.logger where the layout warning goes
 */
export function createArchiveIndexer(index: SearchIndex, deps: { logger: Logger }): ArchiveIndexer {
  const logger = deps.logger
  let layoutWarned = false
  /**
   * An index written by other firmware (another layout) must not stop the archive from
   * taking mail: such messages are archived unindexed (the index writes nothing and says
   * null), with one warning, until `rebuild` (which `verify` would also ask for: they show
   * as missing).
   */
  const otherLayout = (): void => {
    if (!layoutWarned) logger.warn('the search index has another layout version: messages are archived unindexed until `mailkeep index rebuild`')
    layoutWarned = true
  }
  return {
    databasesNeeded: Object.keys(indexDatabaseNames).length,
    open(root) {
      index.databases(root)
    },
    /** Tokenizing and field analysis, ahead of the write transaction (see SearchIndex.prepare). */
    prepare(parsed: ParsedMessage) {
      return index.prepare(parsed)
    },
    /** Writes the message's index entries; with `prepared` (prepare's result) it does little more than the writes. */
    messageStored(meta: MessageMeta, parsed: ParsedMessage, prepared?: unknown) {
      if (index.indexMessageInTransaction(indexInputFromMeta(meta, parsed), prepared) === null) otherLayout()
    },
    messageRemoved(id) {
      if (index.removeMessageInTransaction(id) === null) otherLayout()
    },
  }
}
