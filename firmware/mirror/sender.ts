import assert from 'node:assert/strict'
import type { ChangeEntry } from '../archive/types.js'
import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import { MirrorError } from './errors.js'
import { connectToPeer, type ConnectToPeerOptions, type MirrorTransportDeps } from './listener.js'
import type { MirrorChannel } from './channel.js'
import type { MirrorSecret } from './secret.js'
import {
  CopyFrameType,
  decodeAck,
  decodeBatchFailure,
  decodePolicy,
  encodeBatchEnd,
  encodeMessageFrame,
  encodeMessageHeader,
  messageHeaderBytesMax,
  encodePolicy,
  encodeQueueStatus,
  messageChunkBytesMax,
  type MessageHeader,
} from './copy-protocol.js'
import { fitHeader, isCopied, refusalStateCodes, retryDelayMs, selectDeliveries } from './copy-plan.js'
import { copyPeerRecord, sameIdentity, createCoalescingWriter, previousSerialsMax, type EffectivePeer, type PeerRecord, type PeerStateStore, type SeenIdentity } from './peer-state.js'
import type { AdmissionCandidate } from './handshake.js'
import { createWakeSignal } from './wake-signal.js'
import type { CopyLimits, MirrorArchive, PeerFailure, PeerState, PeerStatus, PolicySettings } from './types.js'

/** How long stop() waits for the sender's loop to finish, in milliseconds. */
export const senderStopTimeoutMs = 5_000
/** How long a stopping or pausing sender waits for acknowledgements of batches in flight, in milliseconds. */
export const senderDrainTimeoutMs = 2_000
/** Unawaited frame bytes handed to TLS before the sender waits for them to be written (backpressure). */
const unflushedBytesMax = 4 * 1024 * 1024
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
}

/** What a sender reports; the service adds the queue figures and where the peer came from. */
export type PeerSenderStatus = Omit<PeerStatus, 'configuredBy' | 'queueMessages' | 'queueBytes' | 'queueEstimated' | 'lastSequence'>

/** True for failures that only say the connection went away, without a reason. */
function isBareClose(error: unknown): boolean {
  return error instanceof MirrorError && (error.code === 'CLOSED' || error.code === 'CONNECTION_CLOSED')
}

/** One message read for copying, its header already encoded. */
interface Copy {
  headerJson: Buffer
  raw: Uint8Array
}

/** A batch planned from the change log: copies for (afterSequence, throughSequence]. */
interface PlannedBatch {
  afterSequence: number
  throughSequence: number
  copies: Copy[]
  bytes: number
}

/** A batch sent and not yet acknowledged. */
interface InflightBatch {
  number: number
  throughSequence: number
  messages: number
  bytes: number
}

