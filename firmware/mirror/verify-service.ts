import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Clock } from '../common/clock.js'
import { writeFileDurable } from '../common/durable-file.js'
import type { Logger } from '../common/logger.js'
import type { MirrorChannel } from './channel.js'
import { MirrorError } from './errors.js'
import type { EffectivePeer } from './peer-state.js'
import type { PeerSender } from './sender.js'
import type { VerifyLocalDeps, VerifyPeerQueue } from './verify-facts.js'
import { runVerify } from './verify-initiator.js'
import { reportDigest, type DifferenceClass, type SignedVerifyReport } from './verify-protocol.js'
import { createVerifyResponder, type VerifyResponder } from './verify-responder.js'

/** Default time between scheduled verifies of one peer, in milliseconds (a day). */
export const verifyIntervalMsDefault = 24 * 60 * 60 * 1000
/** How often the schedule looks for a peer that is due, at most, in milliseconds. */
const scheduleTickMsMax = 60_000
/** Name of the file (in the mirror state directory) with each peer's last verify. */
export const verifySummariesFileName = 'verify.json'

/** The last verify of one peer, as status and health show it. */
export interface VerifySummary {
  atMs: number
  /** initiator: this system ran it; responder: the peer ran it against this system. */
  role: 'initiator' | 'responder'
  outcome: 'agree' | 'explained' | 'unexplained' | 'incomplete' | 'failed'
  counts: Record<DifferenceClass, number> | null
  /** Hex SHA-256 of the signed report (it is in the audit log); null for a failed run. */
  reportDigest: string | null
  /** Why the run failed; null when it finished. */
  error: string | null
}

/** A peer as the coordinator sees it. */
export interface VerifyTarget {
  peer: EffectivePeer
  sender: PeerSender
}

export interface VerifyCoordinatorDeps {
  logger: Logger
  clock: Clock
  /** This side's facts; undefined when the archive cannot take snapshots (verify unavailable). */
  local: VerifyLocalDeps | undefined
  targets(): VerifyTarget[]
  /** Opens an authenticated outbound channel to the peer (its pinned identity only). */
  connect(target: VerifyTarget): Promise<MirrorChannel>
  audit(entry: { action: string; actor: string; details: Record<string, unknown> }): void
  stateDir: string
}

const keyOf = (peer: { host: string; port: number }): string => `${peer.host}:${peer.port}`

/** The copy queue of a sender as verify uses it. */
export function senderQueue(sender: PeerSender): VerifyPeerQueue {
  return {
    pendingRanges: () => sender.pendingRanges(),
    requeuedIds: () => sender.requeuedIds(),
    rejectedCopies: () => sender.rejectedCopies(),
    requeue: (ids) => sender.requeue(ids),
  }
}

/**
 * Each peer's last verify (by host:port), in memory and in `path` (verify.json, written
 * durably one save after another; a failed save is logged and status keeps the results).
 */
function createSummaryFile(logger: Logger, path: string) {
  const summaries = new Map<string, VerifySummary>()
  let saving: Promise<void> = Promise.resolve()

  const save = (): void => {
    const text = JSON.stringify({ version: 1, peers: Object.fromEntries(summaries) })
    saving = saving.then(() => writeFileDurable(path, text, 0o600)).catch((error: unknown) => logger.error('cannot save the verify results; status shows them until restart', { error }))
  }

  return {
    get: (key: string): VerifySummary | undefined => summaries.get(key),

    /** Keeps `summary` as the last verify of `key` and saves the file. */
    remember(key: string, summary: VerifySummary): void {
      summaries.set(key, summary)
      save()
    },

    /** Loads the saved results; none when the file is missing, unreadable ones logged. */
    async load(): Promise<void> {
      try {
        const value = JSON.parse(await readFile(path, 'utf8')) as { version?: unknown; peers?: Record<string, VerifySummary> }
        if (value.version === 1 && value.peers && typeof value.peers === 'object') for (const [key, summary] of Object.entries(value.peers)) summaries.set(key, summary)
      } catch (error) {
        if ((error as { code?: unknown })?.code !== 'ENOENT') logger.warn('cannot read the last verify results; starting without them', { error })
      }
    },

    /** Resolves when the saves asked for so far are done. */
    saved: (): Promise<void> => saving,
  }
}

/** What the coordinator's parts share. */
interface CoordinatorState {
  deps: VerifyCoordinatorDeps
  logger: Logger
  summaries: ReturnType<typeof createSummaryFile>
  /** The verifies this side runs now, by host:port. */
  running: Map<string, Promise<SignedVerifyReport>>
}

/** Audits a signed report (`mirror.verify`) and keeps it as the peer's last verify. */
function keepReport(state: CoordinatorState, signed: SignedVerifyReport, role: 'initiator' | 'responder', key: string, actor: string): void {
  const { report } = signed
  const digest = reportDigest(report)
  state.deps.audit({ action: 'mirror.verify', actor, details: { peer: key, role, outcome: report.outcome, reportDigest: digest, report, signatures: signed.signatures } })
  state.summaries.remember(key, { atMs: report.finishedAtMs, role, outcome: report.outcome, counts: { ...report.counts }, reportDigest: digest, error: null })
}

