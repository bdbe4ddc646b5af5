/**
 * What the simulation knows independently of the code under test, and the checks it makes
 * after healing. The ledger records every local delivery and every policy purge as they are
 * applied, per store (a store id: an identity change starts a new one), and notices each time
 * a purged message is stored again by a mirror copy. The checks then compare the archives
 * with what the ledger says must, may and must not be there.
 */
import { createHash } from 'node:crypto'
import type { Delivery } from '../../firmware/archive/types.js'
import { ArchiveError } from '../../firmware/archive/errors.js'
import {
  compareDigests,
  digestFanout,
  digestHashBytes,
  digestLeafLevel,
  idDigestHash,
  parsePrefix,
  type DigestEntry,
  type DigestNode,
  type DigestView,
  type RemoteDigestView,
} from '../../firmware/archive/id-digest.js'
import type { MemoryArchive } from '../firmware/mirror/fakes.js'
import { virtualEpochMs } from './virtual-time.js'

/** A local delivery as the ledger keeps it. */
export interface LocalDeliveryRecord {
  node: string
  serial: string
  storeId: string
  id: string
  /** Virtual time it was archived (not received: a purge may fall between the two). */
  appliedAtMs: number
  /** Virtual time it was received (the delivery's receivedAtMs, from the run's start): what a peer's purge is compared with. */
  receivedAtMs: number
  fingerprint: string
}

/** A purged message stored again by a mirror copy, noticed when it happened. */
export interface ReturnRecord {
  node: string
  storeId: string
  id: string
  purgedAtMs: number
  atMs: number
  fromSerial: string
}

/** One broken invariant, for the report. */
export interface Violation {
  kind: 'not-converged' | 'missing' | 'missing-delivery' | 'duplicate-delivery' | 'unknown-delivery' | 'bytes-differ' | 'purged-returned' | 'verify-disagrees'
  node: string
  id?: string
  /**
   * purged-returned: `resend` (copies stored before the purge sent again) or `late-copy` (a
   * delivery older than the purge copied after it); unknown-delivery: `forwarded-bare` (a copy
   * sent with no delivery, recorded as a bare one).
   */
  cause?: 'resend' | 'late-copy' | 'forwarded-bare'
  detail: string
}

/**
 * Protocol bugs this simulation found and that are not fixed yet, by cause (see
 * tests/sim/README.md): a violation with one of these causes is reported under the finding's
 * name; any other violation is new. Empty: F1 (resend after a lost acknowledgement), F2 (a
 * copy of a delivery older than a purge) and F3 (an old ingest entry forwarding a peer's copy)
 * are fixed and their reproductions in sim.test.ts are plain regression tests now.
 */
export const knownFindings: Partial<Record<NonNullable<Violation['cause']>, string>> = {}

/** The known finding a violation is an instance of, or undefined for a new problem. */
export function knownFinding(violation: Violation): NonNullable<Violation['cause']> | undefined {
  return violation.cause !== undefined && knownFindings[violation.cause] !== undefined ? violation.cause : undefined
}

/** The envelope of a delivery without its source naming: equal for a local delivery and its copies. */
export function deliveryFingerprint(delivery: Delivery): string {
  return JSON.stringify([delivery.receivedAtMs, delivery.envelopeFrom, delivery.envelopeTo, delivery.envelopeBcc, delivery.remoteAddress, delivery.journalEnvelopeText])
}

