/**
 * A range of seeds run inside a tap test: any violation that is not a known finding fails the
 * test with the command that replays its seed; known findings are counted and listed as
 * comments (each also has a test of its own in sim.test.ts). With MAILKEEP_TEST_SEED set, a
 * sweep runs that one seed if it lies in its range, and none otherwise: a single-seed replay
 * under tap (`MAILKEEP_TEST_SEED=N npx tap tests/sim/seeds-0.test.ts`).
 */
import type { Test } from 'tap'
import { replayCommand, runSeed } from './engine.js'
import { knownFinding, knownFindings, type Violation } from './model.js'
import { seedFromEnvironment, testSeedVariable } from '../helpers/random.js'

/** What a sweep reports to: a tap test. */
type TapLike = Pick<Test, 'ok' | 'fail' | 'comment'>

/** One line per violation, for a failure message. */
export function describeViolations(violations: readonly Violation[], max = 10): string {
  const lines = violations.slice(0, max).map((violation) => `${violation.kind} on ${violation.node}${violation.id ? ` ${violation.id.slice(0, 12)}` : ''}: ${violation.detail}`)
  if (violations.length > max) lines.push(`… and ${violations.length - max} more`)
  return lines.join('\n')
}

/** Runs seeds `from` … `from + count - 1`, or only MAILKEEP_TEST_SEED (see the module comment). */
export async function sweep(t: TapLike, rangeFrom: number, rangeCount: number): Promise<void> {
  const single = seedFromEnvironment()
  const inRange = single !== null && single >= rangeFrom && single < rangeFrom + rangeCount
  if (single !== null) t.comment(`${testSeedVariable}=${single}: ${inRange ? 'only that seed' : `not in seeds ${rangeFrom}–${rangeFrom + rangeCount - 1}, none`} run here`)
  const from = single === null ? rangeFrom : single
  const count = single === null ? rangeCount : inRange ? 1 : 0
  const known = new Map<string, number[]>()
  let failed = 0
  const started = performance.now()
  for (let seed = from; seed < from + count; seed++) {
    const result = await runSeed(seed)
    const fresh = result.violations.filter((violation) => knownFinding(violation) === undefined)
    for (const violation of result.violations) {
      const finding = knownFinding(violation)
      if (finding === undefined) continue
      const seeds = known.get(finding) ?? []
      if (seeds.at(-1) !== seed) seeds.push(seed)
      known.set(finding, seeds)
    }
    if (fresh.length > 0) {
      failed++
      t.fail(`seed ${seed}: ${describeViolations(fresh)}\nreplay: ${replayCommand(seed)}`)
    }
  }
  const seconds = (performance.now() - started) / 1000
  t.ok(failed === 0, `${count} seeds from ${from}: ${failed} with new violations (${(count / seconds).toFixed(0)} seeds/s)`)
  for (const [finding, seeds] of known) {
    t.comment(`known finding ${knownFindings[finding as keyof typeof knownFindings]!.split(':')[0]} in ${seeds.length} seeds, e.g. ${replayCommand(seeds[0]!)}`)
  }
}
