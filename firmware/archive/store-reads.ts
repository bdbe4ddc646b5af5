import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { join } from 'node:path'
import { ArchiveError } from './errors.js'
import { decodeChange, decodeDelivery, decodeMessageRecord, type ChangeRecord, type MessageRecord } from './records.js'
import { decodeBlob } from './codec.js'
import { blobPartKey, deliveryRecordKey, idKey, isArchiveId, readSequence, sequenceKey } from './layout.js'
import { readPurgeRecord, type PurgeRecord } from './purge-records.js'
import { openDigestSnapshot } from './store-digest.js'
import { hexOf, requireReadable, sha256Hex, type StoreContext } from './store-context.js'
import { readCounters, type Databases } from './store-databases.js'
import type { ChangeEntry, Delivery, DigestSnapshot, MessageMeta, StoreStats, VerifyReport } from './types.js'

/**
 * What the archive store answers (store.ts is the façade): a message's metadata and its
 * original bytes (checked against their SHA-256), the counters, the change log, ids in
 * order, purge records, the store id, digest snapshots, and verify(), the self-test. Reads
 * see committed, so durable, data only, and go on after a disk failure.
 */

/** Most corrupt ids verify() lists (it counts them all). */
export const corruptIdsMax = 100
/** Most entries one changes() or listIds() call returns. */
export const pageEntriesMax = 10_000
/** Most digest snapshots open at once (one per peer comparison in flight); more get DIGEST_SNAPSHOTS_BUSY. */
export const digestSnapshotsOpenMax = 8
/** Messages verify() checks between yields to the event loop. */
const verifyPageEntries = 256

/** STORE_CORRUPT for one message, logged. */
export function corrupt(context: StoreContext, id: string, reason: string, cause?: unknown): ArchiveError {
  context.logger.error('stored message failed its integrity check', { id, reason, error: cause })
  return new ArchiveError('STORE_CORRUPT', `message ${id} is corrupt: ${reason}`, { fields: { id, reason }, cause })
}

/** The message record of `id`; undefined when absent. @throws ArchiveError STORE_CORRUPT (undecodable) */
export function readRecord(context: StoreContext, databases: Databases, id: string): MessageRecord | undefined {
  const value = databases.messages.get(idKey(id))
  if (value === undefined) return undefined
  try {
    return decodeMessageRecord(value)
  } catch (error) {
    throw corrupt(context, id, 'undecodable message record', error)
  }
}

/**
 * The original bytes of a stored message: its blob's parts concatenated, decoded, and
 * checked against the record's sizes and the id.
 * @throws ArchiveError STORE_CORRUPT (missing parts, undecodable, hash mismatch)
 */
export async function readRaw(context: StoreContext, databases: Databases, id: string, record: MessageRecord): Promise<Uint8Array> {
  const chunks: Buffer[] = []
  let storedBytes = 0
  for (const { value } of databases.blobs.getRange({ start: blobPartKey(record.sequence, 0), end: blobPartKey(record.sequence + 1, 0) })) {
    // Copied, because lmdb-js may reuse the buffer it hands out for the next entry.
    const chunk = Buffer.from(value)
    chunks.push(chunk)
    storedBytes += chunk.byteLength
  }
  if (chunks.length !== record.parts || storedBytes !== record.storedBytes) {
    throw corrupt(context, id, `blob has ${chunks.length} parts and ${storedBytes} bytes, expected ${record.parts} and ${record.storedBytes}`)
  }
  let raw: Uint8Array
  try {
    raw = await decodeBlob(record.codec, Buffer.concat(chunks, storedBytes), record.sizeBytes)
  } catch (error) {
    throw corrupt(context, id, 'blob does not decode', error)
  }
  if (raw.byteLength !== record.sizeBytes) throw corrupt(context, id, `blob restores to ${raw.byteLength} bytes, expected ${record.sizeBytes}`)
  if (sha256Hex(raw) !== id) throw corrupt(context, id, 'restored bytes do not hash to the id')
  return new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength)
}

/** Every delivery of `id`, oldest first. @throws ArchiveError STORE_CORRUPT (an undecodable delivery) */
export function deliveriesOf(context: StoreContext, databases: Databases, id: string): Delivery[] {
  const key = idKey(id)
  const deliveries: Delivery[] = []
  for (const { value } of databases.deliveries.getRange({ start: deliveryRecordKey(key, 0), end: deliveryRecordKey(key, Number.MAX_SAFE_INTEGER) })) {
    try {
      deliveries.push(decodeDelivery(value))
    } catch (error) {
      throw corrupt(context, id, 'undecodable delivery record', error)
    }
  }
  return deliveries
}

