import type { Logger } from '../../common/logger.js'
import type { JournalSourceDeps } from './source-options.js'

/**
 * The two reasons a scheduled pass waits instead of running: a takeover source whose
 * mirror peer is up (state `standby`), and an archive that is read-only (state
 * `read-only`). Each is asked before every scheduled pass and logs when its answer
 * changes, once each way; a manual `pullOnce()` asks neither.
 */

/** Whether a takeover source may be pulled here now (JournalSourceDeps.takeover). */
export interface TakeoverWait {
  /** The mirror peer the source belongs to. */
  readonly peer: string
  /** Asks `shouldPull()`; false (with an error logged) when asking throws. */
  allows(): boolean
  /** The last answer of `allows()`: whether the source is being pulled here now. */
  active(): boolean
}

/** Whether the archive takes mail (JournalSourceDeps.archiveReadOnly). */
export interface ArchiveWait {
  /** Why passes wait (the last answer), or null. */
  reason(): string | null
  /** Asks `archiveReadOnly()`; true (with a warning logged) when asking throws. */
  takesMail(): boolean
}

/** The takeover wait of a source configured with `takeoverFor`, or null for a source of this system. */
export function createTakeoverWait(takeover: JournalSourceDeps['takeover'], logger: Logger): TakeoverWait | null {
  if (!takeover) return null
  let takingOver = false
  return {
    peer: takeover.peer,
    active: () => takingOver,
    allows(): boolean {
      let pull: boolean
      try {
        pull = takeover.shouldPull()
      } catch (error) {
        logger.error('cannot tell whether the mirror peer is offline; not pulling its journal source', { peer: takeover.peer, error })
        pull = false
      }
      if (pull !== takingOver) {
        takingOver = pull
        if (pull) logger.warn('mirror peer offline: pulling its journal source here (takeover)', { peer: takeover.peer })
        else logger.info('mirror peer back: its journal source is no longer pulled here', { peer: takeover.peer })
      }
      return pull
    },
  }
}

/**
 * Whether scheduled passes may run as far as the archive is concerned: not while it is
 * read-only (JournalSourceDeps.archiveReadOnly). Logs when that changes, once each way.
 */
export function createArchiveWait(archiveReadOnly: JournalSourceDeps['archiveReadOnly'], logger: Logger): ArchiveWait {
  /** Why passes wait, or null. */
  let waitingFor: string | null = null
  return {
    reason: () => waitingFor,
    takesMail(): boolean {
      let reason: string | null = null
      try {
        reason = archiveReadOnly?.() ?? null
      } catch (error) {
        logger.warn('cannot tell whether the archive is read-only; pulling', { error })
      }
      if (reason !== waitingFor) {
        if (reason) logger.warn('archive read-only: journal pulls wait until it takes mail again', { reason })
        else logger.info('archive takes mail again: journal pulls resume')
        waitingFor = reason
      }
      return reason === null
    },
  }
}
