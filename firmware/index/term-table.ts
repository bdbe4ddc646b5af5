import { foldRun, tokenCharsMax, tokenize, wordRunPattern } from './tokenize.js'
import type { PhraseStreamWriter } from './phrase-stream.js'

/**
 * The distinct tokens of one document with the field bits each occurs in, in order of first
 * occurrence: what prepareDocument packs (see PackedTerms).
 *
 * An open-addressing hash table over FNV-1a hashes of the tokens' UTF-16 units, rather than
 * a Map fed with a token array: a body repeats most of its words, and `addText` hashes each
 * ASCII word (most words of most mail) where it lies in the text and makes a string only of
 * a word not seen before. Timed once under Bun over the corpus bodies (session 8, a
 * throwaway script; docs/index-layout.md): a tokenize array, a Set over it and a Map of the
 * distinct words took 42–76 µs per ASCII body (two runs), this ~22.
 */
export interface TermTable {
  /** Distinct tokens so far. */
  size(): number
  /** Adds `token` with `bit` (ORed into its bits when the token is there already). */
  add(token: string, bit: number): void
  /** Adds every token of an array with `bit`. */
  addAll(tokens: readonly string[], bit: number): void
  /**
   * Adds the tokens of `text` (exactly what `tokenize(text)` gives, in that order) with
   * `bit`, at most `tokensMax` of them; each token added is also pushed to `stream` when given.
   *
   * @returns the tokens added, repeats counted; `tokensMax + 1` when the text holds more
   */
  addText(text: string, bit: number, tokensMax: number, stream?: PhraseStreamWriter): number
  /** The tokens joined by spaces, their bits one byte each, and their tokenHash (the PackedTerms form). */
  pack(): { tokens: string; masks: Uint8Array; hashes: Int32Array }
}

/**
 * The store under a term table: the tokens in order of first occurrence, their hashes and
 * field bits (parallel typed arrays, doubled when full) and the open-addressing slots.
 */
interface TermSlots {
  /** The distinct tokens, in order of first occurrence. */
  readonly list: string[]
  /** Adds `token` with `bit` (ORed into its bits when the token is there already). */
  add(token: string, bit: number): void
  /** Adds lower[start, end) (ASCII letters and digits), whose tokenHash is `hash`, with `bit`. */
  addSpan(lower: string, start: number, end: number, hash: number, bit: number): void
  /** See TermTable.pack. */
  pack(): { tokens: string; masks: Uint8Array; hashes: Int32Array }
}

function createTermSlots(): TermSlots {
  const list: string[] = []
  let hashes = new Int32Array(64)
  let bits = new Uint8Array(64)
  /** Token index + 1 per slot; 0 = empty. Kept at most half full. */
  let slots = new Int32Array(256)

  const insert = (token: string, hash: number, bit: number, probe: number): void => {
    const index = list.length
    list.push(token)
    if (index === hashes.length) {
      const grownHashes = new Int32Array(2 * index)
      grownHashes.set(hashes)
      hashes = grownHashes
      const grownBits = new Uint8Array(2 * index)
      grownBits.set(bits)
      bits = grownBits
    }
    hashes[index] = hash
    bits[index] = bit
    if (2 * (index + 1) <= slots.length) {
      slots[probe] = index + 1
      return
    }
    // Over half full: a doubled table, every token placed again.
    slots = doubledIdTable(slots, hashes, index + 1)
  }

  return {
    list,
    add(token, bit) {
      const hash = tokenHash(token, 0, token.length)
      const mask = slots.length - 1
      for (let probe = hash & mask; ; probe = (probe + 1) & mask) {
        const entry = slots[probe]!
        if (entry === 0) {
          insert(token, hash, bit, probe)
          return
        }
        if (hashes[entry - 1] === hash && list[entry - 1] === token) {
          bits[entry - 1]! |= bit
          return
        }
      }
    },
    addSpan(lower, start, end, hash, bit) {
      const mask = slots.length - 1
      const length = end - start
      for (let probe = hash & mask; ; probe = (probe + 1) & mask) {
        const entry = slots[probe]!
        if (entry === 0) {
          insert(lower.slice(start, end), hash, bit, probe)
          return
        }
        if (hashes[entry - 1] !== hash) continue
        const token = list[entry - 1]!
        if (token.length === length && lower.startsWith(token, start)) {
          bits[entry - 1]! |= bit
          return
        }
      }
    },
    pack: () => ({ tokens: list.join(' '), masks: bits.slice(0, list.length), hashes: hashes.slice(0, list.length) }),
  }
}

/**
 * TermTable.addText over `table`. A run of ASCII letters and digits between ASCII separators
 * is read (hashed, compared, cut) in the lower-cased text at the same offsets; a run touching
 * a character above U+007F goes through the Unicode pattern and foldRun as tokenize's
 * general path does.
 */
