import { readFile, rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { writeFileDurable } from '../common/durable-file.js'
import { MirrorError } from './errors.js'
import { rejectedCopiesMax, requeuedIdsMax, type RejectedCopyRecord } from './copy-lanes.js'
import type { PeerAddress, PeerOrigin } from './types.js'

/**
 * Persistent copy-queue state, outside LMDB, in `stateDir` (every write through
 * writeFileDurable: tmp → fsync → rename → fsync dir):
 *
 * - `peers.json`: the technician's changes over the configured peer list — peers added with
 *   `mirror add` and configured peers removed with `mirror remove` — so they survive a restart
 *   while `mirror.peers[]` stays the initial set (a peer put into the config later still
 *   appears).
 * - `peer-<host>-<port>.json`, one per peer: the cursor (the last local change-log sequence
 *   the peer acknowledged) and, while the queue is split into a backfill and a live lane, the
 *   split point and the live lane's cursor (see copy-lanes.ts), message ids requeued for the
 *   peer and the copies it refused for good, the peer's pinned identity (serial, store id, certificate
 *   fingerprint) once a first handshake told it, a changed identity waiting for a technician's
 *   `mirror accept`, and whether copying is paused. Keyed by address because that is all the
 *   config knows before the first handshake.
 * - `joins.json`: appliances that proved the secret but are not peers (pending joins), newest
 *   first, bounded.
 *
 * The queue itself is not stored: it is the local change log after the cursor.
 */

/**
 * Layout version of `peers.json` and `joins.json`. 2: pinned store id and certificate, pending
 * identity, joins. Unchanged by version 3 of the peer files, so an older firmware still reads
 * the technician's peer changes.
 */
export const peerStateVersion = 2
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
/** Pending joins remembered, at most (the oldest seen is forgotten beyond). */
export const pendingJoinsMax = 32
/** Earlier serials remembered per peer address (a replaced appliance), at most. */
export const previousSerialsMax = 8
const overlayFileName = 'peers.json'
const joinsFileName = 'joins.json'

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

/** The technician's changes over `mirror.peers[]`. */
export interface PeerOverlay {
  added: PeerAddress[]
  removed: PeerAddress[]
}

/** The identity of a peer entry: lower-cased host and port. */
export function peerKey(peer: PeerAddress): string {
  return `${peer.host.toLowerCase()}:${peer.port}`
}

/** A configured or added peer. */
export interface EffectivePeer extends PeerAddress {
  configuredBy: PeerOrigin
}

/**
 * The peers to copy to: the configured ones not removed by a technician, then the added ones,
 * each once (pure).
 */
export function effectivePeers(configPeers: readonly PeerAddress[], overlay: PeerOverlay): EffectivePeer[] {
  const removed = new Set(overlay.removed.map(peerKey))
  const seen = new Set<string>()
  const peers: EffectivePeer[] = []
  for (const [list, configuredBy] of [
    [configPeers, 'config'],
    [overlay.added, 'added'],
  ] as const) {
    for (const peer of list) {
      const key = peerKey(peer)
      if (removed.has(key) || seen.has(key)) continue
      seen.add(key)
      peers.push({ host: peer.host, port: peer.port, configuredBy })
    }
  }
  return peers
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
function parseSeenIdentity(value: unknown): SeenIdentity | undefined {
  if (value === null || typeof value !== 'object') return undefined
  const entries = Object.entries(seenIdentityKeys) as [keyof SeenIdentity, 'string' | 'number'][]
  if (!entries.every(([key, type]) => typeof (value as Record<string, unknown>)[key] === type)) return undefined
  return Object.fromEntries(entries.map(([key]) => [key, (value as Record<string, unknown>)[key]])) as unknown as SeenIdentity
}

function isAddressList(value: unknown): value is PeerAddress[] {
  return (
    Array.isArray(value) &&
    value.every(
      (item) =>
        item !== null &&
        typeof item === 'object' &&
        typeof (item as PeerAddress).host === 'string' &&
        Number.isInteger((item as PeerAddress).port) &&
        (item as PeerAddress).port > 0 &&
        (item as PeerAddress).port <= 65535,
    )
  )
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

function parseRecord(text: string, peer: PeerAddress): PeerRecord | undefined {
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

/**
 * Reads and writes the state files in `stateDir`. Pure until called. A file that cannot be
 * parsed is quarantined (`<name>.corrupt-<ms>`, logged as an error) and replaced by a fresh
 * state: for a cursor that means a backfill from sequence 0, which costs bandwidth but loses
 * nothing (the peer deduplicates by content hash).
 */
export function createPeerStateStore(deps: { logger: Logger; clock: Clock }, options: { stateDir: string }) {
  const logger = deps.logger.child('state')

  function recordPath(peer: PeerAddress): string {
    return join(options.stateDir, `peer-${encodeURIComponent(peer.host.toLowerCase())}-${peer.port}.json`)
  }

  async function readText(path: string): Promise<string | undefined> {
    try {
      return await readFile(path, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw error
    }
  }

  async function quarantine(path: string, reason: string): Promise<void> {
    const aside = `${path}.corrupt-${deps.clock.now()}`
    await rename(path, aside)
    logger.error('mirror state file unusable; set aside and started fresh', { path, aside, reason })
  }

  async function write(path: string, value: unknown): Promise<void> {
    try {
      await writeFileDurable(path, JSON.stringify(value, null, 1) + '\n', 0o600)
    } catch (error) {
      throw new MirrorError('STATE_FAILED', `cannot write ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
        cause: error,
        fields: { path },
      })
    }
  }

  return {
    /** The technician's peer changes; none when the file does not exist. @throws fs errors other than ENOENT */
    async readOverlay(): Promise<PeerOverlay> {
      const path = join(options.stateDir, overlayFileName)
      const text = await readText(path)
      if (text === undefined) return { added: [], removed: [] }
      try {
        const value = JSON.parse(text) as Record<string, unknown>
        if (value.version === peerStateVersion && isAddressList(value.added) && isAddressList(value.removed)) {
          return { added: value.added.map(({ host, port }) => ({ host, port })), removed: value.removed.map(({ host, port }) => ({ host, port })) }
        }
        await quarantine(path, 'unexpected content')
      } catch (error) {
        if (error instanceof SyntaxError) await quarantine(path, error.message)
        else throw error
      }
      return { added: [], removed: [] }
    },

    /** Pending joins, newest first; none when the file does not exist. @throws fs errors other than ENOENT */
    async readJoins(): Promise<SeenIdentity[]> {
      const path = join(options.stateDir, joinsFileName)
      const text = await readText(path)
      if (text === undefined) return []
      try {
        const value = JSON.parse(text) as Record<string, unknown>
        const joins = Array.isArray(value.joins) ? value.joins.map(parseSeenIdentity) : undefined
        if (value.version === peerStateVersion && joins && joins.every((join) => join !== undefined)) return (joins as SeenIdentity[]).slice(0, pendingJoinsMax)
        await quarantine(path, 'unexpected content')
      } catch (error) {
        if (error instanceof SyntaxError) await quarantine(path, error.message)
        else throw error
      }
      return []
    },

    /** Saves the pending joins durably. @throws MirrorError STATE_FAILED */
    writeJoins(joins: readonly SeenIdentity[]): Promise<void> {
      return write(join(options.stateDir, joinsFileName), { version: peerStateVersion, joins: joins.slice(0, pendingJoinsMax) })
    },

    /** Saves the technician's peer changes durably. @throws MirrorError STATE_FAILED */
    writeOverlay(overlay: PeerOverlay): Promise<void> {
      return write(join(options.stateDir, overlayFileName), { version: peerStateVersion, ...overlay })
    },

    /** The state of one peer, fresh (cursor 0) when none was saved. @throws fs errors other than ENOENT */
    async read(peer: PeerAddress): Promise<PeerRecord> {
      const path = recordPath(peer)
      const text = await readText(path)
      if (text !== undefined) {
        let record: PeerRecord | undefined
        let reason = 'unexpected content'
        try {
          record = parseRecord(text, peer)
        } catch (error) {
          reason = (error as Error).message
        }
        if (record) return record
        await quarantine(path, reason)
      }
      return freshPeerRecord(peer, deps.clock.now())
    },

    /** Saves one peer's state durably. @throws MirrorError STATE_FAILED */
    write(record: PeerRecord): Promise<void> {
      return write(recordPath(record), { version: peerRecordVersion, ...record, updatedAtMs: deps.clock.now() })
    },

    /** Forgets a removed peer's state (a peer added again later is backfilled from 0). */
    async delete(peer: PeerAddress): Promise<void> {
      await unlink(recordPath(peer)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error
      })
    },
  }
}

/** A store as createPeerStateStore makes it. */
export type PeerStateStore = ReturnType<typeof createPeerStateStore>

/**
 * Writes the latest of a stream of values without queueing every one: at most one write runs,
 * and a value scheduled meanwhile replaces any other waiting value. Cursor updates arrive per
 * acknowledged batch; fsyncing each would put the disk in the ack path, while a lagging
 * persisted cursor only means a few batches are sent again after a crash (deduplicated).
 * Every write of one file goes through one writer, so an older value never lands last.
 */
export function createCoalescingWriter<T>(write: (value: T) => Promise<void>, onError: (error: unknown) => void) {
  type Waiter = { resolve(): void; reject(error: unknown): void }
  let pending: { value: T; waiters: Waiter[] } | undefined
  let running: Promise<void> | undefined

  function run(): Promise<void> {
    running ??= (async () => {
      while (pending) {
        const current = pending
        pending = undefined
        try {
          await write(current.value)
          for (const waiter of current.waiters) waiter.resolve()
        } catch (error) {
          if (current.waiters.length === 0) onError(error)
          for (const waiter of current.waiters) waiter.reject(error)
        }
      }
      running = undefined
    })()
    return running
  }

  return {
    /** Saves `value` soon, after any write under way; a failure goes to onError. */
    schedule(value: T): void {
      pending = { value, waiters: pending?.waiters ?? [] }
      void run()
    },
    /**
     * Saves `value` (or a later value scheduled before it is written) and resolves once it is
     * written. @throws whatever the write throws
     */
    save(value: T): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        pending = { value, waiters: [...(pending?.waiters ?? []), { resolve, reject }] }
        void run()
      })
    },
    /** Resolves when every scheduled value has been written (or failed and been reported). */
    flush(): Promise<void> {
      // The loop in run() takes values scheduled while it writes, so one wait covers them.
      return pending || running ? run() : Promise.resolve()
    },
  }
}
