import type { ArchiveStore, ChangeEntry } from '../archive/types.js'

/** Change-log entries read per page. */
export const changesPageEntries = 10_000
/** Key in the audit state database: the change-log sequence up to which every purge is audited. */
export const purgeCursorKey = 'purge-cursor'

/** Calls `visit` for every change-log entry after sequence `after`, reading page by page. */
export function forEachChangeAfter(archive: Pick<ArchiveStore, 'changes'>, after: number, visit: (change: ChangeEntry) => void): void {
  let cursor = after
  for (;;) {
    const page = archive.changes(cursor, changesPageEntries)
    for (const change of page) visit(change)
    if (page.length < changesPageEntries) break
    cursor = page[page.length - 1]!.sequence
  }
}
