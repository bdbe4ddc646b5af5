import { open } from 'lmdb'
import { join } from 'node:path'
import { databaseNames, idKey } from '../../firmware/archive/layout.js'
import { decodeMessageRecord } from '../../firmware/archive/records.js'
import { updateDigestLeaf } from '../../firmware/archive/store-digest.js'

/**
 * Takes one message out of a STOPPED appliance's archive by hand, the way a firmware bug or
 * an operator with LMDB tools could: the message record, its deliveries, its digest leaf and
 * the counters, all consistent, and no change-log entry, no purge record, no audit entry.
 * Only `mirror verify` can tell that it is missing. Returns the removed message's size.
 */
export async function removeMessageByHand(dataDir: string, id: string): Promise<number> {
  const root = open({ path: join(dataDir, 'archive'), maxDbs: 64 })
  try {
    const keys = { keyEncoding: 'binary' as const }
    const messages = root.openDB<unknown, Buffer>(databaseNames.messages, keys)
    const deliveries = root.openDB<unknown, Buffer>(databaseNames.deliveries, keys)
    const digest = root.openDB<Buffer, Buffer>(databaseNames.digest, { ...keys, encoding: 'binary' })
    const state = root.openDB<unknown, string>(databaseNames.state, {})
    const key = idKey(id)
    const stored = messages.get(key)
    if (stored === undefined) throw new Error(`no message ${id} in ${dataDir}`)
    const record = decodeMessageRecord(stored)
    await root.transaction(() => {
      let removedDeliveries = 0
      for (const { key: deliveryKey } of deliveries.getRange({ start: key, end: Buffer.concat([key, Buffer.alloc(8, 0xff)]) })) {
        deliveries.removeSync(deliveryKey as Buffer)
        removedDeliveries++
      }
      messages.removeSync(key)
      updateDigestLeaf({ digest, state }, key, record.sizeBytes, -1)
      const counters = state.get('counters') as Record<string, number>
      state.putSync('counters', {
        ...counters,
        messages: counters.messages! - 1,
        deliveries: counters.deliveries! - removedDeliveries,
        rawBytes: counters.rawBytes! - record.sizeBytes,
        storedBytes: counters.storedBytes! - record.storedBytes,
        flaggedMessages: counters.flaggedMessages! - (record.flags.length > 0 ? 1 : 0),
      })
    })
    return record.sizeBytes
  } finally {
    await root.close()
  }
}
