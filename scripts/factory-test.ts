/**
 * Factory test (`npm run factory-test -- [--config FILE] [--report FILE] [--burn-in MINUTES]`).
 * Runs the factory checks against the HAL the configuration selects and the firmware, prints
 * TAP on stdout and writes a JSON report (serial, model, firmware, each check with pass/fail,
 * measured value, limit and duration). Exit 0 only if every check passes, 1 otherwise,
 * 2 on usage errors, 78 on a configuration error.
 */
import { writeFile, mkdir } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { loadConfig, configPathFrom } from '../config/load.js'
import { ConfigError, formatProblem } from '../config/errors.js'
import { modelProfile } from '../config/models.js'
import { createLogger } from '../firmware/common/logger.js'
import { exitCodes } from '../firmware/common/errors.js'
import { createConfiguredHal } from '../boot/hal.js'
import { firmwareVersion } from '../boot/version.js'
import { hardwareChecks, runChecks, tapLine, disksCheck, volumeCheck, type CheckResult, type FactoryCheck } from './factory/checks.js'
import { firmwareLoopbackCheck, mirrorLoopbackCheck } from './factory/firmware-checks.js'

/** A burn-in round whose throughput falls below this share of the first round counts as degradation. */
export const burnInThroughputRatioMin = 0.7
/** Longest burn-in accepted, in minutes (a week). */
const burnInMinutesMax = 7 * 24 * 60

async function main(argv: string[]): Promise<number> {
  let args
  try {
    args = parseArgs({
      args: argv,
      options: {
        config: { type: 'string' },
        report: { type: 'string' },
        'burn-in': { type: 'string' },
        'volume-bytes': { type: 'string' },
        'volume-mbps-min': { type: 'string' },
      },
    }).values
  } catch (error) {
    process.stderr.write(`factory-test: ${(error as Error).message}\n`)
    return exitCodes.usage
  }
  const burnInMinutes = args['burn-in'] === undefined ? 0 : Number(args['burn-in'])
  if (!Number.isFinite(burnInMinutes) || burnInMinutes < 0 || burnInMinutes > burnInMinutesMax) {
    process.stderr.write(`factory-test: --burn-in takes minutes between 0 and ${burnInMinutesMax}\n`)
    return exitCodes.usage
  }
  const volumeBytes = args['volume-bytes'] === undefined ? undefined : Number(args['volume-bytes'])
  if (volumeBytes !== undefined && !(Number.isSafeInteger(volumeBytes) && volumeBytes > 0)) {
    process.stderr.write('factory-test: --volume-bytes takes a positive integer\n')
    return exitCodes.usage
  }
  const volumeMegabytesPerSecondMin = args['volume-mbps-min'] === undefined ? undefined : Number(args['volume-mbps-min'])
  if (volumeMegabytesPerSecondMin !== undefined && !(volumeMegabytesPerSecondMin >= 0)) {
    process.stderr.write('factory-test: --volume-mbps-min takes a number of MB/s\n')
    return exitCodes.usage
  }
  let config
  try {
    config = await loadConfig(args.config ?? configPathFrom([], process.env))
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`factory-test: configuration error:\n${error.problems.map(formatProblem).join('\n')}\n`)
      return exitCodes.config
    }
    throw error
  }
  // Logs go to stderr: stdout carries only TAP.
  const logger = createLogger('factory', { level: 'warn', format: 'pretty', write: (line) => process.stderr.write(line + '\n') })
  const hal = createConfiguredHal(config, logger.child('hal'))
  await hal.start()
  const startedAt = new Date()
  try {
    const identity = await hal.identity()
    const context = { hal, dataDir: config.dataDir, profile: modelProfile(identity.model) }
    const checks: FactoryCheck[] = [...hardwareChecks({ volumeBytes, volumeMegabytesPerSecondMin }), firmwareLoopbackCheck, mirrorLoopbackCheck]
    process.stdout.write('TAP version 14\n')
    let number = 0
    const print = (result: CheckResult) => process.stdout.write(tapLine(result, ++number) + '\n')
    const results = await runChecks(checks, context, print)
    if (burnInMinutes > 0) results.push(...(await burnIn(context, burnInMinutes, volumeBytes, volumeMegabytesPerSecondMin, print)))
    process.stdout.write(`1..${number}\n`)
    const passed = results.every((result) => result.ok)
    const report = {
      serial: identity.serial,
      model: identity.model,
      firmwareVersion,
      hal: identity.provider,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      passed,
      checks: results,
    }
    const reportPath = resolve(args.report ?? join(config.dataDir, 'factory-test', `report-${identity.serial}-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`))
    await mkdir(dirname(reportPath), { recursive: true })
    await writeFile(reportPath, JSON.stringify(report, null, 2) + '\n')
    process.stdout.write(`# ${results.filter((result) => result.ok).length}/${results.length} checks passed; report ${reportPath}\n`)
    return passed ? exitCodes.ok : exitCodes.failure
  } finally {
    await hal.stop()
  }
}

/**
 * Repeats the disk and data-volume checks until `minutes` have passed and reports
 * degradation: any failing round, or the median write throughput of the last third of the
 * rounds falling below burnInThroughputRatioMin of the first third's.
 */
async function burnIn(
  context: Parameters<FactoryCheck['run']>[0],
  minutes: number,
  volumeBytes: number | undefined,
  volumeMegabytesPerSecondMin: number | undefined,
  print: (result: CheckResult) => void,
): Promise<CheckResult[]> {
  const deadlineMs = performance.now() + minutes * 60_000
  const rates: number[] = []
  let failures = 0
  let rounds = 0
  const startedMs = performance.now()
  do {
    rounds += 1
    const results = await runChecks([disksCheck, volumeCheck(volumeBytes, volumeMegabytesPerSecondMin)], context)
    failures += results.filter((result) => !result.ok).length
    const value = results[1]!.value as { writeMegabytesPerSecond?: number } | null
    if (value?.writeMegabytesPerSecond !== undefined) rates.push(value.writeMegabytesPerSecond)
  } while (performance.now() < deadlineMs)
  // Medians of the first and last thirds: one slow round on a busy volume is noise, a
  // sustained drop is degradation.
  const third = Math.max(1, Math.floor(rates.length / 3))
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? 0
  const first = median(rates.slice(0, third))
  const worst = median(rates.slice(-third))
  const degraded = first > 0 && worst < first * burnInThroughputRatioMin
  const result: CheckResult = {
    name: 'burn-in',
    ok: failures === 0 && !degraded,
    message:
      failures > 0
        ? `${failures} failing check(s) over ${rounds} round(s)`
        : degraded
          ? `write throughput degraded from a median ${first} to ${worst} MB/s over ${rounds} round(s)`
          : `${rounds} round(s) clean; median write ${first} MB/s first, ${worst} MB/s last`,
    value: { rounds, failures, writeMegabytesPerSecond: rates },
    limit: { failures: 0, throughputRatioMin: burnInThroughputRatioMin },
    durationMs: Math.round(performance.now() - startedMs),
  }
  print(result)
  return [result]
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`factory-test: ${(error as Error).stack ?? String(error)}\n`)
    process.exit(exitCodes.failure)
  },
)
