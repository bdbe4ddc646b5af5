/**
 * Mirror nodes for tests and the benchmark: a real mirror service (TLS on 127.0.0.1) over an
 * in-memory archive and pipeline, with short timeouts.
 */
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryLogger, type Logger, type LogRecord } from '../../../firmware/common/logger.js'
import { createRandom, systemClock } from '../../../firmware/common/clock.js'
import { loadOrCreateIdentityCertificate, type IdentityCertificate } from '../../../firmware/mirror/certificate.js'
import { deriveMirrorSecret, generateSharedSecret, type MirrorSecret } from '../../../firmware/mirror/secret.js'
import type { MirrorAuditEvent } from '../../../firmware/mirror/listener.js'
import { createMirrorService, type MirrorAuditEntry, type MirrorService, type MirrorServiceDeps, type MirrorServiceOptions } from '../../../firmware/mirror/mirror-service.js'
import type { PeerAddress, PeerStatus, PolicySettings, PolicySettingsDiff } from '../../../firmware/mirror/types.js'
import type { IngestResult } from '../../../firmware/archive/types.js'
import { waitUntil, type NotYet } from '../../helpers/wait.js'
import { createMemoryArchive, createMemoryPipeline, localDelivery, type MemoryArchive, type MemoryPipeline, type MemoryPipelineOptions } from './fakes.js'

const certificates = new Map<string, Promise<IdentityCertificate>>()

/** One certificate per serial for the whole process (RSA key generation is the slow part). */
export function certificateFor(serial: string): Promise<IdentityCertificate> {
  let certificate = certificates.get(serial)
  if (!certificate) {
    certificate = mkdtemp(join(tmpdir(), 'mailkeep-mirror-cert-')).then((dataDir) =>
      loadOrCreateIdentityCertificate({ logger: createMemoryLogger('error'), clock: systemClock }, { dataDir, serial }),
    )
    certificates.set(serial, certificate)
  }
  return certificate
}

let sharedSecret: Promise<MirrorSecret> | undefined
/** The shared secret of the test mesh, derived once. */
export function meshSecret(): Promise<MirrorSecret> {
  sharedSecret ??= deriveMirrorSecret(generateSharedSecret())
  return sharedSecret
}

export interface TestNodeOptions {
  serial: string
  model?: number
  firmwareVersion?: string
  peers?: PeerAddress[]
  port?: number
  stateDir?: string
  secret?: MirrorSecret
  policyFingerprint?: string
  /** Overrides policyFingerprint. */
  policySettings?: PolicySettings
  policyDiff?: PolicySettingsDiff
  localSourcesEnabled?: boolean
  /** mirror.acceptJoins; true by default in tests. */
  acceptJoins?: boolean
  seed?: number
  /** Keep the archive and pipeline of a previous instance (a restart of the service only). */
  archive?: MemoryArchive
  pipeline?: MemoryPipeline
  pipelineOptions?: MemoryPipelineOptions
  service?: Partial<MirrorServiceOptions>
  logger?: Logger
  /** What verify reads from retention (holds, purge audit entries, audit head). */
  retention?: MirrorServiceDeps['retention']
}

export interface TestNode {
  serial: string
  service: MirrorService
  archive: MemoryArchive
  pipeline: MemoryPipeline
  logger: Logger & { records: LogRecord[] }
  audits: MirrorAuditEvent[]
  /** What the service gave its audit-log sink. */
  auditEntries: MirrorAuditEntry[]
  port: number
  stateDir: string
  /** Archives a message locally (an SMTP delivery with a BCC) through the pipeline. */
  ingest(raw: Uint8Array, index?: number): Promise<IngestResult>
  peer(port: number): PeerStatus | undefined
  /** Changes this node's retention/hold settings (what policySettings() answers from now on). */
  setPolicy(settings: PolicySettings): void
  stop(): Promise<void>
}

/** Test timing: short enough for quick tests, long enough for a loaded CI machine. */
export const testTimings = {
  retryDelayMsMin: 20,
  retryDelayMsMax: 300,
  handshakeTimeoutMs: 3_000,
  ackTimeoutMs: 2_000,
  pollIntervalMs: 250,
  idleTimeoutMs: 2_000,
} as const

