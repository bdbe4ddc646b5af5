import type { Delivery, IngestResult } from '../archive/types.js'

/**
 * What every mail source (SMTP, journal pull, bulk import, mirror receiver) hands its
 * messages to. `submit` unwraps Exchange journal reports, parses, archives, and resolves
 * only after the message is durable on disk (STYLE 8); only then may the source
 * acknowledge (SMTP 250, journal delete, peer ack). It rejects with an ArchiveError
 * (`retryable` tells 4xx from 5xx) and never loses bytes it resolved for.
 */
export interface IngestPipeline {
  submit(raw: Uint8Array, delivery: Delivery): Promise<IngestResult>
}
