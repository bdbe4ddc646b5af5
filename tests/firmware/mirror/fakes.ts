/**
 * In-memory fakes for the mirror copy layer's tests and benchmark: an archive with a change
 * log (what firmware/archive will provide through MirrorArchive) and an ingest pipeline that
 * archives into it, with group commit and fault knobs. Injected, never mocked modules.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { ChangeEntry, Delivery, IngestResult, MessageMeta } from '../../../firmware/archive/types.js'
import { ArchiveError } from '../../../firmware/archive/errors.js'
import type { IngestPipeline } from '../../../firmware/sources/types.js'
import type { MirrorArchive } from '../../../firmware/mirror/types.js'
import type { Random } from '../../../firmware/common/clock.js'
import { createMemoryDigest } from '../../../firmware/archive/id-digest.js'
import type { DigestSnapshot } from '../../../firmware/archive/types.js'

export interface MemoryArchive extends MirrorArchive {
  /** Archives `raw` with `delivery` the way the store does: by content hash, deliveries by key. */
  ingest(raw: Uint8Array, delivery: Delivery, origin: string | null): IngestResult
  /** Purges a message (a 'purge' change entry, remembered for purgedAt as retention does). */
  purge(id: string): void
  /** Removes a message without a trace (no change entry, no purge record): a lost copy. */
  lose(id: string): void
  /** The id digest now, as the store's snapshot offers it (a fixed in-memory copy). */
  digestSnapshot(): Promise<DigestSnapshot>
  purgedAt(id: string): { sequence: number; atMs: number } | undefined
  messages: Map<string, { raw: Uint8Array; meta: MessageMeta }>
  log: ChangeEntry[]
  /** Counts of reads, to check what the sender touched. */
  reads: { changes: number; raw: number }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex')
}

/**
 * An archive in memory; sequences start at 1 and are dense (log[i].sequence === i + 1). The
 * store id is random unless given (the simulation seeds it, so a seed replays exactly).
 */
export function createMemoryArchive(now: () => number = Date.now, storeIdHex?: string): MemoryArchive {
  const messages = new Map<string, { raw: Uint8Array; meta: MessageMeta }>()
  const log: ChangeEntry[] = []
  const reads = { changes: 0, raw: 0 }
  const storeId = storeIdHex ?? randomBytes(16).toString('hex')
  const purges = new Map<string, { sequence: number; atMs: number }>()

  function append(kind: ChangeEntry['kind'], id: string, origin: string | null): number {
    const sequence = log.length + 1
    log.push({ sequence, kind, id, atMs: now(), origin })
    return sequence
  }

  return {
    messages,
    log,
    reads,
    changes(afterSequence, limit) {
      reads.changes++
      return log.slice(afterSequence, afterSequence + limit)
    },
    lastSequence: () => log.length,
    getRaw(id) {
      reads.raw++
      const raw = messages.get(id)?.raw
      // As the store does: bytes that fail their hash are reported, never returned.
      if (raw && sha256Hex(raw) !== id) throw new ArchiveError('STORE_CORRUPT', `message ${id} fails its hash check`)
      return raw
    },
    getMeta: (id) => messages.get(id)?.meta,
    has: (id) => messages.has(id),
    storeId: () => storeId,
    ingest(raw, delivery, origin) {
      const id = sha256Hex(raw)
      const existing = messages.get(id)
      // As the store does (store-ingest.ts): a peer's copy of what retention purged here, from a
      // delivery received no later than the purge, is not stored again.
      const purged = purges.get(id)
      if (!existing && origin && delivery.source === 'mirror' && purged && delivery.receivedAtMs <= purged.atMs) return { id, duplicate: true, sequence: purged.sequence, purged: true }
      if (existing) {
        const key = delivery.deliveryKey
        if (key && existing.meta.deliveries.some((recorded) => recorded.deliveryKey === key)) {
          return { id, duplicate: true, sequence: log.length }
        }
        existing.meta.deliveries.push({ ...delivery })
        const deliveryOrigin = delivery.source === 'mirror' ? delivery.sourceName : null
        return { id, duplicate: true, sequence: append('delivery', id, deliveryOrigin) }
      }
      const meta: MessageMeta = {
        id,
        sizeBytes: raw.byteLength,
        messageId: null,
        dateMs: null,
        from: [],
        to: [],
        cc: [],
        bcc: [],
        subject: null,
        attachments: [],
        flags: [],
        deliveries: [{ ...delivery }],
        firstArchivedAtMs: now(),
        origin,
      }
      // A copy of the bytes: the sender must not be able to change what is stored.
      messages.set(id, { raw: new Uint8Array(raw), meta })
      return { id, duplicate: false, sequence: append('ingest', id, origin) }
    },
    purge(id) {
      if (messages.delete(id)) purges.set(id, { sequence: append('purge', id, null), atMs: now() })
    },
    lose(id) {
      messages.delete(id)
    },
    purgedAt: (id) => purges.get(id),
    async digestSnapshot() {
      const entries = [...messages.entries()]
      const ids = Buffer.concat(entries.map(([id]) => Buffer.from(id, 'hex')))
      const digest = createMemoryDigest(
        ids,
        entries.map(([, message]) => message.raw.byteLength),
      )
      return {
        storeId,
        lastSequence: log.length,
        node: (prefix) => digest.node(prefix),
        children: (prefix) => digest.children(prefix),
        idsInBucket: (prefix) => digest.idsInBucket(prefix),
        close: () => undefined,
      }
    },
  }
}

