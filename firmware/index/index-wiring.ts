/**
 * The wiring under the index's façade (search-index.ts): the open databases, the epoch, and
 * the modules that do the work (pending tail, tail flush, document writes, query executor)
 * built over them.
 */

import type { RootDatabase } from 'lmdb'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { IndexError } from './errors.js'
import { openIndexDatabases, type Databases } from './index-databases.js'
import type { IndexOptions } from './index-types.js'
import { createPendingTail, type PendingTail } from './pending-tail.js'
import { createTailFlush, type TailFlush } from './tail-flush.js'
import { createDocumentWrites, type DocumentWrites } from './document-writes.js'
import { createQueryExecutor, type QueryExecutor } from './query-executor.js'

/** What the façade's methods are handed: see createIndexWiring. */
export interface IndexWiring {
  logger: Logger
  limits: IndexOptions
  tail: PendingTail
  flush: TailFlush
  writes: DocumentWrites
  executor: QueryExecutor
  /** The open databases. @throws IndexError INDEX_UNAVAILABLE before `openDatabases` */
  open(): Databases
  /** Opens the index's databases in `root`: what was read before is forgotten, a flush under way dropped, the epoch moved on. */
  openDatabases(root: RootDatabase): void
  /** The data was cleared (a rebuild): a flush built from what was there must not be written after it; the epoch moves on. */
  cleared(): void
  /** Forgets what was read from the data before (databases opened, rebuild): the tail's postings, the query cache. */
  forgetReads(): void
}

/** Creates the wiring, no databases open yet. */
export function createIndexWiring(deps: { logger: Logger; clock: Clock }, limits: IndexOptions): IndexWiring {
  // The composition root hands a logger already namespaced (boot gives `index`).
  const logger = deps.logger
  let dbs: Databases | undefined
  /** Moves on whenever the index's data is replaced (databases, rebuild): a build of before is stale. */
  let epoch = 0
  const tail = createPendingTail()
  const flush = createTailFlush({ logger, clock: deps.clock, limits, tail, current: () => ({ databases: dbs, epoch }) })
  const writes = createDocumentWrites({ logger, limits, tail, flush })
  const executor = createQueryExecutor({ logger, clock: deps.clock, limits, tail, current: () => ({ db: open(), epoch }) })

  function open(): Databases {
    if (!dbs) throw new IndexError('INDEX_UNAVAILABLE', 'the index databases are not open', { retryable: true })
    return dbs
  }

  function forgetReads(): void {
    tail.reset()
    executor.reset()
  }

  return {
    logger,
    limits,
    tail,
    flush,
    writes,
    executor,
    open,
    openDatabases(root: RootDatabase): void {
      dbs = openIndexDatabases(root)
      forgetReads()
      flush.drop()
      epoch++
    },
    cleared(): void {
      flush.drop()
      epoch++
    },
    forgetReads,
  }
}
