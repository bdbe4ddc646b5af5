import assert from 'node:assert/strict'
import type { MirrorError } from './errors.js'
import type { AdmissionCandidate } from './handshake.js'
import { pendingRanges, type PendingRange, type RejectedCopyRecord } from './copy-lanes.js'
import { positionsOf } from './copy-session.js'
import { sameIdentity, type PeerRecord, type SeenIdentity } from './peer-state.js'
import type { PeerSenderDeps, PeerSenderOptions, PeerSenderStatus } from './sender-types.js'
import { createIdentityAdmission, pinnedIdentityOf, type PinnedIdentity } from './sender-identity.js'
import { createSenderContext, scheduleSave } from './sender-context.js'
import { runSenderLoop, stopSender } from './sender-loop.js'
import { senderStatus } from './sender-link.js'
import { acceptSenderIdentity, requeueForSender, setSenderPaused, type AcceptedIdentity } from './sender-operations.js'

// The sender's parts live beside it; importers keep using this module's names.
export { describeIdentity, type IdentityEvent, type PinnedIdentity } from './sender-identity.js'
export { queueStatusRepeatMs, statusTickMs } from './sender-status-reporter.js'
export { senderDrainTimeoutMs } from './copy-session.js'
export { senderStopTimeoutMs } from './sender-loop.js'
export type { PeerSenderDeps, PeerSenderOptions, PeerSenderStatus } from './sender-types.js'

/** One peer's sender, as createPeerSender makes it. */
export interface PeerSender {
  /** Starts the copy loop (once). */
  start(): void
  /**
   * Stops copying: no new batches, acknowledgements in flight awaited up to
   * senderDrainTimeoutMs, the channel closed cleanly, the cursor saved. Idempotent; bounded
   * by senderStopTimeoutMs (a connect attempt still running then is closed when it ends).
   */
  stop(): Promise<void>
  /** New local mail may be waiting: look at the change log now. */
  wake(): void
  /** Cuts a retry wait short: the next connection attempt starts now (an inbound appliance may be this peer). */
  retryNow(): void
  /** Pauses (true) or resumes (false) copying; saved durably before it returns. @throws MirrorError STATE_FAILED */
  setPaused(paused: boolean): Promise<void>
  /**
   * Admission of a proven appliance as this peer, inbound or outbound: pins the first one,
   * refuses any other IDENTITY_CHANGED and keeps it pending (sender-identity.ts).
   */
  admit(candidate: AdmissionCandidate): MirrorError | undefined
  /** True when `candidate` is exactly the pinned identity (serial, store id and certificate). */
  isPinned(candidate: { serial: string; storeId: string; fingerprint: string }): boolean
  /** The pinned identity (nulls before the first handshake). */
  pinned(): PinnedIdentity
  /** The identity waiting for `mirror accept`, or null. */
  pendingIdentity(): SeenIdentity | null
  /**
   * A technician accepts the pending identity: it becomes the pinned one (saved durably before
   * this returns). A new store id is another archive: the cursor goes back to 0 and the whole
   * archive is copied to it (deduplicated by content where it already has something).
   * @throws MirrorError NOTHING_PENDING, STATE_FAILED
   */
  acceptIdentity(): Promise<AcceptedIdentity>
  /** The acknowledged cursor: every change-log entry at or below it is acknowledged. */
  readonly cursor: number
  /**
   * The change-log ranges the peer has not acknowledged, oldest first: (afterSequence,
   * throughSequence], throughSequence null = up to the head. One range, or two while a
   * backlog is copied beside new mail (the backfill, then the live lane).
   */
  pendingRanges(): PendingRange[]
  /**
   * Queues archived messages to be sent to the peer again (after new mail, ahead of any
   * backfill); saved durably before it resolves. See requeueForSender (sender-operations.ts).
   * @returns how many distinct ids of `ids` are queued now (those already queued included)
   * @throws MirrorError REQUEUE_FULL beyond requeuedIdsMax (nothing added), STATE_FAILED
   */
  requeue(ids: readonly string[]): Promise<number>
  /** How many requeued ids wait (cheap: no copy of the list). */
  readonly requeuedCount: number
  /** The requeued ids not yet acknowledged by the peer, oldest first. */
  requeuedIds(): string[]
  /** Copies the peer refused for good (its ACK's rejected list), oldest first, the newest rejectedCopiesMax; persisted. */
  rejectedCopies(): RejectedCopyRecord[]
  /** True while an authenticated channel is open. */
  readonly connected: boolean
  /** The sender's state, figures and identity; the service adds the queue figures. */
  status(): PeerSenderStatus
}

/**
 * Copies local mail to one peer, forever: connect (connectToPeer) → exchange policy
 * fingerprints → read the local change log after the cursor → send batches (bounded by
 * batchMessagesMax and batchBytesMax, up to inflightBatchesMax unacknowledged) → advance the
 * cursor on each acknowledgement, in order. A backlog (after an outage, or a new peer) is split
 * into two lanes so new mail goes first and the backlog beside it, and requeued ids go between
 * them (copy-lanes.ts decides; copy-batches.ts reads and writes). Wakes at once on wake() (new
 * local mail) and polls every pollIntervalMs. Any failure closes the channel, forgets the
 * batches in flight and tries again after a capped, jittered backoff from the persisted
 * positions, so nothing is lost; the peer deduplicates what is sent twice. Pure until start().
 * The parts: sender-context.ts (shared state), sender-loop.ts (connections and retries),
 * copy-session.ts (one session), sender-queue.ts (positions and acknowledgements),
 * sender-operations.ts (pause, accept, requeue), sender-link.ts (state and status).
 */
export function createPeerSender(deps: PeerSenderDeps, options: PeerSenderOptions, initial: PeerRecord): PeerSender {
  const context = createSenderContext(deps, options, initial)
  const { record, peer, logger } = context
  const { admit, tellIdentity } = createIdentityAdmission({ peer, record, logger, clock: deps.clock, save: () => scheduleSave(context), onIdentity: deps.onIdentity })
  let running: Promise<void> | undefined
  let stopping: Promise<void> | undefined
  return {
    start(): void {
      assert.equal(running, undefined, 'start() once')
      running = runSenderLoop(context, admit).catch((error) => logger.error('mirror sender stopped unexpectedly', { error }))
    },
    stop: () => (stopping ??= stopSender(context, running)),
    wake: () => context.work.notify(),
    retryNow: () => context.control.notify(),
    setPaused: (paused) => setSenderPaused(context, paused),
    admit,
    isPinned: (candidate) => sameIdentity(record, candidate),
    pinned: () => pinnedIdentityOf(record),
    pendingIdentity: () => (record.pendingIdentity ? { ...record.pendingIdentity } : null),
    acceptIdentity: () => acceptSenderIdentity(context, tellIdentity),
    get cursor(): number {
      return record.cursor
    },
    pendingRanges: () => pendingRanges(positionsOf(record)),
    requeue: (ids) => requeueForSender(context, ids),
    get requeuedCount(): number {
      return record.requeued.length
    },
    requeuedIds: () => [...record.requeued],
    rejectedCopies: () => record.rejected.map((item) => ({ ...item })),
    get connected(): boolean {
      return context.channel?.isOpen === true
    },
    status: () => senderStatus(peer, record, context.link),
  }
}
