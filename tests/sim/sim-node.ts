/**
 * One simulated appliance: an in-memory archive and ingest pipeline, a peer-state store whose
 * durable part survives a crash (writes take virtual time; what a crash interrupts is lost),
 * the real createPeerSender (one per peer) and createCopyReceiver, and the admission of
 * inbound peers as the mirror service does it (the peer's sender pins its identity). A crash
 * ends the process: connections reset, senders and receiver dropped, state not yet written
 * lost. An identity change replaces the archive and the data directory (new store id, new
 * certificate, fresh peer state), as a swapped data volume would.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { Delivery, IngestResult } from '../../firmware/archive/types.js'
import { ArchiveError } from '../../firmware/archive/errors.js'
import { createRandom, type Random } from '../../firmware/common/clock.js'
import type { Logger } from '../../firmware/common/logger.js'
import { MirrorError } from '../../firmware/mirror/errors.js'
import type { AdmissionCandidate, MirrorPeerIdentity } from '../../firmware/mirror/handshake.js'
import type { MirrorChannel } from '../../firmware/mirror/channel.js'
import type { ConnectToPeerOptions, MirrorTransportDeps } from '../../firmware/mirror/listener.js'
import { copyPeerRecord, freshPeerRecord, peerKey, type PeerRecord, type PeerStateStore } from '../../firmware/mirror/peer-state.js'
import { createCopyReceiver, type CopyReceiver } from '../../firmware/mirror/receiver.js'
import type { MirrorSecret } from '../../firmware/mirror/secret.js'
import { createPeerSender, type PeerSender } from '../../firmware/mirror/sender.js'
import type { CopyLimits, PolicySettings } from '../../firmware/mirror/types.js'
import { createMemoryArchive, sha256Hex, type MemoryArchive } from '../firmware/mirror/fakes.js'
import { createSparseDigest, digestEntries, type Ledger } from './model.js'
import { simCertificate } from './certificates.js'
import type { VerifyArchive, VerifyLocalDeps, VerifyPeerQueue } from '../../firmware/mirror/verify-facts.js'
import { runVerify } from '../../firmware/mirror/verify-initiator.js'
import type { SignedVerifyReport } from '../../firmware/mirror/verify-protocol.js'
import { createVerifyResponder } from '../../firmware/mirror/verify-responder.js'
import { senderQueue } from '../../firmware/mirror/verify-service.js'
import { SimConnection, type ConnectionPlan } from './sim-channel.js'
import type { VirtualTime } from './virtual-time.js'

/** The port every simulated node listens on (nodes differ by host name). */
export const simPort = 7000
const simModel = 650
const simFirmwareVersion = '1.0.0'
const policy: PolicySettings = { fingerprint: 'sim-policy', policies: [], holds: [] }

/** What the nodes share: virtual time, the ledger, the network's fault plans, logging. */
export interface SimWorld {
  time: VirtualTime
  ledger: Ledger
  nodes: Map<string, SimNode>
  connections: Set<{ connection: SimConnection; from: string; to: string }>
  /** The plan of the next connection from one node to another (faults while the fault phase lasts). */
  planConnection(from: string, to: string): ConnectionPlan
  /** True while state writes may fail (fault phase). */
  stateWriteFails(): boolean
  /** A pipeline commit's duration, in virtual milliseconds. */
  commitDelayMs(): number
  trace(event: string): void
  /** Like trace, for --verbose only (frames, stores): not part of the run's signature. */
  detail: ((event: string) => void) | undefined
  logger(node: string): Logger
  connectionIds: { next: number }
}

/** Limits of the copy layer for one run (CopyLimits and the sender's poll, the receiver's concurrency). */
export interface SimLimits extends CopyLimits {
  pollIntervalMs: number
  receiverSubmitsMax: number
}

/** An identity stand-in: a hex digest of a label. */
function hexOf(label: string, hexDigits: number): string {
  return createHash('sha256').update(label).digest('hex').slice(0, hexDigits)
}

export class SimNode {
  /** Process generation: bumped by each crash; what an older process does afterwards has no effect. */
  epoch = 0
  /** Data-volume generation: bumped by each identity change. */
  incarnation = 0
  up = false
  downUntilMs = 0
  archive: MemoryArchive
  fingerprint: string
  /** The peer-state files on disk: what a restart reads. */
  durable = new Map<string, PeerRecord>()
  senders = new Map<string, PeerSender>()
  receiver: CopyReceiver | undefined
  /** Mirror submits still to fail (a store failure burst). */
  storeFailures = 0
  /** Pipeline submits started and not finished in this process. */
  submitsInFlight = 0
  private readonly random: Random
  private localCounter = 0