/** A message's metadata as the API shows it: its record's fields and its deliveries. Pure. */
export function metaOf(id: string, record: MessageRecord, deliveries: Delivery[]): MessageMeta {
  return {
    id,
    sizeBytes: record.sizeBytes,
    messageId: record.messageId,
    dateMs: record.dateMs,
    from: record.from,
    to: record.to,
    cc: record.cc,
    bcc: record.bcc,
    subject: record.subject,
    attachments: record.attachments,
    flags: record.flags,
    deliveries,
    firstArchivedAtMs: record.firstArchivedAtMs,
    origin: record.origin,
  }
}

/** True when a message with this id is stored. @throws ArchiveError STORE_UNAVAILABLE when not open */
export function hasMessage(context: StoreContext, id: string): boolean {
  const databases = requireReadable(context)
  return isArchiveId(id) && databases.messages.doesExist(idKey(id))
}

/**
 * Metadata of a stored message with every delivery, oldest first; undefined when absent.
 * @throws ArchiveError STORE_UNAVAILABLE (not open), STORE_CORRUPT (undecodable record)
 */
export function getMeta(context: StoreContext, id: string): MessageMeta | undefined {
  const databases = requireReadable(context)
  if (!isArchiveId(id)) return undefined
  const record = readRecord(context, databases, id)
  if (!record) return undefined
  return metaOf(id, record, deliveriesOf(context, databases, id))
}

/**
 * The original bytes of a stored message, byte-identical, checked against their SHA-256;
 * undefined when absent.
 * @throws ArchiveError STORE_UNAVAILABLE (not open), STORE_CORRUPT (missing parts, undecodable, hash mismatch)
 */
export async function getRaw(context: StoreContext, id: string): Promise<Uint8Array | undefined> {
  const databases = requireReadable(context)
  if (!isArchiveId(id)) return undefined
  const record = readRecord(context, databases, id)
  if (!record) return undefined
  return readRaw(context, databases, id, record)
}

/** Bytes of the LMDB files on disk; a missing file counts as empty. */
function fileBytes(path: string): number {
  let total = 0
  for (const name of ['data.mdb', 'lock.mdb']) {
    try {
      total += statSync(join(path, name)).size
    } catch {
      // A missing file counts as empty: stats() must not fail over a monitoring figure.
    }
  }
  return total
}

/** The persistent counters (durable state) and the size of the LMDB files. @throws ArchiveError STORE_UNAVAILABLE when not open */
export function stats(context: StoreContext): StoreStats {
  const { messages, deliveries, rawBytes, storedBytes, lastSequence, flaggedMessages } = readCounters(requireReadable(context))
  return { messages, deliveries, rawBytes, storedBytes, fileBytes: fileBytes(context.options.path), lastSequence, flaggedMessages }
}

/**
 * Change-log entries with a sequence above `afterSequence`, oldest first, at most `limit`
 * (≤ pageEntriesMax). Only durable entries are visible. Sequences only grow and have no
 * gaps (each is taken inside the transaction that writes it).
 * @throws ArchiveError STORE_UNAVAILABLE (not open), STORE_CORRUPT (an undecodable entry)
 */
export function changes(context: StoreContext, afterSequence: number, limit: number): ChangeEntry[] {
  assert.ok(Number.isSafeInteger(afterSequence) && afterSequence >= 0, 'afterSequence must be a non-negative integer')
  assert.ok(Number.isSafeInteger(limit) && limit > 0 && limit <= pageEntriesMax, `limit must be 1…${pageEntriesMax}`)
  const databases = requireReadable(context)
  const entries: ChangeEntry[] = []
  for (const { key, value } of databases.changes.getRange({ start: sequenceKey(afterSequence + 1), limit })) {
    const sequence = readSequence(key)
    let change: ChangeRecord
    try {
      change = decodeChange(value)
    } catch (error) {
      context.logger.error('change-log entry is undecodable', { sequence, error })
      throw new ArchiveError('STORE_CORRUPT', `change-log entry ${sequence} is undecodable`, { fields: { sequence }, cause: error })
    }
    entries.push({ sequence, kind: change.kind, id: hexOf(change.id), atMs: change.atMs, origin: change.origin })
  }
  return entries
}

/** Sequence of the last durable change-log entry (0 for an empty archive). @throws ArchiveError STORE_UNAVAILABLE when not open */
export function lastSequence(context: StoreContext): number {
  return readCounters(requireReadable(context)).lastSequence
}

/**
 * Ids of stored messages in id order, after `afterId` (exclusive; null to begin), at most
 * `limit` (≤ pageEntriesMax): for index rebuilds, backfill of a new peer, verification.
 * @throws ArchiveError STORE_UNAVAILABLE when not open
 */
export function listIds(context: StoreContext, afterId: string | null, limit: number): string[] {
  assert.ok(Number.isSafeInteger(limit) && limit > 0 && limit <= pageEntriesMax, `limit must be 1…${pageEntriesMax}`)
  const databases = requireReadable(context)
  const range = afterId === null ? { limit } : { start: idKey(afterId), exclusiveStart: true, limit }
  const ids: string[] = []
  for (const key of databases.messages.getKeys(range)) ids.push(hexOf(key))
  return ids
}

