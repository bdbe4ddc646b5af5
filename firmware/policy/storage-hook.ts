import type { RootDatabase } from 'lmdb'
import type { ArchiveIndexer } from '../archive/types.js'

/** Something that keeps its own named databases in the archive's environment. */
export interface ArchiveDatabaseUser {
  readonly databasesNeeded: number
  open(root: RootDatabase): void
}

/**
 * The archive store opens the databases of its one indexer hook at start (and counts them
 * against LMDB's `maxDbs`). Retention and the audit log keep their databases in the same
 * environment, so their changes share the archive's transactions; this wraps the search
 * index's hook so the store opens theirs too, without the store knowing about retention.
 */
export function withArchiveDatabases(indexer: ArchiveIndexer | undefined, users: readonly ArchiveDatabaseUser[]): ArchiveIndexer {
  const hook: ArchiveIndexer = {
    databasesNeeded: (indexer?.databasesNeeded ?? 0) + users.reduce((sum, user) => sum + user.databasesNeeded, 0),
    open(root) {
      indexer?.open(root)
      for (const user of users) user.open(root)
    },
    messageStored(meta, parsed, prepared) {
      indexer?.messageStored(meta, parsed, prepared)
    },
    messageRemoved(id) {
      indexer?.messageRemoved(id)
    },
  }
  if (indexer?.prepare) hook.prepare = (parsed) => indexer.prepare!(parsed)
  return hook
}
