import type { Logger } from '../common/logger.js'
import { IndexError } from './errors.js'
import { clearIndexDatabases, readState, writeState, type Databases } from './index-databases.js'
import type { IndexOptions, Source } from './index-types.js'
import type { IndexInput } from './index-input.js'

/** What a rebuild needs of its index. */
export interface RebuildDeps {
  logger: Logger
  limits: Pick<IndexOptions, 'rebuildBatchMessages'>
  /** Indexes one message inside the open write transaction (DocumentWrites.indexInTransaction, flushing as ingest does). */
  indexInTransaction(input: IndexInput): void
  /** Inside the clearing transaction: whatever was built from the old data must not be written after it (a background flush). */
  onCleared(): void
  /** After the clear committed: drop what was read from the old data (the tail, the query cache). */
  afterCleared(): void
}

/**
 * Drops the index's data and indexes every message again, `rebuildBatchMessages` per
 * write transaction, the state marked `rebuilding` until the last message is in. See
 * SearchIndex.rebuild.
 *
 * @returns the number of messages indexed
 * @throws IndexError INDEX_UNAVAILABLE when `signal` stops it (the index stays marked incomplete)
 */
export async function rebuildIndex(db: Databases, deps: RebuildDeps, messages: Source<IndexInput>, onProgress?: (indexed: number) => void, signal?: AbortSignal): Promise<number> {
  await db.root.transaction(() => {
    clearIndexDatabases(db)
    deps.onCleared()
    // Marked until the last message is in: an interrupted rebuild leaves the index incomplete, and says so.
    writeState(db, { ...readState(db), rebuilding: true })
  })
  deps.afterCleared()
  let indexed = 0
  let batch: IndexInput[] = []
  const write = async (): Promise<void> => {
    const inputs = batch
    batch = []
    await db.root.transaction(() => {
      for (const input of inputs) deps.indexInTransaction(input)
    })
    indexed += inputs.length
    onProgress?.(indexed)
  }
  for await (const input of messages) {
    if (signal?.aborted) {
      throw new IndexError('INDEX_UNAVAILABLE', `the index rebuild was stopped after ${indexed} messages: the index stays incomplete until a rebuild finishes`, {
        retryable: true,
        fields: { indexed },
      })
    }
    batch.push(input)
    if (batch.length >= deps.limits.rebuildBatchMessages) await write()
  }
  if (batch.length > 0) await write()
  await db.root.transaction(() => {
    const { rebuilding: _done, ...state } = readState(db)
    writeState(db, state)
  })
  deps.logger.info('index rebuilt', { messages: indexed })
  return indexed
}