export function createLedger() {
  const localDeliveries: LocalDeliveryRecord[] = []
  /** storeId → id → virtual time of its latest purge there. */
  const purges = new Map<string, Map<string, number>>()
  /** storeId → fingerprint of each copied delivery it ever recorded (purged ones too) → when first. */
  const firstSeen = new Map<string, Map<string, number>>()
  const returns: ReturnRecord[] = []

  const purgedAt = (storeId: string, id: string): number | undefined => purges.get(storeId)?.get(id)

  return {
    localDeliveries,
    returns,
    purgedAt,
    /** When `storeId` first recorded a copy of the delivery with this fingerprint; undefined: never. */
    firstSeenAt: (storeId: string, fingerprint: string): number | undefined => firstSeen.get(storeId)?.get(fingerprint),

    /** A delivery was archived on `node` (existed: the message was there before it). */
    onIngest(node: { name: string; serial: string }, storeId: string, id: string, delivery: Delivery, existed: boolean, nowMs: number): void {
      if (delivery.source !== 'mirror') {
        localDeliveries.push({
          node: node.name,
          serial: node.serial,
          storeId,
          id,
          appliedAtMs: nowMs,
          receivedAtMs: delivery.receivedAtMs - virtualEpochMs,
          fingerprint: deliveryFingerprint(delivery),
        })
        return
      }
      let seen = firstSeen.get(storeId)
      if (!seen) firstSeen.set(storeId, (seen = new Map()))
      const purged = purgedAt(storeId, id)
      if (!existed && purged !== undefined) returns.push({ node: node.name, storeId, id, purgedAtMs: purged, atMs: nowMs, fromSerial: delivery.sourceName ?? '?' })
      const fingerprint = deliveryFingerprint(delivery)
      if (!seen.has(fingerprint)) seen.set(fingerprint, nowMs)
    },

    onPurge(storeId: string, id: string, nowMs: number): void {
      let map = purges.get(storeId)
      if (!map) purges.set(storeId, (map = new Map()))
      map.set(id, nowMs)
    },

    /**
     * True when a purged message may come back to `node`: a local delivery of `id` there
     * archived after `afterMs`, or one on any node received after it (a peer's copy of a
     * delivery received no later than its purge is not stored: store-ingest.ts).
     */
    deliveredAfter(id: string, afterMs: number, node: string): boolean {
      return localDeliveries.some((record) => record.id === id && (record.receivedAtMs > afterMs || (record.node === node && record.appliedAtMs > afterMs)))
    },
  }
}

export type Ledger = ReturnType<typeof createLedger>

/** What the checks need of a node. */
export interface CheckedNode {
  name: string
  serial: string
  archive: MemoryArchive
}

/**
 * The checks after healing (the nodes quiescent, every identity accepted):
 * - every local delivery held by a node's current store reaches every other node, exactly
 *   once, unless that node purged the message after the delivery was archived;
 * - every copied delivery matches one local delivery of the node it names (no forwarding, no
 *   invented or doubled deliveries), and stored bytes match their id;
 * - a message purged by policy on a store is not there again unless a new local delivery of
 *   it was archived (on any node) after the purge;
 * - the id digests of every pair agree once the differences the two rules above allow are
 *   taken out (verifyAgrees).
 */
