import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import type { IngestPipeline } from '../sources/types.js'
import type { IdentityCertificate } from './certificate.js'
import type { MirrorIdentity } from './handshake.js'
import type { MirrorAuditEvent } from './listener.js'
import type { MirrorSecret } from './secret.js'
import type { BacklogTrackerOptions } from './backlog.js'
import type { PinnedIdentity } from './sender.js'
import type { SeenIdentity } from './peer-state.js'
import type { CopyLimits, MirrorArchive, PeerAddress, PeerStatus, PolicySettings, PolicySettingsDiff } from './types.js'
import { mirroringModelMin } from '../../config/models.js'

/** One audit-log entry (the shape of firmware/policy's audit log). */
export interface MirrorAuditEntry {
  /**
   * `mirror.auth-failed`, `mirror.peer-pinned`, `mirror.identity-changed`, `mirror.identity-restored`,
   * `mirror.identity-accepted`, `mirror.join-requested`, `mirror.join-accepted`.
   */
  action: string
  /** Who: the remote address (and port) of the connection. */
  actor: string
  details: Record<string, unknown>
}

/** Inbound refusals remembered for status, newest first. */
export const inboundRefusalsRememberedMax = 32
/** What status().warning says when no local mail source is enabled (the lead may reword it). */
/** What status().warning says on a model below 450 that has peers configured. */
export function ineligibleModelWarning(model: number): string {
  return `model ${model} may not mirror (models ${mirroringModelMin} and up do): this system does not listen and its peers refuse it (MODEL_NOT_ELIGIBLE)`
}
export const noLocalSourceWarning = 'no local mail source is enabled: mirroring only copies mail this system archives itself (SMTP, journal or import), so peers receive nothing from it'

/** Injected collaborators of the mirror service. */
export interface MirrorServiceDeps {
  logger: Logger
  clock: Clock
  /** Jitter of retry delays (seeded in tests). */
  random: Random
  archive: MirrorArchive
  /** Where received copies go; resolves when durable. */
  pipeline: IngestPipeline
  /** Model, serial and firmware; the store id is read from the archive at start(). */
  identity: Omit<MirrorIdentity, 'storeId'>
  certificate: IdentityCertificate
  /** Told of every handshake outcome, inbound and outbound (for the log). */
  onHandshake?: (event: MirrorAuditEvent) => void
  /**
   * The audit log: told of every failed secret proof (inbound: a peer's proof was wrong, bounded
   * by the per-address limit; outbound: the peer refused ours or its own was wrong). A throwing
   * sink is logged, never fatal.
   */
  audit?: (entry: MirrorAuditEntry) => void
  /**
   * This system's retention and hold settings (firmware/policy's `describePolicySettings`),
   * sent to each peer after the secret proof; no policies and no holds when not given.
   */
  policySettings?: () => PolicySettings
  /** How a peer's settings differ from ours (firmware/policy's `diffPolicySettings`); a by-name comparison when not given. */
  policyDiff?: PolicySettingsDiff
  /** Cryptographically secure random bytes for handshake nonces; node:crypto by default. */
  randomBytes?: (size: number) => Buffer
  /**
   * What `mirror verify` reads from retention and the audit log (firmware/policy): the audit
   * head, the holds that keep ids, the audit entry of a purge. Without it reports carry an
   * empty audit head and no holds.
   */
  retention?: {
    auditHead(): { seq: number; hash: string }
    holdsKeeping(ids: readonly string[]): Promise<Map<string, string[]>>
    purgeAuditSeq(id: string, atMs: number): number | null
  }
}

/** Where the service listens, whom it copies to, and its limits. */
export interface MirrorServiceOptions extends CopyLimits {
  host: string
  /** 0 picks any free port; see address(). */
  port: number
  /** The shared secret, or its derived form (saves the ~50–100 ms derivation). */
  sharedSecret: string | MirrorSecret
  /** The configured peers (`mirror.peers[]`): the initial set; `mirror add/remove` change it persistently. */
  peers: readonly PeerAddress[]
  /** Directory of the copy-queue state (cursors, serials, paused flags, peer changes). */
  stateDir: string
  /** Whether any local mail source (SMTP, journal, import) is enabled; status() warns when not. */
  localSourcesEnabled: boolean
  /**
   * An appliance that proves the secret but is not a peer: false (the default) refuses it
   * NOT_A_PEER and lists it as a pending join for `mirror accept`; true adds and pins it at once.
   * Either way the join is audited.
   */
  acceptJoins?: boolean
  /** A peer unreachable for longer than this makes the system degraded, in milliseconds. */
  unreachableAlertMs?: number
  /** Fallback poll of the change log when no notify() came, in milliseconds. */
  pollIntervalMs?: number
  /** Unsent change-log entries above which a peer's queue splits into lanes (see PeerSenderOptions; Infinity: never). */
  laneSplitThresholdEntries?: number
  /** Inbound connections at once, at most (handshaking and authenticated). */
  connectionsMax?: number
  /** Messages of one inbound channel being stored at once, at most. */
  receiverSubmitsInFlightMax?: number
  /** Raw bytes of one inbound channel being stored at once, at most. */
  receiverBytesInFlightMax?: number
  /** Queue-figure tracker limits (tests lower them). */
  backlog?: BacklogTrackerOptions
  /** Each peer is verified (`mirror verify`) this often, in milliseconds; 0: only when asked. Default a day. */
  verifyIntervalMs?: number
}

/** How long an inbound appliance that matches no pinned peer waits for an unpinned peer's sender to pin it, at most, in milliseconds. */
export const admissionPinWaitMsMax = 2_000

/** What `mirror accept` did. */
export interface AcceptResult {
  peer: PeerStatus
  /** `identity`: a changed identity of a peer was accepted; `join`: a pending join became a peer. */
  kind: 'identity' | 'join'
  previous: PinnedIdentity
  accepted: SeenIdentity
  /** The store id changed (or a new peer): its cursor starts at 0 and the whole archive is copied. */
  backfill: boolean
}

/** Suggested values for the options with no config key; the lead wires them. */
export const mirrorServiceDefaults = {
  batchMessagesMax: 1_000,
  batchBytesMax: 16 * 1024 * 1024,
  inflightBatchesMax: 4,
  retryDelayMsMin: 1_000,
  retryDelayMsMax: 60_000,
  handshakeTimeoutMs: 10_000,
  ackTimeoutMs: 120_000,
  pollIntervalMs: 5_000,
  unreachableAlertMs: 15 * 60_000,
  connectionsMax: 128,
} as const
