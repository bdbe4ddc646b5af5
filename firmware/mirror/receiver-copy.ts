import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MailkeepError } from '../common/errors.js'
import type { IngestPipeline } from '../sources/types.js'
import type { MirrorChannel } from './channel.js'
import type { MessageHeader, RejectedCopy } from './copy-protocol.js'
import { bareCopiedDelivery, copiedDelivery } from './copy-plan.js'

/**
 * Store errors that concern one message only and will not change on a retry: such a copy is
 * reported in the acknowledgement as rejected (the sender logs it and moves on) instead of
 * failing the batch, so one message can never block a peer's queue. Every other error fails
 * the batch, and the sender retries it later.
 */
export const messageRejectionCodes: ReadonlySet<string> = new Set(['MESSAGE_TOO_LARGE'])

/** What became of one copied message, with its raw size in bytes. */
export type CopyOutcome = { kind: 'stored'; bytes: number } | { kind: 'duplicate'; bytes: number } | ({ kind: 'rejected'; bytes: number } & RejectedCopy)

/** What storing one copy needs. */
export interface StoreCopyHost {
  deps: {
    clock: Clock
    pipeline: IngestPipeline
    /** When this system's retention purged `id`, if it did (see CopyReceiverDeps.purgedAt). */
    purgedAt?: (id: string) => { atMs: number } | undefined
  }
  logger: Logger
}

/**
 * Stores one message a peer copied: each of its deliveries (or a bare one when it carries
 * none) submitted to the ingest pipeline in order, as `mirror` deliveries from the peer's
 * serial. A copy of a message purged here whose deliveries are all older than the purge is
 * not archived again (counted as a duplicate).
 * @returns stored, duplicate, or rejected for good (messageRejectionCodes)
 * @throws whatever else the pipeline throws (the batch fails)
 */
export async function storeCopy(host: StoreCopyHost, channel: MirrorChannel, header: MessageHeader, raw: Buffer): Promise<CopyOutcome> {
  const { deps, logger } = host
  const serial = channel.peer.serial
  const purged = deps.purgedAt?.(header.id)
  if (purged && header.deliveries.every((delivery) => delivery.receivedAtMs <= purged.atMs)) {
    logger.debug('a copy of a message purged here by retention; not archived again', { id: header.id, peerSerial: serial, purgedAtMs: purged.atMs })
    return { kind: 'duplicate', bytes: raw.length }
  }
  const deliveries =
    header.deliveries.length > 0 ? header.deliveries.map((delivery) => copiedDelivery(serial, delivery)) : [bareCopiedDelivery(serial, header.id, channel.peer.address, deps.clock.now())]
  let duplicate = true
  try {
    // One submit per delivery, in order: the first stores the bytes, the others only record a delivery.
    for (const delivery of deliveries) {
      const result = await deps.pipeline.submit(raw, delivery)
      if (result.id !== header.id) {
        // Expected only when the pipeline unwrapped a journal report carried inside the copy: what
        // it stored is what a local delivery of these bytes would have stored.
        logger.warn('a copied message was stored under another id by the pipeline', { id: header.id, storedId: result.id, peerSerial: serial })
      }
      duplicate &&= result.duplicate
    }
  } catch (error) {
    if (error instanceof MailkeepError && !error.retryable && messageRejectionCodes.has(error.code)) {
      logger.error('a copied message was refused by this archive for good', { id: header.id, sequence: header.sequence, peerSerial: serial, error })
      return { kind: 'rejected', bytes: raw.length, sequence: header.sequence, id: header.id, code: error.code, message: error.message }
    }
    throw error
  }
  return duplicate ? { kind: 'duplicate', bytes: raw.length } : { kind: 'stored', bytes: raw.length }
}
