import type { MessageMeta } from '../archive/types.js'
import type { ParsedMessage } from '../mime/types.js'
import { indexInputFromMeta, type IndexInput } from './index-input.js'
import type { SearchIndex, VerifyReport } from './search-index.js'

/**
 * `mailkeep index verify` and `mailkeep index rebuild` over the real archive: the stored
 * messages are listed page by page, read and parsed again (the archive keeps raw bytes,
 * not parsed text), and handed to the index's `verify` / `rebuild`.
 */

/** What maintenance reads from the archive store (firmware/archive's ArchiveStore has it). */
export interface ArchiveForIndex {
  listIds(afterId: string | null, limit: number): string[]
  getMeta(id: string): MessageMeta | undefined
  getRaw(id: string): Promise<Uint8Array | undefined>
}

/** What maintenance needs of firmware/mime. */
export interface ParserForIndex {
  parse(raw: Uint8Array): Promise<ParsedMessage>
}

/** Archive ids listed per page. */
export const maintenancePageIds = 1_000

/** Every archive id, in the store's order. */
export async function* archiveIds(archive: ArchiveForIndex): AsyncGenerator<string> {
  let after: string | null = null
  for (;;) {
    const page = archive.listIds(after, maintenancePageIds)
    yield* page
    if (page.length < maintenancePageIds) return
    after = page[page.length - 1]!
  }
}

/** The index input of one stored message, parsed again from its raw bytes; undefined when it is gone. */
export async function archiveInput(archive: ArchiveForIndex, parser: ParserForIndex, id: string): Promise<IndexInput | undefined> {
  const meta = archive.getMeta(id)
  const raw = meta ? await archive.getRaw(id) : undefined
  if (!meta || !raw) return undefined
  return indexInputFromMeta(meta, await parser.parse(raw))
}

/** Every stored message's index input (messages purged meanwhile are skipped). */
export async function* archiveInputs(archive: ArchiveForIndex, parser: ParserForIndex): AsyncGenerator<IndexInput> {
  for await (const id of archiveIds(archive)) {
    const input = await archiveInput(archive, parser, id)
    if (input) yield input
  }
}

/**
 * Index maintenance bound to one archive and parser.
 *
 * - `verify({ deep })`: missing and extra documents; with `deep`, also stale ones (every
 *   message is parsed again: minutes per 100,000 messages).
 * - `rebuild(onProgress, signal)`: see SearchIndex.rebuild; returns the messages indexed.
 */
export function createIndexMaintenance(deps: { index: SearchIndex; archive: ArchiveForIndex; parser: ParserForIndex }) {
  return {
    verify(options: { deep?: boolean } = {}): Promise<VerifyReport> {
      return deps.index.verify(archiveIds(deps.archive), options.deep ? (id) => archiveInput(deps.archive, deps.parser, id) : undefined)
    },
    rebuild(onProgress?: (indexed: number) => void, signal?: AbortSignal): Promise<number> {
      return deps.index.rebuild(archiveInputs(deps.archive, deps.parser), onProgress, signal)
    },
  }
}
