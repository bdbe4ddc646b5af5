/**
 * Runs one seed of the mirror simulation: the scenario's mail and faults for its fault phase,
 * then the heal (faults off, crashed nodes restarted, changed identities accepted by the
 * technician, no new mail) until every sender has acknowledged its whole change log, then the
 * checks of model.ts. Everything is driven by virtual time (virtual-time.ts) and the seed, so
 * a seed replays the same run: `npm run sim -- --seed N --verbose` shows it.
 */
import { createHash } from 'node:crypto'
import { createRandom, type Random } from '../../firmware/common/clock.js'
import { createLogger, type Logger } from '../../firmware/common/logger.js'
import { checkNodes, createLedger, type Violation } from './model.js'
import { createScenario, type NodeEvent, type Scenario } from './scenario.js'
import type { ConnectionPlan } from './sim-channel.js'
import { SimNode, type SimLimits, type SimWorld } from './sim-node.js'
import { VirtualTime } from './virtual-time.js'
import { certificatePool } from './certificates.js'
import type { SignedVerifyReport } from '../../firmware/mirror/verify-protocol.js'

/** Virtual time the heal may take before the run counts as not converging, in milliseconds. */
export const healLimitMs = 300_000
/** Virtual time run after convergence before the checks (old connections' frames, linger), in milliseconds. */
export const settleMs = 5_000
/** How often the technician looks for changed identities during the heal, in virtual milliseconds. */
const technicianIntervalMs = 100
/** The real channel's close linger (protocol.ts closeLingerMs). */
const closeLingerMs = 2_000

export interface RunOptions {
  /** Firmware logs and the simulation trace, one line each, prefixed with the virtual time. */
  write?: (line: string) => void
}

export interface SeedResult {
  seed: number
  violations: Violation[]
  /** Virtual milliseconds the run lasted. */
  virtualMs: number
  /** Hash of the trace and the final archives: equal for two runs of a seed when the run is deterministic. */
  signature: string
  trace: string[]
  stats: { nodes: number; deliveries: number; messages: number; connections: number; crashes: number; identityChanges: number; purged: number; returns: number; timers: number }
}

const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silentLogger }

/** The replay command of a seed. */
export function replayCommand(seed: number): string {
  return `npm run sim -- --seed ${seed}`
}

/** What createSimWorld needs: the nodes, their limits, how connections behave, where logs go. */
export interface SimWorldOptions extends RunOptions {
  seed: number
  nodeCount: number
  limits: SimLimits
  /** The plan of each new connection; `faultsOn` is false once the heal has started. */
  planConnection: (from: string, to: string, faultsOn: boolean) => ConnectionPlan
  /** Whether state writes may fail while faults are on. */
  stateWriteFailures?: boolean
  /** Draws pipeline commit delays. */
  random: Random
}

/** Simulated nodes on a virtual clock, not started; install the clock's timers before starting them. */
export function createSimWorld(options: SimWorldOptions) {
  const time = new VirtualTime()
  const trace: string[] = []
  const control = { faultsOn: true }
  const stamp = (): string => `[${String(time.now).padStart(7)} ms]`
  const write = options.write
  const world: SimWorld = {
    time,
    ledger: createLedger(),
    nodes: new Map(),
    connections: new Set(),
    connectionIds: { next: 1 },
    planConnection: (from, to) => options.planConnection(from, to, control.faultsOn),
    stateWriteFails: () => control.faultsOn && options.stateWriteFailures === true,
    commitDelayMs: () => 1 + options.random.int(control.faultsOn ? 20 : 3),
    detail: write ? (event) => write(`${stamp()} sim: ${event}`) : undefined,
    trace(event) {
      trace.push(`${time.now} ${event}`)
      write?.(`${stamp()} sim: ${event}`)
    },
    logger: (node) => (write ? createLogger(node, { level: 'debug', format: 'pretty', write: (line) => write(`${stamp()} ${line}`), now: () => new Date(time.clock.now()) }) : silentLogger),
  }
  const names = ['a', 'b', 'c', 'd'].slice(0, options.nodeCount)
  const nodes = names.map((name, index) => new SimNode(world, name, `SIM-${name.toUpperCase()}`, (options.seed * 31 + index) >>> 0, options.limits))
  for (const node of nodes) world.nodes.set(node.name, node)
  return {
    world,
    nodes,
    time,
    trace,
    /** Faults off, every node up, the technician accepting changed identities; runs until quiescent. @returns whether it got there */
    async heal(): Promise<boolean> {
      control.faultsOn = false
      world.trace('heal: faults off')
      for (const node of nodes) {
        node.storeFailures = 0
        if (!node.up) node.start()
      }
      time.setInterval(() => technicianVisit(nodes), technicianIntervalMs)
      const converged = await time.runUntilTrue(() => isConverged(nodes), time.now + healLimitMs)
      if (converged) world.trace('heal: converged')
      return converged
    },
    /** The checks of model.ts after a heal (and settleMs more of quiet), with a not-converged violation first when it did not. */
    async check(converged: boolean): Promise<Violation[]> {
      if (!converged) return [{ kind: 'not-converged', node: '*', detail: `not quiescent after ${healLimitMs} ms of heal: ${describeSenders(nodes)}` }]
      await time.runUntil(time.now + settleMs)
      const violations: Violation[] = []
      if (!isConverged(nodes)) violations.push({ kind: 'not-converged', node: '*', detail: `converged, then not after ${settleMs} ms more: ${describeSenders(nodes)}` })
      violations.push(...(await checkNodes(nodes, world.ledger)))
      violations.push(...(await realVerify(nodes, time)))
      return violations
    },
  }
}

