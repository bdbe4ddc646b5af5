import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import type { MirrorChannel } from './channel.js'
import { laneSplitThresholdEntries } from './copy-lanes.js'
import { createCopyBatches, type CopyBatches } from './copy-batches.js'
import { copyPeerRecord, createCoalescingWriter, type EffectivePeer, type PeerRecord } from './peer-state.js'
import { createWakeSignal, type WakeSignal } from './wake-signal.js'
import { createSenderLink, type SenderLink } from './sender-link.js'
import type { PeerSenderDeps, PeerSenderOptions } from './sender-types.js'

/** The coalescing writer of a peer's record. */
export type PeerRecordWriter = ReturnType<typeof createCoalescingWriter<PeerRecord>>

/** What one peer's sender shares between its parts (loop, queue, operations, status); changed in place. */
export interface SenderContext {
  deps: PeerSenderDeps
  options: PeerSenderOptions
  peer: EffectivePeer
  logger: Logger
  /** The peer's record (lane positions, requeued ids, identity, paused): changed in place, saved through persist. */
  record: PeerRecord
  persist: PeerRecordWriter
  /** Wakes the copy session: new mail, an acknowledgement, a stop or pause. */
  work: WakeSignal
  /** Wakes the connection loop out of a retry or paused wait. */
  control: WakeSignal
  link: SenderLink
  batches: CopyBatches
  /** Unsent change-log entries above which the queue splits into a backfill and a live lane. */
  splitThresholdEntries: number
  /** Bumped when a technician's accept resets the queue: a session of before stops taking acks. */
  queueEpoch: number
  stopped: boolean
  /** The open channel to the peer (copy or status-only), if any. */
  channel: MirrorChannel | undefined
}

/** Checks the options and builds a sender's context from its record; no I/O. */
export function createSenderContext(deps: PeerSenderDeps, options: PeerSenderOptions, initial: PeerRecord): SenderContext {
  assert.ok(Number.isInteger(options.batchMessagesMax) && options.batchMessagesMax >= 1, 'batchMessagesMax must be a positive integer')
  assert.ok(options.batchBytesMax >= 1, 'batchBytesMax must be positive')
  assert.ok(Number.isInteger(options.inflightBatchesMax) && options.inflightBatchesMax >= 1, 'inflightBatchesMax must be a positive integer')
  assert.ok(options.ackTimeoutMs > 0 && options.pollIntervalMs > 0 && options.handshakeTimeoutMs > 0, 'timeouts must be positive')
  const { peer } = options
  const logger = deps.logger.child('sender', { peerHost: peer.host, peerPort: peer.port })
  const record = copyPeerRecord(initial)
  return {
    deps,
    options,
    peer,
    logger,
    record,
    persist: createCoalescingWriter<PeerRecord>(
      (snapshot) => deps.state.write(snapshot),
      (error) => logger.error('cannot save the mirror cursor; it will be saved with the next acknowledgement', { error }),
    ),
    work: createWakeSignal(),
    control: createWakeSignal(),
    link: createSenderLink(record.paused, deps.clock.now()),
    batches: createCopyBatches({ archive: deps.archive, logger, batchMessagesMax: options.batchMessagesMax, batchBytesMax: options.batchBytesMax }),
    splitThresholdEntries: options.laneSplitThresholdEntries ?? laneSplitThresholdEntries(options.batchMessagesMax),
    queueEpoch: 0,
    stopped: false,
    channel: undefined,
  }
}

/** Saves the record soon (coalesced: the latest state wins). */
export const scheduleSave = (context: SenderContext): void => context.persist.schedule(copyPeerRecord(context.record))

/** Saves the record and resolves once it is written. @throws whatever the state store's write throws */
export const saveNow = (context: SenderContext): Promise<void> => context.persist.save(copyPeerRecord(context.record))

/** True while the sender copies: not stopped, not paused. */
export const isActive = (context: SenderContext): boolean => !context.stopped && !context.record.paused