export interface MemoryPipelineOptions {
  /**
   * Makes a group of submits durable (e.g. append + fsync); all submits waiting when a group
   * starts share it (group commit). Default: durable on the next turn of the event loop.
   */
  commit?: (raws: Uint8Array[]) => Promise<void>
  /** Largest message accepted, in bytes (MESSAGE_TOO_LARGE above). */
  messageBytesMax?: number
}

export interface MemoryPipeline extends IngestPipeline {
  addListener(listener: (result: IngestResult, delivery: Delivery) => void): void
  /** Every submit, in order of arrival (raw id and delivery). */
  submits: Array<{ id: string; delivery: Delivery }>
  /** Makes the next `count` submits fail with `error` (before anything is stored). */
  failNext(count: number, error: Error): void
  /** Holds submits of this id until release() (to test ack-after-durable). */
  hold(id: string): { release(): void }
  /** Ids stored durably so far (resolved submits). */
  durable: Set<string>
}

/** A pipeline in front of a MemoryArchive: origin from `mirror` deliveries, listeners, group commit. */
export function createMemoryPipeline(archive: MemoryArchive, options: MemoryPipelineOptions = {}): MemoryPipeline {
  const listeners: Array<(result: IngestResult, delivery: Delivery) => void> = []
  const submits: Array<{ id: string; delivery: Delivery }> = []
  const durable = new Set<string>()
  const holds = new Map<string, Promise<void>>()
  let failures: { count: number; error: Error } | undefined
  let waiting: Array<{ raw: Uint8Array; done: (error?: unknown) => void }> = []
  let committing = false

  async function commitLoop(): Promise<void> {
    committing = true
    while (waiting.length > 0) {
      const group = waiting
      waiting = []
      try {
        if (options.commit) await options.commit(group.map((item) => item.raw))
        else await new Promise((resolve) => setImmediate(resolve))
        for (const item of group) item.done()
      } catch (error) {
        for (const item of group) item.done(error)
      }
    }
    committing = false
  }

  function makeDurable(raw: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      waiting.push({ raw, done: (error) => (error ? reject(error) : resolve()) })
      if (!committing) void commitLoop()
    })
  }

  return {
    submits,
    durable,
    addListener: (listener) => void listeners.push(listener),
    failNext(count, error) {
      failures = { count, error }
    },
    hold(id) {
      let release!: () => void
      holds.set(id, new Promise<void>((resolve) => (release = resolve)))
      return {
        release: () => {
          holds.delete(id)
          release()
        },
      }
    },
    async submit(raw, delivery) {
      const id = sha256Hex(raw)
      submits.push({ id, delivery })
      if (failures && failures.count > 0) {
        failures.count--
        throw failures.error
      }
      if (options.messageBytesMax !== undefined && raw.byteLength > options.messageBytesMax) {
        throw new ArchiveError('MESSAGE_TOO_LARGE', `message of ${raw.byteLength} bytes is over the limit`)
      }
      const origin = delivery.source === 'mirror' ? delivery.sourceName : null
      const result = archive.ingest(raw, delivery, origin)
      await makeDurable(raw)
      await holds.get(id)
      durable.add(id)
      for (const listener of listeners) listener(result, delivery)
      return result
    },
  }
}

/** A local SMTP-like delivery with a BCC recipient (which only the envelope knows). */
export function localDelivery(index: number, receivedAtMs = Date.now()): Delivery {
  return {
    source: 'smtp',
    sourceName: 'smtp:127.0.0.1:2525',
    receivedAtMs,
    envelopeFrom: `sender${index}@example.com`,
    envelopeTo: [`to${index}@example.com`, `hidden${index}@example.com`],
    envelopeBcc: [`hidden${index}@example.com`],
    remoteAddress: '192.0.2.10',
    journalEnvelopeText: null,
    deliveryKey: null,
  }
}

/**
 * A message of about `sizeBytes` bytes: headers naming `tag` and a body of seeded random
 * printable text with CRLF and some 8-bit bytes (copies must be byte-identical).
 */
export function makeMessage(tag: string, sizeBytes: number, random: Random): Buffer {
  const head = Buffer.from(`From: a@example.com\r\nTo: b@example.com\r\nSubject: ${tag}\r\nMessage-ID: <${tag}@example.com>\r\n\r\n`, 'latin1')
  const body = Buffer.allocUnsafe(Math.max(0, sizeBytes - head.length))
  for (let index = 0; index < body.length; index++) {
    const roll = random.int(80)
    body[index] = roll === 0 ? 0x0d : roll === 1 ? 0x0a : roll === 2 ? 0xe9 : 0x20 + random.int(95)
  }
  return Buffer.concat([head, body])
}
