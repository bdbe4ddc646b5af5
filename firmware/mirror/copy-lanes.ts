import assert from 'node:assert/strict'

/**
 * Pure decisions of the two copy lanes (STYLE 7): when a peer's queue is split, how an
 * acknowledgement moves the persisted positions, which lane the next batch comes from, and the
 * bounded lists of requeued ids and refused copies. No I/O here; the sender executes these.
 *
 * A peer that comes back after a long outage has a backlog of many change-log entries. Copied
 * in order from one cursor, mail archived meanwhile would wait behind the whole backlog. When
 * the unsent part of the queue passes laneSplitThresholdEntries, the sender fixes a split
 * point `liveFrom` = the change log's head at that moment:
 *
 *     ... acked ≤ cursor | backfill lane (cursor, liveFrom] | live lane: acked ≤ liveCursor, then (liveCursor, head]
 *
 * Live batches go first; the backfill always progresses. When the backfill is acknowledged
 * through liveFrom, the lanes merge: cursor = liveCursor, and one lane goes on. Requeued ids
 * (messages the peer lost, sent again on `mirror verify`'s request) go after live work and
 * before the backfill, and never move a cursor.
 */

/** Which part of the queue a batch comes from. */
export type CopyLane = 'live' | 'backfill' | 'requeue'

/** The persisted positions of one peer's queue (a part of its PeerRecord). */
export interface LanePositions {
  /** Every change-log entry at or below it is acknowledged by the peer. */
  cursor: number
  /** Split point: the backfill lane is (cursor, liveFrom]; null while there is one lane. */
  liveFrom: number | null
  /** The live lane is acknowledged through it (≥ liveFrom); null while there is one lane. */
  liveCursor: number | null
}

/** A range of the change log not yet acknowledged: (afterSequence, throughSequence], null = up to the head. */
export interface PendingRange {
  afterSequence: number
  throughSequence: number | null
}

/** A copy the peer refused for good (ack.rejected), remembered for `mirror verify` and `show mirror`. */
export interface RejectedCopyRecord {
  id: string
  code: string
  message: string
  /** When the refusal was acknowledged, wall clock, milliseconds since the epoch. */
  atMs: number
}

/** Requeued message ids waiting per peer, at most (67 bytes each in the state file: ~6.7 MB at the cap). */
export const requeuedIdsMax = 100_000
/** Refused copies remembered per peer, the newest (older ones are forgotten; each was logged). */
export const rejectedCopiesMax = 10_000
/** Longest refusal message kept per remembered copy, in characters. */
export const rejectedMessageLengthMax = 200
/** The queue splits when more than this many batches' worth of entries are unsent (times batchMessagesMax). */
export const laneSplitThresholdBatches = 2
/**
 * Backfill and requeue (bulk) batches in flight, at most, while no live batch is: the receiver
 * handles frames in order, so new mail arriving then waits behind these. Measured with
 * scripts/bench/mirror-copy.ts (20,000 queued, 1,000-message batches, new mail at 200/s, on
 * the shared 2-core machine under load, so noisy): 3 gave a new-mail lag p95 of ~550 ms, 2
 * ~360–550 ms at about the same drain rate; quarter-size bulk batches (3 in flight) lowered
 * the p95 to ~190–340 ms but also the drain rate, and were left out.
 */
export const bulkInflightBatchesMax = 2
/** Bulk batches in flight, at most, while live batches are in flight. */
export const bulkInflightWhileLiveBatchesMax = 1

/** Change-log entries that may wait unsent before the queue splits into lanes. */
export function laneSplitThresholdEntries(batchMessagesMax: number): number {
  return laneSplitThresholdBatches * batchMessagesMax
}

/** True while the queue is split into a backfill and a live lane. */
export function isSplit(positions: LanePositions): boolean {
  return positions.liveFrom !== null
}

/** Where the live lane is acknowledged through: liveCursor while split, else the cursor. */
export function liveAcknowledged(positions: LanePositions): number {
  return positions.liveCursor ?? positions.cursor
}

/**
 * Whether to split now: one lane, and more than `thresholdEntries` entries between the live
 * read position (what was sent or acknowledged) and the head.
 */
export function shouldSplit(positions: LanePositions, liveReadSequence: number, headSequence: number, thresholdEntries: number): boolean {
  return !isSplit(positions) && headSequence - liveReadSequence > thresholdEntries
}

/** The positions after splitting at `headSequence`: nothing of the live lane is acknowledged yet. */
export function split(positions: LanePositions, headSequence: number): LanePositions {
  assert.ok(!isSplit(positions), 'split once until the lanes merge')
  assert.ok(headSequence > positions.cursor, 'a split needs a backlog')
  return { cursor: positions.cursor, liveFrom: headSequence, liveCursor: headSequence }
}

