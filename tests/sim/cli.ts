/**
 * The mirror simulation on demand:
 *
 *     npm run sim -- --seeds 100000 [--from N] [--known-ok]   run seeds N … N+count-1, report failures
 *     npm run sim -- --seed N [--verbose]                     replay one seed (with --verbose: its trace and logs)
 *
 * Exits 1 when a seed fails (each failure prints the command that replays it), 2 on usage errors.
 * Violations that are known findings (model.ts knownFindings) are tagged with the finding;
 * with --known-ok, a seed that has only those passes.
 */
import { replayCommand, runSeed, type SeedResult } from './engine.js'
import { knownFinding, knownFindings } from './model.js'

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: npm run sim -- --seeds COUNT [--from N] | --seed N [--verbose]\n`)
  process.exit(2)
}

function numberAfter(args: string[], name: string): number | undefined {
  const index = args.indexOf(name)
  if (index < 0) return undefined
  const value = Number(args[index + 1])
  if (!Number.isSafeInteger(value) || value < 0) usage(`${name} needs a non-negative integer`)
  return value
}

function tagOf(violation: SeedResult['violations'][number]): string {
  const finding = knownFinding(violation)
  return finding ? `[known ${knownFindings[finding]!.split(':')[0]}] ` : ''
}

function describeFailure(result: SeedResult): string {
  const lines = result.violations
    .slice(0, 20)
    .map((violation) => `  ${tagOf(violation)}${violation.kind} on ${violation.node}${violation.id ? ` ${violation.id.slice(0, 12)}` : ''}: ${violation.detail}`)
  if (result.violations.length > 20) lines.push(`  … and ${result.violations.length - 20} more`)
  return `seed ${result.seed} FAILED (${result.violations.length} violations)\n${lines.join('\n')}\n  replay: ${replayCommand(result.seed)}\n`
}

async function main(): Promise<void> {
  const args = process.argv.slice(2)
  const known = new Set(['--seeds', '--from', '--seed', '--verbose', '--known-ok'])
  const knownOk = args.includes('--known-ok')
  const fails = (result: SeedResult): boolean => result.violations.some((violation) => !knownOk || knownFinding(violation) === undefined)
  for (const arg of args) if (arg.startsWith('--') && !known.has(arg)) usage(`unknown option ${arg}`)
  const single = numberAfter(args, '--seed')
  if (single !== undefined) {
    const verbose = args.includes('--verbose')
    const result = await runSeed(single, verbose ? { write: (line) => process.stdout.write(`${line}\n`) } : {})
    process.stdout.write(`seed ${single}: ${JSON.stringify(result.stats)} virtual ${result.virtualMs} ms, signature ${result.signature}\n`)
    if (fails(result)) {
      process.stdout.write(describeFailure(result))
      process.exit(1)
    }
    process.stdout.write(`seed ${single} ok${result.violations.length > 0 ? ` apart from known findings (${result.violations.map(tagOf).join('').trim()})` : ''}\n`)
    return
  }
  const count = numberAfter(args, '--seeds') ?? usage('give --seeds COUNT or --seed N')
  const from = numberAfter(args, '--from') ?? 0
  const started = performance.now()
  let failed = 0
  for (let seed = from; seed < from + count; seed++) {
    const result = await runSeed(seed)
    if (fails(result)) {
      failed++
      process.stdout.write(describeFailure(result))
    }
    const done = seed - from + 1
    if (done % 1000 === 0) process.stderr.write(`${done}/${count} seeds, ${failed} failed, ${(done / ((performance.now() - started) / 1000)).toFixed(0)} seeds/s\n`)
  }
  const seconds = (performance.now() - started) / 1000
  process.stdout.write(`${count} seeds from ${from}: ${count - failed} passed, ${failed} failed in ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)} seeds/s)\n`)
  if (failed > 0) process.exit(1)
}

await main()
