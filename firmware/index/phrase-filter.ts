/**
 * Phrase queries: the candidates (the intersection of a phrase's tokens) that have the
 * phrase, verified on their stored records and cached across searches: the header fields
 * in the forward record (phrase-match.ts), the body in its phrase stream (phrase-stream.ts),
 * or in its text for a document indexed before phrase streams were kept.
 */

import type { TextField } from './query.js'
import { forwardFieldIndex } from './forward-record.js'
import { bodyPhraseTest, encodedForwardHasPhrase, phrasePattern } from './phrase-match.js'
import { readPhraseStream, readRecord } from './record-io.js'
import { concatenated, intersect } from './docid-sets.js'
import { cacheSet, queryCacheRecordsMax, type SearchContext } from './query-cache.js'
import type { Paced } from './search-pacing.js'
import { phraseStreamHas, phraseStreamPattern } from './phrase-stream.js'
import { postingSet } from './posting-sets.js'
import { anyTextBits, fieldBits } from './field-bits.js'

/** Candidates checked on their phrase streams between two yields. */
const streamChecksPerYield = 64

/** The consecutive fields of the forward layout a phrase in `field` is looked for in. */
export function fieldRangeOf(field: TextField): [number, number] {
  switch (field) {
    case 'any':
      return [forwardFieldIndex.subject, forwardFieldIndex.attachmentNames]
    case 'subject':
      return [forwardFieldIndex.subject, forwardFieldIndex.subject]
    case 'from':
      return [forwardFieldIndex.from, forwardFieldIndex.from]
    case 'to':
      return [forwardFieldIndex.to, forwardFieldIndex.to]
    case 'attachment':
      return [forwardFieldIndex.attachmentNames, forwardFieldIndex.attachmentNames]
  }
}

/**
 * The candidates that have the phrase in the field: in the forward record's streams,
 * or for the body in the display record's text; the flushed ones' answer is cached per
 * phrase, the tail's per phrase and tail generation.
 *
 * Paced (search-pacing.ts): it yields after every candidate checked on its text (one may be
 * a whole inflated text; 64 between yields made runs of 100-240 ms), and after every
 * `streamChecksPerYield` checked on their streams (~1-3 µs each). Shared entries of the cache are changed
 * only between yields, after a verification has finished, so a search paused in
 * the middle never leaves half an answer in the cache.
 *
 * @param candidates ascending docids (the intersection of the phrase's tokens)
 */
export function* phraseFilter(context: SearchContext, candidates: Uint32Array, field: TextField, tokens: readonly string[]): Paced<Uint32Array> {
  const { db, state, cache } = context
  const [firstField, lastField] = fieldRangeOf(field)
  const inBody = firstField <= forwardFieldIndex.body && forwardFieldIndex.body <= lastField
  const pattern = phrasePattern(tokens)
  const bodyHasPhrase = bodyPhraseTest(tokens)
  const streamPattern = phraseStreamPattern(tokens)
  // For a phrase in any field: the candidates with every token in a header field (subject,
  // addresses, file names), usually few; the others' forward records are not read. Made
  // when a first candidate is to be verified (an answer in the cache needs none).
  let inHeaders: Uint32Array | undefined | null = field === 'any' ? null : undefined
  function* headerCandidates(): Paced<Uint32Array> {
    let set: Uint32Array | undefined
    for (const token of new Set(tokens)) {
      const tokenSet = postingSet(context, token, anyTextBits & ~fieldBits.body)
      set = set === undefined ? tokenSet : intersect(set, tokenSet)
      yield
    }
    return set!
  }
  function* verify(from: number, to: number): Paced<Uint32Array> {
    if (inHeaders === null && from < to) inHeaders = yield* headerCandidates()
    const out = new Uint32Array(Math.max(0, to - from))
    let count = 0
    let streamChecks = 0
    let header = 0
    for (let index = from; index < to; index++) {
      if (++streamChecks >= streamChecksPerYield) {
        streamChecks = 0
        yield
      }
      const docid = candidates[index]!
      let headersMayHave = true
      if (inHeaders) {
        while (header < inHeaders.length && inHeaders[header]! < docid) header++
        headersMayHave = inHeaders[header] === docid
      }
      // getBinaryFast's buffer is reused by the next read: it is searched at once.
      if (headersMayHave) {
        const bytes = db.forward.getBinaryFast(docid)
        if (!bytes) continue
        if (encodedForwardHasPhrase(bytes, firstField, lastField, pattern)) {
          out[count++] = docid
          continue
        }
      }
      if (inBody) {
        const stream = readPhraseStream(db, docid)
        if (stream !== undefined) {
          if (phraseStreamHas(stream, streamPattern)) out[count++] = docid
          continue
        }
        // Indexed before phrase streams: its text is inflated and searched.
        const record = readRecord(db, docid)
        if (record && bodyHasPhrase(record)) out[count++] = docid
        streamChecks = streamChecksPerYield
      }
    }
    return out.subarray(0, count)
  }
  // Candidates are ascending: the flushed ones come first.
  let split = 0
  while (split < candidates.length && candidates[split]! <= state.flushed) split++
  const key = `phrase\u0000${field}\u0000${tokens.join(' ')}`
  let tailEntry = cache.tailPhrases.get(key)
  if (tailEntry !== undefined && tailEntry.generation !== state.generation) tailEntry = undefined
  let entry = cache.sets.get(key)
  if (entry === undefined) {
    entry = { set: yield* verify(0, split), chunks: state.chunks, flushed: state.flushed }
    cacheSet(cache, key, entry)
  } else if (entry.flushed < state.flushed) {
    // Flushed since: the candidates in (entry.flushed, state.flushed], verified as tail
    // documents already when the tail's entry covers them (same generation: unchanged since).
    const from = entry.flushed
    let added: Uint32Array
    if (tailEntry !== undefined && tailEntry.base <= from && tailEntry.through >= state.flushed) {
      added = Uint32Array.from(tailEntry.docids.filter((docid) => docid > from && docid <= state.flushed))
    } else {
      let first = 0
      while (first < split && candidates[first]! <= from) first++
      added = yield* verify(first, split)
    }
    entry = { set: concatenated(entry.set, added), chunks: state.chunks, flushed: state.flushed }
    cacheSet(cache, key, entry)
  }
  const flushed = entry.set
  // Tail documents change only with the generation: what was verified stays verified,
  // and only candidates that arrived since are read; those a flush moved out of the tail
  // are dropped from it (the flushed set above has them).
  if (tailEntry === undefined) {
    if (cache.tailPhrases.size >= queryCacheRecordsMax) cache.tailPhrases.clear()
    tailEntry = { generation: state.generation, base: state.flushed, through: state.flushed, docids: [] }
    cache.tailPhrases.set(key, tailEntry)
  } else if (tailEntry.base < state.flushed) {
    tailEntry.docids = tailEntry.docids.filter((docid) => docid > state.flushed)
    tailEntry.base = state.flushed
    tailEntry.through = Math.max(tailEntry.through, state.flushed)
  }
  let fresh = split
  while (fresh < candidates.length && candidates[fresh]! <= tailEntry.through) fresh++
  for (const docid of yield* verify(fresh, candidates.length)) tailEntry.docids.push(docid)
  tailEntry.through = Math.max(tailEntry.through, state.next - 1)
  return concatenated(flushed, tailEntry.docids)
}
