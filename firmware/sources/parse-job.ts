import { createHash } from 'node:crypto'
import type { Logger } from '../common/logger.js'
import type { JournalEnvelope, JournalUnwrapResult, ParsedMessage } from '../mime/types.js'
import { encodeBlob } from '../archive/codec.js'
import type { EncodedRaw } from '../archive/types.js'

/**
 * The CPU work done for one message before its write transaction, in one place so that it
 * runs the same on a worker thread (parse-pool.ts) and on the event loop (fallback, tests,
 * callers without a pool): Exchange journal unwrap, MIME parse, SHA-256 and deflate of the
 * bytes to archive, and the indexer's `prepare` step. Everything it returns is
 * structured-cloneable.
 */

/** What firmware/mime gives the job. */
export interface MessageParser {
  parse(raw: Uint8Array): Promise<ParsedMessage>
  unwrapJournal(raw: Uint8Array): Promise<JournalUnwrapResult | null>
}

/** A pure analysis of a parse result for the index (ArchiveIndexer.prepare or its worker twin). */
export type IndexPrepare = (parsed: ParsedMessage) => unknown

/** The result of the job for one message. */
export interface PreparedMessage {
  /** The bytes to archive: the input, or the original cut out of a journal report. */
  bytes: Uint8Array
  /** The journal report's envelope when the input was one and could be unwrapped; null otherwise. */
  journal: JournalEnvelope | null
  parsed: ParsedMessage
  /** `bytes` compressed, with the SHA-256 of `bytes` (the store checks it before using the blob); absent when the store is to compress. */
  encoded?: EncodedRaw
  /** The indexer's prepare(parsed) result; undefined when there is no prepare step or it failed (the indexer then works in the transaction). */
  indexPrepared?: unknown
}

export type PrepareMessage = (raw: Uint8Array) => Promise<PreparedMessage>

/**
 * Creates the job. Never rejects: the parser never throws, deflate of bytes in memory does
 * not fail, and a prepare step that throws is logged and left to the transaction.
 */
export function createPrepareJob(deps: { logger: Logger; parser: MessageParser; prepareIndex?: IndexPrepare }): PrepareMessage {
  const { logger, parser, prepareIndex } = deps
  return async (raw) => {
    const unwrapped = await parser.unwrapJournal(raw)
    const bytes = unwrapped ? unwrapped.original : raw
    const parsed = await parser.parse(bytes)
    const blob = await encodeBlob(bytes)
    const encoded: EncodedRaw = { codec: blob.codec, bytes: blob.bytes, rawSha256: createHash('sha256').update(bytes).digest('hex') }
    let indexPrepared: unknown
    if (prepareIndex) {
      try {
        indexPrepared = prepareIndex(parsed)
      } catch (error) {
        logger.warn('index prepare failed; the index analyses the message in its transaction', { error, sizeBytes: bytes.byteLength })
        indexPrepared = undefined
      }
    }
    return { bytes, journal: unwrapped?.envelope ?? null, parsed, encoded, indexPrepared }
  }
}