function addTextTo(table: TermSlots, text: string, bit: number, tokensMax: number, stream?: PhraseStreamWriter): number {
  const { add, addSpan } = table
  const lower = text.toLowerCase()
  if (lower.length !== text.length) {
    // Lower-casing changed the length (U+0130 does): offsets differ, so the general path.
    const tokens = tokenize(text, tokensMax + 1)
    for (let index = 0; index < tokens.length && index < tokensMax; index++) {
      const token = tokens[index]!
      add(token, bit)
      stream?.push(tokenHash(token, 0, token.length))
    }
    return tokens.length
  }
  let count = 0
  let over = false
  const emit = (token: string): void => {
    if (count < tokensMax) {
      add(token, bit)
      stream?.push(tokenHash(token, 0, token.length))
      count++
    } else over = true
  }
  const length = text.length
  let at = 0
  while (at < length) {
    let code = text.charCodeAt(at)
    if (code < 0x80 && !isAsciiWordUnit(code)) {
      at++
      continue
    }
    const start = at
    if (code < 0x80) {
      const cutAt = start + tokenCharsMax
      let hash = fnvOffset
      do {
        if (at < cutAt) hash = Math.imul(hash ^ lower.charCodeAt(at), fnvPrime)
        at++
        code = at < length ? text.charCodeAt(at) : 0
      } while (code < 0x80 && isAsciiWordUnit(code))
      if (code < 0x80) {
        if (count >= tokensMax) return tokensMax + 1
        count++
        addSpan(lower, start, Math.min(at, cutAt), hash, bit)
        stream?.push(hash)
        continue
      }
    }
    wordRun.lastIndex = start
    const run = wordRun.exec(text)
    if (run === null) {
      // Not a word character (a space, a symbol, an emoji): one code point further.
      at = start + (code >= 0xd800 && code <= 0xdbff && start + 1 < length && isLowSurrogate(text.charCodeAt(start + 1)) ? 2 : 1)
      continue
    }
    // No early return at the budget here: a run may fold to no token at all (a lone
    // combining mark), so only a token emitted past the budget means the text holds more.
    foldRun(run[0], emit)
    if (over) return tokensMax + 1
    at = start + run[0].length
  }
  return count
}

export function createTermTable(): TermTable {
  const table = createTermSlots()
  const { list, add } = table
  return {
    size: () => list.length,
    add,
    addAll(tokens, bit) {
      for (let index = 0; index < tokens.length; index++) add(tokens[index]!, bit)
    },
    addText: (text, bit, tokensMax, stream) => addTextTo(table, text, bit, tokensMax, stream),
    pack: table.pack,
  }
}

/** FNV-1a (32 bits) over UTF-16 units. */
const fnvOffset = 0x811c9dc5 | 0
const fnvPrime = 0x01000193

/**
 * The hash of text[start, end) that token tables use (FNV-1a, 32 bits, over UTF-16 units):
 * the term table of a prepared document and the token ids of a flush (token-ids.ts), which take the
 * hashes a worker computed instead of hashing every token again.
 */
export function tokenHash(text: string, start: number, end: number): number {
  let hash = fnvOffset
  for (let at = start; at < end; at++) hash = Math.imul(hash ^ text.charCodeAt(at), fnvPrime)
  return hash
}

/**
 * Token tables (here and in token-ids.ts) are open-addressing arrays of id + 1 (0 = empty),
 * probed linearly from `hash & (length − 1)` and kept at most half full. Places `id`.
 */
export function placeId(table: Int32Array, hash: number, id: number): void {
  const mask = table.length - 1
  let at = hash & mask
  while (table[at] !== 0) at = (at + 1) & mask
  table[at] = id + 1
}

/** A token table twice the size of `table` holding ids 0…count − 1 again, placed by `hashes[id]`. */
export function doubledIdTable(table: Int32Array, hashes: Int32Array, count: number): Int32Array<ArrayBuffer> {
  const grown = new Int32Array(2 * table.length)
  for (let id = 0; id < count; id++) placeId(grown, hashes[id]!, id)
  return grown
}

/** The general path's word runs (tokenize.ts), matched at a position. */
const wordRun = new RegExp(wordRunPattern.source, 'uy')

/** `[A-Za-z0-9]`: the ASCII units of a word run. */
function isAsciiWordUnit(code: number): boolean {
  return (code >= 97 && code <= 122) || (code >= 65 && code <= 90) || (code >= 48 && code <= 57)
}

function isLowSurrogate(code: number): boolean {
  return code >= 0xdc00 && code <= 0xdfff
}
