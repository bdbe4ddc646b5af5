import { rename, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { writeFileDurable, readTextIfPresent } from '../common/durable-file.js'
import { MirrorError } from './errors.js'
import { freshPeerRecord, parsePeerRecord, parseSeenIdentity, peerKey, peerRecordVersion, type PeerRecord, type SeenIdentity } from './peer-record.js'
import type { PeerAddress, PeerOrigin } from './types.js'

export {
  copyPeerRecord,
  freshPeerRecord,
  peerKey,
  peerRecordVersion,
  previousSerialsMax,
  sameIdentity,
  type IdentityParts,
  type PeerRecord,
  type SeenIdentity,
} from './peer-record.js'
export { createCoalescingWriter } from './coalescing-writer.js'

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
/** Pending joins remembered, at most (the oldest seen is forgotten beyond). */
export const pendingJoinsMax = 32
const overlayFileName = 'peers.json'
const joinsFileName = 'joins.json'

/** The technician's changes over `mirror.peers[]`. */
export interface PeerOverlay {
  added: PeerAddress[]
  removed: PeerAddress[]
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

/** Where the state files are, and what reading them needs. */
interface StateFiles {
  stateDir: string
  logger: Logger
  clock: Clock
}

/** A per-peer file's path (host lower-cased and URI-encoded). */
function recordPath(files: StateFiles, peer: PeerAddress): string {
  return join(files.stateDir, `peer-${encodeURIComponent(peer.host.toLowerCase())}-${peer.port}.json`)
}

/** Sets an unusable file aside (`<path>.corrupt-<ms>`), logged as an error. */
async function quarantine(files: StateFiles, path: string, reason: string): Promise<void> {
  const aside = `${path}.corrupt-${files.clock.now()}`
  await rename(path, aside)
  files.logger.error('mirror state file unusable; set aside and started fresh', { path, aside, reason })
}

/** Writes `value` as JSON durably (0600). @throws MirrorError STATE_FAILED */
async function writeState(path: string, value: unknown): Promise<void> {
  try {
    await writeFileDurable(path, JSON.stringify(value, null, 1) + '\n', 0o600)
  } catch (error) {
    throw new MirrorError('STATE_FAILED', `cannot write ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`, {
      cause: error,
      fields: { path },
    })
  }
}

/**
 * Reads a JSON state file through `parse` (undefined: unexpected content). A missing file, or
 * one that is quarantined for its content or syntax, gives `empty`. @throws fs errors other than ENOENT
 */
async function readStateFile<T>(files: StateFiles, name: string, parse: (value: Record<string, unknown>) => T | undefined, empty: T): Promise<T> {
  const path = join(files.stateDir, name)
  const text = await readTextIfPresent(path)
  if (text === undefined) return empty
  try {
    const parsed = parse(JSON.parse(text) as Record<string, unknown>)
    if (parsed !== undefined) return parsed
    await quarantine(files, path, 'unexpected content')
  } catch (error) {
    if (error instanceof SyntaxError) await quarantine(files, path, error.message)
    else throw error
  }
  return empty
}

/** The technician's peer changes in a `peers.json` value, or undefined when it is not one. */
function parseOverlay(value: Record<string, unknown>): PeerOverlay | undefined {
  if (value.version !== peerStateVersion || !isAddressList(value.added) || !isAddressList(value.removed)) return undefined
  return { added: value.added.map(({ host, port }) => ({ host, port })), removed: value.removed.map(({ host, port }) => ({ host, port })) }
}

/** The pending joins in a `joins.json` value (at most pendingJoinsMax), or undefined when it is not one. */
function parseJoins(value: Record<string, unknown>): SeenIdentity[] | undefined {
  const joins = Array.isArray(value.joins) ? value.joins.map(parseSeenIdentity) : undefined
  if (value.version !== peerStateVersion || !joins || !joins.every((join) => join !== undefined)) return undefined
  return (joins as SeenIdentity[]).slice(0, pendingJoinsMax)
}

/** The state of one peer, fresh (cursor 0) when none was saved or its file is quarantined. @throws fs errors other than ENOENT */
async function readPeerRecord(files: StateFiles, peer: PeerAddress): Promise<PeerRecord> {
  const path = recordPath(files, peer)
  const text = await readTextIfPresent(path)
  if (text !== undefined) {
    let record: PeerRecord | undefined
    let reason = 'unexpected content'
    try {
      record = parsePeerRecord(text, peer)
    } catch (error) {
      reason = (error as Error).message
    }
    if (record) return record
    await quarantine(files, path, reason)
  }
  return freshPeerRecord(peer, files.clock.now())
}

/**
 * Reads and writes the state files in `stateDir`. Pure until called. A file that cannot be
 * parsed is quarantined (`<name>.corrupt-<ms>`, logged as an error) and replaced by a fresh
 * state: for a cursor that means a backfill from sequence 0, which costs bandwidth but loses
 * nothing (the peer deduplicates by content hash).
 */
export function createPeerStateStore(deps: { logger: Logger; clock: Clock }, options: { stateDir: string }) {
  const files: StateFiles = { stateDir: options.stateDir, logger: deps.logger.child('state'), clock: deps.clock }

  return {
    /** The technician's peer changes; none when the file does not exist. @throws fs errors other than ENOENT */
    readOverlay(): Promise<PeerOverlay> {
      return readStateFile(files, overlayFileName, parseOverlay, { added: [], removed: [] })
    },

    /** Pending joins, newest first; none when the file does not exist. @throws fs errors other than ENOENT */
    readJoins(): Promise<SeenIdentity[]> {
      return readStateFile<SeenIdentity[]>(files, joinsFileName, parseJoins, [])
    },

    /** Saves the pending joins durably. @throws MirrorError STATE_FAILED */
    writeJoins(joins: readonly SeenIdentity[]): Promise<void> {
      return writeState(join(options.stateDir, joinsFileName), { version: peerStateVersion, joins: joins.slice(0, pendingJoinsMax) })
    },

    /** Saves the technician's peer changes durably. @throws MirrorError STATE_FAILED */
    writeOverlay(overlay: PeerOverlay): Promise<void> {
      return writeState(join(options.stateDir, overlayFileName), { version: peerStateVersion, ...overlay })
    },

    /** The state of one peer, fresh (cursor 0) when none was saved. @throws fs errors other than ENOENT */
    read(peer: PeerAddress): Promise<PeerRecord> {
      return readPeerRecord(files, peer)
    },

    /** Saves one peer's state durably. @throws MirrorError STATE_FAILED */
    write(record: PeerRecord): Promise<void> {
      return writeState(recordPath(files, record), { version: peerRecordVersion, ...record, updatedAtMs: deps.clock.now() })
    },

    /** Forgets a removed peer's state (a peer added again later is backfilled from 0). */
    async delete(peer: PeerAddress): Promise<void> {
      await unlink(recordPath(files, peer)).catch((error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error
      })
    },
  }
}

/** A store as createPeerStateStore makes it. */
export type PeerStateStore = ReturnType<typeof createPeerStateStore>
