import assert from 'node:assert'
import type { Database, Key, RootDatabase } from 'lmdb'
import { putAppend } from '../common/lmdb-append.js'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import type { ParsedMessage } from '../mime/types.js'
import { IndexError } from './errors.js'
import type { DocumentLimits, IndexInput } from './index-input.js'
import { decodeForward, encodeForward, forwardFieldIndex, postingsOf, type ForwardRecord } from './forward-record.js'
import { bodyStreamOf, decodeRecord, encodeRecord, type StoredRecord } from './display-record.js'
import { packTerms, type PackedTerms } from './packed-terms.js'
import { bodyPhraseTest, encodedForwardHasPhrase, phrasePattern } from './phrase-match.js'
import { isPreparedDocument, prepareDocument, type PreparedDocument } from './prepared-document.js'
import { analyzeDocument, analyzeSequential } from './document-analysis.js'
import { bitsOf, fieldBits, hasAttachmentToken } from './field-bits.js'
import { decodeChunkInto, encodeChunk } from './posting-chunk.js'
import type { PostingSink, PostingSizes } from './posting-sink.js'
import { createFlushPostings } from './flush-postings.js'
import { createPostingGroups, type PostingGroups } from './posting-groups.js'
import { concatenated, difference, intersect, toDocidSet, union } from './docid-sets.js'
import { blockTokenBytesMax, createBlockWriter, findInBlock } from './posting-blocks.js'
import { parseQuery, positiveTokens, type QueryNode, type TextField } from './query.js'
import { makeSnippet } from './snippet.js'
import { blobParts, blobPartsMax } from '../archive/layout.js'
import { cutToChars } from '../common/text.js'

/**
 * firmware/index: the full-text index of the archive, kept in the archive's own LMDB
 * environment and written inside the archive's write transaction, so a message is
 * searchable as soon as its ingest commits. The layout and its reasons are in
 * docs/index-layout.md; in short:
 *
 * - every message gets a dense docid (1, 2, …) at index time, mapped from its archive id;
 * - its forward record (token streams per field) and display record are written at once;
 * - postings (token → docids with field bits) are written in batches: the newest
 *   `pendingDocumentsMax` documents are the pending tail, answered at query time from
 *   their forward records (cached in memory); when the tail is full, the ingest that
 *   fills it writes one posting chunk per distinct token of the tail (a flush). One
 *   LMDB write per token per flush instead of one per token per message keeps ingest
 *   cheap;
 * - dates live in a column (blocks of 128 float64 per docid) used to filter, sort newest
 *   first and mark removed documents (NaN).
 */

/** Names of the index's databases in the archive's LMDB environment (the environment needs `maxDbs` for these too). */
export const indexDatabaseNames = {
  postings: 'index-postings',
  patches: 'index-patches',
  forward: 'index-forward',
  documents: 'index-documents',
  dates: 'index-dates',
  keys: 'index-keys',
} as const

/** Layout version stored in the index; a different one makes `search` ask for a rebuild. */
export const indexLayoutVersion = 4
/** Docids per block of the date column: 1 KiB, small enough to sit inline in a leaf page (a 4 KiB value would take two overflow pages), so the read-modify-write of each ingest stays cheap. */
export const dateBlockDocids = 128

export interface IndexOptions extends DocumentLimits {
  /** Documents kept in the pending tail before their postings are flushed, in documents. */
  pendingDocumentsMax: number
  /**
   * Build a flush's posting blocks between event-loop turns (in slices of `flushSliceMs`)
   * once the tail holds `pendingDocumentsMax` documents, and write them in a transaction
   * of their own, instead of building them inside the ingest that fills the tail (which
   * held the event loop for ~1 s per 4,096 corpus messages). The tail grows meanwhile; at
   * twice `pendingDocumentsMax` an ingest flushes it in its own transaction regardless.
   */
  flushInBackground: boolean
  /** Longest slice of a background flush build before it lets the event loop run, in ms. */
  flushSliceMs: number
  /** Hits per page when the caller gives no limit. */
  searchLimitDefault: number
  /** Most hits per page. */
  searchLimitMax: number
  /** Time budget of one search, in ms; over it the search fails with QUERY_TIMEOUT. */
  searchTimeBudgetMs: number
  /** Messages indexed per write transaction by `rebuild`. */
  rebuildBatchMessages: number
  /** Ids listed per kind (missing, extra, stale) in a verify report; the counts are exact. */
  verifyListedIdsMax: number
}

/** Defaults sized for an appliance with a few GiB of RAM. */
export const defaultIndexOptions: Readonly<IndexOptions> = Object.freeze({
  tokensPerDocumentMax: 50_000,
  addressesPerDocumentMax: 2_000,
  snippetTextCharsMax: 4_096,
  textCharsPerDocumentMax: 1_000_000,
  futureDateSkewMsMax: 24 * 60 * 60 * 1000,
  pendingDocumentsMax: 4_096,
  flushInBackground: true,
  flushSliceMs: 4,
  searchLimitDefault: 20,
  searchLimitMax: 100,
  searchTimeBudgetMs: 10_000,
  rebuildBatchMessages: 500,
  verifyListedIdsMax: 100,
})

export interface SearchHit {
  /** Archive id (64 hex). */
  id: string
  /** The date the message is ordered by, ms since the epoch (Date header, or archive time when missing or in the future). */
  dateMs: number
  /** First sender, `Name <address>`. */
  from: string
  subject: string
  /** HTML-escaped excerpt with matches in `<mark>`; see makeSnippet. */
  snippet: string
}

export interface SearchResult {
  /** Number of messages matching the query (all pages). */
  total: number
  /** Newest first (by dateMs, then by index order). */
  hits: SearchHit[]
  /** Pass as `cursor` for the next page; null on the last page. */
  nextCursor: string | null
}

export interface SearchOptions {
  /** Hits per page; default `searchLimitDefault`, at most `searchLimitMax`. */
  limit?: number
  /** `nextCursor` of the previous page. */
  cursor?: string | null
}

export interface VerifyReport {
  /** Ids the archive listed. */
  archived: number
  /** Documents in the index. */
  indexed: number
  missingCount: number
  extraCount: number
  /** Indexed documents whose forward record differs from a fresh analysis (only with `getInput`). */
  staleCount: number
  /** The first `verifyListedIdsMax` of each kind. */
  missing: string[]
  extra: string[]
  stale: string[]
  ok: boolean
}

export interface IndexStats {
  documents: number
  /** Documents not yet in posting chunks (answered from the tail). */
  pending: number
  /** Flushes so far (posting chunks per token at most this many, plus patches). */
  flushes: number
  /** Documents removed since the last rebuild (their postings are garbage until then). */
  removedSinceRebuild: number
  /** A rebuild is under way, or was interrupted and must be run again: the index does not hold every message. */
  rebuilding: boolean
  /** False for an index written with another layout (it is rebuilt at start). */
  layoutCurrent: boolean
}

interface IndexState {
  v: number
  /** Next docid to allocate (docids start at 1). */
  next: number
  /** Every docid ≤ this is in posting chunks. */
  flushed: number
  /** Flushes so far; the chunk number of the next flush. */
  chunks: number
  /** Changes to tail documents (re-index, removal), so the tail cache knows to reload. */
  generation: number
  documents: number
  removed: number
  /** Changes to flushed documents (re-index, removal), so searches know to drop what they cached; absent means 0. */
  patched?: number
  /** Set when a rebuild clears the index, cleared when it has indexed every message (see SearchIndex.complete). */
  rebuilding?: boolean
}

