import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import type { MirrorListener, MirrorTransportDeps } from './listener.js'
import type { MirrorSecret } from './secret.js'
import { copyMessageBytesMax } from './copy-protocol.js'
import { createBacklogTracker, type BacklogTracker } from './backlog.js'
import { createPeerStateStore, type PeerStateStore } from './peer-state.js'
import type { PolicySettings } from './types.js'
import { basicPolicyDiff, createPolicyComparer, emptyPolicySettings } from './policy-exchange.js'
import { mirroringModelMin } from '../../config/models.js'
import { mirrorServiceDefaults, type MirrorServiceDeps, type MirrorServiceOptions } from './mirror-service-options.js'
import { createMirrorAudit } from './mirror-audit.js'
import type { MirrorPeerSet } from './peer-operations.js'

/** What the mirror service's parts share: its collaborators, its peers and its lifecycle state (changed in place). */
export interface MirrorServiceContext {
  deps: MirrorServiceDeps
  options: MirrorServiceOptions
  logger: Logger
  store: PeerStateStore
  /** Queue figures of every peer (the local ingest entries after the lowest cursor). */
  tracker: BacklogTracker
  peers: MirrorPeerSet
  auditing: ReturnType<typeof createMirrorAudit>
  /** What the listener and the outbound connections say and use; the store id is filled in at start(). */
  transport: MirrorTransportDeps
  policySettings: () => PolicySettings
  policies: ReturnType<typeof createPolicyComparer>
  /** Fallback poll of the change log and the queue figures, in milliseconds. */
  pollIntervalMs: number
  /** A peer unreachable for longer than this makes the system degraded, in milliseconds. */
  unreachableAlertMs: number
  /** This model may mirror (listens); below mirroringModelMin its senders only show why not. */
  eligible: boolean
  /** Derived at start(). */
  secret: MirrorSecret | undefined
  /** Created at start() on an eligible model. */
  listener: MirrorListener | undefined
  storeId: string
  started: boolean
  /** Set once stop() began. */
  stopping: Promise<void> | undefined
  pollTimer: NodeJS.Timeout | undefined
}

/** Checks the options and builds the service's shared context; no I/O. */
export function createServiceContext(deps: MirrorServiceDeps, options: MirrorServiceOptions): MirrorServiceContext {
  assert.ok(Number.isInteger(options.batchMessagesMax) && options.batchMessagesMax >= 1 && options.batchMessagesMax <= 10_000, 'batchMessagesMax must be 1–10000')
  assert.ok(options.batchBytesMax >= 1 && options.batchBytesMax <= copyMessageBytesMax, 'batchBytesMax must be 1 byte – 1 GiB')
  assert.ok(Number.isInteger(options.inflightBatchesMax) && options.inflightBatchesMax >= 1, 'inflightBatchesMax must be a positive integer')
  assert.ok(options.retryDelayMsMin > 0 && options.retryDelayMsMax >= options.retryDelayMsMin, 'retryDelayMsMin must be positive and not above retryDelayMsMax')
  assert.ok(options.handshakeTimeoutMs > 0 && options.ackTimeoutMs > 0, 'timeouts must be positive')
  const logger = deps.logger.child('mirror')
  const auditing = createMirrorAudit(logger, deps)
  const policySettings = deps.policySettings ?? emptyPolicySettings
  const context: MirrorServiceContext = {
    deps,
    options,
    logger,
    store: createPeerStateStore({ logger, clock: deps.clock }, { stateDir: options.stateDir }),
    tracker: createBacklogTracker({ archive: deps.archive, logger }, options.backlog),
    peers: { senders: new Map(), overlay: { added: [], removed: [] }, pendingJoins: [] },
    auditing,
    transport: {
      logger,
      clock: deps.clock,
      // The store id is filled in at start(), once the archive is open.
      identity: { ...deps.identity, storeId: '' },
      certificate: deps.certificate,
      audit: auditing.handshake,
      listenPort: () => context.listener?.address()?.port ?? 0,
      ...(deps.randomBytes ? { randomBytes: deps.randomBytes } : {}),
    },
    policySettings,
    policies: createPolicyComparer({ logger, policySettings, diff: deps.policyDiff ?? basicPolicyDiff }),
    pollIntervalMs: options.pollIntervalMs ?? mirrorServiceDefaults.pollIntervalMs,
    unreachableAlertMs: options.unreachableAlertMs ?? mirrorServiceDefaults.unreachableAlertMs,
    eligible: deps.identity.model >= mirroringModelMin,
    secret: undefined,
    listener: undefined,
    storeId: '',
    started: false,
    stopping: undefined,
    pollTimer: undefined,
  }
  return context
}
