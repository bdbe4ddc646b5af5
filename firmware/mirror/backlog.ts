import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import type { Logger } from '../common/logger.js'
import type { MirrorArchive } from './types.js'

/**
 * Queue depth per peer without a queue: a peer's queue is the local change log after its
 * cursor. To answer "how many messages and bytes" cheaply for every peer at every status
 * call, one tracker per service keeps the local ingest entries after the lowest cursor as two
 * parallel arrays (sequence, running byte total; 16 bytes per entry) filled by a background
 * scan of the change log (sizes from each message's metadata). A peer's depth is then a
 * binary search and a subtraction.
 */

/** Local ingest entries tracked, at most (16 bytes each: 16 MB at the cap); beyond it figures are estimated. */
export const backlogEntriesTrackedMax = 1_000_000
/** Change-log entries read per scan step; the scan yields to the event loop between steps. */
export const backlogScanStepEntries = 2_000
/** Size assumed per untracked message when nothing is tracked yet to average over, in bytes. */
export const backlogAssumedMessageBytes = 50_000
const initialCapacityEntries = 1_024

/** One peer's queue. */
export interface BacklogDepth {
  messages: number
  bytes: number
  /** True when part of the figure is estimated (scan not finished, or beyond the tracking cap). */
  estimated: boolean
}

/** Limits of a tracker (tests lower them). */
export interface BacklogTrackerOptions {
  entriesMax?: number
  scanStepEntries?: number
}

