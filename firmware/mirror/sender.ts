import assert from 'node:assert/strict'
import type { ChangeEntry } from '../archive/types.js'
import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import { MirrorError } from './errors.js'
import { connectToPeer, type MirrorTransportDeps } from './listener.js'
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
  messageChunkBytesMax,
  type MessageHeader,
} from './copy-protocol.js'
import { fitHeader, isCopied, refusalStateCodes, retryDelayMs, selectDeliveries } from './copy-plan.js'
import { createCoalescingWriter, previousSerialsMax, type EffectivePeer, type PeerRecord, type PeerStateStore } from './peer-state.js'
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
  const record: PeerRecord = { ...initial, previousSerials: [...initial.previousSerials] }
  const work = createWakeSignal()
  const control = createWakeSignal()
  const persist = createCoalescingWriter<PeerRecord>(
    (snapshot) => deps.state.write(snapshot),
    (error) => logger.error('cannot save the mirror cursor; it will be saved with the next acknowledgement', { error }),
  )

  let state: PeerState = record.paused ? 'paused' : 'idle'
  let reason: { code: string; expected: string | number | null; actual: string | number | null } | null = null
  let lastError: PeerFailure | null = null
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

  const saveRecord = (): void => persist.schedule({ ...record, previousSerials: [...record.previousSerials] })
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

  /** The peer's serial from the handshake; a different one than saved means another appliance. */
  function adoptSerial(serial: string): void {
    if (record.serial === serial) return
    if (record.serial !== null) {
      // Another appliance answers at this address (replaced, or re-identified). What the old
      // one acknowledged says nothing about the new one's archive: copy everything again; the
      // new peer deduplicates whatever it already has.
      logger.warn('the peer at this address has a different serial; copying the whole archive to it', {
        previousSerial: record.serial,
        serial,
        previousCursor: record.cursor,
      })
      record.previousSerials = [...record.previousSerials, record.serial].slice(-previousSerialsMax)
      record.cursor = 0
    }
    record.serial = serial
    saveRecord()
    deps.onCursor?.()
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
      await target.send(CopyFrameType.policy, encodePolicy(deps.policySettings()))
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
    }
    if (failure !== undefined) {
      await target.close()
      await reader
      throw failure
    }
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
        target = await connectToPeer(deps.transport, {
          host: peer.host,
          port: peer.port,
          sharedSecret: options.sharedSecret,
          timeoutMs: options.handshakeTimeoutMs,
          ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
        })
      } catch (error) {
        // nextRetryAtMs stays set through the attempt: "retrying since then", until it succeeds.
        await control.wait(recordFailure(error))
        continue
      }
      channel = target
      try {
        if (!active()) continue
        adoptSerial(target.peer.serial)
        if (state !== 'connected') logger.info('mirror peer connected', { serial: target.peer.serial, cursor: record.cursor })
        state = 'connected'
        reason = null
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
      await persist.save({ ...record, previousSerials: [...record.previousSerials] })
      work.notify()
      control.notify()
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
      return {
        host: peer.host,
        port: peer.port,
        serial: record.serial,
        // The flag is the truth at once; the loop closes its channel a moment later.
        state: record.paused ? 'paused' : state,
        reasonCode: reason?.code ?? null,
        expected: reason?.expected ?? null,
        actual: reason?.actual ?? null,
        cursor: record.cursor,
        lastSuccessAtMs,
        lastError,
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
