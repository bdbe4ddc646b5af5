import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MirrorError } from './errors.js'
import type { MirrorChannel } from './channel.js'
import { CopyFrameType, decodeAck, decodeBatchFailure, decodePolicy } from './copy-protocol.js'
import { liveAcknowledged, nextLane, shouldSplit, split, type CopyLane, type LanePositions } from './copy-lanes.js'
import type { CopyBatches, PlannedBatch } from './copy-batches.js'
import type { PeerRecord } from './peer-state.js'
import type { WakeSignal } from './wake-signal.js'
import type { MirrorArchive, PolicySettings } from './types.js'
import { createStatusReporter, type StatusReporterDeps } from './sender-status-reporter.js'

/** How long a stopping or pausing sender waits for acknowledgements of batches in flight, in milliseconds. */
export const senderDrainTimeoutMs = 2_000

/** What one copy session needs of its sender: the record it advances and the sender's bookkeeping. */
export interface CopySessionHost {
  deps: StatusReporterDeps & { clock: Clock; archive: MirrorArchive }
  options: { inflightBatchesMax: number; ackTimeoutMs: number; pollIntervalMs: number }
  logger: Logger
  /** The peer's record (lane positions, requeued ids); read here, changed through setPositions/acknowledged. */
  record: PeerRecord
  work: WakeSignal
  batches: CopyBatches
  splitThresholdEntries: number
  /** True while the sender copies (not stopped, not paused). */
  active: () => boolean
  /** Bumped when a technician's accept resets the queue: a session of before stops taking acks. */
  queueEpoch: () => number
  setPositions: (next: LanePositions) => void
  /** The peer acknowledged `batch` (or it needed no acknowledgement). */
  acknowledged: (batch: { lane: CopyLane; throughSequence: number; requeued: string[] }, rejected?: readonly { id: string; code: string; message: string }[]) => void
  /** What the backfill returns of the peer's own messages; undefined: nothing. */
  returnOwn: () => { serial: string; through: number } | undefined
  /** A batch was acknowledged: counters and the health of the connection. */
  onAcknowledged: (batch: { messages: number; bytes: number }, rejected: number) => void
  /** Caught up with nothing in flight: a healthy connection, whatever happened before. */
  onCaughtUp: () => void
  /** The peer's policy settings arrived on `target`. */
  onPeerPolicy: (settings: PolicySettings) => void
}

/** A batch sent and not yet acknowledged. */
interface InflightBatch {
  number: number
  lane: CopyLane
  throughSequence: number
  messages: number
  bytes: number
  /** Requeue batches: the ids it took from the list (removed when it is acknowledged). */
  requeued: string[]
}

/** True for failures that only say the connection went away, without a reason. */
function isBareClose(error: unknown): boolean {
  return error instanceof MirrorError && (error.code === 'CLOSED' || error.code === 'CONNECTION_CLOSED')
}

/** The lane positions of a record. */
export const positionsOf = (record: PeerRecord): LanePositions => ({ cursor: record.cursor, liveFrom: record.liveFrom, liveCursor: record.liveCursor })

/** The state one session shares between its reader (acknowledgements) and its writer (batches). */
interface SessionState {
  host: CopySessionHost
  target: MirrorChannel
  inflight: InflightBatch[]
  sessionEpoch: number
  /** Requeued ids in a batch in flight (a subset of record.requeued): not planned again. */
  requeueInFlight: Set<string>
  failure: unknown
  batchNumber: number
  ackTimer: NodeJS.Timeout | undefined
  reportQueue: () => void
}

/** Records a session failure: the first wins, except that a bare close gives way to a reason the peer gave. */
function fail(session: SessionState, error: unknown): void {
  // A bare "connection closed" is often our own side noticing first; REFUSE and BATCH_FAILED say why.
  if (session.failure === undefined || (isBareClose(session.failure) && !isBareClose(error))) session.failure = error
  session.host.work.notify()
}

/** (Re)arms the acknowledgement deadline: running while batches are in flight. */
function armAckTimer(session: SessionState): void {
  const { ackTimeoutMs } = session.host.options
  clearTimeout(session.ackTimer)
  session.ackTimer =
    session.inflight.length > 0
      ? setTimeout(() => {
          fail(session, new MirrorError('ACK_TIMEOUT', `no acknowledgement from the peer within ${ackTimeoutMs} ms`, { expected: `<= ${ackTimeoutMs} ms`, actual: null }))
          void session.target.close()
        }, ackTimeoutMs).unref()
      : undefined
}

