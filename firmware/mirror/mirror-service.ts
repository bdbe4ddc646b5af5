import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import type { Delivery, IngestResult } from '../archive/types.js'
import { MirrorError } from './errors.js'
import { connectToPeer, createMirrorListener, type MirrorListener, type MirrorTransportDeps } from './listener.js'
import { toMirrorSecret, type MirrorSecret } from './secret.js'
import { copyMessageBytesMax } from './copy-protocol.js'
import { createBacklogTracker, type BacklogDepth } from './backlog.js'
import { createCopyReceiver } from './receiver.js'
import { createPeerSender, type PeerSender } from './sender.js'
import { createPeerStateStore, effectivePeers, peerKey, type EffectivePeer, type PeerRecord } from './peer-state.js'
import type { Completeness, MirrorStatus, PeerAddress, PeerStatus } from './types.js'
import { basicPolicyDiff, createPolicyComparer, emptyPolicySettings } from './policy-exchange.js'
import { mirroringModelMin } from '../../config/models.js'
import type { VerifyArchive, VerifyLocalDeps } from './verify-facts.js'
import type { SignedVerifyReport } from './verify-protocol.js'
import { createVerifyCoordinator, verifyIntervalMsDefault } from './verify-service.js'
import { ineligibleModelWarning, mirrorServiceDefaults, noLocalSourceWarning, type AcceptResult, type MirrorServiceDeps, type MirrorServiceOptions } from './mirror-service-options.js'
import { createMirrorAudit } from './mirror-audit.js'
import { completenessOf, describePeerStates, peerProblems, toPeerStatus } from './mirror-health.js'
import { checkAddress, createPeerOperations, type MirrorPeerSet } from './peer-operations.js'
import { createMirrorAdmission } from './mirror-admission.js'