export async function checkNodes(nodes: readonly CheckedNode[], ledger: Ledger): Promise<Violation[]> {
  const violations: Violation[] = []
  const localByFingerprint = new Map<string, LocalDeliveryRecord>()
  for (const record of ledger.localDeliveries) localByFingerprint.set(record.fingerprint, record)

  for (const node of nodes) {
    const storeId = node.archive.storeId()
    for (const [id, { raw, meta }] of node.archive.messages) {
      if (createHash('sha256').update(raw).digest('hex') !== id) violations.push({ kind: 'bytes-differ', node: node.name, id, detail: 'stored bytes do not hash to the id' })
      const seen = new Set<string>()
      for (const delivery of meta.deliveries) {
        const fingerprint = deliveryFingerprint(delivery)
        if (seen.has(fingerprint)) violations.push({ kind: 'duplicate-delivery', node: node.name, id, detail: `delivery recorded twice: ${fingerprint}` })
        seen.add(fingerprint)
        if (delivery.source !== 'mirror') continue
        const local = localByFingerprint.get(fingerprint)
        if (!local || local.id !== id || local.serial !== delivery.sourceName) {
          // The receiver's bare delivery: the copy carried no delivery at all.
          const bare = delivery.deliveryKey?.startsWith(`mirror:${delivery.sourceName}:none:`) === true
          // This node's own message, sent back to it after its volume was replaced (or by verify's
          // repair): the peer holds no local delivery of it to send, so the copy is bare.
          if (bare && ledger.localDeliveries.some((record) => record.id === id && record.node === node.name)) continue
          violations.push({
            kind: 'unknown-delivery',
            node: node.name,
            id,
            ...(bare ? { cause: 'forwarded-bare' as const } : {}),
            detail: `copied delivery from ${delivery.sourceName} matches no local delivery there${bare ? ' (a bare delivery: the copy carried none)' : ''}: ${fingerprint}`,
          })
        }
      }
      const purged = ledger.purgedAt(storeId, id)
      if (purged !== undefined && !ledger.deliveredAfter(id, purged, node.name)) {
        // A resend: every delivery the copy brought back had been recorded here before the purge.
        const resent = meta.deliveries.every((delivery) => delivery.source === 'mirror' && (ledger.firstSeenAt(storeId, deliveryFingerprint(delivery)) ?? Infinity) < purged)
        const returned = ledger.returns.filter((record) => record.storeId === storeId && record.id === id)
        const how = returned.map((record) => `at ${record.atMs} ms from ${record.fromSerial}`).join('; ')
        violations.push({
          kind: 'purged-returned',
          node: node.name,
          id,
          cause: resent ? 'resend' : 'late-copy',
          detail: `purged by policy at ${purged} ms, stored again ${how || '(how unknown)'} by ${resent ? 'a resend of copies it had stored before the purge' : 'a copy of a delivery archived before the purge and copied after it'}; no local delivery since`,
        })
      }
    }
  }

  for (const from of nodes) {
    for (const { meta } of from.archive.messages.values()) {
      for (const delivery of meta.deliveries) {
        if (delivery.source === 'mirror') continue
        const local = localByFingerprint.get(deliveryFingerprint(delivery))
        if (!local) continue
        for (const to of nodes) {
          if (to === from) continue
          const purged = ledger.purgedAt(to.archive.storeId(), meta.id)
          // Purged there no earlier than the delivery was received: it would have gone with the purge.
          if (purged !== undefined && local.receivedAtMs <= purged) continue
          const copy = to.archive.messages.get(meta.id)
          if (!copy) {
            violations.push({ kind: 'missing', node: to.name, id: meta.id, detail: `archived on ${from.name} at ${local.appliedAtMs} ms, never copied` })
          } else if (!copy.meta.deliveries.some((candidate) => deliveryFingerprint(candidate) === local.fingerprint)) {
            violations.push({ kind: 'missing-delivery', node: to.name, id: meta.id, detail: `delivery archived on ${from.name} at ${local.appliedAtMs} ms not recorded here` })
          }
        }
      }
    }
  }

  for (let a = 0; a < nodes.length; a++) {
    for (let b = a + 1; b < nodes.length; b++) {
      const problem = await verifyDifferencesAllowed(nodes[a]!, nodes[b]!, nodes, ledger, localByFingerprint)
      if (problem) violations.push({ kind: 'verify-disagrees', node: `${nodes[a]!.name}/${nodes[b]!.name}`, detail: problem })
    }
  }
  return violations
}

/** The result of comparing two archives' id digests. */
export interface VerifyResult {
  agree: boolean
  /** Ids only the first archive holds, sorted. */
  onlyA: string[]
  /** Ids only the second archive holds, sorted. */
  onlyB: string[]
}

/**
 * A digest of a few ids answering exactly as createMemoryDigest does (same hashes, nodes and
 * id lists; a test checks it), but built from the ids present instead of all 65,536 leaves:
 * createMemoryDigest costs ~30 ms however few the ids, which alone would cap the simulation
 * at a few seeds a second.
 */
export function createSparseDigest(entries: readonly DigestEntry[]): DigestView {
  const nodes = new Map<string, DigestNode>()
  const sorted = [...entries].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  for (const entry of sorted) {
    const hash = idDigestHash(Buffer.from(entry.id, 'hex'))
    for (let level = 0; level <= digestLeafLevel; level++) {
      const prefix = entry.id.slice(0, level)
      const node = nodes.get(prefix) ?? { count: 0, bytes: 0, hash: new Uint8Array(digestHashBytes) }
      node.count++
      node.bytes += entry.sizeBytes
      for (let index = 0; index < digestHashBytes; index++) node.hash[index]! ^= hash[index]!
      nodes.set(prefix, node)
    }
  }
  const node = (prefix: string): DigestNode => {
    parsePrefix(prefix)
    const found = nodes.get(prefix)
    return found ? { count: found.count, bytes: found.bytes, hash: Uint8Array.from(found.hash) } : { count: 0, bytes: 0, hash: new Uint8Array(digestHashBytes) }
  }
  return {
    node,
    children(prefix) {
      if (parsePrefix(prefix).level >= digestLeafLevel) throw new ArchiveError('DIGEST_INVALID', `digest prefix '${prefix}' has no children`)
      return Array.from({ length: digestFanout }, (_, digit) => node(prefix + digit.toString(16)))
    },
    idsInBucket(prefix) {
      parsePrefix(prefix)
      return sorted.filter((entry) => entry.id.startsWith(prefix)).map((entry) => ({ ...entry }))
    },
  }
}

