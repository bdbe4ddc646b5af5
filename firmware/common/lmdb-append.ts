import type { Database, Key } from 'lmdb'

/**
 * Puts `value` under `key` with MDB_APPEND, inside a write transaction: LMDB then fills the
 * last leaf page and starts a new one instead of splitting it in half, so keys that only
 * grow pack their pages. lmdb-js accepts put options there; its typings only declare the
 * generic form.
 *
 * @returns false (nothing written) when `key` is not above the database's last key
 */
export function putAppend<V, K extends Key>(database: Database<V, K>, key: K, value: V): boolean {
  const putSync = database.putSync as unknown as (key: K, value: V, options: { append: boolean }) => boolean
  return putSync.call(database, key, value, { append: true })
}
