/**
 * One page of results: the matches in newest-first order (date desc, docid desc) after a
 * cursor, cut to the page's size, and the opaque cursors of positions in that order.
 */

import { IndexError } from './errors.js'
import { indexLayoutVersion } from './index-databases.js'

const cursorPattern = /^[A-Za-z0-9_-]{1,64}$/

/** Opaque cursor of a position (dateMs, docid) in the newest-first order. */
export function encodeCursor(dateMs: number, docid: number): string {
  return Buffer.from(`${indexLayoutVersion}.${dateMs}.${docid}`).toString('base64url')
}

/**
 * The position of a cursor `encodeCursor` made.
 *
 * @throws IndexError BAD_CURSOR for anything else (another layout's cursor too)
 */
export function decodeCursor(cursor: string): { dateMs: number; docid: number } {
  const bad = (): IndexError => new IndexError('BAD_CURSOR', 'the cursor is not one this index produced', { fields: { cursor: cursor.slice(0, 80) } })
  if (!cursorPattern.test(cursor)) throw bad()
  const parts = Buffer.from(cursor, 'base64url').toString().split('.')
  if (parts.length !== 3 || Number(parts[0]) !== indexLayoutVersion) throw bad()
  const dateMs = Number(parts[1])
  const docid = Number(parts[2])
  if (!Number.isFinite(dateMs) || !Number.isInteger(docid) || docid < 0) throw bad()
  return { dateMs, docid }
}

/** True when (dateA, docA) comes before (dateB, docB) in newest-first order. */
export function before(dateA: number, docA: number, dateB: number, docB: number): boolean {
  return dateA > dateB || (dateA === dateB && docA > docB)
}

/** A page of matches, see selectPage. */
export interface ResultPage {
  /** Live matches (any page). */
  total: number
  /** Live matches after the cursor (this page and the following ones). */
  remaining: number
  /** The page's docids and their dates, newest first. */
  docids: number[]
  dates: number[]
}

/**
 * The `limit` newest of `matched` after `after`, with the counts. A bounded heap keeps
 * the `limit` best after the cursor, so a page costs O(n log limit) however many
 * documents match. Docids dated NaN (removed) are not matches.
 *
 * @param dateOf the date of a docid (NaN: none)
 */
export function selectPage(matched: Uint32Array, dateOf: (docid: number) => number, after: { dateMs: number; docid: number } | null, limit: number): ResultPage {
  const heapDates: number[] = []
  const heapDocids: number[] = []
  const worseThan = (i: number, j: number): boolean => before(heapDates[j]!, heapDocids[j]!, heapDates[i]!, heapDocids[i]!)
  const swap = (i: number, j: number): void => {
    const dateMs = heapDates[i]!
    heapDates[i] = heapDates[j]!
    heapDates[j] = dateMs
    const docid = heapDocids[i]!
    heapDocids[i] = heapDocids[j]!
    heapDocids[j] = docid
  }
  const siftDown = (start: number): void => {
    let index = start
    for (;;) {
      const left = 2 * index + 1
      const right = left + 1
      let worst = index
      if (left < heapDates.length && worseThan(left, worst)) worst = left
      if (right < heapDates.length && worseThan(right, worst)) worst = right
      if (worst === index) return
      swap(index, worst)
      index = worst
    }
  }
  let total = 0
  let remaining = 0
  for (let index = 0; index < matched.length; index++) {
    const docid = matched[index]!
    const dateMs = dateOf(docid)
    if (Number.isNaN(dateMs)) continue
    total++
    if (after && !before(after.dateMs, after.docid, dateMs, docid)) continue
    remaining++
    if (heapDates.length < limit) {
      heapDates.push(dateMs)
      heapDocids.push(docid)
      for (let child = heapDates.length - 1; child > 0; ) {
        const parent = (child - 1) >> 1
        if (!worseThan(child, parent)) break
        swap(child, parent)
        child = parent
      }
    } else if (before(dateMs, docid, heapDates[0]!, heapDocids[0]!)) {
      heapDates[0] = dateMs
      heapDocids[0] = docid
      siftDown(0)
    }
  }
  const order = heapDates.map((_, index) => index).sort((i, j) => (before(heapDates[i]!, heapDocids[i]!, heapDates[j]!, heapDocids[j]!) ? -1 : 1))
  return { total, remaining, docids: order.map((index) => heapDocids[index]!), dates: order.map((index) => heapDates[index]!) }
}
