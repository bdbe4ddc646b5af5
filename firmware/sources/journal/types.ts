import type { JournalSourceConfig } from '../../../config/types.js'
import type { MailkeepError } from '../../common/errors.js'

/** Largest message the puller fetches by default, in bytes (50 MiB, the SMTP default too). */
export const journalMessageBytesMaxDefault = 52_428_800
/** Deadline for the TCP/TLS connection and the server greeting, in milliseconds. */
export const journalConnectTimeoutMsDefault = 30_000
/** Longest silence of the server while a command waits for its reply, in milliseconds. */
export const journalCommandTimeoutMsDefault = 120_000
/** How long `stop()` lets the in-flight message finish before abandoning the pass, in milliseconds. */
export const journalStopTimeoutMsDefault = 10_000
/** Cap of the retry backoff after failed passes, in milliseconds (never below `intervalMs`). */
export const journalRetryDelayMsMaxDefault = 900_000
/** The first scheduled pass starts after a random delay up to this, in milliseconds, so sources do not all start at once. */
export const journalFirstPullDelayMsMaxDefault = 5_000

/**
 * Options of one journal source: its `journal.sources[]` config entry plus what the
 * composition root supplies. Units are last in every name.
 */
/** A source's options; `takeoverFor`/`takeoverAfterMs` are the composition root's business (it builds `deps.takeover`). */
export interface JournalSourceOptions extends Omit<JournalSourceConfig, 'takeoverFor' | 'takeoverAfterMs'> {
  /** Directory for this source's state files (POP3 'flag' mode), e.g. `<dataDir>/journal`. */
  stateDir: string
  /** Messages larger than this, in bytes, stay on the server and are reported as held. */
  messageBytesMax?: number
  /** See `journalConnectTimeoutMsDefault`. */
  connectTimeoutMs?: number
  /** See `journalCommandTimeoutMsDefault`. */
  commandTimeoutMs?: number
  /** See `journalStopTimeoutMsDefault`. */
  stopTimeoutMs?: number
  /** See `journalRetryDelayMsMaxDefault`. */
  retryDelayMsMax?: number
  /** See `journalFirstPullDelayMsMaxDefault`. */
  firstPullDelayMsMax?: number
}

/** Options with every default applied (what the pullers read). */
export type ResolvedJournalOptions = Required<Omit<JournalSourceOptions, 'port'>> & { port: number }

/** Why a message was left on the server. */
export type HeldReason =
  /** Larger than `messageBytesMax`. */
  | 'TOO_LARGE'
  /** The ingest pipeline refused it with a non-retryable error (its code is in `errorCode`). */
  | 'REFUSED'

/**
 * A message the puller leaves on the server and reports on every pass until it is gone
 * (never silently skipped): an operator has to look at it.
 */
export interface HeldMessage {
  /** The message's delivery key (`imap:host:mailbox:uidvalidity:uid` or `pop3:host:user:uidl`). */
  key: string
  reason: HeldReason
  /** Size at the server, in bytes, when known. */
  sizeBytes: number | null
  /** Error code from the pipeline for REFUSED. */
  errorCode: string | null
  message: string
  /** When it was first held, milliseconds since the epoch. */
  sinceMs: number
}

/** What one pass did. JSON-serializable (the error serializes through its toJSON). */
export interface PullReport {
  source: string
  protocol: 'imap' | 'pop3'
  startedAtMs: number
  finishedAtMs: number
  /** Messages in the mailbox when the pass listed it (for IMAP 'delete', those in the listed window). */
  serverMessages: number
  /** Messages archived durably in this pass, duplicates included. */
  archived: number
  /** Of `archived`, how many the archive already held (re-fetched after a crash, or sent twice). */
  duplicates: number
  /** Messages removed at the server ('delete') or marked archived ('flag'), always after their archive was durable. */
  acknowledged: number
  /** Messages left on the server and why; every one still there, not only those new in this pass. */
  held: HeldMessage[]
  /** Messages that wait for a later pass (over `batchMessagesMax`, or after a stop or an error). */
  remaining: number
  /** Archive ids of the messages archived in this pass, in order. */
  ids: string[]
  /** True when `stop()` ended the pass early. */
  stopped: boolean
  /** Why the pass failed; null when it succeeded. Typed (JournalError, ArchiveError…). */
  error: MailkeepError | null
}

/** A failure as kept for health and status. */
export interface JournalFailure {
  code: string
  message: string
  retryable: boolean
  atMs: number
}

/** `healthcheck()` of a journal source; `ok`/`detail` are what boot's health evaluation reads. */
export interface JournalSourceHealth {
  ok: boolean
  detail: string
  lastSuccessAtMs: number | null
  lastError: JournalFailure | null
  consecutiveFailures: number
  heldMessages: number
}

/** `status()` of a journal source, for `mailkeep show journal`. Never contains the password. */
export interface JournalSourceStatus {
  name: string
  protocol: 'imap' | 'pop3'
  host: string
  port: number
  tls: 'implicit' | 'starttls' | 'none'
  user: string
  /** IMAP mailbox; null for POP3. */
  mailbox: string | null
  afterArchive: 'delete' | 'flag'
  enabled: boolean
  /** `standby`: a takeover source whose mirror peer is up (see `takeover`); `read-only`: scheduled passes wait because the archive's data volume is full. */
  state: 'created' | 'disabled' | 'idle' | 'standby' | 'read-only' | 'pulling' | 'stopped'
  lastPullAtMs: number | null
  lastSuccessAtMs: number | null
  lastError: JournalFailure | null
  consecutiveFailures: number
  /** When the next scheduled pass starts; null when none is scheduled. */
  nextPullAtMs: number | null
  totals: { passes: number; archived: number; duplicates: number; acknowledged: number }
  held: HeldMessage[]
  lastReport: (Omit<PullReport, 'error' | 'ids' | 'held'> & { error: JournalFailure | null }) | null
  /** For a source configured with `takeoverFor`: the mirror peer it belongs to, and whether it is being pulled here now. */
  takeover: { peer: string; active: boolean } | null
}
