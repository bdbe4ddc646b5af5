import assert from 'node:assert/strict'
import { lookup } from 'node:dns/promises'
import { mkdir } from 'node:fs/promises'
import type { Delivery, IngestResult } from '../archive/types.js'
import type { Logger } from '../common/logger.js'
import type { Clock, Random } from '../common/clock.js'
import type { IngestPipeline } from '../sources/types.js'
import { MirrorError } from './errors.js'
import type { IdentityCertificate } from './certificate.js'
import type { AdmissionCandidate, MirrorIdentity } from './handshake.js'
import { connectToPeer, createMirrorListener, type MirrorAuditEvent, type MirrorListener, type MirrorTransportDeps } from './listener.js'
import { toMirrorSecret, type MirrorSecret } from './secret.js'
import { copyMessageBytesMax } from './copy-protocol.js'
import { createBacklogTracker, type BacklogDepth, type BacklogTrackerOptions } from './backlog.js'
import { createCopyReceiver } from './receiver.js'
import { createPeerSender, describeIdentity, type IdentityEvent, type PeerSender, type PinnedIdentity } from './sender.js'
import {
  createPeerStateStore,
  effectivePeers,
  freshPeerRecord,
  pendingJoinsMax,
  peerKey,
  sameIdentity,
  type EffectivePeer,
  type PeerOverlay,
  type PeerRecord,
  type SeenIdentity,
} from './peer-state.js'
import type { Completeness, CopyLimits, InboundRefusal, MirrorArchive, MirrorStatus, PeerAddress, PeerStatus, PolicySettings, PolicySettingsDiff } from './types.js'
import { basicPolicyDiff, createPolicyComparer, emptyPolicySettings } from './policy-exchange.js'
import { mirroringModelMin } from '../../config/models.js'
import type { VerifyArchive, VerifyLocalDeps } from './verify-facts.js'
import type { SignedVerifyReport } from './verify-protocol.js'
import { createVerifyCoordinator, verifyIntervalMsDefault } from './verify-service.js'

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