/** An ACK: the oldest batch in flight is acknowledged, in order. @throws MirrorError PROTOCOL out of order */
function onAck(session: SessionState, payload: Buffer): void {
  const { host, inflight } = session
  const ack = decodeAck(payload)
  const head = inflight[0]
  if (!head || ack.batch !== head.number || ack.throughSequence !== head.throughSequence) {
    throw new MirrorError('PROTOCOL', `acknowledgement of batch ${ack.batch} out of order`, { expected: head?.number ?? null, actual: ack.batch })
  }
  inflight.shift()
  armAckTimer(session)
  // A technician's accept reset the queue meanwhile: this session's batches count for nothing.
  if (session.sessionEpoch !== host.queueEpoch()) return
  for (const rejected of ack.rejected) {
    host.logger.error('the peer refused a copy for good; it stays only here', { ...rejected, peerSerial: host.record.serial })
  }
  if (head.lane === 'requeue') for (const id of head.requeued) session.requeueInFlight.delete(id)
  host.onAcknowledged(head, ack.rejected.length)
  host.acknowledged(head, ack.rejected)
  session.reportQueue()
  host.work.notify()
}

/** One frame from the peer on an outbound channel. @throws MirrorError BATCH_FAILED, PROTOCOL */
function onFrame(session: SessionState, type: number, payload: Buffer): void {
  if (type === CopyFrameType.ack) {
    onAck(session, payload)
  } else if (type === CopyFrameType.policy) {
    session.host.onPeerPolicy(decodePolicy(payload))
  } else if (type === CopyFrameType.batchFailed) {
    const failed = decodeBatchFailure(payload)
    throw new MirrorError('BATCH_FAILED', `the peer could not store batch ${failed.batch}: ${failed.code}: ${failed.message}`, {
      retryable: failed.retryable,
      fields: { peerCode: failed.code, batch: failed.batch },
    })
  } else {
    throw new MirrorError('PROTOCOL', `unexpected frame type ${type} on an outbound mirror channel`, { actual: type })
  }
}

/** Reads the peer's frames until the channel ends; every end is a session failure. */
function readFrames(session: SessionState): Promise<void> {
  const { target } = session
  return (async () => {
    for (;;) {
      const frame = await target.receive()
      if (frame === null) throw new MirrorError('CONNECTION_CLOSED', 'the peer closed the mirror channel')
      onFrame(session, frame.type, frame.payload)
    }
  })().catch((error: unknown) => {
    if (error instanceof MirrorError && error.code === 'PROTOCOL' && error.origin === 'local' && target.isOpen) void target.close(error)
    fail(session, error)
  })
}

/** Batches of `lane` in flight. */
const inflightIn = (inflight: readonly InflightBatch[], lane: CopyLane): number => inflight.filter((batch) => batch.lane === lane).length

/** True while the session may send: no failure, the sender copies, and no accept reset the queue. */
const sending = (session: SessionState): boolean => session.failure === undefined && session.host.active() && session.sessionEpoch === session.host.queueEpoch()