/**
 * Copies local mail to one peer, forever: connect (connectToPeer) → exchange policy
 * fingerprints → read the local change log after the cursor → send batches (bounded by
 * batchMessagesMax and batchBytesMax, up to inflightBatchesMax unacknowledged) → advance the
 * cursor on each acknowledgement, in order. Wakes at once on wake() (new local mail) and polls
 * every pollIntervalMs. Any failure closes the channel, forgets the batches in flight and
 * tries again after a capped, jittered backoff from the cursor, so nothing is lost; the peer
 * deduplicates what is sent twice. Pure until start().
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

  /** Reads one change-log entry's message for copying; undefined when there is nothing to send. */
  async function loadCopy(entry: ChangeEntry): Promise<Copy | undefined> {
    const meta = await deps.archive.getMeta(entry.id)
    // Purged since it was archived: nothing left to copy.
    if (!meta) return undefined
    const deliveries = selectDeliveries(entry, meta)
    // A delivery entry whose deliveries all came from peers (or were sent already) adds nothing.
    if (entry.kind === 'delivery' && deliveries.length === 0) return undefined
    let raw: Uint8Array | undefined
    try {
      // The store checks the bytes against the id, so a copy is never refused by the peer for it.
      raw = await deps.archive.getRaw(entry.id)
    } catch (error) {
      if ((error as { code?: unknown })?.code !== 'STORE_CORRUPT') throw error
      // Skipped rather than retried: one damaged record must not block the queue forever.
      logger.error('stored message failed its integrity check; not copied (the store reports it)', { id: entry.id, sequence: entry.sequence, error })
      return undefined
    }
    if (!raw) return undefined
    const header: MessageHeader = { sequence: entry.sequence, id: entry.id, kind: entry.kind as 'ingest' | 'delivery', sizeBytes: raw.byteLength, deliveries }
    let headerJson = encodeMessageHeader(header)
    if (headerJson.length > messageHeaderBytesMax) {
      headerJson = encodeMessageHeader(fitHeader(header).header)
      logger.warn('message envelope too large for one copy header; oldest deliveries or recipients left out', { id: entry.id })
    }
    return { headerJson, raw }
  }

  /** The next batch after `afterSequence`, or undefined when the change log has nothing newer. */
  async function planBatch(afterSequence: number): Promise<PlannedBatch | undefined> {
    const entries = await deps.archive.changes(afterSequence, options.batchMessagesMax)
    if (entries.length === 0) return undefined
    const batch: PlannedBatch = { afterSequence, throughSequence: afterSequence, copies: [], bytes: 0 }
    for (const entry of entries) {
      assert.ok(entry.sequence > batch.throughSequence, 'the change log must be in increasing sequence order')
      if (isCopied(entry)) {
        const copy = await loadCopy(entry)
        if (copy) {
          // The first message always goes, however large; the rest stop at the byte bound.
          if (batch.copies.length > 0 && batch.bytes + copy.raw.byteLength > options.batchBytesMax) break
          batch.copies.push(copy)
          batch.bytes += copy.raw.byteLength
        }
      }
      batch.throughSequence = entry.sequence
    }
    return batch
  }

  async function sendBatch(target: MirrorChannel, number: number, batch: PlannedBatch): Promise<void> {
    const unflushed: Promise<void>[] = []
    let unflushedBytes = 0
    const queue = (promise: Promise<void>, bytes: number): Promise<void> | undefined => {
      // A send that fails before anyone awaits it must not count as an unhandled rejection;
      // Promise.all below still sees the failure.
      promise.catch(() => undefined)
      unflushed.push(promise)
      unflushedBytes += bytes
      if (unflushedBytes < unflushedBytesMax) return undefined
      unflushedBytes = 0
      return Promise.all(unflushed.splice(0)).then(() => undefined)
    }
    for (const copy of batch.copies) {
      const { raw } = copy
      await queue(target.send(CopyFrameType.message, encodeMessageFrame(copy.headerJson, raw.subarray(0, messageChunkBytesMax))), Math.min(raw.byteLength, messageChunkBytesMax))
      for (let offset = messageChunkBytesMax; offset < raw.byteLength; offset += messageChunkBytesMax) {
        const chunk = raw.subarray(offset, offset + messageChunkBytesMax)
        await queue(target.send(CopyFrameType.messagePart, chunk), chunk.byteLength)
      }
    }
    const end = encodeBatchEnd({ batch: number, afterSequence: batch.afterSequence, throughSequence: batch.throughSequence, messages: batch.copies.length })
    await queue(target.send(CopyFrameType.batchEnd, end), end.length)
    await Promise.all(unflushed)
  }

  function advanceCursor(throughSequence: number): void {
    assert.ok(throughSequence >= record.cursor, 'the cursor never moves back within a serial')
    record.cursor = throughSequence
    saveRecord()
    deps.onCursor?.()
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

  /** One authenticated connection: runs until it fails (throws) or the sender stops or pauses (returns). */
  async function session(target: MirrorChannel): Promise<void> {
    const inflight: InflightBatch[] = []
    let failure: unknown
    let batchNumber = 0
    let ackTimer: NodeJS.Timeout | undefined
    const fail = (error: unknown): void => {
      // The first failure wins, except that a bare "connection closed" (often our own side
      // noticing first) gives way to the reason the peer gave (REFUSE, BATCH_FAILED).
      if (failure === undefined || (isBareClose(failure) && !isBareClose(error))) failure = error
      work.notify()
    }
    let queueSent: { key: string; atMs: number } | undefined
    let policySent = ''
    // Tells the peer how much is still queued for it: its searches say whether they are complete.
    const reportQueue = (force = false): void => {
      const depth = deps.queueDepth?.()
      if (!depth || !target.isOpen) return
      const key = `${depth.messages} ${depth.bytes} ${depth.estimated}`
      const now = deps.clock.monotonicMs()
      if (!force && queueSent?.key === key && now - queueSent.atMs < queueStatusRepeatMs) return
      queueSent = { key, atMs: now }
      target.send(CopyFrameType.queueStatus, encodeQueueStatus({ queuedMessages: depth.messages, queuedBytes: depth.bytes, estimated: depth.estimated })).catch(() => undefined)
    }
    // A policy or hold changed here while the channel stands: the peer compares again.
    const reportPolicy = (): void => {
      const settings = deps.policySettings()
      if (settings.fingerprint === policySent || !target.isOpen) return
      policySent = settings.fingerprint
      target.send(CopyFrameType.policy, encodePolicy(settings)).catch(() => undefined)
    }
    const statusTimer = setInterval(() => {
      reportQueue()
      reportPolicy()
    }, statusTickMs).unref()
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
        for (const rejected of ack.rejected) {
          logger.error('the peer refused a copy for good; it stays only here', { ...rejected, peerSerial: record.serial })
        }
        messagesSent += head.messages - ack.rejected.length
        messagesRejected += ack.rejected.length
        bytesSent += head.bytes
        lastSuccessAtMs = deps.clock.now()
        consecutiveFailures = 0
        advanceCursor(head.throughSequence)
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
      // Only ever on an authenticated channel: the settings are not for strangers.
      const settings = deps.policySettings()
      policySent = settings.fingerprint
      await target.send(CopyFrameType.policy, encodePolicy(settings))
      reportQueue(true)
      let afterSequence = record.cursor
      // The next batch, read from the archive while the previous one is being written out.
      let prefetched: Promise<PlannedBatch | undefined> | undefined
      while (active() && failure === undefined) {
        if (inflight.length >= options.inflightBatchesMax) {
          await work.wait(options.pollIntervalMs)
          continue
        }
        const batch = await (prefetched ?? planBatch(afterSequence))
        prefetched = undefined
        if (failure !== undefined || !active()) break
        if (!batch) {
          // Caught up: a healthy connection, whatever happened before.
          if (inflight.length === 0) consecutiveFailures = 0
          await work.wait(options.pollIntervalMs)
          continue
        }
        afterSequence = batch.throughSequence
        if (batch.copies.length === 0 && inflight.length === 0) {
          // Only entries that are not copied (peer copies, purges): nothing for the peer to confirm.
          advanceCursor(batch.throughSequence)
          continue
        }
        batchNumber++
        inflight.push({ number: batchNumber, throughSequence: batch.throughSequence, messages: batch.copies.length, bytes: batch.bytes })
        if (inflight.length === 1) armAckTimer()
        const sending = sendBatch(target, batchNumber, batch)
        // Reading the archive is CPU work and sending mostly waits for the socket: overlap them.
        prefetched = planBatch(afterSequence)
        prefetched.catch(() => undefined)
        await sending
      }
      if (failure === undefined && inflight.length > 0) {
        // Stopping or pausing: give the acknowledgements in flight a moment, so a restart resends little.
        const deadline = deps.clock.monotonicMs() + senderDrainTimeoutMs
        while (failure === undefined && inflight.length > 0 && deps.clock.monotonicMs() < deadline) await work.wait(deadline - deps.clock.monotonicMs())
      }
    } catch (error) {
      fail(error)
    } finally {
      clearTimeout(ackTimer)
      clearInterval(statusTimer)
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

  async function run(): Promise<void> {
    while (!stopped) {
      if (record.paused) {
        state = 'paused'
        nextRetryAtMs = null
        await control.wait(pausedRecheckMs)
        continue
      }
      let target: MirrorChannel
      try {
        target = await (deps.connect ?? connectToPeer)(deps.transport, {
          host: peer.host,
          port: peer.port,
          sharedSecret: options.sharedSecret,
          timeoutMs: options.handshakeTimeoutMs,
          ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
          admit,
        })
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
      if (cursorReset) record.cursor = 0
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

    /** The acknowledged cursor. */
    get cursor(): number {
      return record.cursor
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
