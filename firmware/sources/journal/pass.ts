import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import { MailkeepError } from '../../common/errors.js'
import type { Delivery } from '../../archive/types.js'
import type { IngestPipeline } from '../types.js'
import { JournalError } from './errors.js'
import type { HeldMessage, HeldReason, PullReport, ResolvedJournalOptions } from './types.js'

/**
 * What the IMAP and POP3 passes share: the stop/abandon control, the register of held
 * messages, and the one step that hands a fetched message to the ingest pipeline and
 * decides what its failure means.
 */

/** Most messages a source keeps as held; past this the pass fails with LIMIT_EXCEEDED. */
export const heldMessagesMax = 10_000

/** How a running pass learns that `stop()` was called. */
export class PassControl {
  private stopRequested = false
  private abandonRequested = false
  private readonly droppers = new Set<() => void>()

  /** True once stop() asked the pass to end after the in-flight message. */
  get stopping(): boolean {
    return this.stopRequested
  }

  /** True once stop() gave up waiting: no more server commands, and no acknowledgement. */
  get abandoned(): boolean {
    return this.abandonRequested
  }

  /** Asks the pass to end after the message in flight. */
  requestStop(): void {
    this.stopRequested = true
  }

  /** Drops every registered connection; a submit still running is left to finish unacknowledged. */
  abandon(): void {
    this.stopRequested = true
    this.abandonRequested = true
    for (const drop of this.droppers) drop()
    this.droppers.clear()
  }

  /** Registers what drops the pass's connection when it is abandoned; returns the unregister function. */
  onAbandon(drop: () => void): () => void {
    if (this.abandonRequested) drop()
    else this.droppers.add(drop)
    return () => this.droppers.delete(drop)
  }
}

/**
 * Messages left on the server, remembered for the life of the source so that a message
 * that cannot be archived does not take a batch slot on every pass, yet is reported on
 * every pass until it disappears from the server.
 */
export class HeldRegistry {
  private readonly entries = new Map<string, HeldMessage>()

  has(key: string): boolean {
    return this.entries.has(key)
  }

  get size(): number {
    return this.entries.size
  }

  /**
   * Records a held message (keeps the first `sinceMs` when it was already held).
   *
   * @throws JournalError LIMIT_EXCEEDED past `heldMessagesMax`
   */
  hold(entry: HeldMessage): HeldMessage {
    const existing = this.entries.get(entry.key)
    if (existing) return existing
    if (this.entries.size >= heldMessagesMax) {
      throw new JournalError('LIMIT_EXCEEDED', `more than ${heldMessagesMax} messages are held on the server`, { fields: { heldMessagesMax } })
    }
    this.entries.set(entry.key, entry)
    return entry
  }

  /** Forgets held messages under `keyPrefix` that the server no longer lists. */
  prune(keyPrefix: string, presentKeys: ReadonlySet<string>): void {
    for (const key of this.entries.keys()) {
      if (key.startsWith(keyPrefix) && !presentKeys.has(key)) this.entries.delete(key)
    }
  }

  list(): HeldMessage[] {
    return [...this.entries.values()]
  }
}

/** Everything a protocol pass needs. */
export interface PassContext {
  options: ResolvedJournalOptions
  pipeline: IngestPipeline
  clock: Clock
  logger: Logger
  held: HeldRegistry
  control: PassControl
  report: PullReport
}

/** A fresh, empty report for a pass starting now. */
export function emptyReport(options: ResolvedJournalOptions, startedAtMs: number): PullReport {
  return {
    source: options.name,
    protocol: options.protocol,
    startedAtMs,
    finishedAtMs: startedAtMs,
    serverMessages: 0,
    archived: 0,
    duplicates: 0,
    acknowledged: 0,
    held: [],
    remaining: 0,
    ids: [],
    stopped: false,
    error: null,
  }
}

/** Holds a message and logs it once, at warn: it needs an operator. */
export function holdMessage(context: PassContext, key: string, reason: HeldReason, sizeBytes: number | null, message: string, errorCode: string | null = null): void {
  const known = context.held.has(key)
  context.held.hold({ key, reason, sizeBytes, errorCode, message, sinceMs: context.clock.now() })
  if (!known) context.logger.warn('message left on the server', { key, reason, sizeBytes, errorCode, detail: message })
}

/** Holds a message over `messageBytesMax`; returns true when it was over. */
export function holdIfTooLarge(context: PassContext, key: string, sizeBytes: number): boolean {
  const limit = context.options.messageBytesMax
  if (sizeBytes <= limit) return false
  holdMessage(context, key, 'TOO_LARGE', sizeBytes, `message of ${sizeBytes} bytes is over the limit of ${limit} bytes`)
  return true
}

/** What the pass does next with a message handed to the pipeline. */
export type ArchiveOutcome =
  /** Durable in the archive: the source may acknowledge it now (delete or flag). */
  | 'acknowledge'
  /** Refused for good (non-retryable): left on the server, held and reported; go on with the next. */
  | 'next'
  /** A retryable (or unknown) failure, or the pass was abandoned meanwhile: stop, acknowledging nothing more. */
  | 'stop'

/**
 * Hands one message to the pipeline and waits until it is durable. A non-retryable
 * MailkeepError holds the message (left on the server, reported); a retryable one
 * (STORE_FULL…) or an error of unknown kind is put on the report and ends the pass, so
 * nothing is removed from the server that the archive does not hold. A pass abandoned by
 * stop() while the submit ran acknowledges nothing (its connection is gone); the next
 * pass fetches the message again into dedup.
 */
export async function archiveMessage(context: PassContext, raw: Uint8Array, key: string): Promise<ArchiveOutcome> {
  const { options, report } = context
  const delivery: Delivery = {
    source: 'journal',
    sourceName: options.name,
    receivedAtMs: context.clock.now(),
    // The journal report's own envelope is unwrapped by the pipeline, not here.
    envelopeFrom: null,
    envelopeTo: [],
    envelopeBcc: [],
    remoteAddress: options.host,
    journalEnvelopeText: null,
    deliveryKey: key,
  }
  try {
    const result = await context.pipeline.submit(raw, delivery)
    report.archived++
    report.remaining--
    if (result.duplicate) report.duplicates++
    report.ids.push(result.id)
    context.logger.debug('message archived', { key, id: result.id, duplicate: result.duplicate, sizeBytes: raw.byteLength })
  } catch (error) {
    if (error instanceof MailkeepError && !error.retryable) {
      report.remaining--
      holdMessage(context, key, 'REFUSED', raw.byteLength, error.message, error.code)
      return 'next'
    }
    report.error = error instanceof MailkeepError ? error : new JournalError('INGEST_FAILED', `the ingest pipeline failed: ${error instanceof Error ? error.message : String(error)}`)
    return 'stop'
  }
  if (context.control.abandoned) {
    report.stopped = true
    return 'stop'
  }
  return 'acknowledge'
}
