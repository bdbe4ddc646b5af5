/**
 * What happens in one seed's run, drawn from the seed alone before the run starts: the nodes,
 * the copy layer's limits, the mail delivered where and when, and the faults (crashes,
 * identity changes, policy purges, store failures, and how likely connections are to reset or
 * stall). Bounded, so that every run heals in bounded virtual time.
 */
import { createRandom, type Random } from '../../firmware/common/clock.js'
import { makeMessage } from '../firmware/mirror/fakes.js'
import type { SimLimits } from './sim-node.js'

/** An event at a virtual time on one node. */
export interface NodeEvent {
  atMs: number
  node: number
}

export interface Scenario {
  seed: number
  nodeCount: number
  limits: SimLimits
  /** Virtual milliseconds of mail and faults; the heal starts after. */
  faultPhaseMs: number
  contents: Buffer[]
  deliveries: (NodeEvent & { content: number })[]
  crashes: (NodeEvent & { downMs: number })[]
  identityChanges: (NodeEvent & { downMs: number })[]
  /** Times a technician looks at the peers and accepts any changed identity (more at the heal). */
  technicianVisitsMs: number[]
  purges: (NodeEvent & { count: number })[]
  storeFailures: (NodeEvent & { count: number })[]
  connectionFaults: {
    resetProbability: number
    stallProbability: number
    latencyMsMax: number
    stateWriteFailures: boolean
  }
}

function events<T>(random: Random, count: number, spanMs: number, nodeCount: number, extra: () => T): (NodeEvent & T)[] {
  return Array.from({ length: count }, () => ({ atMs: random.int(spanMs), node: random.int(nodeCount), ...extra() }))
}

/** The scenario of `seed`. */
export function createScenario(seed: number): Scenario {
  const random = createRandom(seed)
  const chance = (p: number): boolean => random.next() < p
  const between = (min: number, max: number): number => min + random.int(max - min + 1)

  const nodeCount = chance(0.25) ? 3 : 2
  const ackTimeoutMs = between(150, 800)
  const limits: SimLimits = {
    batchMessagesMax: between(1, 8),
    batchBytesMax: between(200, 4_000),
    inflightBatchesMax: between(1, 4),
    retryDelayMsMin: between(5, 50),
    retryDelayMsMax: between(100, 800),
    handshakeTimeoutMs: 1_000,
    ackTimeoutMs,
    pollIntervalMs: between(50, 600),
    receiverSubmitsMax: between(1, 8),
  }
  const faultPhaseMs = between(2_000, 12_000)
  const contentCount = between(3, 30)
  const contents = Array.from({ length: contentCount }, (_, index) => makeMessage(`sim-${seed}-${index}`, between(120, 400), random))
  // Mostly new mail in order, sometimes the same message again (another delivery, maybe elsewhere).
  let fresh = 0
  const deliveries = events(random, between(4, 50), faultPhaseMs, nodeCount, () => ({
    content: fresh < contentCount && (fresh === 0 || chance(0.7)) ? fresh++ : random.int(Math.max(1, fresh)),
  })).sort((a, b) => a.atMs - b.atMs)
  const crashes = events(random, random.int(4), faultPhaseMs, nodeCount, () => ({ downMs: between(20, 2_000) }))
  const identityChanges = chance(0.3) ? events(random, chance(0.2) ? 2 : 1, faultPhaseMs, nodeCount, () => ({ downMs: between(20, 1_500) })) : []
  const technicianVisitsMs = Array.from({ length: random.int(3) }, () => random.int(faultPhaseMs))
  const purges = events(random, random.int(7), faultPhaseMs, nodeCount, () => ({ count: between(1, 3) }))
  const storeFailures = events(random, random.int(4), faultPhaseMs, nodeCount, () => ({ count: between(1, 6) }))
  const connectionFaults = {
    resetProbability: chance(0.2) ? 0 : random.next() * 0.6,
    stallProbability: chance(0.3) ? 0 : random.next() * 0.3,
    latencyMsMax: between(1, 60),
    stateWriteFailures: chance(0.2),
  }
  return { seed, nodeCount, limits, faultPhaseMs, contents, deliveries, crashes, identityChanges, technicianVisitsMs, purges, storeFailures, connectionFaults }
}
