import assert from 'node:assert/strict'
import type { ChangeEntry } from '../archive/types.js'
import type { Logger } from '../common/logger.js'
import type { MirrorChannel } from './channel.js'
import { CopyFrameType, encodeBatchEnd, encodeMessageFrame, encodeMessageHeader, messageChunkBytesMax, messageHeaderBytesMax, type MessageHeader } from './copy-protocol.js'
import { fitHeader, isCopied, selectDeliveries } from './copy-plan.js'
import type { CopyLane } from './copy-lanes.js'
import type { MirrorArchive } from './types.js'

/**
 * Reads batches for a peer from the archive and writes them to a channel: the I/O half of the
 * sender (which decides what to read in copy-lanes.ts and keeps the positions).
 */

/** Unawaited frame bytes handed to TLS before a batch waits for them to be written (backpressure). */
const unflushedBytesMax = 4 * 1024 * 1024
/** A requeued id must look like an archive id (hex SHA-256); anything else is not archived. */
const archiveId = /^[0-9a-f]{64}$/

/** One message read for copying, its header already encoded. */
export interface Copy {
  id: string
  headerJson: Buffer
  raw: Uint8Array
}

/**
 * A batch planned for one lane. Change-log lanes cover (afterSequence, throughSequence]; a
 * requeue batch has afterSequence === throughSequence (the cursor when planned: it covers no
 * part of the change log, which today's receivers accept) and lists its ids in `requeued`.
 */
export interface PlannedBatch {
  lane: CopyLane
  afterSequence: number
  throughSequence: number
  copies: Copy[]
  bytes: number
  /** Requeue only: every id the batch took from the list, sent or found purged (removed on its acknowledgement). */
  requeued: string[]
}

/** Collaborators and limits of a batch reader. */
export interface CopyBatchDeps {
  archive: MirrorArchive
  logger: Logger
  batchMessagesMax: number
  batchBytesMax: number
}

/** True when `id` has the shape of an archive id. */
export function isArchiveId(id: unknown): id is string {
  return typeof id === 'string' && archiveId.test(id)
}

/**
 * Of `ids`, the distinct archived ones a requeue may send to the peer whose serial is
 * `peerSerial`: local mail, or the peer's own (sent back as a repair); a third appliance's is
 * copied by it, and ids not archived (purged, malformed) are dropped. In the order given.
 */
export async function requeueCandidates(archive: MirrorArchive, ids: readonly string[], peerSerial: string | null): Promise<string[]> {
  const archived: string[] = []
  for (const id of new Set(ids)) {
    if (!isArchiveId(id)) continue
    const meta = await archive.getMeta(id)
    if (meta && (meta.origin === null || meta.origin === peerSerial)) archived.push(id)
  }
  return archived
}

/** The raw bytes of a stored message, or undefined when purged or damaged (the store reports damage itself). */
async function readRaw(deps: CopyBatchDeps, id: string, sequence: number): Promise<Uint8Array | undefined> {
  try {
    // The store checks the bytes against the id, so a copy is never refused by the peer for it.
    return await deps.archive.getRaw(id)
  } catch (error) {
    if ((error as { code?: unknown })?.code !== 'STORE_CORRUPT') throw error
    // Skipped rather than retried: one damaged record must not block the queue forever.
    deps.logger.error('stored message failed its integrity check; not copied (the store reports it)', { id, sequence, error })
    return undefined
  }
}

/** A copy with its header encoded, fitted under messageHeaderBytesMax when it is too large (logged). */
function encodeCopy(logger: Logger, header: MessageHeader, raw: Uint8Array): Copy {
  let headerJson = encodeMessageHeader(header)
  if (headerJson.length > messageHeaderBytesMax) {
    headerJson = encodeMessageHeader(fitHeader(header).header)
    logger.warn('message envelope too large for one copy header; oldest deliveries or recipients left out', { id: header.id })
  }
  return { id: header.id, headerJson, raw }
}

/**
 * Reads one change-log entry's message for copying; undefined when there is nothing to send.
 * `requeueFor` (requeued ids: the peer's serial): a message first archived from a third
 * appliance is not sent (its origin copies it), and one first archived from this very peer
 * goes back to it without deliveries (a repair: the receiver records a bare copy).
 */
async function loadCopy(deps: CopyBatchDeps, entry: ChangeEntry, requeueFor?: string | null): Promise<Copy | undefined> {
  const meta = await deps.archive.getMeta(entry.id)
  // Purged since it was archived: nothing left to copy.
  if (!meta) return undefined
  const returning = requeueFor !== undefined && requeueFor !== null && meta.origin === requeueFor
  if (requeueFor !== undefined && meta.origin !== null && !returning) return undefined
  const deliveries = selectDeliveries(entry, meta)
  // Nothing local to send: a delivery entry whose deliveries came from peers (or were sent
  // already), or an old ingest entry of a message purged here and since archived again from a
  // peer (its local delivery is gone; sending it would forward the peer's copy).
  if (deliveries.length === 0 && !returning) return undefined
  const raw = await readRaw(deps, entry.id, entry.sequence)
  if (!raw) return undefined
  return encodeCopy(deps.logger, { sequence: entry.sequence, id: entry.id, kind: entry.kind as 'ingest' | 'delivery', sizeBytes: raw.byteLength, deliveries }, raw)
}

