import type { Logger } from '../common/logger.js'
import { createMimeParser, type MimeParser } from '../mime/parser.js'
import type { MimeParserOptions } from '../mime/parser-options.js'
import { mimeFlagOrder, type MimeFlag } from '../mime/types.js'
import type { PrepareMessage } from './parse-job.js'
import type { PoolCounters, PoolJob } from './parse-pool-queue.js'

/**
 * What the parse pool does with a message no worker can take: the same job on the event
 * loop (no worker can run), or, for a message taken as the cause of crashes or time-outs,
 * header metadata only, flagged `parse-failed`, so it is archived as received.
 */

export interface PoolFallback {
  /** A message that crashed or outlived a worker: archived as received, header metadata only, flagged. */
  poisoned(job: PoolJob, reason: string): Promise<void>
  /** The same job on the event loop; a failure there ends as `poisoned`. */
  runInProcess(job: PoolJob): void
}

/** Resolves the job with what a header-only parse reads, flagged `parse-failed` (and not `oversize-for-parse`). */
async function resolveHeadersOnly(headerOnly: MimeParser, job: PoolJob): Promise<void> {
  const parsed = await headerOnly.parse(job.raw)
  const flags = new Set<MimeFlag>(parsed.flags.filter((flag) => flag !== 'oversize-for-parse'))
  flags.add('parse-failed')
  job.resolve({ bytes: job.raw, journal: null, parsed: { ...parsed, flags: mimeFlagOrder.filter((flag) => flags.has(flag)) }, indexPrepared: undefined })
}

/**
 * Creates the fallbacks. Pure: builds a header-only parser (`parseBytesMax` 1).
 *
 * @param deps.inProcess the pool's job on the event loop
 * @param deps.counters the pool's counters (`inProcess`, `poisoned` are counted here)
 */
export function createPoolFallback(deps: { logger: Logger; inProcess: PrepareMessage; counters: PoolCounters }, mime: MimeParserOptions): PoolFallback {
  const { logger, counters } = deps
  const headerOnly = createMimeParser({ logger: logger.child('mime') }, { ...mime, parseBytesMax: 1 })
  const poisoned = async (job: PoolJob, reason: string): Promise<void> => {
    counters.poisoned++
    logger.error('a message crashed or outlived its parse worker; archiving it with header metadata only', { reason, sizeBytes: job.raw.byteLength })
    await resolveHeadersOnly(headerOnly, job)
  }
  return {
    poisoned,
    runInProcess(job) {
      counters.inProcess++
      void deps.inProcess(job.raw).then(job.resolve, (error: unknown) => poisoned(job, `in-process job failed: ${String(error)}`))
    },
  }
}