/**
 * The positions after the peer acknowledged a batch of `lane` through `throughSequence`.
 * A backfill acknowledged through liveFrom merges the lanes (cursor = liveCursor); a live one
 * moves liveCursor while split, the cursor otherwise; a requeue batch moves nothing.
 * @throws AssertionError when a position would move back or past the split
 */
export function acknowledge(positions: LanePositions, lane: CopyLane, throughSequence: number): LanePositions {
  if (lane === 'requeue') return positions
  if (lane === 'backfill') {
    assert.ok(positions.liveFrom !== null && positions.liveCursor !== null, 'a backfill batch needs a split')
    assert.ok(throughSequence >= positions.cursor && throughSequence <= positions.liveFrom, 'a backfill acknowledgement stays within (cursor, liveFrom]')
    if (throughSequence === positions.liveFrom) return merge({ ...positions, cursor: throughSequence })
    return { ...positions, cursor: throughSequence }
  }
  if (positions.liveCursor !== null) {
    assert.ok(throughSequence >= positions.liveCursor, 'the live cursor never moves back')
    return { ...positions, liveCursor: throughSequence }
  }
  assert.ok(throughSequence >= positions.cursor, 'the cursor never moves back')
  return { ...positions, cursor: throughSequence }
}

/** One lane again once the backfill is acknowledged through liveFrom. */
export function merge(positions: LanePositions): LanePositions {
  if (positions.liveFrom === null || positions.cursor < positions.liveFrom) return positions
  return { cursor: Math.max(positions.cursor, positions.liveCursor ?? positions.cursor), liveFrom: null, liveCursor: null }
}

/** The ranges of the change log the peer has not acknowledged, oldest first. */
export function pendingRanges(positions: LanePositions): PendingRange[] {
  if (positions.liveFrom === null || positions.liveCursor === null) return [{ afterSequence: positions.cursor, throughSequence: null }]
  const ranges: PendingRange[] = []
  if (positions.liveFrom > positions.cursor) ranges.push({ afterSequence: positions.cursor, throughSequence: positions.liveFrom })
  ranges.push({ afterSequence: positions.liveCursor, throughSequence: null })
  return ranges
}

/** What the sender knows when it picks the next batch. */
export interface LaneLoad {
  /** Batches sent and not acknowledged, per lane. */
  inflight: Record<CopyLane, number>
  /** The live lane has entries not yet sent (its read position is below the head). */
  liveUnsent: boolean
  /** Requeued ids wait that are not in a batch in flight. */
  requeueUnsent: boolean
  /** The backfill lane has entries not yet sent (its read position is below liveFrom). */
  backfillUnsent: boolean
}

/**
 * The lane of the next batch, or undefined to wait for an acknowledgement or for new mail.
 * Live first, then requeued ids, then the backfill. Bulk batches (requeue and backfill) keep
 * one slot of inflightBatchesMax free for new mail, at most bulkInflightBatchesMax of them are
 * in flight, and while live batches are in flight at most bulkInflightWhileLiveBatchesMax: new
 * mail waits behind few bulk batches, and the backfill still progresses.
 */
export function nextLane(load: LaneLoad, inflightBatchesMax: number): CopyLane | undefined {
  const total = load.inflight.live + load.inflight.backfill + load.inflight.requeue
  if (total >= inflightBatchesMax) return undefined
  if (load.liveUnsent) return 'live'
  if (!load.requeueUnsent && !load.backfillUnsent) return undefined
  const bulk = load.inflight.backfill + load.inflight.requeue
  const bulkMax = load.inflight.live > 0 ? bulkInflightWhileLiveBatchesMax : Math.max(1, Math.min(bulkInflightBatchesMax, inflightBatchesMax - 1))
  if (bulk >= bulkMax) return undefined
  return load.requeueUnsent ? 'requeue' : 'backfill'
}

/**
 * The requeue list after adding `ids` (already checked to be archived): each id once, the
 * order of arrival kept. Undefined when it would hold more than `limit` ids (nothing added).
 */
export function addRequeued(current: readonly string[], ids: readonly string[], limit = requeuedIdsMax): string[] | undefined {
  const present = new Set(current)
  const added: string[] = []
  for (const id of ids) {
    if (present.has(id)) continue
    present.add(id)
    added.push(id)
  }
  if (current.length + added.length > limit) return undefined
  return added.length === 0 ? [...current] : [...current, ...added]
}

/** The requeue list without `done` (acknowledged, or no longer archived). */
export function removeRequeued(current: readonly string[], done: Iterable<string>): string[] {
  const remove = new Set(done)
  return remove.size === 0 ? [...current] : current.filter((id) => !remove.has(id))
}

/** The remembered refused copies with `added` appended, the newest `limit` kept, messages shortened. */
export function addRejected(current: readonly RejectedCopyRecord[], added: readonly RejectedCopyRecord[], limit = rejectedCopiesMax): RejectedCopyRecord[] {
  const shortened = added.map((item) => ({ ...item, message: item.message.slice(0, rejectedMessageLengthMax) }))
  return [...current, ...shortened].slice(-limit)
}
