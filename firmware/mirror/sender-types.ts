import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import type { ConnectToPeerOptions, MirrorTransportDeps } from './listener.js'
import type { MirrorChannel } from './channel.js'
import type { MirrorSecret } from './secret.js'
import type { EffectivePeer, PeerStateStore } from './peer-state.js'
import type { IdentityEvent } from './sender-identity.js'
import type { CopyLimits, MirrorArchive, PeerStatus, PolicySettings } from './types.js'

/** Injected collaborators of one peer's sender. */
export interface PeerSenderDeps {
  logger: Logger
  clock: Clock
  random: Random
  archive: MirrorArchive
  transport: MirrorTransportDeps
  state: PeerStateStore
  /** This system's retention and hold settings, sent to the peer once the channel is authenticated. */
  policySettings: () => PolicySettings
  /** Told after the cursor moved (queue figures follow it). */
  onCursor?: () => void
  /** Told of the peer's settings after each exchange; returns how they differ from ours (empty: same). */
  onPolicy?: (peer: { host: string; port: number; serial: string }, settings: PolicySettings) => string[]
  /** Told of identity events for the audit log: a first pin, a changed identity (once per new one), an accept. */
  onIdentity?: (event: IdentityEvent) => void
  /** What is still queued for this peer (the service's queue figures), told to the peer as QUEUE_STATUS. */
  queueDepth?: () => { messages: number; bytes: number; estimated: boolean }
  /** Opens an authenticated channel to the peer; connectToPeer (TLS) unless a test injects another transport. */
  connect?: (transport: MirrorTransportDeps, options: ConnectToPeerOptions) => Promise<MirrorChannel>
}

/** Where a sender copies to and how (see CopyLimits for the limits' meaning). */
export interface PeerSenderOptions extends CopyLimits {
  peer: EffectivePeer
  sharedSecret: MirrorSecret
  /** Fallback poll of the change log when no wake() came, in milliseconds. */
  pollIntervalMs: number
  /**
   * Unsent change-log entries above which the queue splits into a backfill and a live lane;
   * laneSplitThresholdEntries(batchMessagesMax) when not given, Infinity never splits (benchmarks
   * compare with one lane).
   */
  laneSplitThresholdEntries?: number
}

/** What a sender reports; the service adds the queue figures and where the peer came from. */
export type PeerSenderStatus = Omit<PeerStatus, 'configuredBy' | 'queueMessages' | 'queueBytes' | 'queueEstimated' | 'lastSequence' | 'lastVerify'>
