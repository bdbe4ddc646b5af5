import type { ChangeEntry, DigestSnapshot, MessageMeta } from '../archive/types.js'
import type { MirrorErrorCode, RefusalValue } from './errors.js'
import type { SeenIdentity } from './peer-state.js'
import type { PeerRecord } from './peer-record.js'
import type { VerifySummary } from './verify-service.js'

/**
 * What the copy layer needs from the archive store: a read-only view of the change log and
 * of stored messages. Narrow on purpose, so the sender can be tested against an in-memory
 * archive and the store can change behind it. Each method may answer synchronously (LMDB
 * reads usually do) or with a promise.
 */
export interface MirrorArchive {
  /**
   * Change-log entries with `sequence > afterSequence`, oldest first, at most `limit`.
   * Sequences are positive, increasing and never reused.
   */
  changes(afterSequence: number, limit: number): ChangeEntry[] | Promise<ChangeEntry[]>
  /** The sequence of the newest change-log entry; 0 for an empty archive. */
  lastSequence(): number
  /**
   * The raw bytes of a message, byte-identical to what was archived and checked against the
   * id (its SHA-256); undefined once purged. Throws an error with code STORE_CORRUPT when the
   * stored bytes fail that check: the sender then skips the message instead of blocking.
   */
  getRaw(id: string): Uint8Array | undefined | Promise<Uint8Array | undefined>
  /** The metadata of a message (deliveries, origin, size); undefined once purged. */
  getMeta(id: string): MessageMeta | undefined | Promise<MessageMeta | undefined>
  /** True when the message is stored. (Part of the store's read API; the copy layer does not need it yet.) */
  has(id: string): boolean | Promise<boolean>
  /** The archive's random store id (32 lower-case hex), made with the archive; peers pin it. Read once the store is open. */
  storeId(): string
  /** A consistent view of the id digest (the store's digestSnapshot); `mirror verify` needs it. */
  digestSnapshot?(): Promise<DigestSnapshot>
  /** When retention purged `id` (the store's purgedAt); verify and the receiver use it. */
  purgedAt?(id: string): { sequence: number; atMs: number } | undefined
}

/**
 * A summary of this system's retention and hold settings, exchanged with authenticated peers
 * (never before the secret proof). Provided by firmware/policy (`describePolicySettings`).
 */
export interface PolicySettings {
  /** A hash of the settings below: equal fingerprints mean equal settings. */
  fingerprint: string
  /** `retentionDays` null: kept forever. */
  policies: { name: string; retentionDays: number | null; criteria: string }[]
  holds: { name: string; active: boolean }[]
}

/**
 * What differs between this system's settings and a peer's, one sentence per difference; an
 * empty list when they agree. Provided by firmware/policy (`diffPolicySettings`).
 */
export type PolicySettingsDiff = (local: PolicySettings, peer: PolicySettings) => string[]

/** Batching, pipelining and timing of the copy layer; from the service options. */
export interface CopyLimits {
  /** Messages per batch, at most (the store returns at most 10,000 change entries per read). */
  batchMessagesMax: number
  /** Raw bytes per batch, at most (a larger single message goes alone). */
  batchBytesMax: number
  /** Batches sent and not yet acknowledged per peer, at most (pipelining). */
  inflightBatchesMax: number
  /** First retry delay after a failure, in milliseconds; doubles per failure. */
  retryDelayMsMin: number
  /** Cap of the retry delay, in milliseconds; refused peers are retried at this delay. */
  retryDelayMsMax: number
  /** From TCP connect to an authenticated channel, in milliseconds (both directions). */
  handshakeTimeoutMs: number
  /** With batches in flight, the longest wait for the next acknowledgement, in milliseconds. */
  ackTimeoutMs: number
  /** A channel without a byte from the peer for this long is dropped, in milliseconds. */
  idleTimeoutMs?: number
}

/** A peer's mirror address as configured (`mirror.peers[]`) or added by a technician. */
export interface PeerAddress {
  host: string
  port: number
}

/** What a sender is doing for its peer, as `show mirror` reports it. */
export type PeerState =
  /** Not yet connected since start (first attempt under way). */
  | 'idle'
  /** An authenticated channel is up; copies flow (queueMessages 0 = caught up). */
  | 'connected'
  /** The last attempt failed (connect, TLS, transfer, timeout); the next is at nextRetryAtMs. */
  | 'retrying'
  /** The peer or this side refused the handshake (model, firmware, secret…); retried at the maximum delay. */
  | 'refused'
  /** A technician paused copying to this peer (`mirror pause`); persisted across restarts. */
  | 'paused'

/** Where a peer entry came from. */
export type PeerOrigin = 'config' | 'added'

/** The last failure of a sender, for `show mirror`. */
export interface PeerFailure {
  code: MirrorErrorCode | string
  message: string
  /** Wall-clock time of the failure, milliseconds since the epoch. */
  atMs: number
}