/**
 * When the retention purge removed `id` (the purge's change-log sequence and time), or
 * undefined when it never did. A message archived again after its purge is held AND has
 * this record: check has() first. @throws ArchiveError STORE_UNAVAILABLE when not open
 */
export function purgedAt(context: StoreContext, id: string): PurgeRecord | undefined {
  const databases = requireReadable(context)
  return isArchiveId(id) ? readPurgeRecord(databases.purged, idKey(id)) : undefined
}

/** This archive's random id (32 lower-case hex digits). @throws ArchiveError STORE_UNAVAILABLE when not open */
export function storeId(context: StoreContext): string {
  requireReadable(context)
  assert.ok(context.storeId !== undefined)
  return context.storeId
}

/**
 * A consistent, short-lived view of the id digest (DigestSnapshot in types.ts), opened
 * in steps that yield to the event loop: close it when done; it is released anyway after
 * digestSnapshotAgeMsMax and by stop().
 * @throws ArchiveError STORE_UNAVAILABLE (not open), DIGEST_SNAPSHOTS_BUSY (digestSnapshotsOpenMax open), DIGEST_UNAVAILABLE (the digest was set aside as damaged until the next start), DIGEST_SNAPSHOT_CLOSED (stop() while it opened), STORE_CORRUPT (an undecodable leaf)
 */
export async function digestSnapshot(context: StoreContext): Promise<DigestSnapshot> {
  const databases = requireReadable(context)
  const snapshots = context.snapshots
  if (snapshots.size >= digestSnapshotsOpenMax) {
    throw new ArchiveError('DIGEST_SNAPSHOTS_BUSY', `${snapshots.size} digest snapshots are open, the most allowed; close one or wait for it to expire`, {
      fields: { open: snapshots.size, openMax: digestSnapshotsOpenMax },
    })
  }
  assert.ok(context.storeId !== undefined)
  return openDigestSnapshot(databases, {
    storeId: context.storeId,
    clock: context.clock,
    ageMsMax: context.options.digestSnapshotAgeMsMax,
    onOpen: (snapshot) => snapshots.add(snapshot),
    onRelease: (snapshot) => snapshots.delete(snapshot),
  })
}

/**
 * Self-test: restores and hashes stored messages (all, or the first `messagesMax` in id
 * order) and, when it covered all of them, checks the counters against what it saw.
 * Yields to the event loop between pages. Corrupt messages are logged and listed.
 * @throws ArchiveError STORE_UNAVAILABLE when not open
 */
export async function verify(context: StoreContext, verifyOptions: { messagesMax?: number } = {}): Promise<VerifyReport> {
  const messagesMax = verifyOptions.messagesMax ?? Number.POSITIVE_INFINITY
  const report: VerifyReport = { checked: 0, corruptIds: [], corrupt: 0, countersConsistent: null }
  const before = readCounters(requireReadable(context))
  const seen = { rawBytes: 0, rawBytesKnown: true }
  let afterId: string | null = null
  let complete = false
  while (report.checked < messagesMax) {
    const ids = listIds(context, afterId, Math.min(verifyPageEntries, messagesMax - report.checked))
    if (ids.length === 0) {
      complete = true
      break
    }
    for (const id of ids) await verifyMessage(context, id, report, seen)
    afterId = ids[ids.length - 1]!
    await new Promise((resolve) => setImmediate(resolve))
  }
  const after = readCounters(requireReadable(context))
  // Only a pass over an archive that did not change meanwhile can judge the counters.
  if (complete && after.lastSequence === before.lastSequence) {
    report.countersConsistent = report.checked === after.messages && (!seen.rawBytesKnown || seen.rawBytes === after.rawBytes)
  }
  context.logger.info('archive verified', { checked: report.checked, corrupt: report.corrupt, countersConsistent: report.countersConsistent, corruptIds: report.corruptIds.slice(0, 10) })
  return report
}

/** verify()'s check of one message, counted into `report`; its raw size added to `seen` when its record decodes. */
async function verifyMessage(context: StoreContext, id: string, report: VerifyReport, seen: { rawBytes: number; rawBytesKnown: boolean }): Promise<void> {
  const databases = requireReadable(context)
  report.checked++
  try {
    const record = readRecord(context, databases, id)
    if (!record) {
      // Purged since it was listed.
      report.checked--
      return
    }
    seen.rawBytes += record.sizeBytes
    await readRaw(context, databases, id, record)
  } catch (error) {
    if (!(error instanceof ArchiveError) || error.code !== 'STORE_CORRUPT') throw error
    if (error.fields.reason === 'undecodable message record') seen.rawBytesKnown = false
    report.corrupt++
    if (report.corruptIds.length < corruptIdsMax) report.corruptIds.push(id)
  }
}