/** Adds `copy` unless the byte bound is reached (the first copy always goes, however large). */
function fits(batch: PlannedBatch, copy: Copy, batchBytesMax: number): boolean {
  if (batch.copies.length > 0 && batch.bytes + copy.raw.byteLength > batchBytesMax) return false
  batch.copies.push(copy)
  batch.bytes += copy.raw.byteLength
  return true
}

/** See CopyBatches.plan. */
async function planLaneBatch(
  deps: CopyBatchDeps,
  lane: 'live' | 'backfill',
  afterSequence: number,
  boundSequence: number | null,
  returnOwn?: { serial: string; through: number },
): Promise<PlannedBatch | undefined> {
  const limit = boundSequence === null ? deps.batchMessagesMax : Math.min(deps.batchMessagesMax, boundSequence - afterSequence)
  if (limit <= 0) return undefined
  const entries = await deps.archive.changes(afterSequence, limit)
  const inBound = boundSequence === null ? entries : entries.filter((entry) => entry.sequence <= boundSequence)
  if (inBound.length === 0 && boundSequence === null) return undefined
  const batch: PlannedBatch = { lane, afterSequence, throughSequence: afterSequence, copies: [], bytes: 0, requeued: [] }
  for (const entry of inBound) {
    assert.ok(entry.sequence > batch.throughSequence, 'the change log must be in increasing sequence order')
    // After the peer's volume was replaced: its own messages held here go back to it too.
    const returning = returnOwn !== undefined && entry.kind === 'ingest' && entry.origin === returnOwn.serial && entry.sequence <= returnOwn.through
    const copy = isCopied(entry) ? await loadCopy(deps, entry) : returning ? await loadCopy(deps, entry, returnOwn.serial) : undefined
    if (copy && !fits(batch, copy, deps.batchBytesMax)) return batch
    batch.throughSequence = entry.sequence
  }
  // Fewer entries than asked for, or some beyond the bound: nothing else lies up to the bound.
  if (boundSequence !== null && (entries.length < limit || inBound.length < entries.length)) batch.throughSequence = boundSequence
  return batch.throughSequence > afterSequence ? batch : undefined
}

/** See CopyBatches.planRequeue. */
async function planRequeueBatch(deps: CopyBatchDeps, ids: readonly string[], cursor: number, peerSerial: string | null): Promise<PlannedBatch> {
  const batch: PlannedBatch = { lane: 'requeue', afterSequence: cursor, throughSequence: cursor, copies: [], bytes: 0, requeued: [] }
  for (const id of ids.slice(0, deps.batchMessagesMax)) {
    const entry: ChangeEntry = { sequence: Math.max(1, cursor), kind: 'ingest', id, atMs: 0, origin: null }
    const copy = isArchiveId(id) ? await loadCopy(deps, entry, peerSerial) : undefined
    if (copy && !fits(batch, copy, deps.batchBytesMax)) break
    batch.requeued.push(id)
  }
  return batch
}

/** Writes a batch: its MESSAGE and MESSAGE_PART frames, then BATCH_END numbered `number`. @throws MirrorError from the channel */
export async function sendBatch(target: MirrorChannel, number: number, batch: PlannedBatch): Promise<void> {
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

/** Creates the reader and writer of batches for one peer. Pure until called. */
export function createCopyBatches(deps: CopyBatchDeps) {
  return {
    /**
     * The next batch of a change-log lane after `afterSequence`, through `boundSequence` at most
     * (null: no bound), or undefined when the change log has nothing newer within the bound.
     * `returnOwn`: also the ingest entries of messages first archived from that peer, through
     * that sequence (a replaced volume gets back what it had sent here).
     * Sequences need not be dense: a bounded batch that saw every entry up to the bound ends at it.
     */
    plan(lane: 'live' | 'backfill', afterSequence: number, boundSequence: number | null, returnOwn?: { serial: string; through: number }): Promise<PlannedBatch | undefined> {
      return planLaneBatch(deps, lane, afterSequence, boundSequence, returnOwn)
    },

    /**
     * A batch of requeued ids (the first of `ids`, bounded like any batch), each sent as an
     * `ingest` copy with the message's first delivery. `cursor` names the batch on the wire
     * (afterSequence = throughSequence = cursor; message sequences at least 1). Ids no longer
     * archived, damaged, or first archived from a third appliance (never forwarded) are taken
     * without a copy, so their acknowledgement drops them; the peer's own messages go back to it.
     */
    planRequeue(ids: readonly string[], cursor: number, peerSerial: string | null): Promise<PlannedBatch> {
      return planRequeueBatch(deps, ids, cursor, peerSerial)
    },

    /** Writes a batch: its MESSAGE and MESSAGE_PART frames, then BATCH_END numbered `number`. @throws MirrorError from the channel */
    send: sendBatch,
  }
}

/** A batch reader and writer as createCopyBatches makes it. */
export type CopyBatches = ReturnType<typeof createCopyBatches>
