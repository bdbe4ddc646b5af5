import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { copyDelivery, deliveryValues } from '../archive/delivery-fields.js'
import type { ChangeEntry, Delivery, MessageMeta } from '../archive/types.js'
import type { Random } from '../common/clock.js'
import { deliveriesPerMessageMax, messageHeaderBytes, messageHeaderBytesMax, type MessageHeader, type WireDelivery } from './copy-protocol.js'
import type { MirrorErrorCode } from './errors.js'

/**
 * Pure decisions of the copy layer (STYLE 7): which change-log entries are copied, which
 * deliveries travel with them, how a copy is recorded on the receiving side, and how long
 * a sender waits before trying a peer again. No I/O here; tests check these directly.
 */

/** Fraction of a retry delay taken off at random, so senders retrying one peer spread out. */
export const retryJitterRatio = 0.5

/**
 * Handshake refusals that put a peer in state `refused` (a configuration or identity problem
 * a technician must fix) rather than `retrying` (a transient failure). Both are retried.
 */
export const refusalStateCodes: ReadonlySet<string> = new Set<MirrorErrorCode>([
  'PROTOCOL_MISMATCH',
  'MODEL_NOT_ELIGIBLE',
  'MODEL_MISMATCH',
  'FIRMWARE_MISMATCH',
  'SERIAL_CONFLICT',
  'AUTH_FAILED',
  // Too many failed proofs from this address: a consequence of AUTH_FAILED, fixed the same way.
  'RATE_LIMITED',
  // A proven appliance that is not the pinned one, or not a peer at all: a technician decides.
  'IDENTITY_CHANGED',
  'NOT_A_PEER',
  'SECRET_WEAK',
])

/**
 * Delay before the next attempt after `failures` consecutive failures (1 = the first), in
 * milliseconds: retryDelayMsMin doubled per failure, capped at retryDelayMsMax, minus a
 * random part of up to retryJitterRatio. A refused peer waits as after many failures (the
 * capped delay): a fix is a technician's job, but the sender must notice it.
 * @throws AssertionError for failures < 1 or inconsistent limits
 */
export function retryDelayMs(failures: number, limits: { retryDelayMsMin: number; retryDelayMsMax: number }, random: Random, refused = false): number {
  assert.ok(Number.isInteger(failures) && failures >= 1, 'failures must be a positive integer')
  assert.ok(limits.retryDelayMsMin > 0 && limits.retryDelayMsMax >= limits.retryDelayMsMin, 'retry delay limits')
  const exponential = refused ? limits.retryDelayMsMax : Math.min(limits.retryDelayMsMax, limits.retryDelayMsMin * 2 ** Math.min(failures - 1, 40))
  return Math.max(1, Math.round(exponential * (1 - retryJitterRatio * random.next())))
}

/**
 * True when a change-log entry is copied to peers: a local ingest or a new local delivery of
 * a message. Entries that came from a peer (origin set) are never forwarded (full mesh), and
 * purges stay local (retention is independent per system).
 */
export function isCopied(entry: ChangeEntry): boolean {
  return entry.origin === null && (entry.kind === 'ingest' || entry.kind === 'delivery')
}

/** A delivery as it travels: a copy with every field of delivery-fields.ts, in its order, `deliveryKey` always present. */
export function toWireDelivery(delivery: Delivery): WireDelivery {
  return copyDelivery(delivery)
}

/**
 * The deliveries that travel with the copy of `entry`. The change log does not say which
 * delivery an entry recorded, so:
 * - an `ingest` entry sends the message's first delivery (the one that archived it);
 * - a `delivery` entry sends the local deliveries after the first that were received by the
 *   entry's time (`receivedAtMs <= atMs`), newest deliveriesPerMessageMax of them. The
 *   entry's own delivery is among them unless more than that many arrived in the moments
 *   between its receipt and its archiving; earlier ones sent again are recorded once by the
 *   receiver (stable delivery keys).
 * Deliveries from mirror peers are never sent (no forwarding).
 */
