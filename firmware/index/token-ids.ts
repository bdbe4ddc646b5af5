/**
 * Dense ids for the distinct tokens the posting accumulators gather, and the split of a
 * document's packed terms into those ids.
 */

import { doubledIdTable, placeId, tokenHash } from './term-table.js'

/**
 * Dense ids for the distinct tokens of a batch of documents: an open-addressing table over
 * tokenHash (FNV-1a of the UTF-16 units), not a Map. A Map must hash every token string it
 * is given, and the tokens come as fresh strings (split from a document's packed terms):
 * measured under Bun, 0.35–0.45 µs a lookup against ~0.1 for strings it had hashed before.
 * `idIn` hashes (or takes the worker's hash) and compares a token where it lies in the packed
 * string, against the known tokens' units kept one after another in one array (a string per
 * token was ~25% slower to compare against: each is a separate object, often a substring
 * of another document's packed terms), and makes a string only of a new token.
 */
export interface TokenIds {
  /** The distinct tokens, by id. */
  readonly list: string[]
  /**
   * The id of text[start, end) (a new one when absent and `create`; else -1). `known` is its
   * tokenHash when the caller has it (a prepared document's): checked before a new id is
   * made on it, so a wrong one can never file a token twice.
   */
  idIn(text: string, start: number, end: number, create: boolean, known?: number): number
}

export function createTokenIds(expectedTokens: number): TokenIds {
  const list: string[] = []
  let hashes = new Int32Array(expectedTokens)
  // Kept at most half full: the power of two at least twice the tokens.
  let table = new Int32Array(2 ** Math.ceil(Math.log2(2 * expectedTokens))) // id + 1; 0 = empty
  /** Every token's UTF-16 units, one after another; token `id` is units[starts[id], starts[id + 1]). */
  let units = new Uint16Array(8 * expectedTokens)
  let starts = new Int32Array(expectedTokens + 1)
  const idIn = (text: string, start: number, end: number, create: boolean, known?: number): number => {
    const hash = known ?? tokenHash(text, start, end)
    const tableMask = table.length - 1
    const length = end - start
    for (let probe = hash & tableMask; ; probe = (probe + 1) & tableMask) {
      const entry = table[probe]!
      if (entry === 0) break
      const id = entry - 1
      if (hashes[id] !== hash) continue
      const from = starts[id]!
      if (starts[id + 1]! - from !== length) continue
      let same = 0
      while (same < length && units[from + same] === text.charCodeAt(start + same)) same++
      if (same === length) return id
    }
    if (known !== undefined && known !== tokenHash(text, start, end)) return idIn(text, start, end, create)
    if (!create) return -1
    const id = list.length
    list.push(start === 0 && end === text.length ? text : text.slice(start, end))
    if (id >= hashes.length) {
      hashes = grown(hashes, id + 1)
      starts = grown(starts, hashes.length + 1)
    }
    const from = starts[id]!
    if (from + length > units.length) units = grown(units, from + length)
    for (let at = 0; at < length; at++) units[from + at] = text.charCodeAt(start + at)
    starts[id + 1] = from + length
    hashes[id] = hash
    // Kept at most half full: a doubled table, every id placed again.
    if (2 * (id + 1) > table.length) table = doubledIdTable(table, hashes, id + 1)
    else placeId(table, hash, id)
    return id
  }
  return { list, idIn }
}

/** `array` if it holds `size` elements, else a copy at least twice as long. */
export function grown<T extends Int32Array | Uint32Array | Uint8Array | Uint16Array>(array: T, size: number): T {
  if (size <= array.length) return array
  const copy = new (array.constructor as new (length: number) => T)(Math.max(size, 2 * array.length))
  copy.set(array)
  return copy
}

/** The token ids of the document being added (one scratch array: adding is synchronous). */
let packedIds = new Int32Array(1024)

/** The ids `idsOfPacked` wrote last (read them before the next call: the array is reused). */
export function packedIdsOf(): Int32Array {
  return packedIds
}

/**
 * Splits a document's packed terms into `packedIds` (each token's id, made if new); returns
 * their count, or -1 (making no id) when the counts of tokens and masks differ.
 */
export function idsOfPacked(ids: TokenIds, tokens: string, tokenMasks: Uint8Array, tokenHashes: Int32Array | undefined): number {
  if (tokens.length === 0) return tokenMasks.length === 0 ? 0 : -1
  let count = 1
  for (let at = tokens.indexOf(' '); at >= 0; at = tokens.indexOf(' ', at + 1)) count++
  if (count !== tokenMasks.length) return -1
  if (count > packedIds.length) packedIds = new Int32Array(2 * count)
  const known = tokenHashes !== undefined && tokenHashes.length === count ? tokenHashes : undefined
  let start = 0
  for (let index = 0; index < count; index++) {
    let end = tokens.indexOf(' ', start)
    if (end < 0) end = tokens.length
    packedIds[index] = ids.idIn(tokens, start, end, true, known === undefined ? undefined : known[index])
    start = end + 1
  }
  return count
}
