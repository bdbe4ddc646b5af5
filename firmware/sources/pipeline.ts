import type { Logger } from '../common/logger.js'
import type { Delivery, IngestRequest, IngestResult } from '../archive/types.js'
import { ArchiveError } from '../archive/errors.js'
import type { IngestPipeline } from './types.js'
import { createPrepareJob, type IndexPrepare, type MessageParser, type PrepareMessage } from './parse-job.js'

export type { MessageParser }

/** What the pipeline needs from firmware/archive. */
export interface ArchiveWriter {
  ingest(request: IngestRequest): Promise<IngestResult>
}

/** A listener told of every message archived (the mirror engine wakes its senders with it). */
export type IngestListener = (result: IngestResult, delivery: Delivery) => void

function mergeAddresses(first: readonly string[], second: readonly string[]): string[] {
  return [...new Set([...first, ...second].map((address) => address.toLowerCase()))]
}

/**
 * The one path every message takes into the archive, whatever its source:
 * size check → prepare (Exchange journal report unwrap, parse, compress, index analysis;
 * parse-job.ts, on a worker thread when `deps.prepare` is a parse pool) → one durable store
 * transaction.
 *
 * A journal report is replaced by the original message it carries: the original's bytes
 * are what is archived (and what /raw returns), and the report's envelope recipients,
 * BCC and expanded distribution lists included, are added to the delivery. The envelope
 * text is kept with the delivery; the report's own wrapper bytes are not archived.
 * A report that claims to be one but cannot be unwrapped is archived as received, flagged
 * by the parser. `submit` resolves only when the archive write is durable.
 *
 * @param deps.parser used on the event loop when no `prepare` is given
 * @param deps.prepare the prepare step (a parse pool's `prepare`); by default parse-job.ts on the event loop with `parser`
 * @param deps.prepareIndex the indexer's prepare step for the default in-process job
 * @throws ArchiveError MESSAGE_TOO_LARGE over `messageBytesMax`; whatever the prepare step (a full pool queue) or the store throws
 */
export function createIngestPipeline(
  deps: { logger: Logger; parser: MessageParser; archive: ArchiveWriter; listeners?: IngestListener[]; prepare?: PrepareMessage; prepareIndex?: IndexPrepare },
  options: { messageBytesMax: number },
): IngestPipeline & { addListener(listener: IngestListener): void } {
  const listeners = [...(deps.listeners ?? [])]
  const prepare = deps.prepare ?? createPrepareJob({ logger: deps.logger, parser: deps.parser, prepareIndex: deps.prepareIndex })
  return {
    addListener(listener) {
      listeners.push(listener)
    },
    async submit(raw, delivery) {
      if (raw.byteLength > options.messageBytesMax) {
        throw new ArchiveError('MESSAGE_TOO_LARGE', `message of ${raw.byteLength} bytes is over the limit of ${options.messageBytesMax} bytes`, {
          fields: { sizeBytes: raw.byteLength, sizeBytesMax: options.messageBytesMax },
        })
      }
      const prepared = await prepare(raw)
      let effective = delivery
      const envelope = prepared.journal
      if (envelope) {
        effective = {
          ...delivery,
          envelopeFrom: envelope.sender ?? delivery.envelopeFrom,
          envelopeTo: mergeAddresses(envelope.recipients, delivery.envelopeTo),
          envelopeBcc: mergeAddresses(envelope.bcc, delivery.envelopeBcc),
          journalEnvelopeText: envelope.envelopeText,
        }
      }
      const { parsed } = prepared
      const origin = effective.source === 'mirror' ? effective.sourceName : null
      const result = await deps.archive.ingest({ raw: prepared.bytes, parsed, delivery: effective, origin, encoded: prepared.encoded, indexPrepared: prepared.indexPrepared })
      const withFlags: IngestResult = { ...result, flags: parsed.flags }
      for (const listener of listeners) {
        try {
          listener(withFlags, effective)
        } catch (error) {
          deps.logger.error('ingest listener failed', { error })
        }
      }
      return withFlags
    },
  }
}
