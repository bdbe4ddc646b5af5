import { rejectedCopiesMax, requeuedIdsMax, type RejectedCopyRecord } from './copy-lanes.js'
import type { PeerAddress } from './types.js'

/**
 * The per-peer state file's record (`peer-<host>-<port>.json`, see peer-state.ts): its layout
 * version, fields and parsing, and the identities it pins. Pure: no I/O here.
 */

/**
 * Layout version of the per-peer files. 3: copy lanes (`liveFrom`, `liveCursor`), requeued ids
 * (`requeued`), refused copies (`rejected`); 2: pinned store id and certificate, pending identity.
 */
export const peerRecordVersion = 3
/**
 * Versions read: 1 lacks the pins (filled in at the next handshake whose serial matches); 1 and
 * 2 lack the lanes and lists (one lane from the cursor, empty lists).
 */
const readableVersions = new Set([1, 2, 3])
/** Earlier serials remembered per peer address (a replaced appliance), at most. */
export const previousSerialsMax = 8

/** A proven appliance's identity as its handshake showed it. */
export interface SeenIdentity {
  serial: string
  storeId: string
  /** SHA-256 of its certificate (lower-case hex). */
  fingerprint: string
  model: number
  firmwareVersion: string
  /** Remote address of the connection. */
  address: string
  /** The port its mirror listener said it is bound to (0: not listening). */
  listenPort: number
  firstSeenAtMs: number
  lastSeenAtMs: number
}

/** The three parts of a mirror identity. */
export interface IdentityParts {
  serial: string | null
  storeId: string | null
  fingerprint: string | null
}

/** True when two identities have the same serial, store id and certificate. */
export function sameIdentity(a: IdentityParts, b: IdentityParts): boolean {
  return a.serial === b.serial && a.storeId === b.storeId && a.fingerprint === b.fingerprint
}

/** The persisted state of one peer. */
export interface PeerRecord {
  host: string
  port: number
  /** The pinned serial: from the first successful handshake (or a technician's accept); null before. */
  serial: string | null
  /** The pinned store id of the peer's archive; null before the first handshake (or in a version-1 file). */
  storeId: string | null
  /** The pinned certificate fingerprint; null as storeId. */
  fingerprint: string | null
  /** A proven identity that differs from the pinned one, waiting for `mirror accept`; nothing is copied meanwhile. */
  pendingIdentity: SeenIdentity | null
  /** The last local change-log sequence the peer acknowledged (with everything before it); 0 = copy everything (backfill). */
  cursor: number
  /** Split point of the copy lanes: the backfill lane is (cursor, liveFrom]; null while there is one lane. */
  liveFrom: number | null
  /** The live lane (after liveFrom) is acknowledged through this sequence; null while there is one lane. */
  liveCursor: number | null
  /** Archived message ids to send again (mirror verify), oldest first, at most requeuedIdsMax; none moves a cursor. */
  requeued: string[]
  /** Copies the peer refused for good, oldest first, the newest rejectedCopiesMax. */
  rejected: RejectedCopyRecord[]
  /**
   * After a technician accepted a new store id (a wiped or replaced volume): the backfill also
   * returns the peer's own messages held here, those archived through this sequence (the head
   * at the accept). 0 = none.
   */
  returnOwnThrough: number
  paused: boolean
  /** Serials seen at this address before the current one, oldest first. */
  previousSerials: string[]
  /** Wall-clock time of the last write, milliseconds since the epoch. */
  updatedAtMs: number
}

/** The identity of a peer entry: lower-cased host and port. */
export function peerKey(peer: PeerAddress): string {
  return `${peer.host.toLowerCase()}:${peer.port}`
}

/** A fresh record: nothing acknowledged yet, so the peer gets the whole archive. */
export function freshPeerRecord(peer: PeerAddress, nowMs: number): PeerRecord {
  return {
    host: peer.host,
    port: peer.port,
    serial: null,
    storeId: null,
    fingerprint: null,
    pendingIdentity: null,
    cursor: 0,
    liveFrom: null,
    liveCursor: null,
    requeued: [],
    rejected: [],
    returnOwnThrough: 0,
    paused: false,
    previousSerials: [],
    updatedAtMs: nowMs,
  }
}

/** A deep copy of a record (the sender hands copies to the writer). */
export function copyPeerRecord(record: PeerRecord): PeerRecord {
  return {
    ...record,
    previousSerials: [...record.previousSerials],
    pendingIdentity: record.pendingIdentity ? { ...record.pendingIdentity } : null,
    requeued: [...record.requeued],
    rejected: record.rejected.map((item) => ({ ...item })),
  }
}

