import type { Config } from '../../../config/types.js'
import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { IngestPipeline } from '../types.js'
import type { SmtpErrorCode } from './errors.js'
import type { SmtpDeadlineCode } from './session-timeline.js'

/** How long stop() lets messages in DATA finish before closing their connections, in milliseconds. */
export const smtpStopTimeoutMsDefault = 10_000
/**
 * How long a message waits for `pipeline.submit` before the sender gets 451 4.3.0, in
 * milliseconds. Half of the 10 minutes RFC 5321 (4.5.3.2.6) has clients wait for the reply
 * to the end of DATA, so our 451 arrives before the client gives up on its own.
 */
export const smtpSubmitTimeoutMsDefault = 300_000
/**
 * Longest command line, in bytes, CRLF excluded. RFC 5321 asks for at least 512; addresses
 * of up to 320 characters with SIZE/BODY/DSN parameters fit well below this. Over it
 * smtp-server answers `421 4.4.2 Error: Command line too long` and closes the connection.
 */
export const smtpCommandLineBytesMaxDefault = 4_096
/**
 * Message bytes held in memory across all sessions at once, in bytes. Each message is
 * buffered whole until the archive has it (the pipeline takes one Uint8Array), so without
 * this `connectionsMax × sizeBytesMax` (10 GiB with the defaults) could be requested.
 * Never below `sizeBytesMax`, so one message of the largest size always fits.
 */
export const smtpBufferedBytesMaxDefault = 256 * 1024 * 1024
/** Unrecognized commands one connection may send before smtp-server closes it (its own fixed limit). */
export const smtpUnrecognizedCommandsMax = 10

/**
 * Options of the SMTP listener: the `smtp` config section plus tuning the composition root
 * or a test may set. Units are last in every name.
 */
export interface SmtpSourceOptions extends Omit<Config['smtp'], 'enabled'> {
  /** Accepted for symmetry with the config section; the composition root decides whether to create the source. */
  enabled?: boolean
  /** See `smtpStopTimeoutMsDefault`. */
  stopTimeoutMs?: number
  /** See `smtpSubmitTimeoutMsDefault`. */
  submitTimeoutMs?: number
  /** See `smtpCommandLineBytesMaxDefault`. */
  commandLineBytesMax?: number
  /** See `smtpBufferedBytesMaxDefault`. */
  bufferedBytesMax?: number
  /**
   * Greet new connections at once (default true) instead of after smtp-server's fixed
   * 100 ms early-talker pause. False restores the library's behaviour; it exists for the
   * throughput benchmark and as an escape hatch.
   */
  immediateGreeting?: boolean
}

/** TLS material for STARTTLS, PEM encoded. */
export interface SmtpTlsMaterial {
  key: string
  cert: string
}

/** What createSmtpSource needs from the rest of the firmware. */
export interface SmtpSourceDeps {
  logger: Logger
  clock: Clock
  pipeline: IngestPipeline
  /** Key and certificate for STARTTLS; without them STARTTLS is not offered even when `starttls` is set. */
  tls?: SmtpTlsMaterial
  /**
   * Whether the archive is read-only because its data volume is full (the store's
   * recheckSpace(false): it reads the volume at most once per freeSpaceCacheMs). Asked at
   * each MAIL FROM, so that a sender is told 452 4.3.1 before it sends its message rather
   * than after. Resolves to the reason, or null while the archive takes mail.
   */
  archiveReadOnly?: () => Promise<{ reason: string } | null>
}

/** Why a message was not archived (the reply codes are in errors.ts). */
export type SmtpMessageRefusal = Extract<SmtpErrorCode, 'MESSAGE_TOO_LARGE' | 'STORE_FULL' | 'BUFFER_FULL' | 'ARCHIVE_UNAVAILABLE' | 'MESSAGE_REFUSED'>
/** Why a recipient was refused. */
export type SmtpRecipientRefusal = Extract<SmtpErrorCode, 'RELAY_DENIED' | 'TOO_MANY_RECIPIENTS'>
/** Why a connection was refused before its greeting. */
export type SmtpConnectionRefusal = Extract<SmtpErrorCode, 'TOO_MANY_CONNECTIONS' | 'TOO_MANY_CONNECTIONS_FROM_ADDRESS' | 'SHUTTING_DOWN'>

/** Counters since start(). A snapshot: JSON-serializable, never contains addresses or content. */
export interface SmtpStats {
  /** Sessions greeted since start. */
  sessionsTotal: number
  /** Sessions open now (greeted, not yet closed). */
  sessionsActive: number
  /** Of `sessionsActive`, those of clients outside the trusted networks. */
  sessionsUntrusted: number
  /** Connections refused before the greeting, by reason. */
  sessionsRefused: Record<SmtpConnectionRefusal, number>
  /** Sessions closed with 421 4.4.2 because a deadline passed, by deadline. */
  sessionsClosedByDeadline: Record<SmtpDeadlineCode, number>
  /** Messages the archive holds durably and the sender was told 250 about (duplicates included). */
  messagesAccepted: number
  /** Of `messagesAccepted`, how many the archive already held. */
  messagesDuplicate: number
  /** Bytes of the accepted messages. */
  bytesAccepted: number
  /** Messages answered with 4xx/5xx after DATA, by reason. */
  messagesRefused: Record<SmtpMessageRefusal, number>
  /** Messages whose client went away (or was cut off by stop or a deadline) before the end of DATA; nothing was submitted. */
  messagesAborted: number
  /** Recipients refused, by reason. */
  recipientsRefused: Record<SmtpRecipientRefusal, number>
  /** Messages between the DATA command and their reply now. */
  messagesInFlight: number
  /** Message bytes held in memory now (bounded by `bufferedBytesMax`). */
  bufferedBytes: number
}

/** Result of healthcheck(), the shape boot's ServiceHealth expects. */
export interface SmtpHealth {
  ok: boolean
  detail: string
}

/** The SMTP listener (push source): RFC 5321 in, durable archive out. */
export interface SmtpSource {
  /** `smtp`, the service name in health and status. */
  readonly name: string
  /**
   * Validates the options and binds `host:port` (0 = any free port). Resolves once listening.
   *
   * @throws SmtpError INVALID_OPTIONS (every problem listed), LISTEN_FAILED (address in use,
   *   not permitted), STOPPED after stop()
   */
  start(): Promise<void>
  /**
   * Stops accepting connections, answers idle sessions `421 4.3.2` and lets messages in DATA
   * finish (their 250 or 4xx is still sent) within `stopTimeoutMs`; past that their
   * connections are closed without a reply, so the sender retries (dedup absorbs a message
   * archived just before). Idempotent; never throws.
   */
  stop(): Promise<void>
  /**
   * The bound address, after start().
   *
   * @throws AssertionError before start() resolved (a programmer error)
   */
  address(): { host: string; port: number }
  /** `{ smtp: 'host:port' }` once listening (what boot's `show status` lists); empty before. */
  listeners(): Record<string, string>
  /** ok while listening; the detail names the address and the load. */
  healthcheck(): SmtpHealth
  /** Counters since start(). */
  stats(): SmtpStats
}