/** The responder for peers' verifies: their copy queue here by serial, reports kept under the peer's address. */
function createResponderOf(state: CoordinatorState): VerifyResponder {
  const { deps } = state
  const targetBySerial = (serial: string): VerifyTarget | undefined => deps.targets().find(({ sender }) => sender.pinned().serial === serial)
  return createVerifyResponder({
    logger: state.logger,
    local: deps.local ?? unavailableLocal(),
    queueFor: (serial) => {
      const target = targetBySerial(serial)
      return target ? senderQueue(target.sender) : undefined
    },
    onReport: (signed) => {
      const target = targetBySerial(signed.report.initiator.serial)
      keepReport(state, signed, 'responder', target ? keyOf(target.peer) : signed.report.initiator.serial, signed.report.initiator.serial)
    },
  })
}

/** Runs one verify of `target` (see VerifyCoordinator.verify); a failure is kept and audited. */
async function verifyPeer(state: CoordinatorState, target: VerifyTarget, actor: string): Promise<SignedVerifyReport> {
  const { deps, logger, running } = state
  const key = keyOf(target.peer)
  if (!deps.local) throw new MirrorError('VERIFY_FAILED', 'this archive cannot take digest snapshots: verify is unavailable')
  if (running.has(key)) throw new MirrorError('VERIFY_BUSY', `a verify of ${key} is already running`)
  const local = deps.local
  const run = (async () => {
    const channel = await deps.connect(target)
    try {
      const signed = await runVerify({ logger, clock: deps.clock, local, queue: senderQueue(target.sender) }, channel)
      keepReport(state, signed, 'initiator', key, actor)
      return signed
    } finally {
      await channel.close()
    }
  })()
  running.set(key, run)
  try {
    return await run
  } catch (error) {
    const message = (error as Error)?.message ?? String(error)
    state.summaries.remember(key, { atMs: deps.clock.now(), role: 'initiator', outcome: 'failed', counts: null, reportDigest: null, error: message })
    deps.audit({ action: 'mirror.verify-failed', actor, details: { peer: key, code: (error as { code?: unknown })?.code ?? null, message } })
    throw error
  } finally {
    running.delete(key)
  }
}

/** Starts a scheduled verify of every connected peer whose last one is `intervalMs` old or more. */
function startDueVerifies(state: CoordinatorState, intervalMs: number): void {
  const now = state.deps.clock.now()
  for (const target of state.deps.targets()) {
    const key = keyOf(target.peer)
    const last = state.summaries.get(key)
    // A run the peer started counts: one verify of a pair a day is enough.
    if (state.running.has(key) || !target.sender.connected || (last && now - last.atMs < intervalMs)) continue
    verifyPeer(state, target, 'system').catch((error: unknown) => state.logger.warn('scheduled mirror verify failed', { peer: key, error }))
  }
}

/**
 * `mirror verify` for the mirror service: runs it on request and on a schedule (each peer
 * every intervalMs, 0 = never), answers peers' verifies (the responder handed to the
 * receiver), keeps each peer's last result (in memory and in stateDir/verify.json), audits
 * every signed report on both sides (`mirror.verify`, the report and both signatures) and
 * reports peers whose last verify found unexplained differences.
 */
export function createVerifyCoordinator(deps: VerifyCoordinatorDeps, options: { intervalMs: number }) {
  const logger = deps.logger.child('verify')
  const state: CoordinatorState = { deps, logger, summaries: createSummaryFile(logger, join(deps.stateDir, verifySummariesFileName)), running: new Map() }
  let timer: NodeJS.Timeout | undefined
  let stopped = false

  return {
    responder: createResponderOf(state),

    /** Loads the last results and starts the schedule. */
    async start(): Promise<void> {
      await state.summaries.load()
      if (options.intervalMs > 0) {
        timer = setInterval(
          () => {
            if (!stopped) startDueVerifies(state, options.intervalMs)
          },
          Math.min(options.intervalMs, scheduleTickMsMax),
        ).unref()
      }
    },

    /** Verifies one peer now. @throws MirrorError PEER_UNKNOWN, VERIFY_BUSY, VERIFY_FAILED and the run's errors */
    verify: (target: VerifyTarget, actor: string): Promise<SignedVerifyReport> => verifyPeer(state, target, actor),

    /** The last verify of a peer, or null. */
    lastOf(peer: { host: string; port: number }): VerifySummary | null {
      const summary = state.summaries.get(keyOf(peer))
      return summary ? { ...summary, counts: summary.counts ? { ...summary.counts } : null } : null
    },

    /** Peers whose last verify found unexplained differences (re-queued), one sentence each. */
    problems(): string[] {
      const problems: string[] = []
      for (const target of deps.targets()) {
        const key = keyOf(target.peer)
        const summary = state.summaries.get(key)
        if (summary?.outcome === 'unexplained') {
          problems.push(`mirror verify of ${key} found ${summary.counts?.unexplained ?? '?'} unexplained differences (re-queued; verify again to confirm)`)
        }
      }
      return problems
    },

    async stop(): Promise<void> {
      stopped = true
      clearInterval(timer)
      await Promise.allSettled([...state.running.values()])
      await state.summaries.saved()
    },
  }
}

/** Local facts that refuse every request: a responder on an archive without snapshots. */
function unavailableLocal(): VerifyLocalDeps {
  const refuse = (): never => {
    throw new MirrorError('VERIFY_FAILED', 'this archive cannot take digest snapshots')
  }
  return {
    archive: { digestSnapshot: refuse, purgedAt: refuse } as unknown as VerifyLocalDeps['archive'],
    serial: '',
    fingerprint: '',
    privateKeyPem: '',
    certificatePem: '',
    auditHead: refuse,
    policyFingerprint: refuse,
    holdsKeeping: refuse,
    purgeAuditSeq: refuse,
  }
}

export type VerifyCoordinator = ReturnType<typeof createVerifyCoordinator>