/** The entries of an archive's digest: every stored id with its raw size. */
export function digestEntries(archive: MemoryArchive): DigestEntry[] {
  return [...archive.messages].map(([id, message]) => ({ id, sizeBytes: message.raw.byteLength }))
}

/** A peer's digest answered in-process (what the mirror channel would carry). */
function remoteView(view: DigestView): RemoteDigestView {
  return {
    children: async (prefixes) => prefixes.map((prefix) => view.children(prefix)),
    ids: async (prefixes) => prefixes.map((prefix) => view.idsInBucket(prefix)),
  }
}

/**
 * Whether two archives hold the same ids, and which differ: the id digests compared as
 * `mirror verify` compares them. A stand-in: swap it for the real verify once it exists.
 */
export async function verifyAgrees(a: MemoryArchive, b: MemoryArchive): Promise<VerifyResult> {
  const comparison = await compareDigests(createSparseDigest(digestEntries(a)), remoteView(createSparseDigest(digestEntries(b))))
  return { agree: comparison.agree, onlyA: comparison.onlyLocal, onlyB: comparison.onlyRemote }
}

/** Ids `node` may lack that another holds: purged there and not delivered anew since, or held elsewhere only as copies. */
function mayLack(node: CheckedNode, id: string, nodes: readonly CheckedNode[], ledger: Ledger, localByFingerprint: ReadonlyMap<string, LocalDeliveryRecord>): boolean {
  const purged = ledger.purgedAt(node.archive.storeId(), id)
  for (const other of nodes) {
    if (other === node) continue
    const meta = other.archive.messages.get(id)?.meta
    if (!meta) continue
    for (const delivery of meta.deliveries) {
      if (delivery.source === 'mirror') continue
      const local = localByFingerprint.get(deliveryFingerprint(delivery))
      if (local && (purged === undefined || local.receivedAtMs > purged)) return false
    }
  }
  return true
}

/** Runs verifyAgrees and explains each difference; returns what it cannot explain, or undefined. */
async function verifyDifferencesAllowed(
  a: CheckedNode,
  b: CheckedNode,
  nodes: readonly CheckedNode[],
  ledger: Ledger,
  localByFingerprint: ReadonlyMap<string, LocalDeliveryRecord>,
): Promise<string | undefined> {
  const result = await verifyAgrees(a.archive, b.archive)
  const direct = (x: CheckedNode, y: CheckedNode) => [...x.archive.messages.keys()].filter((id) => !y.archive.messages.has(id)).sort()
  if (JSON.stringify(result.onlyA) !== JSON.stringify(direct(a, b)) || JSON.stringify(result.onlyB) !== JSON.stringify(direct(b, a))) {
    return `the digest comparison lists other differences than the archives have (${result.onlyA.length}/${result.onlyB.length} listed)`
  }
  if (result.agree !== (result.onlyA.length === 0 && result.onlyB.length === 0)) return 'the digest roots say the opposite of the differences'
  const unexplained = [
    ...result.onlyA.filter((id) => !mayLack(b, id, nodes, ledger, localByFingerprint)).map((id) => `${id.slice(0, 12)} only on ${a.name}`),
    ...result.onlyB.filter((id) => !mayLack(a, id, nodes, ledger, localByFingerprint)).map((id) => `${id.slice(0, 12)} only on ${b.name}`),
  ]
  return unexplained.length > 0 ? `differences not explained by purges: ${unexplained.join(', ')}` : undefined
}
