import { tokenHash } from './term-table.js'

/**
 * Terms with their field bits, packed: the tokens space-separated in one string (a token
 * never holds a space), the bits one byte per token. The index keeps the terms of every
 * pending-tail document (thousands) in memory: two objects per document instead of a few
 * hundred keep the garbage collector's work on them small.
 */
export interface PackedTerms {
  tokens: string
  masks: Uint8Array
  /**
   * The tokens' tokenHash, token for token, when known (a prepared document brings them
   * from the worker): posting groups then need not hash them again (they still compare the
   * characters, and check a hash before a new token is taken on it).
   */
  hashes?: Int32Array
}

/** Packs terms (as a Map from token to field bits, in its order), with their hashes. */
export function packTerms(terms: ReadonlyMap<string, number>): PackedTerms {
  // One loop over the entries: Uint8Array.from over a Map iterator was several times slower under Bun.
  const tokens = new Array<string>(terms.size)
  const masks = new Uint8Array(terms.size)
  const hashes = new Int32Array(terms.size)
  let index = 0
  for (const [token, bits] of terms) {
    tokens[index] = token
    hashes[index] = tokenHash(token, 0, token.length)
    masks[index++] = bits
  }
  return { tokens: tokens.join(' '), masks, hashes }
}

/** Tokens in a space-separated string. */
export function countTokens(tokens: string): number {
  if (tokens.length === 0) return 0
  let count = 1
  for (let at = tokens.indexOf(' '); at >= 0; at = tokens.indexOf(' ', at + 1)) count++
  return count
}

/** The terms of `first` followed by those of `second` (a token in both then appears twice). */
export function joinTerms(first: PackedTerms, second: PackedTerms): PackedTerms {
  if (second.masks.length === 0) return first
  if (first.masks.length === 0) return second
  const masks = new Uint8Array(first.masks.length + second.masks.length)
  masks.set(first.masks)
  masks.set(second.masks, first.masks.length)
  let hashes: Int32Array | undefined
  if (first.hashes && second.hashes) {
    hashes = new Int32Array(masks.length)
    hashes.set(first.hashes)
    hashes.set(second.hashes, first.hashes.length)
  }
  return { tokens: `${first.tokens} ${second.tokens}`, masks, hashes }
}
