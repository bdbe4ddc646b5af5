/**
 * The date column: per docid the date it is ordered by (ms since the epoch), in blocks of
 * `dateBlockDocids` float64 keyed docid ÷ 128 (uint32). NaN marks no document (removed,
 * or never indexed). It filters `before:`/`after:`, orders results newest first and hides
 * removed documents from every result.
 */

import { IndexError } from './errors.js'
import type { Databases } from './index-databases.js'

/** Docids per block of the date column: 1 KiB, small enough to sit inline in a leaf page (a 4 KiB value would take two overflow pages), so the read-modify-write of each ingest stays cheap. */
export const dateBlockDocids = 128

/**
 * A writer of date slots. Its one block of scratch bytes is reused by every `setDate` (a
 * putSync copies the value into the transaction before it returns).
 */
export function createDateWriter(): { setDate(db: Databases, docid: number, dateMs: number): void } {
  const dateScratch = new Float64Array(dateBlockDocids)
  const dateScratchBytes = Buffer.from(dateScratch.buffer)
  return {
    /**
     * Sets docid's slot (NaN: no document). Runs inside a write transaction.
     *
     * @throws IndexError INDEX_CORRUPT when the stored block has another size
     */
    setDate(db, docid, dateMs) {
      const block = Math.floor(docid / dateBlockDocids)
      // getBinaryFast's buffer is lmdb-js's reused one: its `length` is the value's, not its byteLength.
      const stored = db.dates.getBinaryFast(block)
      if (stored) {
        if (stored.length !== dateScratchBytes.byteLength) throw new IndexError('INDEX_CORRUPT', `date block ${block} has ${stored.length} bytes`)
        dateScratchBytes.set(new Uint8Array(stored.buffer, stored.byteOffset, dateScratchBytes.byteLength))
      } else dateScratch.fill(Number.NaN)
      dateScratch[docid % dateBlockDocids] = dateMs
      db.dates.putSync(block, dateScratchBytes)
    },
  }
}

/** A copy of date block `block` (all NaN when it is not stored). */
export function readDateBlock(db: Databases, block: number): Float64Array {
  const stored = db.dates.getBinary(block)
  const dates = new Float64Array(dateBlockDocids).fill(Number.NaN)
  if (stored) new Uint8Array(dates.buffer).set(stored.subarray(0, dateBlockDocids * 8))
  return dates
}

/**
 * Appends to `out` from `count` the docids (`base` + slot) of a date block dated in
 * [fromMs, toMs) (NaN, no document, is in no range); returns the new count. `out` has room
 * for a whole block. A small function of its own so that the JIT compiles the loop early.
 */
export function collectDated(dates: Float64Array, fromMs: number, toMs: number, base: number, out: Uint32Array, count: number): number {
  let at = count
  for (let slot = 0; slot < dates.length; slot++) {
    const dateMs = dates[slot]!
    if (dateMs >= fromMs && dateMs < toMs) out[at++] = base + slot
  }
  return at
}