/** Creates a tracker over `archive`. Pure until refresh(). */
export function createBacklogTracker(deps: { archive: MirrorArchive; logger: Logger }, options: BacklogTrackerOptions = {}) {
  const entriesMax = options.entriesMax ?? backlogEntriesTrackedMax
  const stepEntries = options.scanStepEntries ?? backlogScanStepEntries
  /** Every tracked entry has a sequence above this; entries at or below are no peer's concern. */
  let base = 0
  /** The change log has been scanned up to and including this sequence. */
  let scannedThrough = 0
  let sequences = new Float64Array(initialCapacityEntries)
  /** Running byte total: cumulative[i] = bytes of every entry pushed since the last reset, through i. */
  let cumulative = new Float64Array(initialCapacityEntries)
  /** The running total just before index 0 (what compaction moved out). */
  let offsetBytes = 0
  let head = 0
  let tail = 0
  /** Bumped by reset(), so a scan that was reading across it throws its results away. */
  let generation = 0
  let scanning: Promise<void> | undefined
  let scanAgain = false

  const tracked = (): number => tail - head
  const totalBefore = (index: number): number => (index > 0 ? cumulative[index - 1]! : offsetBytes)

  function reset(afterSequence: number): void {
    base = afterSequence
    scannedThrough = afterSequence
    head = 0
    tail = 0
    offsetBytes = 0
    generation++
  }

  function push(sequence: number, sizeBytes: number): void {
    if (tail === sequences.length) {
      if (head > 0) {
        // Compact: drop the trimmed front, keep the running totals absolute.
        offsetBytes = totalBefore(head)
        sequences.copyWithin(0, head, tail)
        cumulative.copyWithin(0, head, tail)
        tail -= head
        head = 0
      }
      if (tail === sequences.length) {
        const grownSequences = new Float64Array(sequences.length * 2)
        const grownCumulative = new Float64Array(cumulative.length * 2)
        grownSequences.set(sequences)
        grownCumulative.set(cumulative)
        sequences = grownSequences
        cumulative = grownCumulative
      }
    }
    sequences[tail] = sequence
    cumulative[tail] = totalBefore(tail) + sizeBytes
    tail++
  }

  /** First index in [head, tail) whose sequence is above `cursor`. */
  function firstAfter(cursor: number): number {
    let low = head
    let high = tail
    while (low < high) {
      const middle = (low + high) >>> 1
      if (sequences[middle]! <= cursor) low = middle + 1
      else high = middle
    }
    return low
  }

  function rangeDepth(afterSequence: number, throughSequence: number | null): BacklogDepth {
    const lastSequence = deps.archive.lastSequence()
    const through = Math.min(throughSequence ?? lastSequence, lastSequence)
    if (through <= afterSequence) return { messages: 0, bytes: 0, estimated: false }
    const from = firstAfter(Math.max(afterSequence, base))
    const to = firstAfter(through)
    let messages = Math.max(0, to - from)
    let bytes = to > from ? totalBefore(to) - totalBefore(from) : 0
    // Entries nobody has scanned yet (and any below the tracked base): counted as messages of the average tracked size.
    const untracked = Math.max(0, through - Math.max(scannedThrough, afterSequence)) + (afterSequence < base ? Math.min(base, through) - afterSequence : 0)
    if (untracked > 0) {
      const count = tracked()
      const averageBytes = count > 0 ? (cumulative[tail - 1]! - totalBefore(head)) / count : backlogAssumedMessageBytes
      messages += untracked
      bytes += Math.round(untracked * averageBytes)
    }
    return { messages, bytes, estimated: untracked > 0 }
  }

  async function scan(): Promise<void> {
    const scanGeneration = generation
    for (;;) {
      if (tracked() >= entriesMax) return
      const entries = await deps.archive.changes(scannedThrough, stepEntries)
      if (generation !== scanGeneration) return
      for (const entry of entries) {
        if (entry.sequence <= scannedThrough) continue
        if (entry.origin === null && entry.kind === 'ingest') {
          if (tracked() >= entriesMax) return
          const meta = await deps.archive.getMeta(entry.id)
          if (generation !== scanGeneration) return
          // A message purged before it was copied is not in anyone's queue any more.
          if (meta && entry.sequence > base) push(entry.sequence, meta.sizeBytes)
        }
        scannedThrough = entry.sequence
      }
      if (entries.length < stepEntries) return
      await yieldToEventLoop()
    }
  }

  return {
    /**
     * Scans the change log from where the last scan stopped (in steps, yielding between them).
     * Concurrent calls share one scan and it runs once more if asked meanwhile. A read error is
     * logged and the scan stops; the next refresh retries. Never rejects.
     */
    refresh(): Promise<void> {
      if (scanning) {
        scanAgain = true
        return scanning
      }
      scanning = (async () => {
        do {
          scanAgain = false
          try {
            await scan()
          } catch (error) {
            deps.logger.warn('mirror queue scan failed; figures are estimated until the next scan', { error })
            break
          }
        } while (scanAgain)
        scanning = undefined
      })()
      return scanning
    },

    /**
     * Tells the tracker the lowest cursor of any peer: entries at or below it are dropped; a
     * lower one than before (a new peer with cursor 0) restarts tracking from it (call
     * refresh() after).
     */
    retain(lowestCursor: number): void {
      if (lowestCursor < base) {
        reset(lowestCursor)
        return
      }
      base = lowestCursor
      if (scannedThrough < base) scannedThrough = base
      head = firstAfter(lowestCursor)
    },

    /** The queue of a peer whose cursor is `cursor`: exact where tracked, estimated beyond. */
    depth(cursor: number): BacklogDepth {
      return rangeDepth(cursor, null)
    },

    /**
     * The messages and bytes of local ingest entries in (afterSequence, throughSequence]
     * (null: up to the head): exact where tracked, estimated beyond. A peer's queue is the sum
     * over its pending ranges.
     */
    rangeDepth,

    /** Tracked entries, scan position and base, for tests and diagnostics. */
    stats(): { tracked: number; scannedThrough: number; base: number } {
      return { tracked: tracked(), scannedThrough, base }
    },
  }
}

/** A tracker as createBacklogTracker makes it. */
export type BacklogTracker = ReturnType<typeof createBacklogTracker>