export function selectDeliveries(entry: ChangeEntry, meta: MessageMeta): WireDelivery[] {
  const first = meta.deliveries[0]
  if (entry.kind === 'ingest') {
    const local = first && first.source !== 'mirror' ? first : meta.deliveries.find((delivery) => delivery.source !== 'mirror')
    return local ? [toWireDelivery(local)] : []
  }
  const later = meta.deliveries.slice(1).filter((delivery) => delivery.source !== 'mirror' && delivery.receivedAtMs <= entry.atMs)
  return later.slice(-deliveriesPerMessageMax).map(toWireDelivery)
}

/**
 * The delivery key under which a receiver records a copied delivery:
 * `mirror:<origin serial>:<original source>:<first 32 hex of SHA-256 of the wire delivery>`.
 * Derived from the delivery's content (not from the change-log sequence) because one delivery
 * may travel with several entries and again after a broken transfer; the store records a
 * key once, so re-sends never double-record.
 */
export function mirrorDeliveryKey(originSerial: string, delivery: WireDelivery): string {
  // The fields' one order (delivery-fields.ts): objects from the store, the wire and tests list their keys differently.
  const canonical = JSON.stringify(deliveryValues(delivery))
  const digest = createHash('sha256').update(canonical).digest('hex').slice(0, 32)
  return `mirror:${originSerial}:${delivery.source}:${digest}`
}

/**
 * How a receiver records a copied delivery: source `mirror`, sourceName = the authenticated
 * origin serial (the pipeline archives the copy with that origin), and the original's
 * envelope kept whole (recipients, BCC, expanded lists, journal envelope text), its receipt
 * time and its client address, so search and e-discovery on the copy see what the origin saw.
 */
export function copiedDelivery(originSerial: string, delivery: WireDelivery): Delivery {
  return { ...copyDelivery(delivery), source: 'mirror', sourceName: originSerial, deliveryKey: mirrorDeliveryKey(originSerial, delivery) }
}

/**
 * The delivery recorded for an ingest copy that carries none (its local delivery could not be
 * found): the message is stored anyway, marked as received from the peer at `receivedAtMs`.
 */
export function bareCopiedDelivery(originSerial: string, id: string, remoteAddress: string, receivedAtMs: number): Delivery {
  return {
    source: 'mirror',
    sourceName: originSerial,
    receivedAtMs,
    envelopeFrom: null,
    envelopeTo: [],
    envelopeBcc: [],
    remoteAddress,
    journalEnvelopeText: null,
    deliveryKey: `mirror:${originSerial}:none:${id}`,
  }
}

/**
 * Keeps a message header under messageHeaderBytesMax: drops the oldest deliveries (keeping one),
 * then the journal envelope texts, then halves the recipient lists until it fits, and as a last
 * resort sends none (the receiver then records a bare delivery). Real mail
 * never gets there (16 MiB of envelope); the point is that no message can block a queue.
 * @returns the header (unchanged when it fits) and whether anything was dropped
 */
export function fitHeader(header: MessageHeader): { header: MessageHeader; trimmed: boolean } {
  if (messageHeaderBytes(header) <= messageHeaderBytesMax) return { header, trimmed: false }
  let deliveries = header.deliveries.map((delivery) => ({ ...delivery }))
  const size = (): number => messageHeaderBytes({ ...header, deliveries })
  while (deliveries.length > 1 && size() > messageHeaderBytesMax) deliveries = deliveries.slice(1)
  for (const delivery of deliveries) if (size() > messageHeaderBytesMax) delivery.journalEnvelopeText = null
  // Halving 64 times empties any list; whatever is still too big (a giant single field) goes.
  for (let round = 0; round < 64 && size() > messageHeaderBytesMax; round++) {
    for (const delivery of deliveries) {
      delivery.envelopeTo = delivery.envelopeTo.slice(0, Math.floor(delivery.envelopeTo.length / 2))
      delivery.envelopeBcc = delivery.envelopeBcc.slice(0, Math.floor(delivery.envelopeBcc.length / 2))
    }
  }
  if (size() > messageHeaderBytesMax) deliveries = []
  return { header: { ...header, deliveries }, trimmed: true }
}