const seenIdentityKeys: Record<keyof SeenIdentity, 'string' | 'number'> = {
  serial: 'string',
  storeId: 'string',
  fingerprint: 'string',
  model: 'number',
  firmwareVersion: 'string',
  address: 'string',
  listenPort: 'number',
  firstSeenAtMs: 'number',
  lastSeenAtMs: 'number',
}

/** A SeenIdentity read from a file, or undefined when it is not one. */
export function parseSeenIdentity(value: unknown): SeenIdentity | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const entries = Object.entries(seenIdentityKeys) as [keyof SeenIdentity, 'string' | 'number'][]
  if (!entries.every(([key, type]) => typeof (value as Record<string, unknown>)[key] === type)) return undefined
  return Object.fromEntries(entries.map(([key]) => [key, (value as Record<string, unknown>)[key]])) as unknown as SeenIdentity
}

const isSequence = (value: unknown): value is number => typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
const hexId = /^[0-9a-f]{64}$/

/** The lane fields of a version-3 record (defaults for older ones), or undefined when they are inconsistent. */
function parseLanes(value: Record<string, unknown>, cursor: number): Pick<PeerRecord, 'liveFrom' | 'liveCursor' | 'requeued' | 'rejected'> | undefined {
  if (value.version !== 3) return { liveFrom: null, liveCursor: null, requeued: [], rejected: [] }
  const { liveFrom, liveCursor, requeued, rejected } = value
  const oneLane = liveFrom === null && liveCursor === null
  const twoLanes = isSequence(liveFrom) && isSequence(liveCursor) && liveFrom > cursor && liveCursor >= liveFrom
  if (!oneLane && !twoLanes) return undefined
  if (!Array.isArray(requeued) || requeued.length > requeuedIdsMax || !requeued.every((id) => typeof id === 'string' && hexId.test(id))) return undefined
  if (!Array.isArray(rejected)) return undefined
  const rejectedRecords = rejected.slice(-rejectedCopiesMax).map((item: unknown) => {
    const { id, code, message, atMs } = (item ?? {}) as Record<string, unknown>
    return typeof id === 'string' && typeof code === 'string' && typeof message === 'string' && typeof atMs === 'number' ? { id, code, message, atMs } : undefined
  })
  if (!rejectedRecords.every((item) => item !== undefined)) return undefined
  return { liveFrom: liveFrom as number | null, liveCursor: liveCursor as number | null, requeued: requeued as string[], rejected: rejectedRecords as RejectedCopyRecord[] }
}

/**
 * A peer's record read from its file's text, or undefined when it is not a readable record of
 * `peer` (a version not read, a wrong type, inconsistent lanes).
 * @throws SyntaxError when the text is not JSON
 */
export function parsePeerRecord(text: string, peer: PeerAddress): PeerRecord | undefined {
  const value = JSON.parse(text) as Record<string, unknown>
  const { version, host, port, serial, cursor, paused, previousSerials, updatedAtMs } = value
  const storeId = value.storeId ?? null
  const fingerprint = value.fingerprint ?? null
  const pendingIdentity = value.pendingIdentity === undefined || value.pendingIdentity === null ? null : parseSeenIdentity(value.pendingIdentity)
  const valid =
    readableVersions.has(version as number) &&
    (storeId === null || typeof storeId === 'string') &&
    (fingerprint === null || typeof fingerprint === 'string') &&
    pendingIdentity !== undefined &&
    typeof host === 'string' &&
    peerKey({ host, port: port as number }) === peerKey(peer) &&
    (serial === null || typeof serial === 'string') &&
    typeof cursor === 'number' &&
    Number.isSafeInteger(cursor) &&
    cursor >= 0 &&
    typeof paused === 'boolean' &&
    Array.isArray(previousSerials) &&
    previousSerials.every((item) => typeof item === 'string') &&
    typeof updatedAtMs === 'number'
  if (!valid) return undefined
  const lanes = parseLanes(value, cursor)
  if (!lanes) return undefined
  // Added within version 3: absent in older files (nothing to return).
  const returnOwnThrough = value.returnOwnThrough ?? 0
  if (!isSequence(returnOwnThrough) && returnOwnThrough !== 0) return undefined
  return {
    host: peer.host,
    port: peer.port,
    serial,
    storeId: storeId as string | null,
    fingerprint: fingerprint as string | null,
    pendingIdentity,
    cursor,
    ...lanes,
    returnOwnThrough: returnOwnThrough as number,
    paused,
    previousSerials: previousSerials as string[],
    updatedAtMs,
  }
}