/** True when a peer's configured host names the connection's remote address (literally or through the resolver). */
async function hostMatches(host: string, address: string): Promise<boolean> {
  if (host.toLowerCase() === address.toLowerCase()) return true
  try {
    const resolved = await lookup(host, { all: true })
    return resolved.some((entry) => entry.address === address)
  } catch {
    return false
  }
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
  const unreachableAlertMs = options.unreachableAlertMs ?? mirrorServiceDefaults.unreachableAlertMs
  const eligible = deps.identity.model >= mirroringModelMin
  const logger = deps.logger.child('mirror')
  const store = createPeerStateStore({ logger, clock: deps.clock }, { stateDir: options.stateDir })
  const tracker = createBacklogTracker({ archive: deps.archive, logger }, options.backlog)
  const senders = new Map<string, { peer: EffectivePeer; sender: PeerSender }>()
  const inboundRefusals: InboundRefusal[] = []
  let pendingJoins: SeenIdentity[] = []
  let storeId = ''
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
    if (event.code === 'AUTH_FAILED') {
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
      writeAudit(entry)
    }
  }

  function writeAudit(entry: MirrorAuditEntry): void {
    if (!deps.audit) return
    try {
      deps.audit(entry)
    } catch (error) {
      logger.error('mirror audit sink failed', { error })
    }
  }

  function auditIdentity(event: IdentityEvent): void {
    writeAudit({
      action: event.action,
      actor: event.presented.address ?? `${event.peer.host}:${event.peer.port}`,
      details: {
        peer: `${event.peer.host}:${event.peer.port}`,
        expected: event.pinned,
        actual: { serial: event.presented.serial, storeId: event.presented.storeId, fingerprint: event.presented.fingerprint },
        ...(event.presented.direction ? { direction: event.presented.direction } : {}),
        ...(event.cursorReset !== undefined ? { cursorReset: event.cursorReset } : {}),
      },
    })
  }

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
        onIdentity: auditIdentity,
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
    const status = sender.status()
    const depth = queueDepth(sender)
    return {
      host: status.host,
      port: status.port,
      serial: status.serial,
      storeId: status.storeId,
      fingerprint: status.fingerprint,
      pendingIdentity: status.pendingIdentity,
      configuredBy: peer.configuredBy,
      state: status.state,
      reasonCode: status.reasonCode,
      expected: status.expected,
      actual: status.actual,
      queueMessages: depth.messages,
      queueBytes: depth.bytes,
      queueEstimated: depth.estimated,
      cursor: status.cursor,
      backfillThroughSequence: status.backfillThroughSequence,
      liveCursor: status.liveCursor,
      requeuedMessages: status.requeuedMessages,
      rejectedCopies: status.rejectedCopies,
      lastSequence: deps.archive.lastSequence(),
      lastSuccessAtMs: status.lastSuccessAtMs,
      lastError: status.lastError,
      lastRecoveredAtMs: status.lastRecoveredAtMs,
      nextRetryAtMs: status.nextRetryAtMs,
      unreachableSinceMs: status.unreachableSinceMs,
      policyMismatch: status.policyMismatch,
      peerPolicyFingerprint: status.peerPolicyFingerprint,
      connectedSinceMs: status.connectedSinceMs,
      messagesSent: status.messagesSent,
      bytesSent: status.bytesSent,
      messagesRejected: status.messagesRejected,
      lastVerify: verifier.lastOf(peer),
    }
  }

  /** Why mirroring needs a technician, one sentence per peer or join; empty when nothing does. */
  function peerProblems(statuses: ReturnType<PeerSender['status']>[]): string[] {
    const problems: string[] = []
    const now = deps.clock.now()
    for (const status of statuses) {
      const where = `peer ${status.host}:${status.port}`
      if (status.state === 'refused') {
        const detail = status.expected !== null || status.actual !== null ? ` (expected ${String(status.expected)}, got ${String(status.actual)})` : ''
        problems.push(`${where} refused ${status.reasonCode ?? ''}${detail}`)
      } else if (status.unreachableSinceMs !== null && now - status.unreachableSinceMs > unreachableAlertMs) {
        problems.push(`${where} unreachable for ${Math.round((now - status.unreachableSinceMs) / 60_000)} min (${status.reasonCode ?? 'no answer'})`)
      }
    }
    problems.push(...verifier.problems())
    for (const seen of pendingJoins) {
      problems.push(`pending mirror join from ${seen.address}:${seen.listenPort} (serial ${seen.serial}): mirror accept or ignore`)
    }
    return problems
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


  /** The sender an inbound appliance belongs to: pinned identity first, then pinned serial, then address (host and listening port). */
  async function senderForInbound(candidate: AdmissionCandidate): Promise<PeerSender | undefined> {
    const entries = [...senders.values()]
    const exact = entries.find(({ sender }) => sender.isPinned(candidate))
    if (exact) return exact.sender
    const bySerial = entries.find(({ sender }) => sender.pinned().serial === candidate.serial)
    if (bySerial) return bySerial.sender
    for (const { peer, sender } of entries) {
      if (peer.port === candidate.listenPort && (await hostMatches(peer.host, candidate.address))) return sender
    }
    return undefined
  }

  /**
   * Admission of an inbound appliance that proved the secret. A peer's own sender decides
   * (pin, or IDENTITY_CHANGED). One that matches no peer may be a configured peer reached
   * through another address (NAT, a proxy) whose sender has not pinned it yet: the unpinned
   * senders try at once and it waits up to admissionPinWaitMsMax for a pin. Otherwise it is
   * a join: refused NOT_A_PEER and listed (or, with acceptJoins, added and pinned).
   */
  async function admitInbound(candidate: AdmissionCandidate): Promise<MirrorError | undefined> {
    let sender = await senderForInbound(candidate)
    const unpinned = [...senders.values()].filter(({ sender }) => sender.pinned().serial === null)
    if (!sender && unpinned.length > 0) {
      for (const entry of unpinned) entry.sender.retryNow()
      const deadline = deps.clock.monotonicMs() + Math.min(admissionPinWaitMsMax, options.handshakeTimeoutMs / 2)
      while (!sender && deps.clock.monotonicMs() < deadline && !stopping) {
        await new Promise((resolve) => setTimeout(resolve, 20))
        sender = [...senders.values()].find((entry) => entry.sender.isPinned(candidate))?.sender
      }
    }
    if (sender) return sender.admit(candidate)
    return join(candidate)
  }

  async function join(candidate: AdmissionCandidate): Promise<MirrorError | undefined> {
    const now = deps.clock.now()
    const existing = pendingJoins.find((seen) => sameIdentity(seen, candidate))
    const seen: SeenIdentity = {
      serial: candidate.serial,
      storeId: candidate.storeId,
      fingerprint: candidate.fingerprint,
      model: candidate.model,
      firmwareVersion: candidate.firmwareVersion,
      address: candidate.address,
      listenPort: candidate.listenPort,
      firstSeenAtMs: existing?.firstSeenAtMs ?? now,
      lastSeenAtMs: now,
    }
    if (options.acceptJoins && candidate.listenPort > 0) {
      const added = await operation(() => addPinnedPeer(seen))
      writeAudit({ action: 'mirror.join-accepted', actor: candidate.address, details: { peer: `${seen.address}:${seen.listenPort}`, by: 'mirror.acceptJoins', identity: identityOf(seen) } })
      logger.warn('an appliance that proved the mirror secret was added as a peer (mirror.acceptJoins)', { peer: `${seen.address}:${seen.listenPort}`, identity: describeIdentity(seen) })
      return added.admit(candidate)
    }
    pendingJoins = [seen, ...pendingJoins.filter((other) => !sameIdentity(other, candidate))].slice(0, pendingJoinsMax)
    void store.writeJoins(pendingJoins).catch((error) => logger.error('cannot save the pending mirror joins', { error }))
    if (!existing) {
      logger.warn('an appliance proved the mirror secret but is not a peer: refused, listed as a pending join (mirror accept HOST:PORT)', {
        address: candidate.address,
        listenPort: candidate.listenPort,
        identity: describeIdentity(seen),
      })
      writeAudit({ action: 'mirror.join-requested', actor: candidate.address, details: { listenPort: candidate.listenPort, model: candidate.model, identity: identityOf(seen) } })
    }
    return new MirrorError('NOT_A_PEER', `this appliance (${deps.identity.serial}) does not have ${candidate.serial} as a mirror peer; a technician may accept the join`, {
      expected: 'a configured mirror peer',
      actual: describeIdentity(seen),
    })
  }

  const identityOf = (seen: { serial: string; storeId: string; fingerprint: string }) => ({ serial: seen.serial, storeId: seen.storeId, fingerprint: seen.fingerprint })

  /** Adds the peer a join names, pinned to the join's identity; its cursor starts at 0 (backfill). Runs inside operation(). */
  async function addPinnedPeer(seen: SeenIdentity): Promise<PeerSender> {
    const address = { host: seen.address, port: seen.listenPort }
    const key = peerKey(address)
    const existing = senders.get(key)
    if (existing) throw new MirrorError('PEER_EXISTS', `mirror peer ${key} is already configured`, { actual: key })
    overlay = { added: [...overlay.added, address], removed: overlay.removed.filter((removed) => peerKey(removed) !== key) }
    await store.writeOverlay(overlay)
    const record: PeerRecord = { ...freshPeerRecord(address, deps.clock.now()), ...identityOf(seen) }
    await store.write(record)
    const effective: EffectivePeer = { ...address, configuredBy: 'added' }
    startSender(effective, record)
    pendingJoins = pendingJoins.filter((other) => !sameIdentity(other, seen))
    await store.writeJoins(pendingJoins)
    retainBacklog()
    return senders.get(key)!.sender
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
      storeId = deps.archive.storeId()
      transport.identity = { ...deps.identity, storeId }
      await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
      overlay = await store.readOverlay()
      pendingJoins = await store.readJoins()
      const peers = effectivePeers(options.peers, overlay)
      const records = await Promise.all(peers.map((peer) => store.read(peer)))
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
      peers.forEach((peer, index) => startSender(peer, records[index]!))
      await verifier.start()
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

    /**
     * A technician accepts what waits at `peer` (HOST:PORT): the changed identity of a peer
     * (pinned from now on; a new store id is backfilled from sequence 0), or a pending join
     * whose address and listening port it names (added as a peer, pinned, backfilled). Saved
     * durably and audited before it returns.
     * @throws MirrorError PEER_INVALID, NOTHING_PENDING, PEER_EXISTS, STATE_FAILED, STOPPED
     */
    acceptPeer(peer: PeerAddress): Promise<AcceptResult> {
      return operation(async () => {
        const address = checkAddress(peer)
        const key = peerKey(address)
        const entry = senders.get(key)
        if (entry?.sender.pendingIdentity()) {
          const { previous, accepted, cursorReset } = await entry.sender.acceptIdentity()
          pendingJoins = pendingJoins.filter((other) => !sameIdentity(other, accepted))
          await store.writeJoins(pendingJoins)
          retainBacklog()
          return { peer: peerStatus(entry.peer, entry.sender), kind: 'identity' as const, previous, accepted, backfill: cursorReset }
        }
        let joining: SeenIdentity | undefined
        for (const seen of pendingJoins) {
          if (seen.listenPort === address.port && (await hostMatches(address.host, seen.address))) {
            joining = seen
            break
          }
        }
        if (!joining) {
          throw new MirrorError('NOTHING_PENDING', `nothing waits for acceptance at ${key}: no changed peer identity and no pending join`, { actual: key })
        }
        if (entry) throw new MirrorError('PEER_EXISTS', `mirror peer ${key} is already configured`, { actual: key })
        const sender = await addPinnedPeer({ ...joining, address: address.host })
        writeAudit({ action: 'mirror.join-accepted', actor: 'technician', details: { peer: key, by: 'mirror accept', identity: identityOf(joining) } })
        logger.warn('a pending mirror join was accepted by a technician', { peer: key, identity: describeIdentity(joining) })
        const added = senders.get(key)!
        return {
          peer: peerStatus(added.peer, sender),
          kind: 'join' as const,
          previous: { serial: null, storeId: null, fingerprint: null },
          accepted: { ...joining },
          backfill: true,
        }
      })
    },

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
    pausePeer: (peer: PeerAddress): Promise<PeerStatus> => setPaused(peer, true),

    /** Resumes copying to a peer (saved durably). @throws MirrorError PEER_INVALID, PEER_UNKNOWN, STATE_FAILED, STOPPED */
    resumePeer: (peer: PeerAddress): Promise<PeerStatus> => setPaused(peer, false),

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
        inboundRefusals: inboundRefusals.map((refusal) => ({ ...refusal })),
        pendingJoins: pendingJoins.map((seen) => ({ ...seen })),
        storeId,
      }
    },

    /**
     * How far behind its peers this system is, as they last said (QUEUE_STATUS): complete when
     * every peer that reported has nothing queued for it. Cheap: no I/O.
     */
    completeness(): Completeness {
      const peers = receiver
        .status()
        .filter((peer) => peer.queuedMessages !== null && peer.queueAsOfMs !== null)
        .map((peer) => ({ serial: peer.serial, queuedMessages: peer.queuedMessages!, queueEstimated: peer.queueEstimated, asOfMs: peer.queueAsOfMs!, connected: peer.connected }))
      return { complete: peers.every((peer) => peer.queuedMessages === 0), peers }
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
      const count = (state: string): number => statuses.filter((status) => status.state === state).length
      const peers = `peers: ${count('connected')} connected, ${count('retrying')} retrying, ${count('refused')} refused, ${count('paused')} paused`
      if (!eligible) return { ok: !stopping, detail: `${ineligibleModelWarning(deps.identity.model)}; ${peers}` }
      if (!listening) return { ok: false, detail: 'not listening' }
      const problems = peerProblems(statuses)
      if (problems.length > 0) return { ok: false, detail: problems.join('; ') }
      return { ok: !stopping, detail: `listening on ${listening.host}:${listening.port}; ${peers}` }
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
