/**
 * Writing one document into the index and removing it, inside the caller's write
 * transaction: the id mapping, the forward and display records, the date slot and the
 * state; a re-index of a flushed document adds posting patches.
 */

import assert from 'node:assert'
import type { Logger } from '../common/logger.js'
import { docidOf, idKeyPrefix, putNew, readState, writeState, type Databases, type IndexState } from './index-databases.js'
import type { IndexOptions } from './index-types.js'
import type { IndexInput } from './index-input.js'
import { encodeForward, postingsOf, type ForwardRecord } from './forward-record.js'
import { encodeRecord } from './display-record.js'
import { packTerms } from './packed-terms.js'
import { analyzeDocument, analyzeSequential } from './document-analysis.js'
import type { PreparedDocument } from './prepared-document.js'
import { getForward, getRecord, putPatch, putPhraseStream, putRecord, readPhraseStream, removePhraseStream, removeRecord } from './record-io.js'
import { samePhraseStream } from './phrase-stream.js'
import { createDateWriter } from './date-column.js'
import type { PendingTail } from './pending-tail.js'
import type { TailFlush } from './tail-flush.js'

/** True when two forward records hold the same streams and tokens. */
export function sameForward(left: ForwardRecord, right: ForwardRecord): boolean {
  return (
    left.subject === right.subject &&
    left.body === right.body &&
    left.from === right.from &&
    left.to === right.to &&
    left.attachmentNames === right.attachmentNames &&
    left.hasAttachment === right.hasAttachment &&
    left.fromExact.join('\n') === right.fromExact.join('\n') &&
    left.toExact.join('\n') === right.toExact.join('\n')
  )
}

/** The writer of one index's documents: see createDocumentWrites. */
export type DocumentWrites = ReturnType<typeof createDocumentWrites>

/** Creates the writer. Pure: it works on the databases each call hands it. */
export function createDocumentWrites(deps: { logger: Logger; limits: IndexOptions; tail: PendingTail; flush: TailFlush }) {
  const { logger, limits, tail, flush } = deps
  const dates = createDateWriter()

  /**
   * Indexes one message (or updates it when its id is indexed). Runs inside a write transaction.
   *
   * @param autoFlush flush the tail when this document fills it
   * @param state the state read in this transaction (read here when not given)
   */
  function indexInTransaction(db: Databases, input: IndexInput, autoFlush: boolean, prepared?: PreparedDocument, state: IndexState = readState(db)): { docid: number; changed: boolean } {
    assert(/^[0-9a-f]{64}$/.test(input.id), 'an archive id is 64 lower-case hex characters')
    const existing = docidOf(db, input.id)
    // A re-index compares with the stored document, body stream included: one-pass analysis (see AnalyzedDocument.forward).
    const analyzed = existing === undefined ? analyzeDocument(input, limits, prepared) : analyzeSequential(input, limits)
    if (analyzed.truncated) logger.debug('message indexed in part (token or address budget)', { id: input.id })
    if (existing !== undefined) return reindexInTransaction(db, existing, analyzed, state)
    const docid = state.next++
    state.documents++
    db.keys.putSync(idKeyPrefix + input.id, docid)
    putNew(db.forward, docid, encodeForward(analyzed.forward))
    putRecord(db, docid, encodeRecord(analyzed.record), true)
    putPhraseStream(db, docid, analyzed.phraseStream, true)
    dates.setDate(db, docid, analyzed.record.dateMs)
    writeState(db, state)
    tail.remember(docid, input.id, analyzed.terms ?? packTerms(postingsOf(analyzed.forward)))
    if (autoFlush) flush.maybeFlush(db, state)
    return { docid, changed: true }
  }

  /** Writes what changed of an indexed document (another delivery's envelope, a new analysis); its docid and date stay. */
  function reindexInTransaction(db: Databases, docid: number, analyzed: ReturnType<typeof analyzeSequential>, state: IndexState): { docid: number; changed: boolean } {
    const oldRecord = getRecord(db, docid)
    const old = getForward(db, docid, oldRecord)
    // A document indexed before phrase streams were kept gets its stream here.
    if (old !== undefined && sameForward(old, analyzed.forward) && samePhraseStream(readPhraseStream(db, docid), analyzed.phraseStream)) return { docid, changed: false }
    // The order of a document never changes once indexed, so cursors stay valid.
    const record = { ...analyzed.record, dateMs: oldRecord?.dateMs ?? analyzed.record.dateMs }
    tail.forget(docid)
    db.forward.putSync(docid, encodeForward(analyzed.forward))
    putRecord(db, docid, encodeRecord(record), false)
    putPhraseStream(db, docid, analyzed.phraseStream, false)
    if (docid <= state.flushed) {
      // Already in chunks: add patch entries for what is new (a later delivery's envelope
      // recipients, typically). Nothing is taken away: a re-index only ever adds here.
      const before = old ? postingsOf(old) : new Map<string, number>()
      for (const [token, mask] of postingsOf(analyzed.forward)) {
        const added = mask & ~(before.get(token) ?? 0)
        if (added !== 0) putPatch(db, token, state.chunks, docid, mask)
      }
      // Searches cache what they decoded from flushed documents (see QueryCache).
      state.patched = (state.patched ?? 0) + 1
    } else {
      state.generation++
      flush.noteChanged(docid)
    }
    writeState(db, state)
    return { docid, changed: true }
  }

  /** Removes a message's id mapping, records and date (its postings become garbage). Runs inside a write transaction. */
  function removeInTransaction(db: Databases, id: string): boolean {
    const docid = docidOf(db, id)
    if (docid === undefined) return false
    const state = readState(db)
    db.keys.removeSync(idKeyPrefix + id)
    db.forward.removeSync(docid)
    removeRecord(db, docid)
    removePhraseStream(db, docid)
    tail.forget(docid)
    dates.setDate(db, docid, Number.NaN)
    state.documents--
    state.removed++
    if (docid > state.flushed) state.generation++
    else state.patched = (state.patched ?? 0) + 1
    writeState(db, state)
    return true
  }

  return { indexInTransaction, removeInTransaction }
}
