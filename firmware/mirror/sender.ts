import assert from 'node:assert/strict'
import { MirrorError } from './errors.js'
import { connectToPeer } from './listener.js'
import type { MirrorChannel } from './channel.js'
import { refusalStateCodes, retryDelayMs } from './copy-plan.js'
import {
  acknowledge,
  addRejected,
  addRequeued,
  isSplit,
  laneSplitThresholdEntries,
  pendingRanges,
  removeRequeued,
  requeuedIdsMax,
  type CopyLane,
  type LanePositions,
  type PendingRange,
  type RejectedCopyRecord,
} from './copy-lanes.js'
import { createCopyBatches, requeueCandidates } from './copy-batches.js'
import { copyPeerRecord, sameIdentity, createCoalescingWriter, type PeerRecord, type SeenIdentity } from './peer-state.js'
import { createWakeSignal } from './wake-signal.js'
import type { PeerFailure, PeerState, PolicySettings } from './types.js'
import type { PeerSenderDeps, PeerSenderOptions, PeerSenderStatus } from './sender-types.js'
import { acceptPendingIdentity, createIdentityAdmission, describeIdentity, pinnedIdentityOf, type PinnedIdentity } from './sender-identity.js'
import { pausedRecheckMs, runPausedSession } from './sender-status-reporter.js'
import { positionsOf, runCopySession } from './copy-session.js'

// The sender's parts live beside it; importers keep using this module's names.
export { describeIdentity, type IdentityEvent, type PinnedIdentity } from './sender-identity.js'
export { queueStatusRepeatMs, statusTickMs } from './sender-status-reporter.js'
export { senderDrainTimeoutMs } from './copy-session.js'
export type { PeerSenderDeps, PeerSenderOptions, PeerSenderStatus } from './sender-types.js'

/** How long stop() waits for the sender's loop to finish, in milliseconds. */
export const senderStopTimeoutMs = 5_000

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
 */
