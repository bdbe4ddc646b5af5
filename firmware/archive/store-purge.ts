import assert from 'node:assert/strict'
import { ArchiveError } from './errors.js'
import { decodeDelivery } from './records.js'
import { blobPartKey, deliveryKeyHash, deliveryRecordKey, idKey, isArchiveId } from './layout.js'
import { writePurgeRecord } from './purge-records.js'
import { requireWritable, track, type StoreContext } from './store-context.js'
import { readCounters, type Databases } from './store-databases.js'
import { inTransaction, nextChange, runIndexer, updateDigest, withoutIndexerOnFailure } from './store-transactions.js'
import { readRecord } from './store-reads.js'
import type { PurgeResult } from './types.js'

/**
 * The purge primitive: the ONLY path that removes or alters a stored message, for the
 * retention module (firmware/policy) alone. In one durable transaction it removes the
 * message's blob, record, deliveries and delivery keys, its id from the id digest and the
 * indexer's postings, writes a `purge` change entry and the purge record (purge-records.ts),
 * and adjusts the counters.
 */

/**
 * Purges one stored message (see the module comment).
 * @throws AssertionError (synchronously) when `id` is not an archive id
 * @throws ArchiveError NOT_FOUND, STORE_UNAVAILABLE (not open, disk failure), STORE_FULL (disk full)
 */
export function purge(context: StoreContext, id: string): Promise<PurgeResult> {
  assert.ok(isArchiveId(id), 'delete needs an archive id')
  let databases: Databases
  try {
    databases = requireWritable(context)
  } catch (error) {
    return Promise.reject(error)
  }
  return track(
    context,
    withoutIndexerOnFailure(context, id, (indexing) => inTransaction(context, databases, () => purgeInTransaction(context, databases, id, indexing))),
  )
}

/** The body of one purge's transaction. Runs synchronously inside the write transaction. */
function purgeInTransaction(context: StoreContext, databases: Databases, id: string, indexing: boolean): PurgeResult {
  const key = idKey(id)
  const record = readRecord(context, databases, id)
  if (!record) throw new ArchiveError('NOT_FOUND', `no message ${id}`, { fields: { id } })
  // Postings left behind would point at a message that is gone (search drops such hits);
  // refusing the purge would keep mail past its retention, so an index failure is logged only.
  runIndexer(context, indexing, (hook) => hook.messageRemoved(id))
  for (let index = 0; index < record.parts; index++) databases.blobs.removeSync(blobPartKey(record.sequence, index))
  const deliveryKeys: Buffer[] = []
  for (const { key: deliveryKey, value } of databases.deliveries.getRange({ start: deliveryRecordKey(key, 0), end: deliveryRecordKey(key, Number.MAX_SAFE_INTEGER) })) {
    deliveryKeys.push(Buffer.from(deliveryKey))
    const delivery = decodeDelivery(value)
    if (delivery.deliveryKey) databases.deliveryKeys.removeSync(deliveryKeyHash(id, delivery.deliveryKey))
  }
  for (const deliveryKey of deliveryKeys) databases.deliveries.removeSync(deliveryKey)
  databases.messages.removeSync(key)
  updateDigest(context, databases, id, key, record.sizeBytes, -1)
  const counters = readCounters(databases)
  const atMs = context.clock.now()
  const sequence = nextChange(databases, counters, 'purge', key, null, atMs)
  writePurgeRecord(databases.purged, key, { sequence, atMs })
  counters.messages--
  counters.deliveries -= deliveryKeys.length
  counters.rawBytes -= record.sizeBytes
  counters.storedBytes -= record.storedBytes
  if (record.flags.length > 0) counters.flaggedMessages--
  databases.state.putSync('counters', counters)
  return { id, sequence }
}
