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

/** First index in [low, high) of the increasing `sequences` whose sequence is above `cursor` (binary search). */
function firstAbove(sequences: Float64Array, low: number, high: number, cursor: number): number {
  while (low < high) {
    const middle = (low + high) >>> 1
    if (sequences[middle]! <= cursor) low = middle + 1
    else high = middle
  }
  return low
}

/**
 * The tracked entries: parallel arrays of sequences (increasing) and running byte totals over
 * the live window [head, tail), grown by doubling and compacted when the front was trimmed.
 */
export function createTrackedEntries() {
  let sequences = new Float64Array(initialCapacityEntries)
  /** Running byte total: cumulative[i] = bytes of every entry pushed since the last clear, through i. */
  let cumulative = new Float64Array(initialCapacityEntries)
  /** The running total just before index 0 (what compaction moved out). */
  let offsetBytes = 0
  let head = 0
  let tail = 0

  const totalBefore = (index: number): number => (index > 0 ? cumulative[index - 1]! : offsetBytes)

  /** First index in [head, tail) whose sequence is above `cursor`. */
  const firstAfter = (cursor: number): number => firstAbove(sequences, head, tail, cursor)

  /** Makes room for one more entry at the tail: compacts the trimmed front, else doubles. */
  function makeRoom(): void {
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

  return {
    /** Entries in the window. */
    count: (): number => tail - head,

    /** Forgets every entry. */
    clear(): void {
      head = 0
      tail = 0
      offsetBytes = 0
    },

    /** Appends an entry (its sequence above every tracked one). */
    push(sequence: number, sizeBytes: number): void {
      if (tail === sequences.length) makeRoom()
      sequences[tail] = sequence
      cumulative[tail] = totalBefore(tail) + sizeBytes
      tail++
    },

    /** Drops the entries at or below `cursor`. */
    dropThrough(cursor: number): void {
      head = firstAfter(cursor)
    },

    /** Entries and bytes with a sequence in (afterSequence, throughSequence]. */
    range(afterSequence: number, throughSequence: number): { messages: number; bytes: number } {
      const from = firstAfter(afterSequence)
      const to = firstAfter(throughSequence)
      return { messages: Math.max(0, to - from), bytes: to > from ? totalBefore(to) - totalBefore(from) : 0 }
    },

    /** The average size of the tracked entries, in bytes; undefined with none. */
    averageBytes(): number | undefined {
      const count = tail - head
      return count > 0 ? (cumulative[tail - 1]! - totalBefore(head)) / count : undefined
    },
  }
}

/** Tracked entries as createTrackedEntries makes them. */
export type TrackedEntries = ReturnType<typeof createTrackedEntries>

/** The scan's position over the change log and what it fills (shared with the tracker). */
interface ScanState {
  /** Every tracked entry has a sequence above this; entries at or below are no peer's concern. */
  base: number
  /** The change log has been scanned up to and including this sequence. */
  scannedThrough: number
  /** Bumped by a reset, so a scan that was reading across it throws its results away. */
  generation: number
  entries: TrackedEntries
}

/**
 * Reads the change log after `state.scannedThrough` in steps of `stepEntries` (yielding between
 * them) and tracks each local ingest entry with its message's size, until the log ends or
 * `entriesMax` are tracked. Stops without a trace when a reset happens meanwhile.
 * @throws whatever the archive throws
 */
async function scanChanges(archive: MirrorArchive, state: ScanState, limits: { entriesMax: number; stepEntries: number }): Promise<void> {
  const scanGeneration = state.generation
  for (;;) {
    if (state.entries.count() >= limits.entriesMax) return
    const entries = await archive.changes(state.scannedThrough, limits.stepEntries)
    if (state.generation !== scanGeneration) return
    for (const entry of entries) {
      if (entry.sequence <= state.scannedThrough) continue
      if (entry.origin === null && entry.kind === 'ingest') {
        if (state.entries.count() >= limits.entriesMax) return
        const meta = await archive.getMeta(entry.id)
        if (state.generation !== scanGeneration) return
        // A message purged before it was copied is not in anyone's queue any more.
        if (meta && entry.sequence > state.base) state.entries.push(entry.sequence, meta.sizeBytes)
      }
      state.scannedThrough = entry.sequence
    }
    if (entries.length < limits.stepEntries) return
    await yieldToEventLoop()
  }
}

/**
 * The depth of (afterSequence, throughSequence] (null: up to `lastSequence`): exact where
 * tracked; entries nobody has scanned yet (and any below the tracked base) count as messages
 * of the average tracked size.
 */
function rangeDepthOf(state: ScanState, lastSequence: number, afterSequence: number, throughSequence: number | null): BacklogDepth {
  const through = Math.min(throughSequence ?? lastSequence, lastSequence)
  if (through <= afterSequence) return { messages: 0, bytes: 0, estimated: false }
  let { messages, bytes } = state.entries.range(Math.max(afterSequence, state.base), through)
  const { base, scannedThrough } = state
  const untracked = Math.max(0, through - Math.max(scannedThrough, afterSequence)) + (afterSequence < base ? Math.min(base, through) - afterSequence : 0)
  if (untracked > 0) {
    const averageBytes = state.entries.averageBytes() ?? backlogAssumedMessageBytes
    messages += untracked
    bytes += Math.round(untracked * averageBytes)
  }
  return { messages, bytes, estimated: untracked > 0 }
}

/** Creates a tracker over `archive`. Pure until refresh(). */
export function createBacklogTracker(deps: { archive: MirrorArchive; logger: Logger }, options: BacklogTrackerOptions = {}) {
  const limits = { entriesMax: options.entriesMax ?? backlogEntriesTrackedMax, stepEntries: options.scanStepEntries ?? backlogScanStepEntries }
  const state: ScanState = { base: 0, scannedThrough: 0, generation: 0, entries: createTrackedEntries() }
  let scanning: Promise<void> | undefined
  let scanAgain = false

  const rangeDepth = (afterSequence: number, throughSequence: number | null): BacklogDepth => rangeDepthOf(state, deps.archive.lastSequence(), afterSequence, throughSequence)

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
            await scanChanges(deps.archive, state, limits)
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
      if (lowestCursor < state.base) {
        state.base = lowestCursor
        state.scannedThrough = lowestCursor
        state.entries.clear()
        state.generation++
        return
      }
      state.base = lowestCursor
      if (state.scannedThrough < state.base) state.scannedThrough = state.base
      state.entries.dropThrough(lowestCursor)
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
      return { tracked: state.entries.count(), scannedThrough: state.scannedThrough, base: state.base }
    },
  }
}

/** A tracker as createBacklogTracker makes it. */
export type BacklogTracker = ReturnType<typeof createBacklogTracker>
