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
import { createVerifyResponder } from './verify-responder.js'

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
 * `mirror verify` for the mirror service: runs it on request and on a schedule (each peer
 * every intervalMs, 0 = never), answers peers' verifies (the responder handed to the
 * receiver), keeps each peer's last result (in memory and in stateDir/verify.json), audits
 * every signed report on both sides (`mirror.verify`, the report and both signatures) and
 * reports peers whose last verify found unexplained differences.
 */
export function createVerifyCoordinator(deps: VerifyCoordinatorDeps, options: { intervalMs: number }) {
  const logger = deps.logger.child('verify')
  const summaries = new Map<string, VerifySummary>()
  const running = new Map<string, Promise<SignedVerifyReport>>()
  const path = join(deps.stateDir, verifySummariesFileName)
  let timer: NodeJS.Timeout | undefined
  let stopped = false
  let saving: Promise<void> = Promise.resolve()

  const save = (): void => {
    const text = JSON.stringify({ version: 1, peers: Object.fromEntries(summaries) })
    saving = saving.then(() => writeFileDurable(path, text, 0o600)).catch((error: unknown) => logger.error('cannot save the verify results; status shows them until restart', { error }))
  }

  function remember(key: string, summary: VerifySummary): void {
    summaries.set(key, summary)
    save()
  }

  function keep(signed: SignedVerifyReport, role: 'initiator' | 'responder', key: string, actor: string): void {
    const { report } = signed
    const digest = reportDigest(report)
    deps.audit({ action: 'mirror.verify', actor, details: { peer: key, role, outcome: report.outcome, reportDigest: digest, report, signatures: signed.signatures } })
    remember(key, { atMs: report.finishedAtMs, role, outcome: report.outcome, counts: { ...report.counts }, reportDigest: digest, error: null })
  }

  const responder = createVerifyResponder({
    logger,
    local: deps.local ?? unavailableLocal(),
    queueFor: (serial) => {
      const target = deps.targets().find(({ sender }) => sender.pinned().serial === serial)
      return target ? senderQueue(target.sender) : undefined
    },
    onReport: (signed) => {
      const target = deps.targets().find(({ sender }) => sender.pinned().serial === signed.report.initiator.serial)
      keep(signed, 'responder', target ? keyOf(target.peer) : signed.report.initiator.serial, signed.report.initiator.serial)
    },
  })

  async function verify(target: VerifyTarget, actor: string): Promise<SignedVerifyReport> {
    const key = keyOf(target.peer)
    if (!deps.local) throw new MirrorError('VERIFY_FAILED', 'this archive cannot take digest snapshots: verify is unavailable')
    if (running.has(key)) throw new MirrorError('VERIFY_BUSY', `a verify of ${key} is already running`)
    const run = (async () => {
      const channel = await deps.connect(target)
      try {
        const signed = await runVerify({ logger, clock: deps.clock, local: deps.local!, queue: senderQueue(target.sender) }, channel)
        keep(signed, 'initiator', key, actor)
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
      remember(key, { atMs: deps.clock.now(), role: 'initiator', outcome: 'failed', counts: null, reportDigest: null, error: message })
      deps.audit({ action: 'mirror.verify-failed', actor, details: { peer: key, code: (error as { code?: unknown })?.code ?? null, message } })
      throw error
    } finally {
      running.delete(key)
    }
  }

  function due(): void {
    if (stopped || options.intervalMs <= 0) return
    const now = deps.clock.now()
    for (const target of deps.targets()) {
      const key = keyOf(target.peer)
      const last = summaries.get(key)
      // A run the peer started counts: one verify of a pair a day is enough.
      if (running.has(key) || !target.sender.connected || (last && now - last.atMs < options.intervalMs)) continue
      verify(target, 'system').catch((error: unknown) => logger.warn('scheduled mirror verify failed', { peer: key, error }))
    }
  }

  return {
    responder,

    /** Loads the last results and starts the schedule. */
    async start(): Promise<void> {
      try {
        const value = JSON.parse(await readFile(path, 'utf8')) as { version?: unknown; peers?: Record<string, VerifySummary> }
        if (value.version === 1 && value.peers && typeof value.peers === 'object') for (const [key, summary] of Object.entries(value.peers)) summaries.set(key, summary)
      } catch (error) {
        if ((error as { code?: unknown })?.code !== 'ENOENT') logger.warn('cannot read the last verify results; starting without them', { error })
      }
      if (options.intervalMs > 0) timer = setInterval(due, Math.min(options.intervalMs, scheduleTickMsMax)).unref()
    },

    /** Verifies one peer now. @throws MirrorError PEER_UNKNOWN, VERIFY_BUSY, VERIFY_FAILED and the run's errors */
    verify,

    /** The last verify of a peer, or null. */
    lastOf(peer: { host: string; port: number }): VerifySummary | null {
      const summary = summaries.get(keyOf(peer))
      return summary ? { ...summary, counts: summary.counts ? { ...summary.counts } : null } : null
    },

    /** Peers whose last verify found unexplained differences (re-queued), one sentence each. */
    problems(): string[] {
      const problems: string[] = []
      for (const target of deps.targets()) {
        const key = keyOf(target.peer)
        const summary = summaries.get(key)
        if (summary?.outcome === 'unexplained') {
          problems.push(`mirror verify of ${key} found ${summary.counts?.unexplained ?? '?'} unexplained differences (re-queued; verify again to confirm)`)
        }
      }
      return problems
    },

    async stop(): Promise<void> {
      stopped = true
      clearInterval(timer)
      await Promise.allSettled([...running.values()])
      await saving
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