// The service's parts live beside it; importers keep using this module's names.
export {
  admissionPinWaitMsMax,
  inboundRefusalsRememberedMax,
  ineligibleModelWarning,
  mirrorServiceDefaults,
  noLocalSourceWarning,
  type AcceptResult,
  type MirrorAuditEntry,
  type MirrorServiceDeps,
  type MirrorServiceOptions,
} from './mirror-service-options.js'

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
  const unreachableAlertMs = options.unreachableAlertMs ?? mirrorServiceDefaults.unreachableAlertMs
  const eligible = deps.identity.model >= mirroringModelMin
  const logger = deps.logger.child('mirror')
  const store = createPeerStateStore({ logger, clock: deps.clock }, { stateDir: options.stateDir })
  const tracker = createBacklogTracker({ archive: deps.archive, logger }, options.backlog)
  const peers: MirrorPeerSet = { senders: new Map(), overlay: { added: [], removed: [] }, pendingJoins: [] }
  const { senders } = peers
  let storeId = ''
  let secret: MirrorSecret | undefined
  let listener: MirrorListener | undefined
  let pollTimer: NodeJS.Timeout | undefined
  let started = false
  let stopping: Promise<void> | undefined
  const auditing = createMirrorAudit(logger, deps)
  const audit = auditing.handshake
  const writeAudit = auditing.write

  const transport: MirrorTransportDeps = {
    logger,
    clock: deps.clock,
    // The store id is filled in at start(), once the archive is open.
    identity: { ...deps.identity, storeId: '' },
    certificate: deps.certificate,
    audit,
    listenPort: () => listener?.address()?.port ?? 0,
    ...(deps.randomBytes ? { randomBytes: deps.randomBytes } : {}),
  }

  const policySettings = deps.policySettings ?? emptyPolicySettings
  const policies = createPolicyComparer({ logger, policySettings, diff: deps.policyDiff ?? basicPolicyDiff })

  const archive = deps.archive
  const verifyLocal: VerifyLocalDeps | undefined =
    archive.digestSnapshot && archive.purgedAt
      ? {
          archive: archive as VerifyArchive,
          serial: deps.identity.serial,
          fingerprint: deps.certificate.fingerprint,
          privateKeyPem: deps.certificate.privateKeyPem,
          certificatePem: deps.certificate.certificatePem,
          auditHead: () => deps.retention?.auditHead() ?? { seq: 0, hash: '' },
          policyFingerprint: () => policySettings().fingerprint,
          holdsKeeping: (ids) => deps.retention?.holdsKeeping(ids) ?? Promise.resolve(new Map()),
          purgeAuditSeq: (id, atMs) => deps.retention?.purgeAuditSeq(id, atMs) ?? null,
        }
      : undefined
  const verifier = createVerifyCoordinator(
    {
      logger,
      clock: deps.clock,
      local: verifyLocal,
      targets: () => [...senders.values()],
      connect: ({ peer, sender }) => {
        assert.ok(secret, 'started')
        return connectToPeer(transport, {
          host: peer.host,
          port: peer.port,
          sharedSecret: secret,
          timeoutMs: options.handshakeTimeoutMs,
          ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
          admit: sender.admit,
        })
      },
      audit: writeAudit,
      stateDir: options.stateDir,
    },
    { intervalMs: options.verifyIntervalMs ?? verifyIntervalMsDefault },
  )

  const receiver = createCopyReceiver(
    {
      logger,
      clock: deps.clock,
      pipeline: deps.pipeline,
      policySettings,
      onPolicy: (peer, settings) => policies.compare({ serial: peer.serial, direction: 'inbound' }, settings),
      verify: verifier.responder,
      ...(archive.purgedAt ? { purgedAt: (id: string) => archive.purgedAt!(id) } : {}),
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

  /**
   * What is still queued for a peer: the local ingest entries of every change-log range it has
   * not acknowledged (one, or two while a backlog is copied beside new mail) plus its requeued
   * messages (counted as messages; their bytes are not known without reading them).
   */
  function queueDepth(sender: PeerSender): BacklogDepth {
    const depth: BacklogDepth = { messages: sender.requeuedCount, bytes: 0, estimated: false }
    for (const range of sender.pendingRanges()) {
      const part = tracker.rangeDepth(range.afterSequence, range.throughSequence)
      depth.messages += part.messages
      depth.bytes += part.bytes
      depth.estimated ||= part.estimated
    }
    return depth
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
        onIdentity: auditing.identity,
        queueDepth: () => {
          const entry = senders.get(peerKey(peer))
          return entry ? queueDepth(entry.sender) : tracker.depth(record.cursor)
        },
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
        ...(options.laneSplitThresholdEntries !== undefined ? { laneSplitThresholdEntries: options.laneSplitThresholdEntries } : {}),
        ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
      },
      record,
    )
    senders.set(peerKey(peer), { peer, sender })
    sender.start()
  }

  function peerStatus(peer: EffectivePeer, sender: PeerSender): PeerStatus {
    return toPeerStatus(peer, sender.status(), queueDepth(sender), deps.archive.lastSequence(), verifier.lastOf(peer))
  }

  const operations = createPeerOperations({
    logger,
    clock: deps.clock,
    configuredPeers: options.peers,
    store,
    peers,
    running: () => started && !stopping,
    startSender,
    retainBacklog,
    peerStatus,
    writeAudit,
  })
  const { senderOf } = operations
  const { admitInbound } = createMirrorAdmission({
    logger,
    clock: deps.clock,
    serial: deps.identity.serial,
    handshakeTimeoutMs: options.handshakeTimeoutMs,
    acceptJoins: options.acceptJoins === true,
    peers,
    store,
    stopping: () => stopping !== undefined,
    operations,
    writeAudit,
  })

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
      storeId = deps.archive.storeId()
      transport.identity = { ...deps.identity, storeId }
      await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
      peers.overlay = await store.readOverlay()
      peers.pendingJoins = await store.readJoins()
      const effective = effectivePeers(options.peers, peers.overlay)
      const records = await Promise.all(effective.map((peer) => store.read(peer)))
      // A model below 450 does not listen, but its senders still say hello: the handshake then
      // refuses with MODEL_NOT_ELIGIBLE, so both this system and each peer show why nothing is copied.
      if (eligible) {
        listener = createMirrorListener(
          {
            ...transport,
            audit,
            onChannel: (channel) => receiver.handle(channel),
            admit: admitInbound,
            isPinnedFingerprint: (fingerprint) => [...senders.values()].some(({ sender }) => sender.pinned().fingerprint === fingerprint),
          },
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
      effective.forEach((peer, index) => startSender(peer, records[index]!))
      await verifier.start()
      retainBacklog()
      pollTimer = setInterval(() => void tracker.refresh(), pollIntervalMs).unref()
      logger.info('mirror service started', {
        address: listener?.address() ?? null,
        peers: effective.map((peer) => `${peer.host}:${peer.port}`),
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
    addPeer: operations.addPeer,

    /**
     * Removes a peer: stops copying to it and forgets its cursor (added again later, it is
     * backfilled from 0 and deduplicates). A configured peer stays removed across restarts.
     * @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED
     */
    removePeer: operations.removePeer,

    /**
     * A technician accepts what waits at `peer` (HOST:PORT): the changed identity of a peer
     * (pinned from now on; a new store id is backfilled from sequence 0), or a pending join
     * whose address and listening port it names (added as a peer, pinned, backfilled). Saved
     * durably and audited before it returns.
     * @throws MirrorError PEER_INVALID, NOTHING_PENDING, PEER_EXISTS, STATE_FAILED, STOPPED
     */
    acceptPeer: (peer: PeerAddress): Promise<AcceptResult> => operations.acceptPeer(peer),

    /**
     * Proves agreement with a peer now (`mirror verify HOST:PORT`): compares both archives'
     * id digests at a cut both acknowledged, classifies every difference, re-queues the
     * unexplained ones on the side that holds them, and returns the report both sides signed
     * (also in both audit logs). Runs beside copying, on its own channel.
     * @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STOPPED, VERIFY_BUSY, VERIFY_FAILED, and
     *   connection errors (CONNECT_FAILED, IDENTITY_CHANGED, …) when the peer cannot be reached as pinned
     */
    verifyPeer(peer: PeerAddress, actor = 'technician'): Promise<SignedVerifyReport> {
      if (!started || stopping) return Promise.reject(new MirrorError('STOPPED', 'the mirror service is not running'))
      let target
      try {
        target = senderOf(peer)
      } catch (error) {
        return Promise.reject(error)
      }
      return verifier.verify(target, actor)
    },

    /** Pauses copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    pausePeer: (peer: PeerAddress): Promise<PeerStatus> => operations.setPaused(peer, true),

    /** Resumes copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    resumePeer: (peer: PeerAddress): Promise<PeerStatus> => operations.setPaused(peer, false),

    /**
     * The peer's sender, for `mirror verify`: pendingRanges(), requeue(ids), requeuedIds(),
     * rejectedCopies() (see sender.ts). The sender stays the service's: do not start or stop it.
     * @throws MirrorError PEER_INVALID, PEER_UNKNOWN
     */
    peerSender(peer: PeerAddress): PeerSender {
      return senderOf(peer).sender
    },

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
        inboundRefusals: auditing.inboundRefusals(),
        pendingJoins: peers.pendingJoins.map((seen) => ({ ...seen })),
        storeId,
      }
    },

    /**
     * How far behind its peers this system is, as they last said (QUEUE_STATUS): complete when
     * every peer that reported has nothing queued for it. Cheap: no I/O.
     */
    completeness(): Completeness {
      return completenessOf(receiver.status())
    },

    /**
     * For boot's health evaluation (`show status`): not ok — the system degraded, with the
     * reasons in the detail — while not listening, while any peer is refused (an identity
     * change included) or unreachable for longer than unreachableAlertMs, and while an
     * appliance waits as a pending join.
     */
    healthcheck(): { ok: boolean; detail: string } {
      const listening = listener?.address() ?? null
      const statuses = [...senders.values()].map(({ sender }) => sender.status())
      const states = describePeerStates(statuses)
      if (!eligible) return { ok: !stopping, detail: `${ineligibleModelWarning(deps.identity.model)}; ${states}` }
      if (!listening) return { ok: false, detail: 'not listening' }
      const problems = peerProblems(statuses, { nowMs: deps.clock.now(), unreachableAlertMs, verifyProblems: verifier.problems(), pendingJoins: peers.pendingJoins })
      if (problems.length > 0) return { ok: false, detail: problems.join('; ') }
      return { ok: !stopping, detail: `listening on ${listening.host}:${listening.port}; ${states}` }
    },

    /**
     * Stops the senders (acknowledgements in flight awaited briefly, cursors saved) and the
     * listener. Idempotent; bounded by senderStopTimeoutMs and listenerStopTimeoutMs, which run
     * side by side.
     */
    stop(): Promise<void> {
      stopping ??= (async () => {
        clearInterval(pollTimer)
        await operations.settled()
        await verifier.stop()
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
