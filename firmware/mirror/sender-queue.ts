import { acknowledge, addRejected, isSplit, removeRequeued, type CopyLane, type LanePositions } from './copy-lanes.js'
import { positionsOf } from './copy-session.js'
import { scheduleSave, type SenderContext } from './sender-context.js'

/** A batch as its acknowledgement moves the queue: its lane, how far it reaches, the requeued ids it took. */
export interface AcknowledgedBatch {
  lane: CopyLane
  throughSequence: number
  requeued: string[]
}

/** A copy the peer refused for good, as its ACK lists it. */
export interface RefusedCopy {
  id: string
  code: string
  message: string
}

/** Moves the persisted lane positions (saved soon, coalesced); logs a merge of the lanes. */
export function setPositions(context: SenderContext, next: LanePositions): void {
  const { record } = context
  const wasSplit = isSplit(positionsOf(record))
  record.cursor = next.cursor
  record.liveFrom = next.liveFrom
  record.liveCursor = next.liveCursor
  if (wasSplit && !isSplit(next)) context.logger.info('mirror backfill done: the copy lanes merged', { cursor: record.cursor })
  scheduleSave(context)
  context.deps.onCursor?.()
}

/**
 * The peer acknowledged `batch` (or it needed no acknowledgement: nothing in it to copy). The
 * copies it refused for good are remembered; a requeue batch shrinks the list, any other moves
 * its lane's position.
 */
export function acknowledgeBatch(context: SenderContext, batch: AcknowledgedBatch, rejected: readonly RefusedCopy[] = []): void {
  const { record } = context
  if (rejected.length > 0) {
    const atMs = context.deps.clock.now()
    record.rejected = addRejected(
      record.rejected,
      rejected.map(({ id, code, message }) => ({ id, code, message, atMs })),
    )
  }
  if (batch.lane === 'requeue') {
    // A requeued copy never moves a cursor: only the list shrinks.
    record.requeued = removeRequeued(record.requeued, batch.requeued)
    scheduleSave(context)
    context.deps.onCursor?.()
  } else {
    setPositions(context, acknowledge(positionsOf(record), batch.lane, batch.throughSequence))
  }
}

/** What the backfill returns of the peer's own messages (after an accepted store-id change); undefined: nothing. */
export function returnOwnOf(context: SenderContext): { serial: string; through: number } | undefined {
  const { record } = context
  return record.returnOwnThrough > record.cursor && record.serial !== null ? { serial: record.serial, through: record.returnOwnThrough } : undefined
}