/** Creates and starts a node (does not start it when `start` is false). */
export async function createTestNode(options: TestNodeOptions, start = true): Promise<TestNode> {
  const logger = createMemoryLogger('debug')
  const audits: MirrorAuditEvent[] = []
  const auditEntries: MirrorAuditEntry[] = []
  const archive = options.archive ?? createMemoryArchive()
  const pipeline = options.pipeline ?? createMemoryPipeline(archive, options.pipelineOptions)
  const stateDir = options.stateDir ?? (await mkdtemp(join(tmpdir(), `mailkeep-mirror-state-${options.serial}-`)))
  let currentPolicy: PolicySettings = options.policySettings ?? { fingerprint: options.policyFingerprint ?? 'policy-v1', policies: [], holds: [] }
  const service = createMirrorService(
    {
      logger: options.logger ?? logger,
      clock: systemClock,
      random: createRandom(options.seed ?? 1),
      archive,
      pipeline,
      identity: { model: options.model ?? 650, serial: options.serial, firmwareVersion: options.firmwareVersion ?? '1.0.0' },
      certificate: await certificateFor(options.serial),
      onHandshake: (event) => audits.push(event),
      audit: (entry) => auditEntries.push(entry),
      policySettings: () => currentPolicy,
      ...(options.policyDiff ? { policyDiff: options.policyDiff } : {}),
      ...(options.retention ? { retention: options.retention } : {}),
    },
    {
      host: '127.0.0.1',
      port: options.port ?? 0,
      sharedSecret: options.secret ?? (await meshSecret()),
      peers: options.peers ?? [],
      stateDir,
      localSourcesEnabled: options.localSourcesEnabled ?? true,
      // The test mesh lets an appliance that proves the secret join at once, so a test can
      // configure one direction only; the join rules have tests of their own (acceptJoins false).
      acceptJoins: options.acceptJoins ?? true,
      batchMessagesMax: 100,
      batchBytesMax: 1024 * 1024,
      inflightBatchesMax: 4,
      ...testTimings,
      ...options.service,
    },
  )
  // A restarted node adds its own listener; a stopped service ignores notify().
  pipeline.addListener((result, delivery) => service.notify(result, delivery))
  if (start) await service.start()
  let counter = 0
  const node: TestNode = {
    serial: options.serial,
    service,
    archive,
    pipeline,
    logger,
    audits,
    auditEntries,
    port: service.address()?.port ?? 0,
    stateDir,
    ingest: (raw, index = counter++) => pipeline.submit(raw, localDelivery(index)),
    peer: (port) => service.status().peers.find((peer) => peer.port === port),
    setPolicy: (settings) => {
      currentPolicy = settings
    },
    stop: () => service.stop(),
  }
  return node
}

/**
 * `waitUntil` with the arguments scripts/bench/mirror-copy.ts passes; tests call `waitUntil`
 * (tests/helpers/wait.ts) directly. Remove once the bench does too.
 */
export function waitFor<T>(probe: () => T | NotYet, what: string, timeoutMs?: number): Promise<T> {
  return waitUntil(probe, { what, ...(timeoutMs === undefined ? {} : { timeoutMs }) })
}

/** Messages in `node`'s archive whose origin is `serial`. */
export function copiesFrom(node: TestNode, serial: string): Array<{ raw: Uint8Array; meta: import('../../../firmware/archive/types.js').MessageMeta }> {
  return [...node.archive.messages.values()].filter((message) => message.meta.origin === serial)
}

/**
 * Resolves once `node`'s sender to `port` has failed `count` more attempts (each failure
 * schedules the next one at a new nextRetryAtMs): the sender had its chances to send.
 */
export async function failedAttempts(node: TestNode, port: number, count: number, what: string): Promise<void> {
  let last = node.peer(port)!.nextRetryAtMs
  let failures = 0
  await waitUntil(
    () => {
      const next = node.peer(port)!.nextRetryAtMs
      if (next !== null && next !== last) failures++
      last = next
      return failures >= count
    },
    { what, observe: () => node.peer(port) },
  )
}

/** Stops nodes at the end of a test. */
export function stopAll(t: { teardown(fn: () => unknown): void }, ...nodes: TestNode[]): void {
  t.teardown(() => Promise.all(nodes.map((node) => node.stop())))
}