interface Databases {
  root: RootDatabase
  /** Posting blocks keyed chunk number (uint32 BE) + the block's first token (UTF-8): every flush appends after the last. */
  postings: Database<Buffer, Buffer>
  /** Patch chunks of re-indexed flushed documents, keyed [token, chunk number, docid]. */
  patches: Database<Buffer, (string | number)[]>
  forward: Database<Buffer, number>
  /** Display records, each cut into parts keyed (docid, part): see putRecord. */
  documents: Database<Buffer, Buffer>
  pageSizeBytes: number
  dates: Database<Buffer, number>
  keys: Database<unknown, string>
}

/** A display record as hits show it: the text cut to what a snippet looks at, and its snippet without marks once made. */
interface ShownRecord {
  record: StoredRecord
  /** The snippet when nothing is to be marked (a query of dates or of other fields): the same for every such query. */
  plainSnippet?: string
}

/** A set over flushed documents: those of chunks below `chunks`, docids up to `flushed`. */
interface CachedSet {
  set: Uint32Array
  chunks: number
  flushed: number
}

/**
 * What searches decoded from data that only a flush, a re-index or a removal can change
 * (posting sets of flushed chunks, verified phrase sets over flushed documents, full date
 * blocks), kept across searches: hot tokens and repeated queries (every further page of a
 * result is the same query again) then cost no LMDB reads. Valid while the state's
 * `patched` (re-index or removal of a flushed document) and the index's epoch (databases
 * opened, rebuild) stay as they were; a flush only adds documents, and a cached set is
 * extended over them when next used. Bounded by `queryCacheDocidsMax`.
 */
interface QueryCache {
  /** The index's epoch, and the state's `patched`: either moving starts the cache over. */
  epoch: number
  patched: number
  /** The state's chunks and flushed docid when last used (they only grow while the cache lives). */
  chunks: number
  flushed: number
  /**
   * Sets over flushed documents by `bits NUL token` (posting sets) or `phrase NUL field NUL
   * tokens`. A flush does not change what a set says about the documents it covers: a later
   * search extends it over the new chunk instead of starting over.
   */
  sets: Map<string, CachedSet>
  /** Docids held in `sets`. */
  docids: number
  /** Date blocks whose every docid is flushed. */
  dates: Map<number, Float64Array>
  /**
   * The other date blocks (tail documents), as of `tailDatesNext` and `tailDatesGeneration`:
   * an ingest moves `next`, a removal from the tail the generation (a removal of a flushed
   * document `patched`, which starts the whole cache over).
   */
  tailDates: Map<number, Float64Array>
  tailDatesNext: number
  tailDatesGeneration: number
  /**
   * Verified phrase sets over the tail, per phrase: the docids that have it among those
   * up to `through`, valid while the tail's `generation` stays (new documents extend it).
   */
  tailPhrases: Map<string, { generation: number; base: number; through: number; docids: number[] }>
  /**
   * Display records shown in hits (at most `queryCacheRecordsMax`), for the index
   * `generation` below: a re-indexed tail document changes its record and the generation
   * (a re-indexed flushed one changes `patched`, which starts the whole cache over).
   */
  records: Map<number, ShownRecord>
  recordsGeneration: number
}

/** Display records the query cache holds at most. */
const queryCacheRecordsMax = 2_000

/** Docids the query cache holds at most (4 bytes each). */
const queryCacheDocidsMax = 8_000_000

interface TailCache {
  chunks: number
  generation: number
  loadedThrough: number
  /** The postings of the tail documents loaded, by token (flat typed arrays: see PostingGroups). */
  postings: PostingGroups
}

/** The posting blocks of one flush, built from tail documents `first`..`last`. */
interface BuiltFlush {
  first: number
  last: number
  /** In key order: each block's first token (UTF-8) and its bytes. */
  blocks: Array<{ firstToken: Buffer; block: Buffer }>
  /** Distinct tokens. */
  tokens: number
}

/** A flush built between event-loop turns (see IndexOptions.flushInBackground). */
interface BackgroundFlush {
  /** The index's epoch when it started. */
  epoch: number
  /** The chunk number it was built for (-1 until it read the state). */
  chunks: number
  /** Tail documents re-indexed since it started. */
  changed: Set<number>
  failed: boolean
  /** Settles when the build is written, dropped or failed. */
  done: Promise<void>
}

/** Postings a flush build adds between two chances to yield (0.4–2.5 ms of work: measured 0.1–0.6 µs per posting). */
const flushStepPostings = 4_096
/** Tokens a flush build encodes between two chances to yield. */
const flushStepTokens = 1_024

/** An async or sync source of values. */
export type Source<T> = AsyncIterable<T> | Iterable<T>

const stateKey = 'state'
const idKeyPrefix = 'id:'
const cursorPattern = /^[A-Za-z0-9_-]{1,64}$/

/**
 * Writes a record (or a posting block) under a new key. Docids and flush numbers only grow,
 * so the put is an append (putAppend): the records fill their pages (measured on the
 * corpus: display records took 0.26 bytes of disk per raw byte with ordinary puts,
 * half-empty pages). A key not above the last one (not expected; an aborted transaction
 * leaves nothing behind) falls back to an ordinary put.
 */
function putNew<K extends Key>(database: Database<Buffer, K>, key: K, value: Buffer): void {
  if (!putAppend(database, key, value)) database.putSync(key, value)
}

/** Writes the patch chunk of one re-indexed flushed document for one token, keyed `[token, chunk number, docid]`. */
function putPatch(db: Databases, token: string, chunk: number, docid: number, mask: number): void {
  db.patches.putSync([token, chunk, docid], encodeChunk([docid, mask]))
}

/** Key of a posting block: the flush's chunk number (uint32 BE), then the block's first token (UTF-8), so keys sort by flush, then token bytes. */
function postingKey(chunk: number, token: Uint8Array): Buffer {
  const key = Buffer.allocUnsafe(4 + token.byteLength)
  key.writeUInt32BE(chunk, 0)
  key.set(token, 4)
  return key
}

/**
 * A token with its UTF-16 units from U+D800 up swapped so that their order is code point
 * order: surrogates (astral characters) move above U+E000–U+FFFF, which move down. The
 * mapping is its own kind of inverse: `forward` false undoes it.
 */
function shiftHighUnits(token: string, forward: boolean): string {
  let out = ''
  for (let index = 0; index < token.length; index++) {
    const unit = token.charCodeAt(index)
    if (unit < 0xd800) out += token[index]
    else if (forward) out += String.fromCharCode(unit >= 0xe000 ? unit - 0x800 : unit + 0x2000)
    else out += String.fromCharCode(unit >= 0xf800 ? unit - 0x2000 : unit + 0x800)
  }
  return out
}

const highUnit = /[\uD800-\uFFFF]/

/**
 * Sorts tokens by their UTF-8 bytes (code point order), the order of posting keys and
 * blocks. JavaScript's sort compares UTF-16 units, which agrees except between a surrogate
 * and a unit in U+E000–U+FFFF: tokens with such units are sorted shifted (shiftHighUnits)
 * and shifted back, so the sort stays the native one (measured on a flush of 46,000 tokens:
 * a comparator function took 137 ms, comparing Buffer.from of both sides 245 ms, this ~35).
 */