/** Virtual time a verify may take after the heal, at most. */
const verifyLimitMs = 60_000

/**
 * The real `mirror verify` between every pair after the heal (when the certificate pool is
 * made): each must find nothing unexplained — purges are classified from the purge records,
 * and nothing may be missing.
 */
async function realVerify(nodes: readonly SimNode[], time: VirtualTime): Promise<Violation[]> {
  const violations: Violation[] = []
  for (let a = 0; a < nodes.length; a++) {
    for (let b = a + 1; b < nodes.length; b++) {
      const [from, to] = [nodes[a]!, nodes[b]!]
      if (!from.certificate() || !to.certificate() || !from.senders.has(to.name)) continue
      let outcome: { report?: SignedVerifyReport['report']; error?: unknown } | undefined
      from.verifyWith(to.name).then(
        (signed) => (outcome = { report: signed.report }),
        (error: unknown) => (outcome = { error }),
      )
      await time.runUntilTrue(() => outcome !== undefined, time.now + verifyLimitMs)
      const where = `${from.name}/${to.name}`
      if (!outcome) violations.push({ kind: 'verify-disagrees', node: where, detail: `mirror verify did not finish within ${verifyLimitMs} ms of virtual time` })
      else if (outcome.error !== undefined)
        violations.push({ kind: 'verify-disagrees', node: where, detail: `mirror verify failed: ${(outcome.error as Error)?.message ?? String(outcome.error)}` })
      else if (outcome.report!.counts.unexplained > 0 || outcome.report!.truncated || outcome.report!.counts.queued > 0) {
        const report = outcome.report!
        violations.push({
          kind: 'verify-disagrees',
          node: where,
          detail: `mirror verify: ${report.outcome} ${JSON.stringify(report.counts)}: ${report.differences
            .slice(0, 3)
            .map((difference) => `${difference.id.slice(0, 12)} ${difference.class} on ${difference.presentOn}`)
            .join(', ')}`,
        })
      }
    }
  }
  return violations
}

/** Runs `seed` (see the module comment). Installs virtual timers for its duration: run seeds one at a time. */
export async function runSeed(seed: number, options: RunOptions = {}): Promise<SeedResult> {
  await certificatePool()
  const scenario = createScenario(seed)
  const runtime = createRandom(seed ^ 0x5bd1e995)
  const sim = createSimWorld({
    ...options,
    seed,
    nodeCount: scenario.nodeCount,
    limits: scenario.limits,
    planConnection: (_from, _to, faultsOn) => planConnection(scenario, runtime, faultsOn),
    stateWriteFailures: scenario.connectionFaults.stateWriteFailures,
    random: runtime,
  })
  const { time, nodes, world } = sim
  const stats = { crashes: 0, identityChanges: 0, purged: 0 }
  // Stack traces are the largest cost of the many MirrorErrors a run creates; nothing reads them unless verbose.
  const stackTraceLimit = Error.stackTraceLimit
  if (!options.write) Error.stackTraceLimit = 0
  time.install()
  try {
    for (const node of nodes) node.start()
    schedule(scenario, time, nodes, runtime, stats, world.trace)
    await time.runUntil(scenario.faultPhaseMs)
    const violations = await sim.check(await sim.heal())
    return {
      seed,
      violations,
      virtualMs: time.now,
      signature: signatureOf(sim.trace, nodes),
      trace: sim.trace,
      stats: {
        nodes: nodes.length,
        deliveries: world.ledger.localDeliveries.length,
        messages: new Set(nodes.flatMap((node) => [...node.archive.messages.keys()])).size,
        connections: world.connectionIds.next - 1,
        crashes: stats.crashes,
        identityChanges: stats.identityChanges,
        purged: stats.purged,
        returns: world.ledger.returns.length,
        timers: time.fired,
      },
    }
  } finally {
    VirtualTime.uninstall()
    Error.stackTraceLimit = stackTraceLimit
  }
}

