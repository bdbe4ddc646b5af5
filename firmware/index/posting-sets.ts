import { cacheSet, type SearchContext } from './query-cache.js'
import { concatenated, toDocidSet } from './docid-sets.js'
import { readChunks, readPatches } from './record-io.js'

/**
 * The docids of `token` whose posting mask meets `bits`: the flushed ones from posting
 * chunks and patches (cached across searches, and extended over chunks flushed since),
 * then the pending tail's.
 *
 * @throws IndexError INDEX_CORRUPT when a chunk or patch cannot be decoded
 */
export function postingSet(context: SearchContext, token: string, bits: number): Uint32Array {
  const { db, state, cache } = context
  const key = `${bits}\u0000${token}`
  let entry = cache.sets.get(key)
  if (entry === undefined) {
    const docids: number[] = []
    readChunks(db, Buffer.from(token), bits, 0, state.chunks, docids)
    readPatches(db, token, bits, docids)
    entry = { set: toDocidSet(docids), chunks: state.chunks, flushed: state.flushed }
    cacheSet(cache, key, entry)
  } else if (entry.chunks < state.chunks) {
    // Flushes since: their chunks hold only docids above the set's (patches come with a
    // change of `patched`, which started the cache over), so the set grows at its end.
    const added: number[] = []
    readChunks(db, Buffer.from(token), bits, entry.chunks, state.chunks, added)
    entry = { set: concatenated(entry.set, toDocidSet(added)), chunks: state.chunks, flushed: state.flushed }
    cacheSet(cache, key, entry)
  }
  // Docids of the tail (all above every flushed docid).
  const tail: number[] = []
  context.tailPostings.collect(token, bits, tail)
  return concatenated(entry.set, tail)
}