export function createPeerSender(deps: PeerSenderDeps, options: PeerSenderOptions, initial: PeerRecord) {
  assert.ok(Number.isInteger(options.batchMessagesMax) && options.batchMessagesMax >= 1, 'batchMessagesMax must be a positive integer')
  assert.ok(options.batchBytesMax >= 1, 'batchBytesMax must be positive')
  assert.ok(Number.isInteger(options.inflightBatchesMax) && options.inflightBatchesMax >= 1, 'inflightBatchesMax must be a positive integer')
  assert.ok(options.ackTimeoutMs > 0 && options.pollIntervalMs > 0 && options.handshakeTimeoutMs > 0, 'timeouts must be positive')
  const { peer } = options
  const logger = deps.logger.child('sender', { peerHost: peer.host, peerPort: peer.port })
  const record: PeerRecord = copyPeerRecord(initial)
  const work = createWakeSignal()
  const control = createWakeSignal()
  const persist = createCoalescingWriter<PeerRecord>(
    (snapshot) => deps.state.write(snapshot),
    (error) => logger.error('cannot save the mirror cursor; it will be saved with the next acknowledgement', { error }),
  )

  let state: PeerState = record.paused ? 'paused' : 'idle'
  let reason: { code: string; expected: string | number | null; actual: string | number | null } | null = null
  let lastError: PeerFailure | null = null
  // When the last failure cleared (a healthy channel after it); lastError is then null.
  let lastRecoveredAtMs: number | null = null
  let lastSuccessAtMs: number | null = null
  let nextRetryAtMs: number | null = null
  let connectedSinceMs: number | null = null
  // Since when the peer has not answered at all (no connection, no handshake): the signal for
  // source takeover. Not reached yet at start; a refusal is an answer (the peer is up).
  let unreachableSinceMs: number | null = deps.clock.now()
  let peerPolicyFingerprint: string | null = null
  let policyMismatch: string[] = []
  let messagesSent = 0
  let bytesSent = 0
  let messagesRejected = 0
  let consecutiveFailures = 0
  let stopped = false
  let running: Promise<void> | undefined
  let stopping: Promise<void> | undefined
  let channel: MirrorChannel | undefined

  const saveRecord = (): void => persist.schedule(copyPeerRecord(record))
  const active = (): boolean => !stopped && !record.paused

  const batches = createCopyBatches({ archive: deps.archive, logger, batchMessagesMax: options.batchMessagesMax, batchBytesMax: options.batchBytesMax })
  const splitThresholdEntries = options.laneSplitThresholdEntries ?? laneSplitThresholdEntries(options.batchMessagesMax)
  // Bumped when a technician's accept resets the queue: a session of before stops taking acks.
  let queueEpoch = 0

  /** What the backfill returns of the peer's own messages (after an accepted store-id change); undefined: nothing. */
  const returnOwn = (): { serial: string; through: number } | undefined =>
    record.returnOwnThrough > record.cursor && record.serial !== null ? { serial: record.serial, through: record.returnOwnThrough } : undefined

  /** Moves the persisted lane positions (saved soon, coalesced); logs a merge. */
  function setPositions(next: LanePositions): void {
    const wasSplit = isSplit(positionsOf(record))
    record.cursor = next.cursor
    record.liveFrom = next.liveFrom
    record.liveCursor = next.liveCursor
    if (wasSplit && !isSplit(next)) logger.info('mirror backfill done: the copy lanes merged', { cursor: record.cursor })
    saveRecord()
    deps.onCursor?.()
  }

  /** The peer acknowledged `batch` (or it needed no acknowledgement: nothing in it to copy). */
  function acknowledged(batch: { lane: CopyLane; throughSequence: number; requeued: string[] }, rejected: readonly { id: string; code: string; message: string }[] = []): void {
    if (rejected.length > 0) {
      const atMs = deps.clock.now()
      record.rejected = addRejected(record.rejected, rejected.map(({ id, code, message }) => ({ id, code, message, atMs })))
    }
    if (batch.lane === 'requeue') {
      // A requeued copy never moves a cursor: only the list shrinks.
      record.requeued = removeRequeued(record.requeued, batch.requeued)
      saveRecord()
      deps.onCursor?.()
    } else {
      setPositions(acknowledge(positionsOf(record), batch.lane, batch.throughSequence))
    }
  }

  const pinnedIdentity = (): PinnedIdentity => pinnedIdentityOf(record)
  const { admit, tellIdentity } = createIdentityAdmission({ peer, record, logger, clock: deps.clock, save: saveRecord, onIdentity: deps.onIdentity })

  /** The peer's policy settings arrived on a channel to `serial`: kept with how they differ from ours. */
  function onPeerPolicy(serial: string, settings: PolicySettings): void {
    peerPolicyFingerprint = settings.fingerprint
    policyMismatch = deps.onPolicy?.({ host: peer.host, port: peer.port, serial }, settings) ?? []
  }

  /** While paused: a status-only channel (sender-status-reporter.ts). */
  function pausedSession(target: MirrorChannel): Promise<void> {
    return runPausedSession(
      {
        deps,
        stillPaused: () => !stopped && record.paused,
        waitControl: (timeoutMs) => control.wait(timeoutMs),
        onPeerPolicy: (settings) => onPeerPolicy(target.peer.serial, settings),
      },
      target,
    )
  }

  /** One authenticated connection: runs until it fails (throws) or the sender stops or pauses (returns); see copy-session.ts. */
  function session(target: MirrorChannel): Promise<void> {
    return runCopySession(
      {
        deps,
        options,
        logger,
        record,
        work,
        batches,
        splitThresholdEntries,
        active,
        queueEpoch: () => queueEpoch,
        setPositions,
        acknowledged,
        returnOwn,
        onAcknowledged(batch, rejected) {
          messagesSent += batch.messages - rejected
          messagesRejected += rejected
          bytesSent += batch.bytes
          lastSuccessAtMs = deps.clock.now()
          consecutiveFailures = 0
        },
        onCaughtUp() {
          consecutiveFailures = 0
        },
        onPeerPolicy: (settings) => onPeerPolicy(target.peer.serial, settings),
      },
      target,
    )
  }

  function recordFailure(error: unknown): number {
    consecutiveFailures++
    const mirrorError = error instanceof MirrorError ? error : undefined
    const code = (error as { code?: unknown })?.code
    const codeText = typeof code === 'string' ? code : 'FAILED'
    const refused = refusalStateCodes.has(codeText)
    const previousState = state
    const previousCode = reason?.code
    state = refused ? 'refused' : 'retrying'
    if (refused) unreachableSinceMs = null
    else unreachableSinceMs ??= deps.clock.now()
    reason = { code: codeText, expected: mirrorError?.expected ?? null, actual: mirrorError?.actual ?? null }
    lastError = { code: codeText, message: (error as Error)?.message ?? String(error), atMs: deps.clock.now() }
    connectedSinceMs = null
    const delayMs = retryDelayMs(consecutiveFailures, options, deps.random, refused)
    nextRetryAtMs = deps.clock.now() + delayMs
    const fields = { code: codeText, expected: reason.expected, actual: reason.actual, error: lastError.message, retryInMs: delayMs, failures: consecutiveFailures }
    // Retrying forever must not flood the log: a new kind of failure is a warning, a repeat is debug.
    if (previousState !== state || previousCode !== codeText) logger.warn(refused ? 'mirror peer refused; will retry' : 'mirror peer unavailable; will retry', fields)
    else logger.debug('mirror peer still unavailable', fields)
    return delayMs
  }

  /** One connection attempt to the peer, admitted as this peer's pinned identity. */
  function connectOnce(): Promise<MirrorChannel> {
    return (deps.connect ?? connectToPeer)(deps.transport, {
      host: peer.host,
      port: peer.port,
      sharedSecret: options.sharedSecret,
      timeoutMs: options.handshakeTimeoutMs,
      ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      admit,
    })
  }

  /** Paused: a status-only channel to the peer while it answers; otherwise a wait until resumed or pausedRecheckMs. */
  async function reportWhilePaused(): Promise<void> {
    let target: MirrorChannel
    try {
      target = await connectOnce()
    } catch (error) {
      logger.debug('paused mirror peer cannot be told its queue', { error })
      await control.wait(pausedRecheckMs)
      return
    }
    channel = target
    try {
      await pausedSession(target)
    } finally {
      channel = undefined
    }
    // The peer closed the channel: wait a little before the next status channel.
    if (!stopped && record.paused) await control.wait(options.retryDelayMsMax)
  }

  async function run(): Promise<void> {
    while (!stopped) {
      if (record.paused) {
        state = 'paused'
        nextRetryAtMs = null
        await reportWhilePaused()
        continue
      }
      let target: MirrorChannel
      try {
        target = await connectOnce()
      } catch (error) {
        // nextRetryAtMs stays set through the attempt: "retrying since then", until it succeeds.
        await control.wait(recordFailure(error))
        continue
      }
      channel = target
      try {
        if (!active()) continue
        if (state !== 'connected') logger.info('mirror peer connected', { serial: target.peer.serial, cursor: record.cursor })
        state = 'connected'
        reason = null
        if (lastError) {
          lastRecoveredAtMs = deps.clock.now()
          lastError = null
        }
        nextRetryAtMs = null
        connectedSinceMs = deps.clock.now()
        unreachableSinceMs = null
        await session(target)
      } catch (error) {
        const delayMs = recordFailure(error)
        await target.close()
        await control.wait(delayMs)
        continue
      } finally {
        await target.close()
        channel = undefined
        if (state === 'connected') connectedSinceMs = null
      }
    }
    await persist.flush()
  }

  return {
    /** Starts the copy loop. */
    start(): void {
      assert.equal(running, undefined, 'start() once')
      running = run().catch((error) => logger.error('mirror sender stopped unexpectedly', { error }))
    },

    /**
     * Stops copying: no new batches, acknowledgements in flight awaited up to
     * senderDrainTimeoutMs, the channel closed cleanly, the cursor saved. Idempotent; bounded
     * by senderStopTimeoutMs (a connect attempt still running then is closed when it ends).
     */
    stop(): Promise<void> {
      stopping ??= (async () => {
        stopped = true
        work.notify()
        control.notify()
        if (running) {
          let timer: NodeJS.Timeout | undefined
          const timedOut = new Promise<void>((resolve) => {
            timer = setTimeout(resolve, senderStopTimeoutMs).unref()
          })
          await Promise.race([running, timedOut])
          clearTimeout(timer)
        }
        await persist.flush()
        state = 'idle'
        connectedSinceMs = null
        nextRetryAtMs = null
      })()
      return stopping
    },

    /** New local mail may be waiting: look at the change log now. */
    wake(): void {
      work.notify()
    },

    /** Cuts a retry wait short: the next connection attempt starts now (an inbound appliance may be this peer). */
    retryNow(): void {
      control.notify()
    },

    /** Pauses (true) or resumes (false) copying; saved durably before it returns. @throws MirrorError STATE_FAILED */
    async setPaused(paused: boolean): Promise<void> {
      if (record.paused === paused) return
      record.paused = paused
      if (!paused) {
        state = 'idle'
        consecutiveFailures = 0
        // Whether the peer answered while paused is unknown: count from now.
        if (unreachableSinceMs !== null) unreachableSinceMs = deps.clock.now()
      }
      await persist.save(copyPeerRecord(record))
      work.notify()
      control.notify()
    },

    admit,

    /** True when `candidate` is exactly the pinned identity (serial, store id and certificate). */
    isPinned(candidate: { serial: string; storeId: string; fingerprint: string }): boolean {
      return sameIdentity(record, candidate)
    },

    /** The pinned identity (nulls before the first handshake). */
    pinned: pinnedIdentity,

    /** The identity waiting for `mirror accept`, or null. */
    pendingIdentity(): SeenIdentity | null {
      return record.pendingIdentity ? { ...record.pendingIdentity } : null
    },

    /**
     * A technician accepts the pending identity: it becomes the pinned one (saved durably before
     * this returns). A new store id is another archive: the cursor goes back to 0 and the whole
     * archive is copied to it (deduplicated by content where it already has something).
     * @throws MirrorError NOTHING_PENDING, STATE_FAILED
     */
    async acceptIdentity(): Promise<{ previous: PinnedIdentity; accepted: SeenIdentity; cursorReset: boolean }> {
      const accepted = record.pendingIdentity
      if (!accepted) {
        throw new MirrorError('NOTHING_PENDING', `the peer at ${peer.host}:${peer.port} has presented no other identity to accept`, {
          actual: describeIdentity(pinnedIdentity()),
        })
      }
      const previous = pinnedIdentity()
      const cursorReset = acceptPendingIdentity(record, accepted)
      if (cursorReset) {
        // Another archive: the whole queue starts again, and a session of before stops counting.
        // The new volume also gets back the peer's own messages held here (archived up to now).
        Object.assign(record, { cursor: 0, liveFrom: null, liveCursor: null, requeued: [], rejected: [], returnOwnThrough: await deps.archive.lastSequence() })
        queueEpoch++
      }
      await persist.save(copyPeerRecord(record))
      consecutiveFailures = 0
      if (state === 'refused') state = 'idle'
      reason = null
      deps.onCursor?.()
      tellIdentity({ action: 'mirror.identity-accepted', pinned: previous, presented: { serial: accepted.serial, storeId: accepted.storeId, fingerprint: accepted.fingerprint }, cursorReset })
      logger.warn('mirror peer identity accepted by a technician', { previous: describeIdentity(previous), accepted: describeIdentity(accepted), cursorReset })
      work.notify()
      control.notify()
      return { previous, accepted: { ...accepted }, cursorReset }
    },

    /** The acknowledged cursor: every change-log entry at or below it is acknowledged. */
    get cursor(): number {
      return record.cursor
    },

    /**
     * The change-log ranges the peer has not acknowledged, oldest first: (afterSequence,
     * throughSequence], throughSequence null = up to the head. One range, or two while a
     * backlog is copied beside new mail (the backfill, then the live lane).
     */
    pendingRanges(): PendingRange[] {
      return pendingRanges(positionsOf(record))
    },

    /**
     * Queues archived messages to be sent to the peer again, as their first local delivery
     * (like an `ingest` entry), after new mail and ahead of any backfill; saved durably before
     * it resolves. Each is sent and acknowledged like any copy but moves no cursor; it leaves
     * the list when its batch is acknowledged. Ids not archived (purged, malformed) or first
     * archived from a third appliance (its origin copies it) are dropped silently; the peer's
     * own messages are sent back to it (a repair after `mirror verify` found them missing there).
     * @returns how many distinct ids of `ids` are queued now (those already queued included)
     * @throws MirrorError REQUEUE_FULL when the list would pass requeuedIdsMax (nothing is
     *   added; retryable once the peer has taken some), STATE_FAILED when it cannot be saved
     *   (the ids stay queued in memory)
     */
    async requeue(ids: readonly string[]): Promise<number> {
      assert.ok(Array.isArray(ids), 'ids must be an array')
      const archived = await requeueCandidates(deps.archive, ids, record.serial)
      const next = addRequeued(record.requeued, archived)
      if (!next) {
        const wanted = new Set([...record.requeued, ...archived]).size
        throw new MirrorError('REQUEUE_FULL', `at most ${requeuedIdsMax} message ids may wait to be sent again to ${peer.host}:${peer.port}`, {
          expected: `<= ${requeuedIdsMax} ids`,
          actual: wanted,
          retryable: true,
        })
      }
      record.requeued = next
      await persist.save(copyPeerRecord(record))
      if (archived.length > 0) logger.info('messages requeued for the mirror peer', { ids: archived.length, requeued: record.requeued.length })
      deps.onCursor?.()
      work.notify()
      return archived.length
    },

    /** How many requeued ids wait (cheap: no copy of the list). */
    get requeuedCount(): number {
      return record.requeued.length
    },

    /** The requeued ids not yet acknowledged by the peer, oldest first. */
    requeuedIds(): string[] {
      return [...record.requeued]
    },

    /** Copies the peer refused for good (its ACK's rejected list), oldest first, the newest rejectedCopiesMax; persisted. */
    rejectedCopies(): RejectedCopyRecord[] {
      return record.rejected.map((item) => ({ ...item }))
    },

    /** True while an authenticated channel is open. */
    get connected(): boolean {
      return channel?.isOpen === true
    },

    status(): PeerSenderStatus {
      const pending = record.pendingIdentity
      // A changed identity stops copying whichever direction saw it: shown as the refusal it is.
      const shown = pending && state !== 'connected' ? { code: 'IDENTITY_CHANGED', expected: describeIdentity(pinnedIdentity()), actual: describeIdentity(pending) } : reason
      return {
        host: peer.host,
        port: peer.port,
        serial: record.serial,
        storeId: record.storeId,
        fingerprint: record.fingerprint,
        pendingIdentity: pending ? { ...pending } : null,
        // The flag is the truth at once; the loop closes its channel a moment later.
        state: record.paused ? 'paused' : pending && state !== 'connected' ? 'refused' : state,
        reasonCode: shown?.code ?? null,
        expected: shown?.expected ?? null,
        actual: shown?.actual ?? null,
        cursor: record.cursor,
        backfillThroughSequence: record.liveFrom,
        liveCursor: record.liveCursor,
        requeuedMessages: record.requeued.length,
        rejectedCopies: record.rejected.length,
        lastSuccessAtMs,
        lastError,
        lastRecoveredAtMs,
        nextRetryAtMs,
        unreachableSinceMs: record.paused ? null : unreachableSinceMs,
        policyMismatch: [...policyMismatch],
        peerPolicyFingerprint,
        connectedSinceMs,
        messagesSent,
        bytesSent,
        messagesRejected,
      }
    },
  }
}

/** A sender as createPeerSender makes it. */
export type PeerSender = ReturnType<typeof createPeerSender>