  constructor(
    private readonly world: SimWorld,
    readonly name: string,
    readonly serial: string,
    private readonly seed: number,
    private readonly limits: SimLimits,
  ) {
    this.random = createRandom(seed)
    this.archive = this.newArchive()
    this.fingerprint = this.certificateFingerprint()
  }

  /** This identity's certificate from the pool (real keys: verify signs with them), or undefined before the pool is made. */
  certificate() {
    return simCertificate(`${this.serial} certificate ${this.incarnation} ${this.seed}`)
  }

  private certificateFingerprint(): string {
    return this.certificate()?.fingerprint ?? hexOf(`${this.serial} certificate ${this.incarnation} ${this.seed}`, 64)
  }

  private newArchive(): MemoryArchive {
    return createMemoryArchive(this.world.time.clock.now, hexOf(`${this.serial} store ${this.incarnation} ${this.seed}`, 32))
  }

  identity(): MirrorPeerIdentity {
    return { model: simModel, serial: this.serial, firmwareVersion: simFirmwareVersion, storeId: this.archive.storeId(), fingerprint: this.fingerprint, listenPort: simPort }
  }

  /** Submits through this node's ingest pipeline: a virtual group-commit delay, then the archive; never resolves if the process dies first. */
  async submit(raw: Uint8Array, delivery: Delivery): Promise<IngestResult> {
    const epoch = this.epoch
    const archive = this.archive
    this.submitsInFlight++
    if (delivery.source === 'mirror' && this.storeFailures > 0) {
      this.storeFailures--
      this.submitsInFlight--
      this.world.trace(`${this.name}: store failure on a copy`)
      throw new ArchiveError('STORE_UNAVAILABLE', 'simulated store failure')
    }
    await this.world.time.sleep(this.world.commitDelayMs())
    if (this.epoch !== epoch) return new Promise<IngestResult>(() => undefined)
    this.submitsInFlight--
    const id = sha256Hex(raw)
    const existed = archive.messages.has(id)
    const origin = delivery.source === 'mirror' ? delivery.sourceName : null
    const result = archive.ingest(raw, delivery, origin)
    this.world.ledger.onIngest(this, archive.storeId(), id, delivery, existed, this.world.time.now)
    this.world.detail?.(
      `${this.name}: stored ${id.slice(0, 8)} from ${delivery.source === 'mirror' ? delivery.sourceName : 'local'} (${existed ? 'known' : 'new'}, sequence ${archive.lastSequence()})`,
    )
    // As the mirror service's notify(): local mail wakes every sender; copies are never forwarded.
    if (delivery.source !== 'mirror') for (const sender of this.senders.values()) sender.wake()
    return result
  }

  /** A local delivery (an SMTP client's) of `raw`; skipped while the node is down. */
  deliverLocally(raw: Uint8Array): void {
    if (!this.up) return
    const index = this.localCounter++
    const delivery: Delivery = {
      source: 'smtp',
      sourceName: 'smtp:sim',
      receivedAtMs: this.world.time.clock.now(),
      envelopeFrom: `sender-${this.name}-${this.incarnation}-${index}@example.com`,
      envelopeTo: [`to${index}@example.com`, `hidden${index}@example.com`],
      envelopeBcc: [`hidden${index}@example.com`],
      remoteAddress: '192.0.2.10',
      journalEnvelopeText: null,
      deliveryKey: null,
    }
    void this.submit(raw, delivery)
  }

  /** The lowest cursor of this node's senders, as the purge planner's mirror watermark. */
  lowWatermark(): number {
    let lowest = this.archive.lastSequence()
    for (const sender of this.senders.values()) lowest = Math.min(lowest, sender.cursor)
    return lowest
  }

  /**
   * A policy purge of up to `count` messages, as the planner allows: none with a change-log
   * entry a peer has not acknowledged yet. @returns the purged ids
   */
  purge(count: number, pick: (size: number) => number): string[] {
    if (!this.up) return []
    const watermark = this.lowWatermark()
    const pending = new Set(this.archive.log.filter((entry) => entry.sequence > watermark && entry.kind !== 'purge').map((entry) => entry.id))
    const due = [...this.archive.messages.keys()].filter((id) => !pending.has(id)).sort()
    const purged: string[] = []
    for (let index = 0; index < count && due.length > 0; index++) {
      const [id] = due.splice(pick(due.length), 1)
      this.archive.purge(id!)
      this.world.ledger.onPurge(this.archive.storeId(), id!, this.world.time.now)
      purged.push(id!)
    }
    return purged
  }

