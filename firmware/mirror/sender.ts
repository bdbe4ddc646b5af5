import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import { MirrorError } from './errors.js'
import { connectToPeer, type ConnectToPeerOptions, type MirrorTransportDeps } from './listener.js'
import type { MirrorChannel } from './channel.js'
import type { MirrorSecret } from './secret.js'
import { CopyFrameType, decodeAck, decodeBatchFailure, decodePolicy, encodePolicy, encodeQueueStatus } from './copy-protocol.js'
import { refusalStateCodes, retryDelayMs } from './copy-plan.js'
import {
  acknowledge,
  addRejected,
  addRequeued,
  isSplit,
  laneSplitThresholdEntries,
  liveAcknowledged,
  nextLane,
  pendingRanges,
  removeRequeued,
  requeuedIdsMax,
  shouldSplit,
  split,
  type CopyLane,
  type LanePositions,
  type PendingRange,
  type RejectedCopyRecord,
} from './copy-lanes.js'
import { createCopyBatches, isArchiveId, type PlannedBatch } from './copy-batches.js'
import { copyPeerRecord, sameIdentity, createCoalescingWriter, previousSerialsMax, type EffectivePeer, type PeerRecord, type PeerStateStore, type SeenIdentity } from './peer-state.js'
import type { AdmissionCandidate } from './handshake.js'
import { createWakeSignal } from './wake-signal.js'
import type { CopyLimits, MirrorArchive, PeerFailure, PeerState, PeerStatus, PolicySettings } from './types.js'

/** How long stop() waits for the sender's loop to finish, in milliseconds. */
export const senderStopTimeoutMs = 5_000
/** How long a stopping or pausing sender waits for acknowledgements of batches in flight, in milliseconds. */
export const senderDrainTimeoutMs = 2_000
/** A paused sender re-checks its state this often, in milliseconds (resume() wakes it at once). */
const pausedRecheckMs = 60_000
/**
 * How often a connected sender looks whether its queue figures or this system's policy
 * settings changed, and tells the peer (QUEUE_STATUS, POLICY), in milliseconds.
 */
export const statusTickMs = 500
/** An unchanged queue figure is repeated this often all the same (the receiver's "as of" time), in milliseconds. */
export const queueStatusRepeatMs = 10_000

/** Injected collaborators of one peer's sender. */
export interface PeerSenderDeps {
  logger: Logger
  clock: Clock
  random: Random
  archive: MirrorArchive
  transport: MirrorTransportDeps
  state: PeerStateStore
  /** This system's retention and hold settings, sent to the peer once the channel is authenticated. */
  policySettings: () => PolicySettings
  /** Told after the cursor moved (queue figures follow it). */
  onCursor?: () => void
  /** Told of the peer's settings after each exchange; returns how they differ from ours (empty: same). */
  onPolicy?: (peer: { host: string; port: number; serial: string }, settings: PolicySettings) => string[]
  /** Told of identity events for the audit log: a first pin, a changed identity (once per new one), an accept. */
  onIdentity?: (event: IdentityEvent) => void
  /** What is still queued for this peer (the service's queue figures), told to the peer as QUEUE_STATUS. */
  queueDepth?: () => { messages: number; bytes: number; estimated: boolean }
  /** Opens an authenticated channel to the peer; connectToPeer (TLS) unless a test injects another transport. */
  connect?: (transport: MirrorTransportDeps, options: ConnectToPeerOptions) => Promise<MirrorChannel>
}

/** The pinned identity of a peer (all null before the first handshake). */
export interface PinnedIdentity {
  serial: string | null
  storeId: string | null
  fingerprint: string | null
}

/** An identity event of one peer, for the audit log. */
export interface IdentityEvent {
  action: 'mirror.peer-pinned' | 'mirror.identity-changed' | 'mirror.identity-accepted' | 'mirror.identity-restored'
  peer: { host: string; port: number }
  /** What was pinned before the event. */
  pinned: PinnedIdentity
  /** What the peer presented (pinned, changed) or what was accepted. */
  presented: PinnedIdentity & { address?: string; direction?: 'inbound' | 'outbound' }
  /** Accept only: the cursor went back to 0 because the store id changed (the new archive is backfilled). */
  cursorReset?: boolean
}