/** Sends batches (live first, then requeued ids, the backfill beside them) until the session fails, stops or pauses. */
async function sendBatches(session: SessionState): Promise<void> {
  const { host, inflight, target, requeueInFlight } = session
  const { record, batches } = host
  // Read positions: what was sent (or acknowledged, at the start) in each change-log lane.
  let liveNext = liveAcknowledged(positionsOf(record))
  let backfillNext = record.cursor
  // The live lane's change log had nothing readable although the head said so: wait for a wake-up.
  let liveDry = false
  // The next batch of a lane, read from the archive while the previous one is being written out.
  let prefetched: { key: string; batch: Promise<PlannedBatch | undefined> } | undefined
  const laneKey = (lane: CopyLane, after: number): string => `${lane} ${after} ${lane === 'backfill' ? record.liveFrom : null}`
  const readLane = (lane: 'live' | 'backfill', after: number): Promise<PlannedBatch | undefined> => batches.plan(lane, after, lane === 'backfill' ? record.liveFrom : null, host.returnOwn())
  const planLane = (lane: 'live' | 'backfill', after: number): Promise<PlannedBatch | undefined> => {
    const ready = prefetched?.key === laneKey(lane, after) ? prefetched.batch : undefined
    prefetched = undefined
    return ready ?? readLane(lane, after)
  }

  while (sending(session)) {
    const head = host.deps.archive.lastSequence()
    if (shouldSplit(positionsOf(record), liveNext, head, host.splitThresholdEntries)) {
      // A backlog: what was sent so far and up to the head is the backfill; new mail goes first.
      host.setPositions(split(positionsOf(record), head))
      for (const batch of inflight) if (batch.lane === 'live') batch.lane = 'backfill'
      backfillNext = liveNext
      liveNext = head
      prefetched = undefined
      host.logger.info('mirror backlog: new mail goes first, the backlog is copied beside it', { cursor: record.cursor, backfillThroughSequence: head, backlogEntries: head - record.cursor })
    }
    const lane = nextLane(
      {
        inflight: { live: inflightIn(inflight, 'live'), backfill: inflightIn(inflight, 'backfill'), requeue: inflightIn(inflight, 'requeue') },
        liveUnsent: !liveDry && liveNext < head,
        requeueUnsent: record.requeued.length > requeueInFlight.size,
        backfillUnsent: record.liveFrom !== null && backfillNext < record.liveFrom,
      },
      host.options.inflightBatchesMax,
    )
    if (lane === undefined) {
      // Caught up (or waiting for acknowledgements): a healthy connection, whatever happened before.
      if (inflight.length === 0) host.onCaughtUp()
      await host.work.wait(host.options.pollIntervalMs)
      liveDry = false
      continue
    }
    const batch =
      lane === 'requeue'
        ? await batches.planRequeue(
            record.requeued.filter((id) => !requeueInFlight.has(id)),
            record.cursor,
            record.serial,
          )
        : await planLane(lane, lane === 'live' ? liveNext : backfillNext)
    if (!sending(session)) break
    if (!batch) {
      if (lane === 'live') liveDry = true
      continue
    }
    if (lane === 'live') liveNext = batch.throughSequence
    else if (lane === 'backfill') backfillNext = batch.throughSequence
    if (batch.copies.length === 0 && (lane === 'requeue' || inflightIn(inflight, lane) === 0)) {
      // Nothing to copy (peer copies, purges, ids no longer archived): nothing for the peer to confirm.
      host.acknowledged(batch)
      continue
    }
    for (const id of batch.requeued) requeueInFlight.add(id)
    session.batchNumber++
    inflight.push({ number: session.batchNumber, lane, throughSequence: batch.throughSequence, messages: batch.copies.length, bytes: batch.bytes, requeued: batch.requeued })
    if (inflight.length === 1) armAckTimer(session)
    const written = batches.send(target, session.batchNumber, batch)
    // Reading the archive is CPU work and sending mostly waits for the socket: overlap them.
    if (lane !== 'requeue') {
      const after = lane === 'live' ? liveNext : backfillNext
      prefetched = { key: laneKey(lane, after), batch: readLane(lane, after) }
      prefetched.batch.catch(() => undefined)
    }
    await written
  }
}

/** Stopping or pausing: gives the acknowledgements in flight a moment, so a restart resends little. */
async function drain(session: SessionState): Promise<void> {
  const { host, inflight } = session
  if (session.failure !== undefined || inflight.length === 0 || session.sessionEpoch !== host.queueEpoch()) return
  const { clock } = host.deps
  const deadline = clock.monotonicMs() + senderDrainTimeoutMs
  while (session.failure === undefined && inflight.length > 0 && clock.monotonicMs() < deadline) await host.work.wait(deadline - clock.monotonicMs())
}

/**
 * One authenticated connection of a sender: tells the peer the policy settings and queue
 * figures, sends batches and takes their acknowledgements in order. Runs until it fails
 * (throws the failure after closing the channel) or the sender stops or pauses (returns).
 */
export async function runCopySession(host: CopySessionHost, target: MirrorChannel): Promise<void> {
  const status = createStatusReporter(host.deps, target)
  const session: SessionState = {
    host,
    target,
    inflight: [],
    sessionEpoch: host.queueEpoch(),
    requeueInFlight: new Set<string>(),
    failure: undefined,
    batchNumber: 0,
    ackTimer: undefined,
    reportQueue: () => status.reportQueue(),
  }
  const reader = readFrames(session)
  try {
    await status.start()
    await sendBatches(session)
    await drain(session)
  } catch (error) {
    fail(session, error)
  } finally {
    clearTimeout(session.ackTimer)
    status.stop()
  }
  if (session.failure !== undefined) {
    await target.close()
    await reader
    throw session.failure
  }
}
