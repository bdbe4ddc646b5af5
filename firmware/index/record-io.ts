/**
 * Reads and writes of the index's records under their keys: display records cut into parts,
 * forward records, posting blocks and patches. The records' own encodings are in
 * display-record.ts, forward-record.ts, posting-chunk.ts and posting-blocks.ts.
 */

import { blobParts, blobPartsMax } from '../archive/layout.js'
import { IndexError } from './errors.js'
import { putNew, type Databases } from './index-databases.js'
import { decodeForward, type ForwardRecord } from './forward-record.js'
import { bodyStreamOf, decodeRecord, type StoredRecord } from './display-record.js'
import { decodeChunkInto, encodeChunk } from './posting-chunk.js'
import { findInBlock } from './posting-blocks.js'

/** Key of part `part` of docid `docid`'s display record: both big-endian, so keys sort by docid, then part. */
function recordPartKey(docid: number, part: number): Buffer {
  const key = Buffer.allocUnsafe(6)
  key.writeUInt32BE(docid, 0)
  key.writeUInt16BE(part, 4)
  return key
}

/**
 * Writes a display record cut as the archive cuts its blobs (blobParts: whole overflow
 * pages, then chunks four to a leaf page), so LMDB wastes little space on it. Whole,
 * a record of 1–2 KB packed two or three to a 4 KiB page and one over ~2 KB took whole
 * overflow pages: on the corpus the display records took 0.26 bytes of disk per raw byte
 * for 0.21 of record bytes. New docids only grow: their parts are appended.
 */
export function putRecord(db: Databases, docid: number, bytes: Buffer, isNew: boolean): void {
  if (!isNew) removeRecord(db, docid)
  blobParts(bytes.byteLength, db.pageSizeBytes).forEach(([start, end], part) => {
    const key = recordPartKey(docid, part)
    const value = bytes.subarray(start, end)
    if (isNew) putNew(db.documents, key, value)
    else db.documents.putSync(key, value)
  })
}

/**
 * Writes a document's phrase stream (phrase-stream.ts), whole. Measured: on the corpus the
 * streams (7.4 MB) took 9.6 MB of pages, 8.35 MB LZ4-compressed by lmdb-js and 8.4 MB cut
 * into parts as display records are; on 20x (120,920 messages) 192 MB plain, 167 MB LZ4. The
 * cold phrase p95 on 20x was 63 ms plain, 100 ms with LZ4 (a decompression per candidate)
 * and ~35 ms against 10 ms on the corpus in parts (several reads and a copy): plain it is.
 */
export function putPhraseStream(db: Databases, docid: number, stream: Uint8Array, isNew: boolean): void {
  const value = Buffer.from(stream.buffer, stream.byteOffset, stream.byteLength)
  if (isNew) putNew(db.phrases, docid, value)
  else db.phrases.putSync(docid, value)
}

/**
 * A document's phrase stream, or undefined when it has none (indexed before streams were
 * kept). It is lmdb-js's shared read buffer: use it before the next read, and by its
 * `length` (see phraseStreamHas).
 */
export function readPhraseStream(db: Databases, docid: number): Uint8Array | undefined {
  return db.phrases.getBinaryFast(docid)
}

/** Removes a document's phrase stream. Runs inside a write transaction. */
export function removePhraseStream(db: Databases, docid: number): void {
  db.phrases.removeSync(docid)
}

/**
 * A display record's bytes (its parts joined), or undefined when there is none. Point reads
 * part by part until one is missing: a range iterator cost ~30 µs more per record under
 * Bun, and phrase checks read a record per candidate.
 */
export function readRecord(db: Databases, docid: number): Buffer | undefined {
  const parts: Buffer[] = []
  for (let part = 0; part <= blobPartsMax; part++) {
    const bytes = db.documents.getBinary(recordPartKey(docid, part))
    if (bytes === undefined) break
    parts.push(bytes)
  }
  if (parts.length === 0) return undefined
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

/** Removes every part of a display record. Runs inside a write transaction. */
export function removeRecord(db: Databases, docid: number): void {
  for (const key of [...db.documents.getKeys({ start: recordPartKey(docid, 0), end: recordPartKey(docid + 1, 0) })]) db.documents.removeSync(key)
}

/**
 * A document's display record, decoded; undefined when there is none.
 *
 * @throws IndexError INDEX_CORRUPT when it cannot be decoded
 */
export function getRecord(db: Databases, docid: number): StoredRecord | undefined {
  const bytes = readRecord(db, docid)
  if (bytes === undefined) return undefined
  const record = decodeRecord(bytes)
  if (!record) throw new IndexError('INDEX_CORRUPT', `display record of docid ${docid} is unreadable: rebuild the index`, { fields: { docid } })
  return record
}

/**
 * The forward record of a document, its body stream derived from the display record's
 * text (`record`: that record when the caller has read it already).
 *
 * @throws IndexError INDEX_CORRUPT when it cannot be decoded
 */
export function getForward(db: Databases, docid: number, record: StoredRecord | undefined = getRecord(db, docid)): ForwardRecord | undefined {
  const bytes = db.forward.getBinary(docid)
  if (bytes === undefined) return undefined
  const forward = decodeForward(bytes)
  if (!forward) throw new IndexError('INDEX_CORRUPT', `forward record of docid ${docid} is unreadable: rebuild the index`, { fields: { docid } })
  if (record) forward.body = bodyStreamOf(record)
  return forward
}

/** Key of a posting block: the flush's chunk number (uint32 BE), then the block's first token (UTF-8), so keys sort by flush, then token bytes. */
export function postingKey(chunk: number, token: Uint8Array): Buffer {
  const key = Buffer.allocUnsafe(4 + token.byteLength)
  key.writeUInt32BE(chunk, 0)
  key.set(token, 4)
  return key
}

/** Writes the patch chunk of one re-indexed flushed document for one token, keyed `[token, chunk number, docid]`. */
export function putPatch(db: Databases, token: string, chunk: number, docid: number, mask: number): void {
  db.patches.putSync([token, chunk, docid], encodeChunk([docid, mask]))
}

/**
 * Appends to `docids` those of chunks `fromChunk`..`toChunk - 1` for `token` whose mask meets `bits`.
 *
 * @throws IndexError INDEX_CORRUPT when a block cannot be decoded
 */
export function readChunks(db: Databases, tokenBytes: Buffer, bits: number, fromChunk: number, toChunk: number, docids: number[]): void {
  // Per flush, the one block that can hold the token (the last whose first token is not after it).
  for (let chunk = fromChunk; chunk < toChunk; chunk++) {
    for (const { key, value } of db.postings.getRange({ start: postingKey(chunk, tokenBytes), reverse: true, limit: 1 })) {
      if (key.readUInt32BE(0) !== chunk) break
      const found = findInBlock(value, tokenBytes)
      if (found === false || (found !== null && !decodeChunkInto(found, bits, docids)))
        throw new IndexError('INDEX_CORRUPT', 'a posting block could not be decoded: rebuild the index', { fields: { chunk } })
    }
  }
}

/**
 * Appends to `docids` those of every patch of `token` whose mask meets `bits` (any order: see toDocidSet).
 *
 * @throws IndexError INDEX_CORRUPT when a patch cannot be decoded
 */
export function readPatches(db: Databases, token: string, bits: number, docids: number[]): void {
  for (const { key, value } of db.patches.getRange({ start: [token], end: [token, Number.POSITIVE_INFINITY] })) {
    if (!decodeChunkInto(value, bits, docids)) throw new IndexError('INDEX_CORRUPT', 'a posting patch could not be decoded: rebuild the index', { fields: { key } })
  }
}