  /** The peer-state store of the current process: writes take virtual time and are lost if the process dies first. */
  private stateStore(): PeerStateStore {
    const epoch = this.epoch
    const incarnation = this.incarnation
    const world = this.world
    return {
      readOverlay: async () => ({ added: [], removed: [] }),
      readJoins: async () => [],
      writeJoins: async () => undefined,
      writeOverlay: async () => undefined,
      read: async (peer) => this.readRecord(peer.host),
      write: async (record) => {
        await world.time.sleep(1 + this.random.int(5))
        if (world.stateWriteFails() && this.random.next() < 0.2) throw new MirrorError('STATE_FAILED', 'simulated state write failure')
        if (this.epoch === epoch && this.incarnation === incarnation) this.durable.set(peerKey(record), copyPeerRecord(record))
      },
      delete: async (peer) => void this.durable.delete(peerKey(peer)),
    }
  }

  private readRecord(host: string): PeerRecord {
    const saved = this.durable.get(peerKey({ host, port: simPort }))
    return saved ? copyPeerRecord(saved) : freshPeerRecord({ host, port: simPort }, this.world.time.clock.now())
  }

  /** Starts the process: a receiver and one sender per other node, from the durable state. */
  start(): void {
    this.up = true
    const logger = this.world.logger(this.name)
    this.receiver = createCopyReceiver(
      {
        logger,
        clock: this.world.time.clock,
        pipeline: { submit: (raw, delivery) => this.submit(raw, delivery) },
        policySettings: () => policy,
        // As the mirror service wires it: what retention purged here is not archived again by a resend.
        purgedAt: (id) => this.archive.purgedAt(id),
        ...(this.certificate() ? { verify: createVerifyResponder({ logger, local: this.verifyLocal(), queueFor: (serial) => this.queueFor(serial), onReport: () => undefined }) } : {}),
      },
      { submitsInFlightMax: this.limits.receiverSubmitsMax },
    )
    const state = this.stateStore()
    const connect = this.connector()
    for (const peer of this.world.nodes.values()) {
      if (peer === this) continue
      const sender = createPeerSender(
        {
          logger,
          clock: this.world.time.clock,
          random: createRandom(this.seed + 7 * this.epoch + 1),
          archive: this.archive,
          transport: {} as MirrorTransportDeps,
          state,
          policySettings: () => policy,
          connect,
        },
        { ...this.limits, peer: { host: peer.name, port: simPort, configuredBy: 'config' }, sharedSecret: {} as MirrorSecret },
        this.readRecord(peer.name),
      )
      this.senders.set(peer.name, sender)
      sender.start()
    }
    this.world.trace(`${this.name}: started (epoch ${this.epoch}, store ${this.archive.storeId().slice(0, 8)})`)
  }

  /** The process dies: connections reset, senders and receiver gone, unsaved state lost. */
  crash(): void {
    if (!this.up) return
    this.up = false
    this.epoch++
    this.submitsInFlight = 0
    for (const entry of [...this.world.connections]) {
      if (entry.from === this.name || entry.to === this.name) entry.connection.teardown(new MirrorError('CONNECTION_CLOSED', 'the peer process died (simulated)'))
    }
    // Ends the old loops; whatever they still write goes to a dead process's store (ignored).
    for (const sender of this.senders.values()) void sender.stop()
    this.senders.clear()
    this.receiver = undefined
    this.world.trace(`${this.name}: crashed`)
  }

  /** A new data volume: new archive and store id, new certificate, no peer state. The node must be down. */
  replaceDataVolume(): void {
    this.incarnation++
    this.archive = this.newArchive()
    this.fingerprint = this.certificateFingerprint()
    this.durable = new Map()
    this.world.trace(`${this.name}: data volume replaced (store ${this.archive.storeId().slice(0, 8)})`)
  }

  /** Admission of an inbound appliance, as the mirror service does it: the peer's own sender decides. */
  admitInbound(candidate: AdmissionCandidate): MirrorError | undefined {
    const senders = [...this.senders.values()]
    const sender = senders.find((entry) => entry.isPinned(candidate)) ?? senders.find((entry) => entry.pinned().serial === candidate.serial) ?? this.senders.get(candidate.address)
    if (!sender) return new MirrorError('NOT_A_PEER', `${candidate.serial} is not a peer of ${this.serial}`)
    return sender.admit(candidate)
  }

