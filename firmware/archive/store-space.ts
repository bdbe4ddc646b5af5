import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { ArchiveError } from './errors.js'
import type { Databases } from './store-databases.js'

/**
 * The archive store's space check before each ingest (store.ts's module comment has the
 * policy): ingest is refused with STORE_FULL when the volume's free space would fall below
 * `freeBytesMin` or the environment would pass `mapSizeBytes`. The volume and the
 * environment are read at most once per `freeSpaceCacheMs`; between readings the bytes of
 * the ingests let through since are counted against both. A disk that is really full still
 * fails the commit with ENOSPC (store-transactions.ts): this check catches the ordinary case
 * before anything is written. A reading itself below `freeBytesMin` makes the store
 * read-only (store-read-only.ts); one message that does not fit is only refused.
 */

/** Estimated bytes of metadata, delivery and change entry per ingest, for the space checks. */
export const recordOverheadBytes = 2048

/** The limits the space check enforces, from ArchiveStoreOptions. */
export interface SpaceLimits {
  /** Below this free space on the volume, ingest is refused. */
  freeBytesMin: number
  /** Most bytes the environment may grow to. */
  mapSizeBytes: number
  /** How long a reading is trusted, in ms. */
  freeSpaceCacheMs: number
}

/** The last reading, and what was let through since. */
export interface SpaceReading {
  /** Free bytes of the volume; null when unknown (no volume given, or it could not be read). */
  volumeFreeBytes: number | null
  /** Bytes the environment uses: its pages up to the last one written. */
  environmentUsedBytes: number
  /** Bytes of the ingests let through since the reading (each with recordOverheadBytes). */
  bytesQueuedSinceReading: number
}

/**
 * Whether an ingest that needs `needBytes` (its raw bytes and recordOverheadBytes) fits.
 * Pure.
 * @returns the STORE_FULL error to refuse it with; null when it fits
 */
export function spaceRefusal(reading: SpaceReading, needBytes: number, limits: Pick<SpaceLimits, 'freeBytesMin' | 'mapSizeBytes'>): ArchiveError | null {
  const freeBytes = reading.volumeFreeBytes === null ? null : reading.volumeFreeBytes - reading.bytesQueuedSinceReading
  if (freeBytes !== null && freeBytes - needBytes < limits.freeBytesMin) {
    return new ArchiveError('STORE_FULL', `the data volume has ${freeBytes} bytes free, below the minimum of ${limits.freeBytesMin} bytes`, {
      fields: { freeBytes, freeBytesMin: limits.freeBytesMin },
    })
  }
  const usedBytes = reading.environmentUsedBytes + reading.bytesQueuedSinceReading
  if (usedBytes + needBytes > limits.mapSizeBytes) {
    return new ArchiveError('STORE_FULL', `the archive uses ${usedBytes} of its ${limits.mapSizeBytes} bytes`, {
      fields: { usedBytes, mapSizeBytes: limits.mapSizeBytes },
    })
  }
  return null
}

/** The space check of one store, with its cached reading. */
export interface SpaceGuard {
  /**
   * Lets an ingest of `incomingBytes` raw bytes through, counting it, or refuses it.
   * @throws ArchiveError STORE_FULL
   */
  ensure(databases: Pick<Databases, 'root' | 'pageSizeBytes'>, incomingBytes: number): Promise<void>
  /** Forgets the reading, so the next ensure() reads again (at start, and when a read-only store takes writes again). */
  forget(): void
  /** Free bytes of the volume at the last reading, without what was let through since; null when unknown. */
  lastVolumeFreeBytes(): number | null
  /**
   * Reads the volume's free space now, for the read-only watcher, start and a failed commit.
   * With the databases the reading becomes the cached one (as ensure() would take it);
   * without (the environment is closed) it is only returned. Never throws.
   * @returns free bytes; null without a volume, or when it cannot be read (logged)
   */
  readVolume(databases?: Pick<Databases, 'root' | 'pageSizeBytes'>): Promise<number | null>
}

export interface SpaceGuardDeps {
  logger: Logger
  clock: Clock
  /** Free space of the data volume (hal's volume usage); without it only the map size is checked. */
  volume?: () => Promise<{ freeBytes: number }>
}

/** Creates the space check of one store. Pure: reads nothing until ensure(). */
export function createSpaceGuard(deps: SpaceGuardDeps, limits: SpaceLimits): SpaceGuard {
  const reading: SpaceReading = { volumeFreeBytes: null, environmentUsedBytes: 0, bytesQueuedSinceReading: 0 }
  let readAtMs = Number.NEGATIVE_INFINITY
  /** The reading in progress, shared by the ingests that wait for it. */
  let refresh: Promise<void> | undefined

  async function volumeFreeBytes(): Promise<number | null> {
    if (!deps.volume) return null
    try {
      return (await deps.volume()).freeBytes
    } catch (error) {
      // Refusing all mail because statfs failed would turn a monitoring problem into an
      // outage; a disk that is really full still fails the commit (store-transactions.ts).
      deps.logger.warn('cannot read the free space of the data volume; accepting mail without the free-space check', { error })
      return null
    }
  }

  async function read(databases: Pick<Databases, 'root' | 'pageSizeBytes'>): Promise<void> {
    try {
      const environment = databases.root.getStats() as { lastPageNumber?: number; pageSize?: number }
      reading.environmentUsedBytes = ((environment.lastPageNumber ?? 0) + 1) * (environment.pageSize ?? databases.pageSizeBytes)
    } catch (error) {
      // An environment LMDB marked fatal after a failed commit (MDB_PANIC) or one being
      // closed: the last figure stands, and the commit that follows tells the truth.
      deps.logger.warn('cannot read the size of the archive environment; keeping the last reading', { error })
    }
    if (deps.volume) reading.volumeFreeBytes = await volumeFreeBytes()
    reading.bytesQueuedSinceReading = 0
    readAtMs = deps.clock.monotonicMs()
  }

  function readShared(databases: Pick<Databases, 'root' | 'pageSizeBytes'>): Promise<void> {
    refresh ??= read(databases).finally(() => {
      refresh = undefined
    })
    return refresh
  }

  return {
    async ensure(databases, incomingBytes) {
      if (deps.clock.monotonicMs() - readAtMs >= limits.freeSpaceCacheMs) await readShared(databases)
      const needBytes = incomingBytes + recordOverheadBytes
      const refusal = spaceRefusal(reading, needBytes, limits)
      if (refusal) throw refusal
      reading.bytesQueuedSinceReading += needBytes
    },
    forget() {
      readAtMs = Number.NEGATIVE_INFINITY
    },
    lastVolumeFreeBytes: () => reading.volumeFreeBytes,
    async readVolume(databases) {
      if (!databases) return volumeFreeBytes()
      await readShared(databases)
      return reading.volumeFreeBytes
    },
  }
}