/** `serial S, store 0123456789abcdef…, certificate 0123456789abcdef…`: an identity in one short line. */
export function describeIdentity(identity: PinnedIdentity): string {
  const short = (value: string | null): string => (value === null ? 'none' : `${value.slice(0, 16)}…`)
  return `serial ${identity.serial ?? 'none'}, store ${short(identity.storeId)}, certificate ${short(identity.fingerprint)}`
}

/** Where a sender copies to and how (see CopyLimits for the limits' meaning). */
export interface PeerSenderOptions extends CopyLimits {
  peer: EffectivePeer
  sharedSecret: MirrorSecret
  /** Fallback poll of the change log when no wake() came, in milliseconds. */
  pollIntervalMs: number
  /**
   * Unsent change-log entries above which the queue splits into a backfill and a live lane;
   * laneSplitThresholdEntries(batchMessagesMax) when not given, Infinity never splits (benchmarks
   * compare with one lane).
   */
  laneSplitThresholdEntries?: number
}

/** What a sender reports; the service adds the queue figures and where the peer came from. */
export type PeerSenderStatus = Omit<PeerStatus, 'configuredBy' | 'queueMessages' | 'queueBytes' | 'queueEstimated' | 'lastSequence' | 'lastVerify'>

/** True for failures that only say the connection went away, without a reason. */
function isBareClose(error: unknown): boolean {
  return error instanceof MirrorError && (error.code === 'CLOSED' || error.code === 'CONNECTION_CLOSED')
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

/** The lane positions of a record. */
const positionsOf = (record: PeerRecord): LanePositions => ({ cursor: record.cursor, liveFrom: record.liveFrom, liveCursor: record.liveCursor })

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

  const pinnedIdentity = (): PinnedIdentity => ({ serial: record.serial, storeId: record.storeId, fingerprint: record.fingerprint })

  function tellIdentity(event: Omit<IdentityEvent, 'peer'>): void {
    try {
      deps.onIdentity?.({ peer: { host: peer.host, port: peer.port }, ...event })
    } catch (error) {
      logger.error('mirror identity audit failed', { error })
    }
  }

  /**
   * Admission of a proven appliance as this peer, inbound or outbound. The first one is
   * pinned (serial, store id, certificate); afterwards any difference is refused with
   * IDENTITY_CHANGED and kept as the pending identity for a technician's `mirror accept`, and
   * the cursor does not move: the queue waits for the real peer or the accept. A version-1
   * state file has only the serial pinned: a matching serial completes the pin.
   */
  function admit(candidate: AdmissionCandidate): MirrorError | undefined {
    const presented = { serial: candidate.serial, storeId: candidate.storeId, fingerprint: candidate.fingerprint }
    const before = pinnedIdentity()
    const firstContact = record.serial === null || (record.storeId === null && record.serial === candidate.serial)
    if (firstContact) {
      Object.assign(record, presented)
      record.pendingIdentity = null
      saveRecord()
      logger.info('mirror peer identity pinned', { ...presented, address: candidate.address, direction: candidate.direction })
      tellIdentity({ action: 'mirror.peer-pinned', pinned: before, presented: { ...presented, address: candidate.address, direction: candidate.direction } })
      return undefined
    }
    if (sameIdentity(record, candidate)) {
      if (record.pendingIdentity) {
        // The pinned appliance is back: whatever presented itself meanwhile is no longer pending.
        logger.warn('the pinned mirror peer is back; the other identity seen at its place is dropped', { dropped: describeIdentity(record.pendingIdentity) })
        tellIdentity({ action: 'mirror.identity-restored', pinned: before, presented: { ...record.pendingIdentity } })
        record.pendingIdentity = null
        saveRecord()
      }
      return undefined
    }
    const now = deps.clock.now()
    const pending = record.pendingIdentity
    const samePending = pending !== null && sameIdentity(pending, candidate)
    const seen: SeenIdentity = {
      ...presented,
      model: candidate.model,
      firmwareVersion: candidate.firmwareVersion,
      address: candidate.address,
      listenPort: candidate.listenPort,
      firstSeenAtMs: samePending ? pending.firstSeenAtMs : now,
      lastSeenAtMs: now,
    }
    record.pendingIdentity = seen
    saveRecord()
    if (!samePending) {
      logger.error('a mirror peer presented another identity than the one pinned; nothing is copied until a technician accepts it (mirror accept)', {
        expected: describeIdentity(before),
        actual: describeIdentity(presented),
        address: candidate.address,
        direction: candidate.direction,
      })
      tellIdentity({ action: 'mirror.identity-changed', pinned: before, presented: { ...presented, address: candidate.address, direction: candidate.direction } })
    }
    return identityChanged(before, presented)
  }

  /**
   * Tells the peer, on an authenticated channel, this system's policy settings (again when they
   * change) and how much is still queued for it (QUEUE_STATUS, again when it changes and every
   * queueStatusRepeatMs): the peer's searches say whether they are complete.
   */
  function statusReporter(target: MirrorChannel) {
    let queueSent: { key: string; atMs: number } | undefined
    let policySent = ''
    let timer: NodeJS.Timeout | undefined
    const reportQueue = (force = false): void => {
      const depth = deps.queueDepth?.()
      if (!depth || !target.isOpen) return
      const key = `${depth.messages} ${depth.bytes} ${depth.estimated}`
      const now = deps.clock.monotonicMs()
      if (!force && queueSent?.key === key && now - queueSent.atMs < queueStatusRepeatMs) return
      queueSent = { key, atMs: now }
      target.send(CopyFrameType.queueStatus, encodeQueueStatus({ queuedMessages: depth.messages, queuedBytes: depth.bytes, estimated: depth.estimated })).catch(() => undefined)
    }
    const reportPolicy = (): void => {
      const settings = deps.policySettings()
      if (settings.fingerprint === policySent || !target.isOpen) return
      policySent = settings.fingerprint
      target.send(CopyFrameType.policy, encodePolicy(settings)).catch(() => undefined)
    }
    return {
      reportQueue,
      /** Sends the settings and the queue now, then watches both. Only ever on an authenticated channel: the settings are not for strangers. */
      async start(): Promise<void> {
        const settings = deps.policySettings()
        policySent = settings.fingerprint
        await target.send(CopyFrameType.policy, encodePolicy(settings))
        reportQueue(true)
        timer = setInterval(() => {
          reportQueue()
          reportPolicy()
        }, statusTickMs).unref()
      },
      stop(): void {
        clearInterval(timer)
      },
    }
  }

  /**
   * While paused: a channel that copies nothing but keeps telling the peer how much waits for
   * it, so its searches say they may be incomplete (a paused peer would otherwise look caught
   * up). Returns when resumed or stopped, or when the channel ends.
   */
  async function pausedSession(target: MirrorChannel): Promise<void> {
    const status = statusReporter(target)
    const reader = (async () => {
      for (;;) {
        const frame = await target.receive()
        if (frame === null) return
        if (frame.type === CopyFrameType.policy) {
          const settings = decodePolicy(frame.payload)
          peerPolicyFingerprint = settings.fingerprint
          policyMismatch = deps.onPolicy?.({ host: peer.host, port: peer.port, serial: target.peer.serial }, settings) ?? []
        }
      }
    })().catch(() => undefined)
    try {
      await status.start()
      while (!stopped && record.paused && target.isOpen) await Promise.race([control.wait(pausedRecheckMs), target.closed])
    } finally {
      status.stop()
      await target.close()
      await reader
    }
  }

  /** One authenticated connection: runs until it fails (throws) or the sender stops or pauses (returns). */
  async function session(target: MirrorChannel): Promise<void> {
    const inflight: InflightBatch[] = []
    const sessionEpoch = queueEpoch
    // Requeued ids in a batch in flight (a subset of record.requeued): not planned again.
    const requeueInFlight = new Set<string>()
    let failure: unknown
    let batchNumber = 0
    let ackTimer: NodeJS.Timeout | undefined
    const fail = (error: unknown): void => {
      // The first failure wins, except that a bare "connection closed" (often our own side
      // noticing first) gives way to the reason the peer gave (REFUSE, BATCH_FAILED).
      if (failure === undefined || (isBareClose(failure) && !isBareClose(error))) failure = error
      work.notify()
    }
    const status = statusReporter(target)
    const { reportQueue } = status
    const armAckTimer = (): void => {
      clearTimeout(ackTimer)
      ackTimer = inflight.length > 0 ? setTimeout(onAckTimeout, options.ackTimeoutMs).unref() : undefined
    }
    const onAckTimeout = (): void => {
      fail(
        new MirrorError('ACK_TIMEOUT', `no acknowledgement from the peer within ${options.ackTimeoutMs} ms`, {
          expected: `<= ${options.ackTimeoutMs} ms`,
          actual: null,
        }),
      )
      void target.close()
    }

    function onFrame(type: number, payload: Buffer): void {
      if (type === CopyFrameType.ack) {
        const ack = decodeAck(payload)
        const head = inflight[0]
        if (!head || ack.batch !== head.number || ack.throughSequence !== head.throughSequence) {
          throw new MirrorError('PROTOCOL', `acknowledgement of batch ${ack.batch} out of order`, { expected: head?.number ?? null, actual: ack.batch })
        }
        inflight.shift()
        armAckTimer()
        // A technician's accept reset the queue meanwhile: this session's batches count for nothing.
        if (sessionEpoch !== queueEpoch) return
        for (const rejected of ack.rejected) {
          logger.error('the peer refused a copy for good; it stays only here', { ...rejected, peerSerial: record.serial })
        }
        if (head.lane === 'requeue') for (const id of head.requeued) requeueInFlight.delete(id)
        messagesSent += head.messages - ack.rejected.length
        messagesRejected += ack.rejected.length
        bytesSent += head.bytes
        lastSuccessAtMs = deps.clock.now()
        consecutiveFailures = 0
        acknowledged(head, ack.rejected)
        reportQueue()
        work.notify()
      } else if (type === CopyFrameType.policy) {
        const settings = decodePolicy(payload)
        peerPolicyFingerprint = settings.fingerprint
        policyMismatch = deps.onPolicy?.({ host: peer.host, port: peer.port, serial: target.peer.serial }, settings) ?? []
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

    const reader = (async () => {
      for (;;) {
        const frame = await target.receive()
        if (frame === null) throw new MirrorError('CONNECTION_CLOSED', 'the peer closed the mirror channel')
        onFrame(frame.type, frame.payload)
      }
    })().catch((error: unknown) => {
      if (error instanceof MirrorError && error.code === 'PROTOCOL' && error.origin === 'local' && target.isOpen) void target.close(error)
      fail(error)
    })

    try {
      await status.start()
      // Read positions: what was sent (or acknowledged, at the start) in each change-log lane.
      let liveNext = liveAcknowledged(positionsOf(record))
      let backfillNext = record.cursor
      // The live lane's change log had nothing readable although the head said so: wait for a wake-up.
      let liveDry = false
      // The next batch of a lane, read from the archive while the previous one is being written out.
      let prefetched: { key: string; batch: Promise<PlannedBatch | undefined> } | undefined
      const laneKey = (lane: CopyLane, after: number): string => `${lane} ${after} ${lane === 'backfill' ? record.liveFrom : null}`
      const planLane = (lane: 'live' | 'backfill', after: number): Promise<PlannedBatch | undefined> => {
        const key = laneKey(lane, after)
        const ready = prefetched?.key === key ? prefetched.batch : undefined
        prefetched = undefined
        return ready ?? batches.plan(lane, after, lane === 'backfill' ? record.liveFrom : null, returnOwn())
      }
      const inflightOf = (lane: CopyLane): number => inflight.filter((batch) => batch.lane === lane).length

      while (active() && failure === undefined && sessionEpoch === queueEpoch) {
        const head = deps.archive.lastSequence()
        if (shouldSplit(positionsOf(record), liveNext, head, splitThresholdEntries)) {
          // A backlog: what was sent so far and up to the head is the backfill; new mail goes first.
          setPositions(split(positionsOf(record), head))
          for (const batch of inflight) if (batch.lane === 'live') batch.lane = 'backfill'
          backfillNext = liveNext
          liveNext = head
          prefetched = undefined
          logger.info('mirror backlog: new mail goes first, the backlog is copied beside it', { cursor: record.cursor, backfillThroughSequence: head, backlogEntries: head - record.cursor })
        }
        const lane = nextLane(
          {
            inflight: { live: inflightOf('live'), backfill: inflightOf('backfill'), requeue: inflightOf('requeue') },
            liveUnsent: !liveDry && liveNext < head,
            requeueUnsent: record.requeued.length > requeueInFlight.size,
            backfillUnsent: record.liveFrom !== null && backfillNext < record.liveFrom,
          },
          options.inflightBatchesMax,
        )
        if (lane === undefined) {
          // Caught up (or waiting for acknowledgements): a healthy connection, whatever happened before.
          if (inflight.length === 0) consecutiveFailures = 0
          await work.wait(options.pollIntervalMs)
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
        if (failure !== undefined || !active() || sessionEpoch !== queueEpoch) break
        if (!batch) {
          if (lane === 'live') liveDry = true
          continue
        }
        if (lane === 'live') liveNext = batch.throughSequence
        else if (lane === 'backfill') backfillNext = batch.throughSequence
        if (batch.copies.length === 0 && (lane === 'requeue' || inflightOf(lane) === 0)) {
          // Nothing to copy (peer copies, purges, ids no longer archived): nothing for the peer to confirm.
          acknowledged(batch)
          continue
        }
        for (const id of batch.requeued) requeueInFlight.add(id)
        batchNumber++
        inflight.push({ number: batchNumber, lane, throughSequence: batch.throughSequence, messages: batch.copies.length, bytes: batch.bytes, requeued: batch.requeued })
        if (inflight.length === 1) armAckTimer()
        const sending = batches.send(target, batchNumber, batch)
        // Reading the archive is CPU work and sending mostly waits for the socket: overlap them.
        if (lane !== 'requeue') {
          const after = lane === 'live' ? liveNext : backfillNext
          prefetched = { key: laneKey(lane, after), batch: batches.plan(lane, after, lane === 'backfill' ? record.liveFrom : null, returnOwn()) }
          prefetched.batch.catch(() => undefined)
        }
        await sending
      }
      if (failure === undefined && inflight.length > 0 && sessionEpoch === queueEpoch) {
        // Stopping or pausing: give the acknowledgements in flight a moment, so a restart resends little.
        const deadline = deps.clock.monotonicMs() + senderDrainTimeoutMs
        while (failure === undefined && inflight.length > 0 && deps.clock.monotonicMs() < deadline) await work.wait(deadline - deps.clock.monotonicMs())
      }
    } catch (error) {
      fail(error)
    } finally {
      clearTimeout(ackTimer)
      status.stop()
    }
    if (failure !== undefined) {
      await target.close()
      await reader
      throw failure
    }
  }

  function identityChanged(pinned: PinnedIdentity, presented: PinnedIdentity): MirrorError {
    return new MirrorError(
      'IDENTITY_CHANGED',
      `the peer at ${peer.host}:${peer.port} is not the appliance pinned for it; a technician must accept the new identity (mirror accept ${peer.host}:${peer.port})`,
      { expected: describeIdentity(pinned), actual: describeIdentity(presented) },
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
      const cursorReset = previous.storeId !== accepted.storeId
      if (previous.serial !== null && previous.serial !== accepted.serial) {
        record.previousSerials = [...record.previousSerials, previous.serial].slice(-previousSerialsMax)
      }
      record.serial = accepted.serial
      record.storeId = accepted.storeId
      record.fingerprint = accepted.fingerprint
      record.pendingIdentity = null
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
      const archived: string[] = []
      for (const id of new Set(ids)) {
        if (!isArchiveId(id)) continue
        const meta = await deps.archive.getMeta(id)
        // Local mail, or the peer's own (sent back as a repair); a third appliance's is copied by it.
        if (meta && (meta.origin === null || meta.origin === record.serial)) archived.push(id)
      }
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
