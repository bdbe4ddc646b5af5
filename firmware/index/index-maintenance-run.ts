import type { Logger } from '../common/logger.js'
import { createIndexMaintenance, type ArchiveForIndex, type ParserForIndex } from './maintenance.js'
import type { IndexStats, SearchIndex, VerifyReport } from './search-index.js'
import type { SearchCounters } from './query-executor.js'

/** Messages between two "rebuild progress" log lines. */
export const rebuildProgressLogMessages = 10_000

/** The index's figures for `show status`: its stats, the rebuild's count while one runs, the search counters. */
export interface IndexRunStats extends IndexStats {
  /** Messages the running rebuild has indexed so far; null when none runs. */
  rebuildIndexed: number | null
  searches: SearchCounters
}

/**
 * The search index's lifecycle over the archive: createIndexMaintenance (verify, rebuild)
 * plus what runs around it in the appliance.
 *
 * - One rebuild at a time: `rebuild(reason)` joins one already running (the technician's
 *   `index rebuild` joins the one started at boot).
 * - `start()`: an index of another layout (a firmware update) or one whose rebuild was cut
 *   short is rebuilt in the background; mail is archived meanwhile, and retention's
 *   query-based purges wait for it (allMatches). A complete index only has the tail an
 *   unplanned stop left flushed, in the background.
 * - `stop()`: aborts a rebuild (it runs again at the next start) and flushes the pending
 *   tail, so that the first search after a planned restart does not load it again.
 *
 * Call start() once the archive's databases are open and stop() after the mail sources
 * stopped. Neither rejects: what fails is logged.
 */
export function createIndexMaintenanceRun(deps: { index: SearchIndex; archive: ArchiveForIndex; parser: ParserForIndex; logger: Logger }) {
  const { index, logger } = deps
  const maintenance = createIndexMaintenance(deps)
  const run: { running?: Promise<number>; stop?: AbortController; indexed: number } = { indexed: 0 }

  function rebuild(reason: string): Promise<number> {
    if (run.running) return run.running
    const stop = new AbortController()
    run.stop = stop
    run.indexed = 0
    logger.info('search index rebuild started', { reason })
    const onProgress = (indexed: number): void => {
      run.indexed = indexed
      if (indexed % rebuildProgressLogMessages < index.options.rebuildBatchMessages) logger.info('search index rebuild progress', { indexed })
    }
    const running = maintenance.rebuild(onProgress, stop.signal).finally(() => {
      run.running = undefined
      run.stop = undefined
    })
    run.running = running
    return running
  }

  return {
    /** See createIndexMaintenance: missing, extra and (deep) stale documents. */
    verify: (options: { deep?: boolean } = {}): Promise<VerifyReport> => maintenance.verify(options),
    /** Rebuilds the index, or joins the rebuild running; resolves with the messages indexed. */
    rebuild,
    async start(): Promise<void> {
      if (index.complete()) {
        // A tail an unplanned stop left (a planned one flushes it): written in the background
        // now rather than loaded whole by the first search.
        const documents = index.flushPendingInBackground()
        if (documents > 0) logger.info('search index tail left by an unplanned stop: flushing it in the background', { documents })
        return
      }
      const reason = index.layoutCurrent() ? 'a rebuild was cut short' : 'the index has another layout'
      rebuild(reason).then(
        (indexed) => logger.info('search index rebuilt', { indexed }),
        (error: unknown) => logger.warn('search index rebuild did not finish; it runs again at the next start', { error: String(error) }),
      )
    },
    async stop(): Promise<void> {
      run.stop?.abort()
      await run.running?.catch(() => undefined)
      flushTailAtStop(index, logger)
    },
    healthcheck: () => ({ ok: true, detail: run.running ? `rebuilding (${run.indexed} indexed)` : index.complete() ? 'complete' : 'incomplete: run `mailkeep index rebuild`' }),
    /** The index's figures, or null while its databases are not open (the archive is not started). */
    stats(): IndexRunStats | null {
      try {
        return { ...index.stats(), rebuildIndexed: run.running ? run.indexed : null, searches: index.searchCounters() }
      } catch {
        return null
      }
    },
  }
}

export type IndexMaintenanceRun = ReturnType<typeof createIndexMaintenanceRun>

/**
 * Writes the pending tail's postings at a planned stop. The sources have stopped (services
 * stop in reverse order), so the first search after the restart does not load the tail again
 * from its forward records (~0.25 ms a message, up to twice pendingDocumentsMax). After a
 * crash that load still happens, once. Never throws: a failure is logged.
 */
function flushTailAtStop(index: SearchIndex, logger: Logger): void {
  try {
    const startedMs = performance.now()
    const pending = index.layoutCurrent() ? index.stats().pending : 0
    if (pending > 0) {
      index.flush()
      logger.info('search index tail flushed at stop', { documents: pending, elapsedMs: Math.round(performance.now() - startedMs) })
    }
  } catch (error) {
    logger.warn('search index tail not flushed at stop; the first search after start loads it', { error: String(error) })
  }
}
