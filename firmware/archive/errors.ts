import { MailkeepError, type ErrorDetails } from '../common/errors.js'

/**
 * Operating errors of the archive store. Sources map them to protocol replies: retryable
 * errors become SMTP 4xx (the sender tries again later), the rest 5xx.
 */
export type ArchiveErrorCode =
  /** Free space on the data volume is below `storage.freeBytesMin`, or LMDB's map is full. Retryable. */
  | 'STORE_FULL'
  /** The store is not open (starting, stopping) or the disk failed a write/sync. Retryable. */
  | 'STORE_UNAVAILABLE'
  /** The message is larger than the store accepts. Not retryable. */
  | 'MESSAGE_TOO_LARGE'
  /** Stored data failed its integrity check (hash mismatch, undecodable record). */
  | 'STORE_CORRUPT'
  /** No message with that id. */
  | 'NOT_FOUND'
  /** A digest snapshot was closed, outlived its maximum age, or its store stopped: take a new one. Retryable. */
  | 'DIGEST_SNAPSHOT_CLOSED'
  /** As many digest snapshots are open as the store allows (digestSnapshotsOpenMax). Retryable. */
  | 'DIGEST_SNAPSHOTS_BUSY'
  /** The id digest was found damaged while the store ran; it is rebuilt at the next start. Retryable (after a restart). */
  | 'DIGEST_UNAVAILABLE'
  /**
   * Digest bytes or a digest request that break the format or its limits, or a peer's digest
   * that contradicts itself (a bug or damage on one side). Not retryable.
   */
  | 'DIGEST_INVALID'

const retryableCodes = new Set<ArchiveErrorCode>(['STORE_FULL', 'STORE_UNAVAILABLE', 'DIGEST_SNAPSHOT_CLOSED', 'DIGEST_SNAPSHOTS_BUSY', 'DIGEST_UNAVAILABLE'])

export class ArchiveError extends MailkeepError {
  declare readonly code: ArchiveErrorCode
  constructor(code: ArchiveErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, { retryable: retryableCodes.has(code), ...details })
    this.name = 'ArchiveError'
  }
}