/** Status of one configured peer, as `mailkeep show mirror --json` and `/api/v1/status` show it. */
export interface PeerStatus extends Pick<PeerRecord, 'host' | 'port' | 'serial' | 'storeId' | 'fingerprint' | 'pendingIdentity'> {
  /** Configured in `mirror.peers[]`, or added with `mirror add`. */
  configuredBy: PeerOrigin
  state: PeerState
  /** Code of the failure behind `retrying`/`refused` (e.g. CONNECT_FAILED, MODEL_MISMATCH); null otherwise. */
  reasonCode: string | null
  /** For refusals: the value the deciding side expected (e.g. its model); null otherwise. */
  expected: RefusalValue
  /** For refusals: the value it got; null otherwise. */
  actual: RefusalValue
  /** Local ingest change-log entries the peer has not acknowledged (both lanes), plus requeued messages: messages still to copy. */
  queueMessages: number
  /** Raw size of the change-log part of those messages, in bytes (from their metadata; see queueEstimated); requeued ones are not counted. */
  queueBytes: number
  /**
   * True when the queue figures are partly estimated: the change log is still being scanned
   * or holds more entries than the tracker keeps; the untracked part counts every change-log
   * entry as one message of the average tracked size.
   */
  queueEstimated: boolean
  /** The last local change-log sequence the peer acknowledged, with everything before it (persisted). */
  cursor: number
  /**
   * While a backlog is copied beside new mail: the backfill lane runs (cursor, this sequence]
   * and new mail after it goes first; null while there is one lane (persisted).
   */
  backfillThroughSequence: number | null
  /** While split: the live lane (after backfillThroughSequence) is acknowledged through this sequence; null otherwise. */
  liveCursor: number | null
  /** Archived messages queued to be sent again (mirror verify), not yet acknowledged; counted in queueMessages. */
  requeuedMessages: number
  /** Copies the peer refused for good that are remembered (persisted, the newest 10,000). */
  rejectedCopies: number
  /** The local change log's newest sequence, for comparison with the cursor. */
  lastSequence: number
  /** Wall-clock time of the last acknowledged batch, milliseconds since the epoch; null before. */
  lastSuccessAtMs: number | null
  /** The last failure while it lasts; null once a channel is healthy again (see lastRecoveredAtMs). */
  lastError: PeerFailure | null
  /** When the last failure cleared (wall clock, ms since the epoch); null when none did since start. */
  lastRecoveredAtMs: number | null
  /**
   * While retrying/refused: wall-clock time of the next connection attempt (or of the one under
   * way, once it has passed), milliseconds since the epoch; null otherwise.
   */
  nextRetryAtMs: number | null
  /**
   * Since when (wall clock, milliseconds since the epoch) the peer has not answered at all —
   * no connection or no handshake since then (a refusal is an answer); null while it answers or
   * while paused (unknown). Journal sources configured with `takeoverFor` this peer pull while
   * this is older than their `takeoverAfterMs`.
   */
  unreachableSinceMs: number | null
  /**
   * How the peer's retention/hold settings differ from ours, one sentence each (searches on the
   * two systems can then give different results); empty when they agree or before the exchange.
   */
  policyMismatch: string[]
  /** The peer's policy fingerprint as last reported; null before the first exchange. */
  peerPolicyFingerprint: string | null
  /** Wall-clock time the current channel was authenticated, milliseconds since the epoch; null when not connected. */
  connectedSinceMs: number | null
  /** Messages the peer acknowledged since this service started. */
  messagesSent: number
  /** Raw bytes of those messages. */
  bytesSent: number
  /** Messages the peer refused for good (e.g. over its size limit) since start; each was logged. */
  messagesRejected: number
  /** The last `mirror verify` with this peer (either side ran it); null before the first. */
  lastVerify: VerifySummary | null
}

/** What this system knows about a peer that copies to it (inbound channels). */
export interface InboundPeerStatus {
  serial: string
  address: string
  connected: boolean
  /** Wall-clock time of the last authenticated inbound channel, milliseconds since the epoch. */
  connectedSinceMs: number
  /** Messages stored (new to this archive) since start. */
  messagesStored: number
  /** Messages that were already here (deduplicated by content hash) since start. */
  messagesDuplicate: number
  /** Messages this archive refused for good (e.g. over the size limit) since start. */
  messagesRejected: number
  bytesReceived: number
  /** Wall-clock time of the last acknowledged batch, milliseconds since the epoch; null before. */
  lastBatchAtMs: number | null
  /** As PeerStatus.policyMismatch. */
  policyMismatch: string[]
  peerPolicyFingerprint: string | null
  /** What the peer said it still has queued for this system (QUEUE_STATUS); null before it said. */
  queuedMessages: number | null
  queuedBytes: number | null
  queueEstimated: boolean
  /** When that was said (this system's clock, ms since the epoch); null before. */
  queueAsOfMs: number | null
}

/**
 * Whether this system holds everything its peers have archived, as far as they told it: a
 * search answer carries it (`results may be incomplete …`).
 */
export interface Completeness {
  /** True when every peer that reported its queue has nothing queued for this system. */
  complete: boolean
  peers: { serial: string; queuedMessages: number; queueEstimated: boolean; asOfMs: number; connected: boolean }[]
}

/** A refused inbound handshake, remembered for `show mirror` (the refusing side's view). */
export interface InboundRefusal {
  address: string
  /** What the peer claimed in its HELLO; null when it never got that far. */
  serial: string | null
  code: string
  expected: RefusalValue
  actual: RefusalValue
  message: string | null
  /** When the latest of these refusals happened. */
  atMs: number
  /** Refusals of this address, serial and code seen (the list keeps one entry for them). */
  count: number
}

/** Everything `show mirror` shows. */
export interface MirrorStatus {
  /** The bound listener address (port resolved when 0 was configured); null when not listening. */
  listening: { host: string; port: number } | null
  serial: string
  /** Our retention/hold policy fingerprint as sent to peers. */
  policyFingerprint: string
  /** Whether at least one local mail source is enabled (mirroring only adds copies of local mail). */
  localSourcesEnabled: boolean
  /** A sentence for the technician when mirroring cannot do its job as configured; null when fine. */
  warning: string | null
  lastSequence: number
  peers: PeerStatus[]
  inbound: InboundPeerStatus[]
  /** The most recent inbound refusals, newest first (bounded). */
  inboundRefusals: InboundRefusal[]
  /** Appliances that proved the secret but are not peers, newest first (bounded): accept one with `mirror accept HOST:PORT`. */
  pendingJoins: SeenIdentity[]
  /** This archive's store id (peers pin it). */
  storeId: string
}
