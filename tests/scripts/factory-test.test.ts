import t from 'tap'
import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Parser, type Result } from 'tap-parser'
import { tempDir, bunPath, repoRoot } from '../helpers/service.js'

const script = join(repoRoot, 'scripts', 'factory-test.ts')

/** Runs the factory test with a config; parses its stdout with tap's own parser. */
async function factoryTest(config: Record<string, unknown>, volumeMegabytesPerSecondMin = '0.5', extraArgs: string[] = []) {
  const dir = await tempDir('mailkeep-factory-')
  const configPath = join(dir, 'config.json')
  const reportPath = join(dir, 'report.json')
  await (await import('node:fs/promises')).writeFile(configPath, JSON.stringify({ dataDir: join(dir, 'data'), ...config }))
  const child = spawn(bunPath, [script, '--config', configPath, '--report', reportPath, '--volume-bytes', '4000000', '--volume-mbps-min', volumeMegabytesPerSecondMin, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const parser = new Parser()
  const asserts: Result[] = []
  parser.on('assert', (result: Result) => asserts.push(result))
  const completed = new Promise<{ ok: boolean; count: number }>((resolve) => parser.on('complete', resolve))
  let stderr = ''
  child.stdout.pipe(parser)
  child.stderr.on('data', (chunk) => (stderr += chunk.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
  const summary = await completed
  const report = JSON.parse(await readFile(reportPath, 'utf8')) as {
    passed: boolean
    serial: string
    model: number
    checks: { name: string; ok: boolean; message: string; value: unknown; limit: unknown; durationMs: number }[]
  }
  return { code, asserts, summary, report, stderr }
}

const failing = (asserts: Result[]) => asserts.filter((result) => !result.ok).map((result) => result.name.split(':')[0])
const messageOf = (asserts: Result[], check: string) => asserts.find((result) => result.name.startsWith(check + ':'))!.name

t.test('passes end to end on a healthy simulated 650', async (t) => {
  const run = await factoryTest({})
  t.equal(run.code, 0, run.stderr)
  t.equal(run.summary.ok, true)
  t.same(
    run.asserts.map((result) => result.name.split(':')[0]),
    ['identity', 'disks', 'raid', 'nics', 'data-volume', 'firmware-loopback', 'mirror-loopback'],
  )
  t.equal(run.report.passed, true)
  t.equal(run.report.model, 650)
  t.match(run.report.serial, /^MK650-/)
  for (const check of run.report.checks) {
    t.ok(check.limit !== undefined && check.value !== undefined && check.durationMs >= 0, `${check.name} reports value, limit and duration`)
  }
  const volume = run.report.checks.find((check) => check.name === 'data-volume')!.value as { verified: boolean; writeMegabytesPerSecond: number }
  t.equal(volume.verified, true)
  t.ok(volume.writeMegabytesPerSecond > 0)
})

const faults: { name: string; config: Record<string, unknown>; fails: string[]; message: Record<string, RegExp> }[] = [
  {
    name: 'failed disk',
    config: { hal: { sim: { faults: { failedDisks: [2] } } } },
    fails: ['disks', 'raid'],
    message: { disks: /\/dev\/sdc health failed/, raid: /md0 degraded: \/dev\/sdc faulty/ },
  },
  {
    name: 'degraded array rebuilding',
    config: { hal: { sim: { faults: { failedDisks: [1], replacedDisks: [1] } } } },
    fails: ['raid'],
    message: { raid: /md0 rebuilding 0%: \/dev\/sdb rebuilding/ },
  },
  { name: 'missing NIC', config: { hal: { sim: { faults: { nicCount: 1 } } } }, fails: ['nics'], message: { nics: /1 NIC\(s\) found, model 650 has 2/ } },
  { name: 'link down', config: { hal: { sim: { faults: { linksDown: ['eth0'] } } } }, fails: ['nics'], message: { nics: /eth0 link down/ } },
  { name: 'wrong disk count', config: { hal: { sim: { faults: { diskCount: 3 } } } }, fails: ['disks', 'raid'], message: { disks: /3 disk\(s\) found, model 650 has 4/ } },
  { name: 'unknown model', config: { identity: { model: 999 } }, fails: ['identity', 'disks', 'raid', 'nics'], message: { identity: /model 999 is not a known model/ } },
]

for (const fault of faults) {
  t.test(`fault: ${fault.name}`, async (t) => {
    const run = await factoryTest(fault.config)
    t.equal(run.code, 1, 'exit 1 when a check fails')
    t.equal(run.summary.ok, false)
    t.same(failing(run.asserts), fault.fails, 'exactly the expected checks fail')
    for (const [check, pattern] of Object.entries(fault.message)) t.match(messageOf(run.asserts, check), pattern)
    t.equal(run.report.passed, false)
    t.same(
      run.report.checks.filter((check) => !check.ok).map((check) => check.name),
      fault.fails,
    )
  })
}

t.test('a data volume slower than the limit fails the volume check alone', async (t) => {
  const run = await factoryTest({}, '1000000')
  t.equal(run.code, 1)
  t.same(failing(run.asserts), ['data-volume'])
  t.match(messageOf(run.asserts, 'data-volume'), /write [\d.]+ MB\/s below 1000000/)
})

t.test('a model that does not mirror passes without the mirror loopback', async (t) => {
  const run = await factoryTest({ identity: { model: 350 } })
  t.equal(run.code, 0, run.stderr)
  t.match(messageOf(run.asserts, 'mirror-loopback'), /model 350 does not mirror: not applicable/)
  const loopback = run.report.checks.find((check) => check.name === 'mirror-loopback')!
  t.same(loopback.limit, { mirroringAllowed: false })
})

t.test('burn-in repeats the disk and volume checks and reports rounds', async (t) => {
  const run = await factoryTest({}, '0.5', ['--burn-in', '0.03'])
  const burnIn = run.report.checks.find((check) => check.name === 'burn-in')
  t.ok(burnIn, 'a burn-in result is reported')
  const value = burnIn!.value as { rounds: number; failures: number; writeMegabytesPerSecond: number[] }
  t.ok(value.rounds >= 2, `${value.rounds} rounds in 1.8 s`)
  t.equal(value.failures, 0)
  t.equal(value.writeMegabytesPerSecond.length, value.rounds)
  t.same(burnIn!.limit, { failures: 0, throughputRatioMin: 0.7 })
})

t.test('burn-in reports failing rounds when a fault is present', async (t) => {
  const run = await factoryTest({ hal: { sim: { faults: { failedDisks: [0] } } } }, '0.5', ['--burn-in', '0.02'])
  const burnIn = run.report.checks.find((check) => check.name === 'burn-in')!
  t.equal(burnIn.ok, false)
  t.match(burnIn.message, /failing check\(s\) over \d+ round\(s\)/)
})