function planConnection(scenario: Scenario, random: Random, faultsOn: boolean): ConnectionPlan {
  const faults = scenario.connectionFaults
  if (!faultsOn) return { latencyMs: 1 + random.int(3), lingerMs: closeLingerMs }
  const plan: ConnectionPlan = { latencyMs: 1 + random.int(faults.latencyMsMax), lingerMs: closeLingerMs }
  if (random.next() < faults.resetProbability) plan.resetAtFrame = 1 + random.int(40)
  if (random.next() < faults.stallProbability) {
    plan.stall = { atFrame: 1 + random.int(20), direction: random.next() < 0.5 ? 'outbound' : 'inbound', durationMs: Math.round(scenario.limits.ackTimeoutMs * (0.5 + 2.5 * random.next())) }
  }
  return plan
}

/** Puts the scenario's events on the virtual timer queue. */
function schedule(
  scenario: Scenario,
  time: VirtualTime,
  nodes: SimNode[],
  random: Random,
  stats: { crashes: number; identityChanges: number; purged: number },
  trace: (event: string) => void,
): void {
  const at = (atMs: number, action: () => void): void => void time.setTimeout(action, Math.max(1, atMs))
  /** Takes a node down for `downMs` (replacing its data volume first when asked), then restarts it. */
  const takeDown = (event: NodeEvent & { downMs: number }, replace: boolean): void =>
    at(event.atMs, () => {
      const node = nodes[event.node]!
      if (!node.up && !replace) return
      if (replace) stats.identityChanges++
      else stats.crashes++
      node.crash()
      if (replace) node.replaceDataVolume()
      node.downUntilMs = Math.max(node.downUntilMs, time.now + event.downMs)
      at(event.atMs + event.downMs, () => {
        if (!node.up && time.now >= node.downUntilMs) node.start()
      })
    })
  for (const delivery of scenario.deliveries) at(delivery.atMs, () => nodes[delivery.node]!.deliverLocally(scenario.contents[delivery.content]!))
  for (const crash of scenario.crashes) takeDown(crash, false)
  for (const change of scenario.identityChanges) takeDown(change, true)
  for (const purge of scenario.purges) {
    at(purge.atMs, () => {
      const node = nodes[purge.node]!
      const purged = node.purge(purge.count, (size) => random.int(size))
      stats.purged += purged.length
      if (purged.length > 0) trace(`${node.name}: policy purge of ${purged.map((id) => id.slice(0, 8)).join(', ')}`)
    })
  }
  for (const failure of scenario.storeFailures) {
    at(failure.atMs, () => {
      const node = nodes[failure.node]!
      node.storeFailures += failure.count
    })
  }
  for (const visitMs of scenario.technicianVisitsMs) at(visitMs, () => technicianVisit(nodes))
}

/** The technician accepts every changed identity a sender is waiting on (`mirror accept`). */
function technicianVisit(nodes: SimNode[]): void {
  for (const node of nodes) {
    for (const sender of node.senders.values()) {
      if (sender.pendingIdentity()) sender.acceptIdentity().catch(() => undefined)
    }
  }
}

/** Every node up and idle; every sender pinned to its peer's current identity and caught up. */
function isConverged(nodes: SimNode[]): boolean {
  for (const node of nodes) {
    if (!node.up || node.submitsInFlight > 0) return false
    const lastSequence = node.archive.lastSequence()
    for (const [peerName, sender] of node.senders) {
      const peer = nodes.find((candidate) => candidate.name === peerName)!
      const pinned = sender.pinned()
      if (sender.pendingIdentity() || pinned.storeId !== peer.archive.storeId() || pinned.fingerprint !== peer.fingerprint || sender.cursor !== lastSequence) return false
    }
  }
  return true
}

function describeSenders(nodes: SimNode[]): string {
  return nodes
    .map((node) => {
      if (!node.up) return `${node.name} down`
      const senders = [...node.senders].map(([peer, sender]) => {
        const status = sender.status()
        return `${node.name}→${peer} ${status.state}${status.reasonCode ? ` ${status.reasonCode}` : ''} cursor ${status.cursor}/${node.archive.lastSequence()}${status.pendingIdentity ? ' pending identity' : ''}`
      })
      return `${senders.join(', ')}; ${node.submitsInFlight} submits in flight`
    })
    .join('; ')
}

function signatureOf(trace: string[], nodes: SimNode[]): string {
  const hash = createHash('sha256')
  for (const line of trace) hash.update(line).update('\n')
  for (const node of nodes) {
    hash.update(`${node.name} ${node.archive.lastSequence()} ${[...node.archive.messages.keys()].sort().join(',')}\n`)
  }
  return hash.digest('hex').slice(0, 16)
}
