import type { Logger } from '../common/logger.js'
import type { ParsedMessage, JournalUnwrapResult } from '../mime/types.js'
import type { Delivery, IngestRequest, IngestResult } from '../archive/types.js'
import { ArchiveError } from '../archive/errors.js'
import type { IngestPipeline } from './types.js'

/** What the pipeline needs from firmware/mime. */
export interface MessageParser {
  parse(raw: Uint8Array): Promise<ParsedMessage>
  unwrapJournal(raw: Uint8Array): Promise<JournalUnwrapResult | null>
}

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
 * size check → Exchange journal report unwrap → parse → one durable store transaction.
 *
 * A journal report is replaced by the original message it carries: the original's bytes
 * are what is archived (and what /raw returns), and the report's envelope recipients,
 * BCC and expanded distribution lists included, are added to the delivery. The envelope
 * text is kept with the delivery; the report's own wrapper bytes are not archived.
 * A report that claims to be one but cannot be unwrapped is archived as received, flagged
 * by the parser. `submit` resolves only when the archive write is durable.
 *
 * @throws ArchiveError MESSAGE_TOO_LARGE over `messageBytesMax`; whatever the store throws
 */
export function createIngestPipeline(
  deps: { logger: Logger; parser: MessageParser; archive: ArchiveWriter; listeners?: IngestListener[] },
  options: { messageBytesMax: number },
): IngestPipeline & { addListener(listener: IngestListener): void } {
  const listeners = [...(deps.listeners ?? [])]
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
      let bytes = raw
      let effective = delivery
      const unwrapped = await deps.parser.unwrapJournal(raw)
      if (unwrapped) {
        bytes = unwrapped.original
        const envelope = unwrapped.envelope
        effective = {
          ...delivery,
          envelopeFrom: envelope.sender ?? delivery.envelopeFrom,
          envelopeTo: mergeAddresses(envelope.recipients, delivery.envelopeTo),
          envelopeBcc: mergeAddresses(envelope.bcc, delivery.envelopeBcc),
          journalEnvelopeText: envelope.envelopeText,
        }
      }
      const parsed = await deps.parser.parse(bytes)
      const origin = effective.source === 'mirror' ? effective.sourceName : null
      const result = await deps.archive.ingest({ raw: bytes, parsed, delivery: effective, origin })
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
