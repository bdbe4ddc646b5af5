import type { PostingSink } from './posting-sink.js'
import { createTokenIds, grown, idsOfPacked, packedIdsOf } from './token-ids.js'

/**
 * The search tail's postings, grouped by token as documents come (docids ascending): a
 * token's postings are a linked list of slots in flat typed arrays, so that `collect` walks
 * one token's and `dropThrough` drops a flushed start. Measured on 4,096 corpus messages
 * (619,291 postings, 45,978 tokens) under Bun, grouping took 55–96 ms this way and
 * 350–400 ms with an array per token.
 */
export interface PostingGroups extends PostingSink {
  /** The distinct tokens, in no particular order. */
  tokens(): string[]
  /** Appends to `out` the docids of `token` whose mask meets `bits`, ascending (none for an unknown token). */
  collect(token: string, bits: number, out: number[]): void
  /**
   * Drops every posting of a docid up to `docid` (each token's list is ascending, so they
   * are its first ones). Their slots stay used until the groups are made again: see `held`.
   */
  dropThrough(docid: number): void
  /** Postings held, and slots used (dropped postings included). */
  held(): { postings: number; slots: number }
}

/** An empty search-tail accumulator. */
export function createPostingGroups(): PostingGroups {
  const ids = createTokenIds(1024)
  let first = new Int32Array(1024)
  let last = new Int32Array(1024)
  let counts = new Int32Array(1024)
  let docids = new Uint32Array(64 * 1024)
  let masks = new Uint8Array(64 * 1024)
  let next = new Int32Array(64 * 1024)
  let slots = 0
  let live = 0
  const addId = (id: number, docid: number, mask: number): void => {
    if (id >= first.length) {
      first = grown(first, id + 1)
      last = grown(last, id + 1)
      counts = grown(counts, id + 1)
    }
    // A token with a count of 0 has no list (a new one, or one whose list dropThrough emptied).
    if (counts[id]! > 0 && docids[last[id]!] === docid) {
      masks[last[id]!]! |= mask
      return
    }
    const slot = slots++
    if (slot >= docids.length) {
      docids = grown(docids, slot + 1)
      masks = grown(masks, slot + 1)
      next = grown(next, slot + 1)
    }
    docids[slot] = docid
    masks[slot] = mask
    next[slot] = -1
    live++
    if (counts[id] === 0) first[id] = slot
    else next[last[id]!] = slot
    last[id] = slot
    counts[id]!++
  }
  return {
    add(token, docid, mask) {
      addId(ids.idIn(token, 0, token.length, true), docid, mask)
    },
    addPacked(tokens, tokenMasks, docid, tokenHashes) {
      const count = idsOfPacked(ids, tokens, tokenMasks, tokenHashes)
      const packedIds = packedIdsOf()
      for (let index = 0; index < count; index++) addId(packedIds[index]!, docid, tokenMasks[index]!)
      return count >= 0
    },
    tokens: () => ids.list.slice(),
    collect(token, bits, out) {
      const id = ids.idIn(token, 0, token.length, false)
      if (id < 0 || counts[id] === 0) return
      for (let slot = first[id]!; slot !== -1; slot = next[slot]!) if ((masks[slot]! & bits) !== 0) out.push(docids[slot]!)
    },
    dropThrough(docid) {
      // A token whose list empties keeps its id, with a count of 0: `add` then starts its list again.
      for (let id = 0; id < ids.list.length; id++) {
        if (counts[id] === 0) continue
        let slot = first[id]!
        while (slot !== -1 && docids[slot]! <= docid) {
          slot = next[slot]!
          counts[id]!--
          live--
        }
        first[id] = slot
      }
    },
    held: () => ({ postings: live, slots }),
  }
}