export function sortByUtf8(tokens: string[]): string[] {
  if (!tokens.some((token) => /[\uD800-\uDFFF]/.test(token))) return tokens.sort()
  for (let index = 0; index < tokens.length; index++) if (highUnit.test(tokens[index]!)) tokens[index] = shiftHighUnits(tokens[index]!, true)
  tokens.sort()
  for (let index = 0; index < tokens.length; index++) if (highUnit.test(tokens[index]!)) tokens[index] = shiftHighUnits(tokens[index]!, false)
  return tokens
}

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
function putRecord(db: Databases, docid: number, bytes: Buffer, isNew: boolean): void {
  if (!isNew) removeRecord(db, docid)
  blobParts(bytes.byteLength, db.pageSizeBytes).forEach(([start, end], part) => {
    const key = recordPartKey(docid, part)
    const value = bytes.subarray(start, end)
    if (isNew) putNew(db.documents, key, value)
    else db.documents.putSync(key, value)
  })
}

/**
 * A display record's bytes (its parts joined), or undefined when there is none. Point reads
 * part by part until one is missing: a range iterator cost ~30 µs more per record under
 * Bun, and phrase checks read a record per candidate.
 */
function readRecord(db: Databases, docid: number): Buffer | undefined {
  const parts: Buffer[] = []
  for (let part = 0; part <= blobPartsMax; part++) {
    const bytes = db.documents.getBinary(recordPartKey(docid, part))
    if (bytes === undefined) break
    parts.push(bytes)
  }
  if (parts.length === 0) return undefined
  return parts.length === 1 ? parts[0] : Buffer.concat(parts)
}

function removeRecord(db: Databases, docid: number): void {
  for (const key of [...db.documents.getKeys({ start: recordPartKey(docid, 0), end: recordPartKey(docid + 1, 0) })]) db.documents.removeSync(key)
}

