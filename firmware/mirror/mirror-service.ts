import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import type { Delivery, IngestResult } from '../archive/types.js'
import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import type { IngestPipeline } from '../sources/types.js'
import { MirrorError } from './errors.js'
import type { IdentityCertificate } from './certificate.js'
import type { MirrorIdentity } from './handshake.js'
import { createMirrorListener, type MirrorAuditEvent, type MirrorListener, type MirrorTransportDeps } from './listener.js'
import { toMirrorSecret, type MirrorSecret } from './secret.js'
import { copyMessageBytesMax } from './copy-protocol.js'
import { createBacklogTracker, type BacklogTrackerOptions } from './backlog.js'
import { createCopyReceiver } from './receiver.js'
import { createPeerSender, type PeerSender } from './sender.js'
import { createPeerStateStore, effectivePeers, peerKey, type EffectivePeer, type PeerOverlay, type PeerRecord } from './peer-state.js'
import type { CopyLimits, InboundRefusal, MirrorArchive, MirrorStatus, PeerAddress, PeerStatus, PolicySettings, PolicySettingsDiff } from './types.js'
import { basicPolicyDiff, createPolicyComparer, emptyPolicySettings } from './policy-exchange.js'
import { mirroringModelMin } from '../../config/models.js'

/** One audit-log entry (the shape of firmware/policy's audit log). */
export interface MirrorAuditEntry {
  /** `mirror.auth-failed`. */
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
export const noLocalSourceWarning =
  'no local mail source is enabled: mirroring only copies mail this system archives itself (SMTP, journal or import), so peers receive nothing from it'

/** Injected collaborators of the mirror service. */
export interface MirrorServiceDeps {
  logger: Logger
  clock: Clock
  /** Jitter of retry delays (seeded in tests). */
  random: Random
  archive: MirrorArchive
  /** Where received copies go; resolves when durable. */
  pipeline: IngestPipeline
  identity: MirrorIdentity
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
  /** Fallback poll of the change log when no notify() came, in milliseconds. */
  pollIntervalMs?: number
  /** Inbound connections at once, at most (handshaking and authenticated). */
  connectionsMax?: number
  /** Messages of one inbound channel being stored at once, at most. */
  receiverSubmitsInFlightMax?: number
  /** Raw bytes of one inbound channel being stored at once, at most. */
  receiverBytesInFlightMax?: number
  /** Queue-figure tracker limits (tests lower them). */
  backlog?: BacklogTrackerOptions
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
  connectionsMax: 128,
} as const

function checkAddress(peer: PeerAddress): PeerAddress {
  if (typeof peer.host !== 'string' || peer.host.trim() === '' || !Number.isInteger(peer.port) || peer.port < 1 || peer.port > 65535) {
    throw new MirrorError('PEER_INVALID', `not a peer address: ${String(peer.host)}:${String(peer.port)}`, { actual: `${String(peer.host)}:${String(peer.port)}` })
  }
  return { host: peer.host.trim(), port: peer.port }
}

/**
 * The mirror service: the listener whose inbound channels run the receiver, one sender per
 * peer with a persistent cursor, queue figures, peer operations and status. Pure until
 * start(). See firmware/mirror/README.md for the protocol and the decisions.
 */
export function createMirrorService(deps: MirrorServiceDeps, options: MirrorServiceOptions) {
  assert.ok(Number.isInteger(options.batchMessagesMax) && options.batchMessagesMax >= 1 && options.batchMessagesMax <= 10_000, 'batchMessagesMax must be 1–10000')
  assert.ok(options.batchBytesMax >= 1 && options.batchBytesMax <= copyMessageBytesMax, 'batchBytesMax must be 1 byte – 1 GiB')
  assert.ok(Number.isInteger(options.inflightBatchesMax) && options.inflightBatchesMax >= 1, 'inflightBatchesMax must be a positive integer')
  assert.ok(options.retryDelayMsMin > 0 && options.retryDelayMsMax >= options.retryDelayMsMin, 'retryDelayMsMin must be positive and not above retryDelayMsMax')
  assert.ok(options.handshakeTimeoutMs > 0 && options.ackTimeoutMs > 0, 'timeouts must be positive')
  const pollIntervalMs = options.pollIntervalMs ?? mirrorServiceDefaults.pollIntervalMs
  const eligible = deps.identity.model >= mirroringModelMin
  const logger = deps.logger.child('mirror')
  const store = createPeerStateStore({ logger, clock: deps.clock }, { stateDir: options.stateDir })
  const tracker = createBacklogTracker({ archive: deps.archive, logger }, options.backlog)
  const senders = new Map<string, { peer: EffectivePeer; sender: PeerSender }>()
  const inboundRefusals: InboundRefusal[] = []
  const policyWarnings = new Set<string>()
  let overlay: PeerOverlay = { added: [], removed: [] }
  let secret: MirrorSecret | undefined
  let listener: MirrorListener | undefined
  let pollTimer: NodeJS.Timeout | undefined
  let started = false
  let stopping: Promise<void> | undefined
  let operations: Promise<unknown> = Promise.resolve()

  function audit(event: MirrorAuditEvent): void {
    if (event.direction === 'inbound' && event.outcome === 'refused' && event.code !== null) {
      // One entry per (address, claimed serial, code), newest first: a refused peer retrying
      // every few seconds must not push other peers' refusals out of the list.
      const same = inboundRefusals.findIndex((refusal) => refusal.address === event.remoteAddress && refusal.serial === event.peerSerial && refusal.code === event.code)
      const count = same === -1 ? 1 : inboundRefusals[same]!.count + 1
      if (same !== -1) inboundRefusals.splice(same, 1)
      inboundRefusals.unshift({
        address: event.remoteAddress,
        serial: event.peerSerial,
        code: event.code,
        expected: event.expected,
        actual: event.actual,
        message: event.message,
        atMs: event.timeMs,
        count,
      })
      inboundRefusals.length = Math.min(inboundRefusals.length, inboundRefusalsRememberedMax)
    }
    deps.onHandshake?.(event)
    if (event.code === 'AUTH_FAILED' && deps.audit) {
      const entry: MirrorAuditEntry = {
        action: 'mirror.auth-failed',
        actor: event.remotePort === null ? event.remoteAddress : `${event.remoteAddress}:${event.remotePort}`,
        details: {
          direction: event.direction,
          // Inbound: the peer's proof failed here; outbound: whichever side's proof failed (origin says who decided).
          decidedBy: event.origin,
          claimedSerial: event.peerSerial,
          peerCertificateSha256: event.peerFingerprint,
          atMs: event.timeMs,
        },
      }
      try {
        deps.audit(entry)
      } catch (error) {
        logger.error('mirror audit sink failed', { error })
      }
    }
  }

  const transport: MirrorTransportDeps = {
    logger,
    clock: deps.clock,
    identity: deps.identity,
    certificate: deps.certificate,
    audit,
    ...(deps.randomBytes ? { randomBytes: deps.randomBytes } : {}),
  }

  const policySettings = deps.policySettings ?? emptyPolicySettings
  const policies = createPolicyComparer({ logger, policySettings, diff: deps.policyDiff ?? basicPolicyDiff })

  const receiver = createCopyReceiver(
    {
      logger,
      clock: deps.clock,
      pipeline: deps.pipeline,
      policySettings,
      onPolicy: (peer, settings) => policies.compare({ serial: peer.serial, direction: 'inbound' }, settings),
    },
    {
      ...(options.receiverSubmitsInFlightMax ? { submitsInFlightMax: options.receiverSubmitsInFlightMax } : {}),
      ...(options.receiverBytesInFlightMax ? { bytesInFlightMax: options.receiverBytesInFlightMax } : {}),
    },
  )

  /** Queue figures follow the lowest cursor; with no peer, nothing needs tracking. */
  function retainBacklog(): void {
    const cursors = [...senders.values()].map(({ sender }) => sender.cursor)
    tracker.retain(cursors.length > 0 ? Math.min(...cursors) : deps.archive.lastSequence())
    void tracker.refresh()
  }

  function startSender(peer: EffectivePeer, record: PeerRecord): void {
    assert.ok(secret, 'started')
    const sender = createPeerSender(
      {
        logger,
        clock: deps.clock,
        random: deps.random,
        archive: deps.archive,
        transport,
        state: store,
        policySettings,
        onCursor: retainBacklog,
        onPolicy: (peer, settings) => policies.compare({ serial: peer.serial, direction: 'outbound' }, settings),
      },
      {
        peer,
        sharedSecret: secret,
        batchMessagesMax: options.batchMessagesMax,
        batchBytesMax: options.batchBytesMax,
        inflightBatchesMax: options.inflightBatchesMax,
        retryDelayMsMin: options.retryDelayMsMin,
        retryDelayMsMax: options.retryDelayMsMax,
        handshakeTimeoutMs: options.handshakeTimeoutMs,
        ackTimeoutMs: options.ackTimeoutMs,
        pollIntervalMs,
        ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      },
      record,
    )
    senders.set(peerKey(peer), { peer, sender })
    sender.start()
  }

  function peerStatus(peer: EffectivePeer, sender: PeerSender): PeerStatus {
    const status = sender.status()
    const depth = tracker.depth(status.cursor)
    return {
      host: status.host,
      port: status.port,
      serial: status.serial,
      configuredBy: peer.configuredBy,
      state: status.state,
      reasonCode: status.reasonCode,
      expected: status.expected,
      actual: status.actual,
      queueMessages: depth.messages,
      queueBytes: depth.bytes,
      queueEstimated: depth.estimated,
      cursor: status.cursor,
      lastSequence: deps.archive.lastSequence(),
      lastSuccessAtMs: status.lastSuccessAtMs,
      lastError: status.lastError,
      nextRetryAtMs: status.nextRetryAtMs,
      unreachableSinceMs: status.unreachableSinceMs,
      policyMismatch: status.policyMismatch,
      peerPolicyFingerprint: status.peerPolicyFingerprint,
      connectedSinceMs: status.connectedSinceMs,
      messagesSent: status.messagesSent,
      bytesSent: status.bytesSent,
      messagesRejected: status.messagesRejected,
    }
  }

  /** Runs peer operations one at a time, and only while the service runs. */
  function operation<T>(run: () => Promise<T>): Promise<T> {
    const next = operations.then(() => {
      if (!started || stopping) throw new MirrorError('STOPPED', 'the mirror service is not running')
      return run()
    })
    operations = next.catch(() => undefined)
    return next
  }

  function senderOf(peer: PeerAddress): { peer: EffectivePeer; sender: PeerSender } {
    const entry = senders.get(peerKey(checkAddress(peer)))
    if (!entry) throw new MirrorError('PEER_UNKNOWN', `no mirror peer ${peer.host}:${peer.port}`, { actual: `${peer.host}:${peer.port}` })
    return entry
  }

  function setPaused(peer: PeerAddress, paused: boolean): Promise<PeerStatus> {
    return operation(async () => {
      const entry = senderOf(peer)
      await entry.sender.setPaused(paused)
      logger.info(paused ? 'mirror peer paused' : 'mirror peer resumed', { peer: peerKey(entry.peer) })
      return peerStatus(entry.peer, entry.sender)
    })
  }

  const service = {
    /**
     * Derives the secret, loads the queue state, listens and starts a sender per peer.
     * @throws MirrorError SECRET_WEAK, MODEL_NOT_ELIGIBLE (this model may not mirror),
     *   LISTEN_FAILED; fs errors reading stateDir
     */
    async start(): Promise<void> {
      assert.equal(started, false, 'start() once')
      started = true
      secret = await toMirrorSecret(options.sharedSecret)
      await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
      overlay = await store.readOverlay()
      const peers = effectivePeers(options.peers, overlay)
      const records = await Promise.all(peers.map((peer) => store.read(peer)))
      // A model below 450 does not listen, but its senders still say hello: the handshake then
      // refuses with MODEL_NOT_ELIGIBLE, so both this system and each peer show why nothing is copied.
      if (eligible) {
        listener = createMirrorListener(
          { ...transport, audit, onChannel: (channel) => receiver.handle(channel) },
          {
            host: options.host,
            port: options.port,
            sharedSecret: secret,
            handshakeTimeoutMs: options.handshakeTimeoutMs,
            connectionsMax: options.connectionsMax ?? mirrorServiceDefaults.connectionsMax,
            ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
          },
        )
        await listener.start()
      }
      peers.forEach((peer, index) => startSender(peer, records[index]!))
      retainBacklog()
      pollTimer = setInterval(() => void tracker.refresh(), pollIntervalMs).unref()
      logger.info('mirror service started', {
        address: listener?.address() ?? null,
        peers: peers.map((peer) => `${peer.host}:${peer.port}`),
        localSourcesEnabled: options.localSourcesEnabled,
      })
      if (!eligible) logger.warn(ineligibleModelWarning(deps.identity.model))
      else if (!options.localSourcesEnabled) logger.warn(noLocalSourceWarning)
    },

    /**
     * New local mail was archived: wake every sender now (steady-state lag is then one round
     * trip, not a poll interval). Fits the ingest pipeline's listener signature; copies received
     * from peers are ignored, as they are never forwarded.
     */
    notify(_result?: IngestResult, delivery?: Delivery): void {
      if (!started || stopping || delivery?.source === 'mirror') return
      for (const { sender } of senders.values()) sender.wake()
      void tracker.refresh()
    },

    /**
     * Adds a peer (saved durably; it gets the whole archive: backfill from sequence 0).
     * @returns its status
     * @throws MirrorError PEER_INVALID, PEER_EXISTS, STATE_FAILED, STOPPED
     */
    addPeer(peer: PeerAddress): Promise<PeerStatus> {
      return operation(async () => {
        const address = checkAddress(peer)
        const key = peerKey(address)
        if (senders.has(key)) throw new MirrorError('PEER_EXISTS', `mirror peer ${address.host}:${address.port} is already configured`, { actual: key })
        const inConfig = options.peers.some((configured) => peerKey(configured) === key)
        overlay = {
          added: inConfig ? overlay.added : [...overlay.added, address],
          removed: overlay.removed.filter((removed) => peerKey(removed) !== key),
        }
        await store.writeOverlay(overlay)
        const effective: EffectivePeer = { ...address, configuredBy: inConfig ? 'config' : 'added' }
        startSender(effective, await store.read(address))
        retainBacklog()
        logger.info('mirror peer added', { peer: key })
        return peerStatus(effective, senders.get(key)!.sender)
      })
    },

    /**
     * Removes a peer: stops copying to it and forgets its cursor (added again later, it is
     * backfilled from 0 and deduplicates). A configured peer stays removed across restarts.
     * @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED
     */
    removePeer(peer: PeerAddress): Promise<void> {
      return operation(async () => {
        const { peer: effective, sender } = senderOf(peer)
        const key = peerKey(effective)
        const inConfig = options.peers.some((configured) => peerKey(configured) === key)
        overlay = {
          added: overlay.added.filter((added) => peerKey(added) !== key),
          removed: inConfig ? [...overlay.removed, { host: effective.host, port: effective.port }] : overlay.removed,
        }
        await store.writeOverlay(overlay)
        senders.delete(key)
        await sender.stop()
        await store.delete(effective)
        retainBacklog()
        logger.info('mirror peer removed', { peer: key })
      })
    },

    /** Pauses copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    pausePeer: (peer: PeerAddress): Promise<PeerStatus> => setPaused(peer, true),

    /** Resumes copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    resumePeer: (peer: PeerAddress): Promise<PeerStatus> => setPaused(peer, false),

    /**
     * The change-log sequence every peer (configured or added, paused ones included) has
     * acknowledged: retention must not purge a message with a higher sequence, or a peer would
     * never receive it. Null when there is no peer. Before start() the cursors (and peers added
     * by a technician) are not loaded: 0, nothing is known to be copied.
     */
    lowestAcknowledgedSequence(): number | null {
      if (!started) return 0
      const cursors = [...senders.values()].map(({ sender }) => sender.cursor)
      return cursors.length > 0 ? Math.min(...cursors) : null
    },

    /**
     * How long a peer has not answered at all, in milliseconds (see PeerStatus.unreachableSinceMs);
     * null while it answers, while paused, when it is not a peer, or when the service is not
     * running. Source takeover pulls a peer's journal sources while this passes a threshold.
     */
    peerUnreachableForMs(peer: PeerAddress): number | null {
      if (!started || stopping) return null
      const entry = senders.get(peerKey(checkAddress(peer)))
      const since = entry?.sender.status().unreachableSinceMs ?? null
      return since === null ? null : Math.max(0, deps.clock.now() - since)
    },

    /** The bound listener address (port resolved when 0 was configured); null when not listening. */
    address(): { host: string; port: number } | null {
      return listener?.address() ?? null
    },

    /** Everything `mailkeep show mirror --json` and `/api/v1/status` show. Cheap: no I/O. */
    status(): MirrorStatus {
      return {
        listening: listener?.address() ?? null,
        serial: deps.identity.serial,
        policyFingerprint: policySettings().fingerprint,
        localSourcesEnabled: options.localSourcesEnabled,
        warning: !eligible ? ineligibleModelWarning(deps.identity.model) : options.localSourcesEnabled ? null : noLocalSourceWarning,
        lastSequence: deps.archive.lastSequence(),
        peers: [...senders.values()].map(({ peer, sender }) => peerStatus(peer, sender)),
        inbound: receiver.status(),
        inboundRefusals: inboundRefusals.map((refusal) => ({ ...refusal })),
      }
    },

    /** For boot's health evaluation: listening, and how the peers are. */
    healthcheck(): { ok: boolean; detail: string } {
      const listening = listener?.address() ?? null
      const states = [...senders.values()].map(({ sender }) => sender.status().state)
      const count = (state: string): number => states.filter((candidate) => candidate === state).length
      const peers = `peers: ${count('connected')} connected, ${count('retrying')} retrying, ${count('refused')} refused, ${count('paused')} paused`
      if (!eligible) return { ok: !stopping, detail: `${ineligibleModelWarning(deps.identity.model)}; ${peers}` }
      const detail = listening ? `listening on ${listening.host}:${listening.port}; ${peers}` : 'not listening'
      return { ok: listening !== null && !stopping, detail }
    },

    /**
     * Stops the senders (acknowledgements in flight awaited briefly, cursors saved) and the
     * listener. Idempotent; bounded by senderStopTimeoutMs and listenerStopTimeoutMs, which run
     * side by side.
     */
    stop(): Promise<void> {
      stopping ??= (async () => {
        clearInterval(pollTimer)
        await operations
        await Promise.all([...[...senders.values()].map(({ sender }) => sender.stop()), listener?.stop()])
        logger.info('mirror service stopped')
      })()
      return stopping
    },
  }
  return service
}

/** A service as createMirrorService makes it. */
export type MirrorService = ReturnType<typeof createMirrorService>