  /** What `mirror verify` reads of this node (a sparse digest snapshot: same answers, microseconds). */
  verifyLocal(): VerifyLocalDeps {
    const certificate = this.certificate()
    assert.ok(certificate, 'the certificate pool is made before a verify')
    const node = this
    const archive: VerifyArchive = {
      changes: (after, limit) => node.archive.changes(after, limit),
      lastSequence: () => node.archive.lastSequence(),
      getRaw: (id) => node.archive.getRaw(id),
      getMeta: (id) => node.archive.getMeta(id),
      has: (id) => node.archive.has(id),
      storeId: () => node.archive.storeId(),
      purgedAt: (id) => node.archive.purgedAt(id),
      async digestSnapshot() {
        const view = createSparseDigest(digestEntries(node.archive))
        return { ...view, storeId: node.archive.storeId(), lastSequence: node.archive.lastSequence(), close: () => undefined }
      },
    }
    return {
      archive,
      serial: this.serial,
      fingerprint: certificate.fingerprint,
      privateKeyPem: certificate.privateKeyPem,
      certificatePem: certificate.certificatePem,
      auditHead: () => ({ seq: 0, hash: '' }),
      policyFingerprint: () => policy.fingerprint,
      holdsKeeping: async () => new Map(),
      purgeAuditSeq: () => null,
    }
  }

  private queueFor(serial: string): VerifyPeerQueue | undefined {
    const sender = [...this.senders.values()].find((candidate) => candidate.pinned().serial === serial)
    return sender ? senderQueue(sender) : undefined
  }

  /** The real `mirror verify` from this node to `peerName`, on a connection of its own. */
  async verifyWith(peerName: string): Promise<SignedVerifyReport> {
    const sender = this.senders.get(peerName)
    assert.ok(sender, `${this.name} has no sender for ${peerName}`)
    const channel = await this.connector()(undefined as unknown as MirrorTransportDeps, {
      host: peerName,
      port: simPort,
      sharedSecret: undefined as unknown as MirrorSecret,
      timeoutMs: 10_000,
      admit: sender.admit,
    })
    try {
      return await runVerify({ logger: this.world.logger(`${this.name}.verify`), clock: this.world.time.clock, local: this.verifyLocal(), queue: senderQueue(sender) }, channel)
    } finally {
      await channel.close()
    }
  }

  /** The sender's transport: a handshake in virtual time, admission on both sides, then a SimConnection. */
  private connector(): (transport: MirrorTransportDeps, options: ConnectToPeerOptions) => Promise<MirrorChannel> {
    const epoch = this.epoch
    const world = this.world
    return async (_transport, options) => {
      const plan = world.planConnection(this.name, options.host)
      await world.time.sleep(2 * plan.latencyMs + 1)
      const target = world.nodes.get(options.host)
      if (this.epoch !== epoch) throw new MirrorError('CONNECTION_CLOSED', 'this process died during the handshake (simulated)')
      if (!target?.up) throw new MirrorError('CONNECT_FAILED', `cannot connect to ${options.host}:${options.port}: ECONNREFUSED (simulated)`)
      // Server first, as in the handshake: it admits the proven client before it sends its proof.
      const serverRefusal = target.admitInbound({ ...this.identity(), address: this.name, direction: 'inbound' })
      if (serverRefusal) {
        throw new MirrorError(serverRefusal.code, serverRefusal.message, { expected: serverRefusal.expected, actual: serverRefusal.actual, origin: 'peer' })
      }
      const clientRefusal = await options.admit?.({ ...target.identity(), address: target.name, direction: 'outbound' })
      if (clientRefusal) throw clientRefusal
      const id = world.connectionIds.next++
      const connection = new SimConnection(
        id,
        world.time,
        plan,
        { ofOutbound: { ...target.identity(), address: target.name, port: simPort }, ofInbound: { ...this.identity(), address: this.name, port: simPort } },
        (event) => world.trace(event),
        world.detail,
      )
      const entry = { connection, from: this.name, to: target.name }
      world.connections.add(entry)
      void connection.inbound.closed.then(() => world.connections.delete(entry))
      world.trace(`conn ${id}: ${this.name} → ${target.name} (latency ${plan.latencyMs} ms${plan.resetAtFrame ? `, reset at ${plan.resetAtFrame}` : ''}${plan.stall ? ', stall' : ''})`)
      void target.receiver!.handle(connection.inbound)
      return connection.outbound
    }
  }
}