/** The consecutive fields of the forward layout a phrase in `field` is looked for in. */
function fieldRangeOf(field: TextField): [number, number] {
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

function sameForward(left: ForwardRecord, right: ForwardRecord): boolean {
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

/**
 * Appends to `out` from `count` the docids (`base` + slot) of a date block dated in
 * [fromMs, toMs) (NaN, no document, is in no range); returns the new count. `out` has room
 * for a whole block. A small function of its own so that the JIT compiles the loop early.
 */
function collectDated(dates: Float64Array, fromMs: number, toMs: number, base: number, out: Uint32Array, count: number): number {
  let at = count
  for (let slot = 0; slot < dates.length; slot++) {
    const dateMs = dates[slot]!
    if (dateMs >= fromMs && dateMs < toMs) out[at++] = base + slot
  }
  return at
}

/** Opaque cursor of a position (dateMs, docid) in the newest-first order. */
function encodeCursor(dateMs: number, docid: number): string {
  return Buffer.from(`${indexLayoutVersion}.${dateMs}.${docid}`).toString('base64url')
}

function decodeCursor(cursor: string): { dateMs: number; docid: number } {
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
function before(dateA: number, docA: number, dateB: number, docB: number): boolean {
  return dateA > dateB || (dateA === dateB && docA > docB)
}

export type SearchIndex = ReturnType<typeof createIndex>

/**
 * Creates the index service. Pure: nothing is opened until `databases(root)`.
 *
 * @param deps.logger the index's logger (boot names it `index`)
 * @param deps.clock monotonic time bounds searches
 * @param options limits; see IndexOptions (defaults in defaultIndexOptions)
 */
export function createIndex(deps: { logger: Logger; clock: Clock }, options: Partial<IndexOptions> = {}) {
  const limits: IndexOptions = { ...defaultIndexOptions, ...options }
  assert(limits.pendingDocumentsMax >= 1 && limits.searchLimitMax >= 1 && limits.tokensPerDocumentMax >= 1 && limits.flushSliceMs >= 0)
  // The composition root hands a logger already namespaced (boot gives `index`).
  const logger = deps.logger
  let dbs: Databases | undefined
  let tail: TailCache | undefined
  let queryCache: QueryCache | undefined
  /**
   * The postings of tail documents as indexed by this process, so a flush need not decode
   * and re-tokenize their forward records. Only a hint: an entry counts at flush time only
   * when the committed id mapping still gives its docid to its id (a rolled-back ingest
   * leaves a stale entry, which this check rejects), and re-indexed or removed documents
   * drop their entry. Anything not covered here is read from the forward record.
   */
  let tailPostings = new Map<number, { id: string; terms: PackedTerms }>()
  /** The background flush being built or waiting to be written (see maybeFlush). */
  let background: BackgroundFlush | undefined
  /** Moves on whenever the index's data is replaced (databases, rebuild): a build of before is stale. */
  let epoch = 0

  function open(): Databases {
    if (!dbs) throw new IndexError('INDEX_UNAVAILABLE', 'the index databases are not open', { retryable: true })
    return dbs
  }

  /** The stored state as it is, any layout (an empty index: the state of a new one). */
  function storedState(db: Databases): IndexState {
    return (db.keys.get(stateKey) as IndexState | undefined) ?? { v: indexLayoutVersion, next: 1, flushed: 0, chunks: 0, generation: 0, documents: 0, removed: 0 }
  }

  /** The state to work with; throws INDEX_CORRUPT for another layout. */
  function readState(db: Databases): IndexState {
    const state = storedState(db)
    if (state.v !== indexLayoutVersion) {
      throw new IndexError('INDEX_CORRUPT', `index layout ${state.v} is not ${indexLayoutVersion}: rebuild the index`, { fields: { layout: state.v } })
    }
    return { ...state }
  }

  /**
   * The forward record of a document, its body stream derived from the display record's
   * text (`record`: that record when the caller has read it already).
   */
  function getForward(db: Databases, docid: number, record: StoredRecord | undefined = getRecord(db, docid)): ForwardRecord | undefined {
    const bytes = db.forward.getBinary(docid)
    if (bytes === undefined) return undefined
    const forward = decodeForward(bytes)
    if (!forward) throw new IndexError('INDEX_CORRUPT', `forward record of docid ${docid} is unreadable: rebuild the index`, { fields: { docid } })
    if (record) forward.body = bodyStreamOf(record)
    return forward
  }

  function getRecord(db: Databases, docid: number): StoredRecord | undefined {
    const bytes = readRecord(db, docid)
    if (bytes === undefined) return undefined
    const record = decodeRecord(bytes)
    if (!record) throw new IndexError('INDEX_CORRUPT', `display record of docid ${docid} is unreadable: rebuild the index`, { fields: { docid } })
    return record
  }

  function writeState(db: Databases, state: IndexState): void {
    db.keys.putSync(stateKey, state)
  }

  /** One date block's bytes, reused by every setDate (a putSync copies the value into the transaction before it returns). */
  const dateScratch = new Float64Array(dateBlockDocids)
  const dateScratchBytes = Buffer.from(dateScratch.buffer)

  function setDate(db: Databases, docid: number, dateMs: number): void {
    const block = Math.floor(docid / dateBlockDocids)
    // getBinaryFast's buffer is lmdb-js's reused one: its `length` is the value's, not its byteLength.
    const stored = db.dates.getBinaryFast(block)
    if (stored) {
      if (stored.length !== dateScratchBytes.byteLength) throw new IndexError('INDEX_CORRUPT', `date block ${block} has ${stored.length} bytes`)
      dateScratchBytes.set(new Uint8Array(stored.buffer, stored.byteOffset, dateScratchBytes.byteLength))
    } else dateScratch.fill(Number.NaN)
    dateScratch[docid % dateBlockDocids] = dateMs
    db.dates.putSync(block, dateScratchBytes)
  }

  /**
   * Adds the terms of a tail document to `groups`: from `tailPostings` when the committed id
   * mapping confirms the entry (what a search or a flush sees is committed), else decoded
   * from its forward record (after a restart, or for an entry of a rolled-back ingest). A
   * token listed twice for one document (prepared terms, then address terms) gets one
   * posting, its bits OR-ed.
   *
   * @returns the terms added (0 for a document that is not there)
   */
  function addTailTerms(db: Databases, docid: number, groups: PostingSink): number {
    const known = tailPostings.get(docid)
    if (known !== undefined && db.keys.get(idKeyPrefix + known.id) === docid && groups.addPacked(known.terms.tokens, known.terms.masks, docid, known.terms.hashes)) return known.terms.masks.length
    const forward = getForward(db, docid)
    if (forward === undefined) return 0
    const postings = postingsOf(forward)
    for (const [token, mask] of postings) groups.add(token, docid, mask)
    return postings.size
  }

  /** The sizes of the last flush's posting groups: the next one starts at them. */
  let lastFlushSizes: PostingSizes | undefined

  /**
   * Builds the posting blocks of tail documents `first`..`last` (one chunk per distinct
   * token, packed into blocks in UTF-8 token order). Yields every `flushStepPostings`
   * postings or `flushStepTokens` tokens, so a background build can let the event loop run
   * between slices; a flush inside a transaction runs it straight through.
   */
  function* buildFlush(db: Databases, first: number, last: number): Generator<void, BuiltFlush> {
    const groups = createFlushPostings(lastFlushSizes)
    let sinceYield = 0
    for (let docid = first; docid <= last; docid++) {
      sinceYield += addTailTerms(db, docid, groups)
      if (sinceYield >= flushStepPostings) {
        sinceYield = 0
        yield
      }
    }
    const tokens = sortByUtf8(groups.tokens())
    lastFlushSizes = groups.sizes()
    yield
    yield* groups.arrange(tokens, flushStepPostings)
    // Tokens and chunks are encoded into reused buffers: no allocation per token.
    const blocks: BuiltFlush['blocks'] = []
    const writer = createBlockWriter(db.pageSizeBytes, (tokenBytes) => 4 + tokenBytes, (firstToken, block) => blocks.push({ firstToken, block }))
    const tokenBuffer = Buffer.allocUnsafe(blockTokenBytesMax)
    let chunkBuffer = Buffer.allocUnsafe(64 * 1024)
    for (let index = 0; index < tokens.length; index++) {
      const token = tokens[index]!
      const bytesMax = groups.chunkBytesMax(index)
      if (bytesMax > chunkBuffer.length) chunkBuffer = Buffer.allocUnsafe(2 * bytesMax)
      writer.add(tokenBuffer, tokenBuffer.write(token, 0, 'utf8'), chunkBuffer, groups.encodeInto(index, chunkBuffer))
      if (index % flushStepTokens === flushStepTokens - 1) yield
    }
    writer.finish()
    return { first, last, blocks, tokens: tokens.length }
  }

  /**
   * Writes a built flush as chunk `state.chunks` — its blocks in key order, appended after
   * the previous flush's (MDB_APPEND: full pages) — and moves the tail past it. Runs inside
   * a write transaction.
   */
  function writeFlush(db: Databases, state: IndexState, built: BuiltFlush): void {
    for (const { firstToken, block } of built.blocks) putNew(db.postings, postingKey(state.chunks, firstToken), block)
    for (let docid = built.first; docid <= built.last; docid++) tailPostings.delete(docid)
    state.flushed = built.last
    state.chunks++
    writeState(db, state)
    // Not "tokens": the logger redacts field names that look like secrets.
    logger.debug('flushed postings', { documents: built.last - built.first + 1, terms: built.tokens, chunk: state.chunks - 1 })
  }

  /** Writes one posting chunk per distinct token of the whole pending tail, now. Runs inside a write transaction. */
  function flushInTransaction(db: Databases, state: IndexState): number {
    // A background build under way would write what this flush writes: it is dropped.
    background = undefined
    const first = state.flushed + 1
    const last = state.next - 1
    if (last < first) return 0
    const steps = buildFlush(db, first, last)
    let step = steps.next()
    while (!step.done) step = steps.next()
    writeFlush(db, state, step.value)
    return step.value.tokens
  }

  /**
   * After an ingest, inside its transaction: flushes the tail when it is full. In the
   * background mode the ingest that fills the tail starts a build (runBackgroundFlush),
   * which writes itself in a transaction of its own when done; a tail of twice the limit
   * (a build that cannot keep up, or failed) is flushed in the ingest's transaction.
   */
  function maybeFlush(db: Databases, state: IndexState): void {
    const pending = state.next - 1 - state.flushed
    if (pending < limits.pendingDocumentsMax) return
    if (!limits.flushInBackground || pending >= 2 * limits.pendingDocumentsMax || background?.failed === true) {
      flushInTransaction(db, state)
      return
    }
    if (background === undefined) startBackgroundFlush(db)
  }

  /**
   * Writes a background build. Documents of its range re-indexed while it was built (another
   * delivery's recipients) may have postings it lacks: each such document's postings are
   * written again as patches, as for a re-indexed flushed document (duplicates are merged
   * when read). A document removed meanwhile needs nothing: its date is NaN and its id
   * mapping gone, so its postings are garbage like any removed document's.
   */
  function writeBackgroundFlush(db: Databases, state: IndexState, job: BackgroundFlush, built: BuiltFlush): void {
    for (const docid of job.changed) {
      if (docid < built.first || docid > built.last) continue
      const forward = getForward(db, docid)
      if (forward === undefined) continue
      for (const [token, mask] of postingsOf(forward)) putPatch(db, token, state.chunks, docid, mask)
      state.patched = (state.patched ?? 0) + 1
    }
    writeFlush(db, state, built)
  }

  function startBackgroundFlush(db: Databases): void {
    let settle = (): void => undefined
    const done = new Promise<void>((resolve) => (settle = resolve))
    const job: BackgroundFlush = { epoch, chunks: -1, changed: new Set(), failed: false, done }
    background = job
    // Superseded (a flush in a transaction, a rebuild), or the environment closed: stop quietly.
    const live = (): boolean => background === job && dbs === db && job.epoch === epoch && (db.root as { status?: string }).status === 'open'
    setImmediate(() => void runBackgroundFlush(db, job, live).finally(settle))
  }

  async function runBackgroundFlush(db: Databases, job: BackgroundFlush, live: () => boolean): Promise<void> {
    let built: BuiltFlush | undefined
    try {
      if (!live()) return
      // Outside a transaction: reads see what is committed, so the range holds only committed documents.
      const state = readState(db)
      const first = state.flushed + 1
      const last = state.next - 1
      if (last < first) return
      job.chunks = state.chunks
      const steps = buildFlush(db, first, last)
      for (;;) {
        const sliceStartMs = deps.clock.monotonicMs()
        let step = steps.next()
        while (!step.done && deps.clock.monotonicMs() - sliceStartMs < limits.flushSliceMs) step = steps.next()
        if (step.done) {
          built = step.value
          break
        }
        await new Promise((resolve) => setImmediate(resolve))
        if (!live()) return
      }
      const ready = built
      // Its own transaction (lmdb-js batches it with the ingests of the moment), so a build
      // is written whether or not more mail comes.
      await db.root.childTransaction(() => {
        if (!live()) return
        const current = readState(db)
        // Built from what was committed then: still the start of the tail unless a flush or a rebuild came between.
        if (job.epoch !== epoch || job.chunks !== current.chunks || ready.first !== current.flushed + 1) return
        writeBackgroundFlush(db, current, job, ready)
      })
    } catch (error) {
      if (!live()) return
      job.failed = true
      logger.warn('building or writing a flush in the background failed; the next ingest flushes in its own transaction', { error })
    } finally {
      if (background === job && !job.failed) background = undefined
    }
  }

  /** Removes a message's id mapping, records and date (its postings become garbage). Runs inside a write transaction. */
  function removeInTransaction(db: Databases, id: string): boolean {
    const docid = db.keys.get(idKeyPrefix + id) as number | undefined
    if (docid === undefined) return false
    const state = readState(db)
    db.keys.removeSync(idKeyPrefix + id)
    db.forward.removeSync(docid)
    removeRecord(db, docid)
    tailPostings.delete(docid)
    setDate(db, docid, Number.NaN)
    state.documents--
    state.removed++
    if (docid > state.flushed) state.generation++
    else state.patched = (state.patched ?? 0) + 1
    writeState(db, state)
    return true
  }

  function indexInTransaction(db: Databases, input: IndexInput, autoFlush: boolean, prepared?: PreparedDocument, state = readState(db)): { docid: number; changed: boolean } {
    assert(/^[0-9a-f]{64}$/.test(input.id), 'an archive id is 64 lower-case hex characters')
    const existing = db.keys.get(idKeyPrefix + input.id) as number | undefined
    // A re-index compares with the stored document, body stream included: one-pass analysis (see AnalyzedDocument.forward).
    const analyzed = existing === undefined ? analyzeDocument(input, limits, prepared) : analyzeSequential(input, limits)
    if (analyzed.truncated) logger.debug('message indexed in part (token or address budget)', { id: input.id })
    if (existing !== undefined) {
      const oldRecord = getRecord(db, existing)
      const old = getForward(db, existing, oldRecord)
      if (old !== undefined && sameForward(old, analyzed.forward)) return { docid: existing, changed: false }
      // The order of a document never changes once indexed, so cursors stay valid.
      const record = { ...analyzed.record, dateMs: oldRecord?.dateMs ?? analyzed.record.dateMs }
      tailPostings.delete(existing)
      db.forward.putSync(existing, encodeForward(analyzed.forward))
      putRecord(db, existing, encodeRecord(record), false)
      if (existing <= state.flushed) {
        // Already in chunks: add patch entries for what is new (a later delivery's envelope
        // recipients, typically). Nothing is taken away: a re-index only ever adds here.
        const before = old ? postingsOf(old) : new Map<string, number>()
        for (const [token, mask] of postingsOf(analyzed.forward)) {
          const added = mask & ~(before.get(token) ?? 0)
          if (added !== 0) putPatch(db, token, state.chunks, existing, mask)
        }
        // Searches cache what they decoded from flushed documents (see QueryCache).
        state.patched = (state.patched ?? 0) + 1
      } else {
        state.generation++
        background?.changed.add(existing)
      }
      writeState(db, state)
      return { docid: existing, changed: true }
    }
    const docid = state.next++
    state.documents++
    db.keys.putSync(idKeyPrefix + input.id, docid)
    putNew(db.forward, docid, encodeForward(analyzed.forward))
    putRecord(db, docid, encodeRecord(analyzed.record), true)
    setDate(db, docid, analyzed.record.dateMs)
    writeState(db, state)
    tailPostings.set(docid, { id: input.id, terms: analyzed.terms ?? packTerms(postingsOf(analyzed.forward)) })
    if (autoFlush) maybeFlush(db, state)
    return { docid, changed: true }
  }

  /**
   * Loads the terms of the pending tail documents that the cache has not seen. The first
   * search after a start (or after a rollback, a re-index or a removal in the tail) loads
   * the whole tail: grouped in flat typed arrays this takes ~0.05 ms a document, where a
   * Map of per-token arrays took ~0.2 (the mirror bench's first search on a peer that had
   * just caught up took 1.2 s for ~1,800 documents, and the lag p95 went over 1 s).
   */
  function tailOf(db: Databases, state: IndexState): TailCache {
    if (tail && tail.chunks !== state.chunks && tail.generation === state.generation && tail.loadedThrough >= state.flushed) {
      // A flush moved the start of the tail: drop what it flushed rather than load the rest
      // again (after a background flush, what came in while it was built: up to thousands
      // of documents) — unless the dropped postings' slots outweigh the live ones.
      tail.postings.dropThrough(state.flushed)
      const { postings, slots } = tail.postings.held()
      tail.chunks = state.chunks
      if (slots > 2 * postings + 65_536) tail = undefined
    }
    if (!tail || tail.chunks !== state.chunks || tail.generation !== state.generation || tail.loadedThrough < state.flushed) {
      tail = { chunks: state.chunks, generation: state.generation, loadedThrough: state.flushed, postings: createPostingGroups() }
    }
    const postings = tail.postings
    for (let docid = tail.loadedThrough + 1; docid < state.next; docid++) {
      tail.loadedThrough = docid
      addTailTerms(db, docid, postings)
    }
    return tail
  }

  function queryCacheOf(state: IndexState): QueryCache {
    const patched = state.patched ?? 0
    if (!queryCache || queryCache.epoch !== epoch || queryCache.patched !== patched || state.chunks < queryCache.chunks || state.flushed < queryCache.flushed) {
      queryCache = { epoch, patched, chunks: state.chunks, flushed: state.flushed, sets: new Map(), docids: 0, dates: new Map(), tailDates: new Map(), tailDatesNext: state.next, tailDatesGeneration: state.generation, tailPhrases: new Map(), records: new Map(), recordsGeneration: state.generation }
    }
    queryCache.chunks = state.chunks
    queryCache.flushed = state.flushed
    return queryCache
  }

  /** Keeps `entry` under `key` (replacing what was there), dropping the oldest sets past the budget. */
  function cacheSet(cache: QueryCache, key: string, entry: CachedSet): void {
    const previous = cache.sets.get(key)
    if (previous !== undefined) {
      cache.sets.delete(key)
      cache.docids -= previous.set.length
    }
    if (entry.set.length > queryCacheDocidsMax / 4) return
    while (cache.docids + entry.set.length > queryCacheDocidsMax && cache.sets.size > 0) {
      // Oldest first (a Map iterates in insertion order).
      const [oldKey, oldEntry] = cache.sets.entries().next().value as [string, CachedSet]
      cache.sets.delete(oldKey)
      cache.docids -= oldEntry.set.length
    }
    cache.sets.set(key, entry)
    cache.docids += entry.set.length
  }

  function search(query: string, searchOptions: SearchOptions = {}): SearchResult {
    const db = open()
    const node = parseQuery(query)
    const limit = Math.min(Math.max(1, Math.floor(searchOptions.limit ?? limits.searchLimitDefault)), limits.searchLimitMax)
    const after = searchOptions.cursor ? decodeCursor(searchOptions.cursor) : null
    const startedMs = deps.clock.monotonicMs()
    const checkBudget = (): void => {
      if (deps.clock.monotonicMs() - startedMs > limits.searchTimeBudgetMs) {
        throw new IndexError('QUERY_TIMEOUT', `the search took longer than ${limits.searchTimeBudgetMs} ms; narrow the query`, { fields: { searchTimeBudgetMs: limits.searchTimeBudgetMs } })
      }
    }
    const state = readState(db)
    const pending = tailOf(db, state)
    const cache = queryCacheOf(state)
    if (cache.tailDatesNext !== state.next || cache.tailDatesGeneration !== state.generation) {
      cache.tailDates.clear()
      cache.tailDatesNext = state.next
      cache.tailDatesGeneration = state.generation
    }
    const dateBlock = (block: number): Float64Array => {
      let dates = cache.dates.get(block) ?? cache.tailDates.get(block)
      if (!dates) {
        const stored = db.dates.getBinary(block)
        dates = new Float64Array(dateBlockDocids).fill(Number.NaN)
        if (stored) new Uint8Array(dates.buffer).set(stored.subarray(0, dateBlockDocids * 8))
        // A block is stable once all its docids are flushed (only a removal, counted in `patched`, writes it again).
        if ((block + 1) * dateBlockDocids - 1 <= state.flushed) cache.dates.set(block, dates)
        else cache.tailDates.set(block, dates)
      }
      return dates
    }
    // Candidates come in docid order, so consecutive lookups mostly hit the same block.
    let lastBlockNumber = -1
    let lastBlockDates: Float64Array = new Float64Array(0)
    const dateOf = (docid: number): number => {
      const block = Math.floor(docid / dateBlockDocids)
      if (block !== lastBlockNumber) {
        lastBlockDates = dateBlock(block)
        lastBlockNumber = block
      }
      return lastBlockDates[docid % dateBlockDocids]!
    }

    /** Docids of the tail whose entry for `token` meets `bits` (all above every flushed docid). */
    const tailSet = (token: string, bits: number): number[] => {
      const docids: number[] = []
      pending.postings.collect(token, bits, docids)
      return docids
    }

    /** Appends to `docids` those of chunks `fromChunk`..`toChunk - 1` for `token` whose mask meets `bits`. */
    const readChunks = (tokenBytes: Buffer, bits: number, fromChunk: number, toChunk: number, docids: number[]): void => {
      // Per flush, the one block that can hold the token (the last whose first token is not after it).
      for (let chunk = fromChunk; chunk < toChunk; chunk++) {
        for (const { key, value } of db.postings.getRange({ start: postingKey(chunk, tokenBytes), reverse: true, limit: 1 })) {
          if (key.readUInt32BE(0) !== chunk) break
          const found = findInBlock(value, tokenBytes)
          if (found === false || (found !== null && !decodeChunkInto(found, bits, docids))) throw new IndexError('INDEX_CORRUPT', 'a posting block could not be decoded: rebuild the index', { fields: { chunk } })
        }
      }
    }

    const postingSet = (token: string, bits: number): Uint32Array => {
      const key = `${bits}\u0000${token}`
      let entry = cache.sets.get(key)
      if (entry === undefined) {
        const docids: number[] = []
        readChunks(Buffer.from(token), bits, 0, state.chunks, docids)
        for (const { key: patchKey, value } of db.patches.getRange({ start: [token], end: [token, Number.POSITIVE_INFINITY] })) {
          if (!decodeChunkInto(value, bits, docids)) throw new IndexError('INDEX_CORRUPT', 'a posting patch could not be decoded: rebuild the index', { fields: { key: patchKey } })
        }
        entry = { set: toDocidSet(docids), chunks: state.chunks, flushed: state.flushed }
        cacheSet(cache, key, entry)
      } else if (entry.chunks < state.chunks) {
        // Flushes since: their chunks hold only docids above the set's (patches come with a
        // change of `patched`, which started the cache over), so the set grows at its end.
        const added: number[] = []
        readChunks(Buffer.from(token), bits, entry.chunks, state.chunks, added)
        entry = { set: concatenated(entry.set, toDocidSet(added)), chunks: state.chunks, flushed: state.flushed }
        cacheSet(cache, key, entry)
      }
      const flushed = entry.set
      return concatenated(flushed, tailSet(token, bits))
    }

    /**
     * The candidates that have the phrase in the field: in the forward record's streams,
     * or for the body in the display record's text; the flushed ones' answer is cached per phrase.
     */
    const phraseFilter = (candidates: Uint32Array, field: TextField, tokens: readonly string[]): Uint32Array => {
      const [firstField, lastField] = fieldRangeOf(field)
      const inBody = firstField <= forwardFieldIndex.body && forwardFieldIndex.body <= lastField
      const pattern = phrasePattern(tokens)
      const bodyHasPhrase = bodyPhraseTest(tokens)
      const verify = (from: number, to: number): Uint32Array => {
        const out = new Uint32Array(Math.max(0, to - from))
        let count = 0
        for (let index = from; index < to; index++) {
          if ((index & 255) === 255) checkBudget()
          const docid = candidates[index]!
          // getBinaryFast's buffer is reused by the next read: it is searched at once.
          const bytes = db.forward.getBinaryFast(docid)
          if (!bytes) continue
          if (encodedForwardHasPhrase(bytes, firstField, lastField, pattern)) out[count++] = docid
          else if (inBody) {
            const record = readRecord(db, docid)
            if (record && bodyHasPhrase(record)) out[count++] = docid
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
        entry = { set: verify(0, split), chunks: state.chunks, flushed: state.flushed }
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
          added = verify(first, split)
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
      for (const docid of verify(fresh, candidates.length)) tailEntry.docids.push(docid)
      tailEntry.through = Math.max(tailEntry.through, state.next - 1)
      return concatenated(flushed, tailEntry.docids)
    }

    const dateRange = (nodes: readonly QueryNode[]): { fromMs: number; toMs: number } => {
      let fromMs = Number.NEGATIVE_INFINITY
      let toMs = Number.POSITIVE_INFINITY
      for (const dateNode of nodes) {
        if (dateNode.kind !== 'date') continue
        if (dateNode.bound === 'after') fromMs = Math.max(fromMs, dateNode.ms)
        else toMs = Math.min(toMs, dateNode.ms)
      }
      return { fromMs, toMs }
    }

    /** Every live docid dated in [fromMs, toMs): a scan of the date column, 1 KiB per 128 documents. */
    const dateScan = (fromMs: number, toMs: number): Uint32Array => {
      let docids = new Uint32Array(Math.min(state.next + dateBlockDocids, 4_096))
      let count = 0
      const lastBlock = Math.floor((state.next - 1) / dateBlockDocids)
      for (let block = 0; block <= lastBlock; block++) {
        if ((block & 63) === 63) checkBudget()
        if (docids.length - count < dateBlockDocids) {
          const grown = new Uint32Array(Math.min(state.next + dateBlockDocids, 2 * docids.length))
          grown.set(docids.subarray(0, count))
          docids = grown
        }
        count = collectDated(dateBlock(block), fromMs, toMs, block * dateBlockDocids, docids, count)
      }
      return docids.subarray(0, count)
    }

    const evaluate = (queryNode: QueryNode): Uint32Array => {
      checkBudget()
      switch (queryNode.kind) {
        case 'match': {
          const bits = bitsOf(queryNode.field)
          const sets = [...new Set(queryNode.tokens)].map((token) => postingSet(token, bits)).sort((a, b) => a.length - b.length)
          let result = sets[0]!
          for (const set of sets.slice(1)) result = intersect(result, set)
          return queryNode.tokens.length > 1 && result.length > 0 ? phraseFilter(result, queryNode.field, queryNode.tokens) : result
        }
        case 'address':
          return postingSet(queryNode.token, queryNode.field === 'from' ? fieldBits.from : fieldBits.to)
        case 'has':
          return postingSet(hasAttachmentToken, fieldBits.marker)
        case 'date': {
          const { fromMs, toMs } = dateRange([queryNode])
          return dateScan(fromMs, toMs)
        }
        case 'or':
          return queryNode.children.map(evaluate).reduce(union)
        case 'not':
          // parseQuery never leaves a negation where a set of its own is needed.
          throw new IndexError('QUERY_SYNTAX', 'a negation needs a positive term beside it')
        case 'and': {
          const dates = queryNode.children.filter((child) => child.kind === 'date')
          const negated = queryNode.children.filter((child) => child.kind === 'not')
          const positive = queryNode.children.filter((child) => child.kind !== 'date' && child.kind !== 'not')
          const { fromMs, toMs } = dateRange(dates)
          let result: Uint32Array
          if (positive.length === 0) result = dateScan(fromMs, toMs)
          else {
            const sets = positive.map(evaluate).sort((a, b) => a.length - b.length)
            result = sets[0]!
            for (const set of sets.slice(1)) {
              if (result.length === 0) break
              result = intersect(result, set)
            }
            if (dates.length > 0) result = result.filter((docid) => {
              const dateMs = dateOf(docid)
              return dateMs >= fromMs && dateMs < toMs
            })
          }
          for (const child of negated) {
            if (result.length === 0) break
            if (child.kind === 'not') result = difference(result, evaluate(child.child))
          }
          return result
        }
      }
    }

    const matched = evaluate(node)
    // Order newest first and cut the page: a bounded heap keeps the `limit` best after the
    // cursor, so a page costs O(n log limit) however many documents match.
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
    const highlight = positiveTokens(node)
    const hits: SearchHit[] = []
    if (cache.recordsGeneration !== state.generation) {
      cache.records.clear()
      cache.recordsGeneration = state.generation
    }
    for (const index of order) {
      const docid = heapDocids[index]!
      let shown = cache.records.get(docid)
      if (shown === undefined) {
        let record = getRecord(db, docid)
        if (record === undefined) continue
        // A snippet is looked for in the start of the text; the cache keeps only that.
        if (record.text.length > limits.snippetTextCharsMax) record = { ...record, text: cutToChars(record.text, limits.snippetTextCharsMax) }
        if (cache.records.size >= queryCacheRecordsMax) cache.records.delete(cache.records.keys().next().value as number)
        shown = { record }
        cache.records.set(docid, shown)
      }
      const { record } = shown
      const snippet = highlight.size === 0 ? (shown.plainSnippet ??= makeSnippet(record.text, highlight)) : makeSnippet(record.text, highlight)
      hits.push({ id: record.id, dateMs: heapDates[index]!, from: record.from, subject: record.subject, snippet })
    }
    const lastIndex = order[order.length - 1]
    const nextCursor = remaining > limit && lastIndex !== undefined ? encodeCursor(heapDates[lastIndex]!, heapDocids[lastIndex]!) : null
    logger.debug('search', { query: query.slice(0, 200), total, hits: hits.length, elapsedMs: Math.round(deps.clock.monotonicMs() - startedMs) })
    return { total, hits, nextCursor }
  }

  return {
    options: limits as Readonly<IndexOptions>,

    /**
     * Opens (creating when missing) the index's named databases in the archive's LMDB
     * environment. Call once before anything else; the environment needs room for
     * `Object.keys(indexDatabaseNames).length` more databases in its `maxDbs`.
     */
    databases(root: RootDatabase): void {
      dbs = {
        root,
        postings: root.openDB<Buffer, Buffer>(indexDatabaseNames.postings, { encoding: 'binary', keyEncoding: 'binary' }),
        patches: root.openDB<Buffer, (string | number)[]>(indexDatabaseNames.patches, { encoding: 'binary' }),
        forward: root.openDB<Buffer, number>(indexDatabaseNames.forward, { encoding: 'binary', keyEncoding: 'uint32', compression: true }),
        documents: root.openDB<Buffer, Buffer>(indexDatabaseNames.documents, { encoding: 'binary', keyEncoding: 'binary' }),
        pageSizeBytes: (root.getStats() as { pageSize: number }).pageSize,
        dates: root.openDB<Buffer, number>(indexDatabaseNames.dates, { encoding: 'binary', keyEncoding: 'uint32' }),
        keys: root.openDB<unknown, string>(indexDatabaseNames.keys, { encoding: 'msgpack' }),
      }
      tail = undefined
      queryCache = undefined
      tailPostings = new Map()
      background = undefined
      epoch++
    },

    /**
     * Indexes one message, synchronously. Called inside the archive's write transaction
     * (`transaction`/`transactionSync` callback), it joins that transaction, so the message
     * and its index entries commit or abort together; called outside one, it commits its
     * own. Indexing an id again (another delivery) updates what changed — new envelope
     * recipients become searchable — and keeps its place in the order.
     *
     * @param prepared `prepare(input.parsed)` computed beforehand (another shape, or
     *   undefined, is prepared here)
     * @returns the docid and whether anything was written
     * @throws IndexError INDEX_UNAVAILABLE before `databases`, INDEX_CORRUPT on an unreadable index; LMDB errors (map full) as thrown
     */
    indexMessage(input: IndexInput, prepared?: unknown): { docid: number; changed: boolean } {
      const db = open()
      return db.root.transactionSync(() => indexInTransaction(db, input, true, isPreparedDocument(prepared) ? prepared : undefined))
    },

    /**
     * `indexMessage` for a caller whose write transaction is open (the archive hook): writes
     * in that transaction itself, without the nested transaction `indexMessage` starts there
     * (LMDB's nested begin and commit cost more than the indexing). If it throws, its writes
     * so far are in the caller's transaction, which must then be aborted.
     *
     * @returns null, writing nothing, when the stored index has another layout (see `layoutCurrent`)
     */
    indexMessageInTransaction(input: IndexInput, prepared?: unknown): { docid: number; changed: boolean } | null {
      const db = open()
      const state = storedState(db)
      if (state.v !== indexLayoutVersion) return null
      return indexInTransaction(db, input, true, isPreparedDocument(prepared) ? prepared : undefined, { ...state })
    },

    /**
     * The part of indexing that needs no database and no envelope (tokenizing, field
     * analysis, snippet text), with this index's limits: pure, its result plain data.
     * Run it before the write transaction (or on a worker thread with
     * `prepareDocument(parsed, limits)` and the same limits) and pass the result to
     * `indexMessage`.
     */
    prepare(parsed: ParsedMessage): PreparedDocument {
      return prepareDocument(parsed, limits)
    },

    /**
     * Removes a message from search (retention, purge). Joins the caller's write
     * transaction like `indexMessage`. Its postings become garbage, skipped by searches
     * and dropped by the next `rebuild`.
     *
     * @returns false when the id was not indexed
     */
    removeMessage(id: string): boolean {
      const db = open()
      return db.root.transactionSync(() => removeInTransaction(db, id))
    },

    /**
     * `removeMessage` for a caller whose write transaction is open, as `indexMessageInTransaction`.
     *
     * @returns null, writing nothing, when the stored index has another layout
     */
    removeMessageInTransaction(id: string): boolean | null {
      const db = open()
      if (storedState(db).v !== indexLayoutVersion) return null
      return removeInTransaction(db, id)
    },

    /**
     * Writes the postings of the pending tail now (ingest does it by itself every
     * `pendingDocumentsMax` documents). Joins the caller's write transaction.
     *
     * @returns the number of posting chunks written
     */
    flush(): number {
      const db = open()
      return db.root.transactionSync(() => flushInTransaction(db, readState(db)))
    },

    /**
     * Starts a background flush (built in slices between event-loop turns, as ingest's) of
     * the whole pending tail, for a tail an unplanned stop left behind: otherwise the first
     * search loads it from the forward records in one go (~0.25 ms a document, up to twice
     * `pendingDocumentsMax`), stalling the event loop for it. Nothing when the tail is empty,
     * a build is under way, background flushes are off or the layout is not this one.
     *
     * @returns the documents the flush covers (0 when none started)
     */
    flushPendingInBackground(): number {
      const db = open()
      const state = storedState(db)
      const pending = state.next - 1 - state.flushed
      if (!limits.flushInBackground || background !== undefined || state.v !== indexLayoutVersion || pending <= 0) return 0
      startBackgroundFlush(db)
      return pending
    },

    /**
     * Resolves once no flush is being built in the background or waiting to be written
     * (one that failed counts as settled: the next ingest flushes in its transaction).
     * For a caller that wants the index at rest: a benchmark before its queries, a test.
     */
    async settled(): Promise<void> {
      while (background !== undefined && !background.failed) await background.done
    },

    /**
     * Runs a query (see query.ts for the language).
     *
     * @returns one page, newest first, with the total and the cursor of the next page
     * @throws QuerySyntaxError (code QUERY_SYNTAX, with `position`) for a malformed query;
     *   IndexError BAD_CURSOR, QUERY_TIMEOUT (over `searchTimeBudgetMs`), INDEX_UNAVAILABLE, INDEX_CORRUPT
     */
    search,

    /**
     * Bytes of LMDB pages each index database occupies (branch, leaf and overflow pages);
     * free pages of the environment are not counted.
     */
    diskBytes(): Record<keyof typeof indexDatabaseNames, number> {
      const db = open()
      const bytesOf = (store: { getStats(): unknown }): number => {
        const stats = store.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number }
        return (stats.treeBranchPageCount + stats.treeLeafPageCount + stats.overflowPages) * stats.pageSize
      }
      return { postings: bytesOf(db.postings), patches: bytesOf(db.patches), forward: bytesOf(db.forward), documents: bytesOf(db.documents), dates: bytesOf(db.dates), keys: bytesOf(db.keys) }
    },

    /** Figures for status views. */
    stats(): IndexStats {
      // Without the layout check: status views must work on an index of another layout too.
      const state = storedState(open())
      return {
        documents: state.documents,
        pending: state.next - 1 - state.flushed,
        flushes: state.chunks,
        removedSinceRebuild: state.removed,
        rebuilding: state.rebuilding === true,
        layoutCurrent: state.v === indexLayoutVersion,
      }
    },

    /**
     * True when the index answers for every archived message: its layout is current and no
     * rebuild is under way or was left unfinished (a crash, a stop). Retention asks this
     * before it trusts a query (a hold by query must see every message it names).
     */
    complete(): boolean {
      const state = storedState(open())
      return state.v === indexLayoutVersion && state.rebuilding !== true
    },

    /**
     * False when the stored index has another layout version (written by other firmware):
     * it must be rebuilt before it can be read or written.
     */
    layoutCurrent(): boolean {
      return storedState(open()).v === indexLayoutVersion
    },

    /** True when the message is indexed. */
    has(id: string): boolean {
      return open().keys.get(idKeyPrefix + id) !== undefined
    },

    /**
     * Checks the index against the archive: messages the archive has and the index lacks
     * (missing), documents for messages the archive no longer has (extra) and, when
     * `getInput` is given, documents whose indexed content differs from a fresh analysis
     * of the stored message (stale; e.g. indexed by an older tokenizer). Reads only.
     * Memory: one set of the archive's ids (~100 bytes per message).
     *
     * @param listIds every archive id
     * @param getInput the index input of a stored message (undefined when it is gone)
     */
    async verify(listIds: Source<string>, getInput?: (id: string) => Promise<IndexInput | undefined> | IndexInput | undefined): Promise<VerifyReport> {
      const db = open()
      const archived = new Set<string>()
      for await (const id of listIds) archived.add(id)
      const report: VerifyReport = { archived: archived.size, indexed: 0, missingCount: 0, extraCount: 0, staleCount: 0, missing: [], extra: [], stale: [], ok: true }
      const note = (list: string[], id: string): void => {
        if (list.length < limits.verifyListedIdsMax) list.push(id)
      }
      for (const { key, value } of db.keys.getRange({ start: idKeyPrefix, end: idKeyPrefix + '\uffff' })) {
        const id = key.slice(idKeyPrefix.length)
        report.indexed++
        if (!archived.has(id)) {
          report.extraCount++
          note(report.extra, id)
          continue
        }
        archived.delete(id)
        if (getInput) {
          const input = await getInput(id)
          const forward = getForward(db, value as number)
          if (input && (!forward || !sameForward(forward, analyzeSequential(input, limits).forward))) {
            report.staleCount++
            note(report.stale, id)
          }
        }
      }
      for (const id of archived) {
        report.missingCount++
        note(report.missing, id)
      }
      report.ok = report.missingCount === 0 && report.extraCount === 0 && report.staleCount === 0
      logger.info('index verified', { archived: report.archived, indexed: report.indexed, missing: report.missingCount, extra: report.extraCount, stale: report.staleCount })
      return report
    },

    /**
     * Drops the index's data and indexes every message again, `rebuildBatchMessages` per
     * write transaction. The archive's own databases are not touched; searches during a
     * rebuild see a partial index. Messages ingested meanwhile are indexed by the ingest
     * hook as usual (and skipped here when unchanged).
     *
     * @param messages every stored message's index input
     * @param onProgress called after each batch with the number indexed so far
     * @param signal stops the rebuild between messages (it then throws INDEX_UNAVAILABLE and
     *   the index stays marked incomplete: `complete()` is false until a rebuild finishes)
     * @returns the number of messages indexed
     */
    async rebuild(messages: Source<IndexInput>, onProgress?: (indexed: number) => void, signal?: AbortSignal): Promise<number> {
      const db = open()
      await db.root.transaction(() => {
        for (const store of [db.postings, db.patches, db.forward, db.documents, db.dates, db.keys] as Database<unknown, string>[]) store.clearSync()
        // A flush built from the data cleared here must not be written after it.
        background = undefined
        epoch++
        // Marked until the last message is in: an interrupted rebuild leaves the index incomplete, and says so.
        writeState(db, { ...readState(db), rebuilding: true })
      })
      tail = undefined
      queryCache = undefined
      tailPostings = new Map()
      let indexed = 0
      let batch: IndexInput[] = []
      const write = async (): Promise<void> => {
        const inputs = batch
        batch = []
        await db.root.transaction(() => {
          for (const input of inputs) indexInTransaction(db, input, true)
        })
        indexed += inputs.length
        onProgress?.(indexed)
      }
      for await (const input of messages) {
        if (signal?.aborted) {
          throw new IndexError('INDEX_UNAVAILABLE', `the index rebuild was stopped after ${indexed} messages: the index stays incomplete until a rebuild finishes`, { retryable: true, fields: { indexed } })
        }
        batch.push(input)
        if (batch.length >= limits.rebuildBatchMessages) await write()
      }
      if (batch.length > 0) await write()
      await db.root.transaction(() => {
        const { rebuilding: _done, ...state } = readState(db)
        writeState(db, state)
      })
      logger.info('index rebuilt', { messages: indexed })
      return indexed
    },
  }
}
