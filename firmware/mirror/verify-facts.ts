import type { DigestSnapshot } from '../archive/types.js'
import type { MirrorArchive } from './types.js'
import type { MissingFacts, PresentFacts, VerifySide } from './verify-protocol.js'

/**
 * What one side of `mirror verify` knows about itself, for its half of the explanations:
 * its snapshot's figures, whether an id is still in its copy queue for the other side, which
 * holds keep an id, which copies the other side refused, where a copy came from, and when
 * the retention purge removed an id. Used by both the initiator and the responder.
 */

/** Change-log entries read while looking for queued ids, at most; past it the rest count as queued. */
export const queuedScanEntriesMax = 2_000_000
/** Change-log entries per read. */
const scanPageEntries = 10_000

/** The archive as verify reads it. */
export interface VerifyArchive extends MirrorArchive {
  digestSnapshot(): Promise<DigestSnapshot>
  purgedAt(id: string): { sequence: number; atMs: number } | undefined
}

/** This appliance, its audit log and its retention, as verify needs them. */
export interface VerifyLocalDeps {
  archive: VerifyArchive
  serial: string
  /** SHA-256 of this appliance's mirror certificate. */
  fingerprint: string
  privateKeyPem: string
  certificatePem: string
  auditHead(): { seq: number; hash: string }
  policyFingerprint(): string
  /** Ids kept past their retention by active holds, with the holds' names. */
  holdsKeeping(ids: readonly string[]): Promise<Map<string, string[]>>
  /** The audit entry that names the purge of `id` at `atMs`, or null. */
  purgeAuditSeq(id: string, atMs: number): number | null
}

/** This side's copy queue toward the other side (its sender for that peer). */
export interface VerifyPeerQueue {
  /** Change-log ranges not yet acknowledged (throughSequence null: to the head). */
  pendingRanges(): Array<{ afterSequence: number; throughSequence: number | null }>
  requeuedIds(): string[]
  rejectedCopies(): Array<{ id: string; code: string }>
  /** Puts ids back in the queue (durably); resolves with how many were queued. */
  requeue(ids: string[]): Promise<number>
}

/** The queue as it stood at the cut: ranges closed at the snapshot's last sequence. */
export interface QueueAtCut {
  ranges: Array<{ afterSequence: number; throughSequence: number }>
  requeued: ReadonlySet<string>
}

/** Reads the queue at the cut: call BEFORE the other side's snapshot is taken. */
export function queueAtCut(queue: VerifyPeerQueue | undefined): QueueAtCut {
  if (!queue) return { ranges: [], requeued: new Set() }
  return {
    ranges: queue.pendingRanges().map((range) => ({ afterSequence: range.afterSequence, throughSequence: range.throughSequence ?? Number.MAX_SAFE_INTEGER })),
    requeued: new Set(queue.requeuedIds()),
  }
}

/** This side's figures from its snapshot. */
export function sideFacts(deps: VerifyLocalDeps, snapshot: DigestSnapshot): VerifySide {
  const root = snapshot.node('')
  return {
    serial: deps.serial,
    storeId: snapshot.storeId,
    fingerprint: deps.fingerprint,
    lastSequence: snapshot.lastSequence,
    messages: root.count,
    bytes: root.bytes,
    root: Buffer.from(root.hash).toString('hex'),
    auditHead: deps.auditHead(),
    policyFingerprint: deps.policyFingerprint(),
  }
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/**
 * The ids among `ids` still in the copy queue at the cut: a local change (ingest or delivery)
 * in an unacknowledged range up to `lastSequence`, or re-queued. Reads at most
 * queuedScanEntriesMax entries; past that every id not found yet counts as queued.
 */
async function queuedIds(archive: MirrorArchive, cut: QueueAtCut, lastSequence: number, ids: ReadonlySet<string>): Promise<Set<string>> {
  const found = new Set<string>([...ids].filter((id) => cut.requeued.has(id)))
  let budget = queuedScanEntriesMax
  for (const range of cut.ranges) {
    let after = range.afterSequence
    const through = Math.min(range.throughSequence, lastSequence)
    while (after < through && found.size < ids.size) {
      if (budget <= 0) {
        for (const id of ids) found.add(id)
        return found
      }
      const page = await archive.changes(after, Math.min(scanPageEntries, through - after))
      if (page.length === 0) break
      budget -= page.length
      for (const entry of page) {
        if (entry.sequence > through) break
        if (entry.kind !== 'purge' && entry.origin === null && ids.has(entry.id)) found.add(entry.id)
      }
      after = page[page.length - 1]!.sequence
      await yieldToEventLoop()
    }
  }
  return found
}

/** Why this side holds ids the other side lacks (in the order given). */
export async function explainPresent(deps: VerifyLocalDeps, queue: VerifyPeerQueue | undefined, cut: QueueAtCut, lastSequence: number, ids: readonly string[]): Promise<PresentFacts[]> {
  if (ids.length === 0) return []
  const queued = await queuedIds(deps.archive, cut, lastSequence, new Set(ids))
  const held = await deps.holdsKeeping(ids)
  const refused = new Map((queue?.rejectedCopies() ?? []).map((copy) => [copy.id, copy.code]))
  const facts: PresentFacts[] = []
  for (const id of ids) {
    const meta = await deps.archive.getMeta(id)
    facts.push({ id, queued: queued.has(id), held: held.get(id) ?? [], refused: refused.get(id) ?? null, origin: meta?.origin ?? null })
  }
  return facts
}

/** Why this side lacks ids the other side holds: the purges that removed them. */
export function explainMissing(deps: VerifyLocalDeps, ids: readonly string[]): MissingFacts[] {
  return ids.map((id) => {
    const purged = deps.archive.purgedAt(id)
    return { id, purged: purged ? { atMs: purged.atMs, sequence: purged.sequence, auditSeq: deps.purgeAuditSeq(id, purged.atMs) } : null }
  })
}
