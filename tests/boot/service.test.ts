import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { stat, writeFile, readFile, copyFile, mkdir, access } from 'node:fs/promises'
import { join } from 'node:path'
import { hashPassword } from '../../firmware/common/password.js'
import { request as httpRequest } from 'node:http'
import { tempDir, writeConfig, startService, runCli, cliJson, portOf, bunPath, mainPath, repoRoot, cliPath } from '../helpers/service.js'
import { waitUntil } from '../helpers/wait.js'

const technicianPassword = 'field-technician-pass'

t.test('boots on embedded defaults and answers show status', async (t) => {
  // No config at all: the contract's `npm start`, in a fresh working directory.
  const cwd = await tempDir()
  const child = spawn(bunPath, [mainPath], { cwd, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, MAILKEEP_CONFIG: '' } })
  const startedMs = Date.now()
  let out = ''
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      out += chunk.toString()
      if (/"msg":"ready"/.test(out)) resolve()
    })
    child.on('exit', (code) => reject(new Error(`exited ${code}: ${out}`)))
  })
  const bootMs = Date.now() - startedMs
  // How long boot takes is a figure for the bench, not a pass/fail of a loaded test machine.
  t.comment(`ready after ${bootMs} ms`)
  // The CLI finds the socket through the same (default) config: run it in the same cwd.
  const result = await runCli(['show', 'status', '--json'], { cwd, env: { MAILKEEP_CONFIG: '' } })
  t.equal(result.code, 0, result.stderr)
  const status = JSON.parse(result.stdout) as Record<string, unknown>
  t.equal(status.model, 650)
  t.match(status.serial, /\S+/)
  t.equal(status.firmwareVersion, JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')).version)
  t.type(status.uptimeSeconds, 'number')
  t.equal(status.dataDir, join(cwd, 'var'))
  t.match(status.listeners, { smtp: '127.0.0.1:2525', http: '127.0.0.1:8080', https: '127.0.0.1:8443' }, 'the contract ports of npm start')
  t.equal((await stat(join(cwd, 'var', 'run', 'mailkeep.sock'))).mode & 0o777, 0o600)
  child.kill('SIGTERM')
  const code = await new Promise((resolve) => child.on('exit', resolve))
  t.equal(code, 0, 'clean stop on SIGTERM')
  await t.rejects(access(join(cwd, 'var', 'run', 'mailkeep.sock')), 'socket removed on stop')
})

t.test('a bad config is refused at boot (78) and by config check, with every error', async (t) => {
  const dir = await tempDir()
  const path = join(dir, 'bad.json')
  await writeFile(path, JSON.stringify({ smtp: { port: 'twenty-five' }, hal: { provider: 'qemu' }, colour: 'blue' }))
  const check = await runCli(['config', 'check', path])
  t.equal(check.code, 78)
  t.same(check.stdout.trim().split('\n').sort(), [
    'colour: unknown key (got "blue")',
    'hal.provider: must be one of ["sim","linux"] (got "qemu")',
    'smtp.port: must be integer (got "twenty-five")',
  ])
  const boot = spawnSync(bunPath, [mainPath, '--config', path], { encoding: 'utf8', timeout: 20000 })
  t.equal(boot.status, 78)
  t.match(boot.stderr, /configuration error, not starting/)
  t.match(boot.stderr, /hal\.provider: must be one of/)
  t.notMatch(boot.stdout, /ready/)
  const good = join(dir, 'good.json')
  await writeFile(good, JSON.stringify({ smtp: { port: 2600 } }))
  const ok = await runCli(['config', 'check', good])
  t.equal(ok.code, 0)
  t.equal((await runCli(['config', 'check'])).code, 2, 'usage error without a file')
})

t.test('a data dir that cannot be written is fatal', async (t) => {
  const dir = await tempDir()
  await writeFile(join(dir, 'a-file'), 'x')
  const path = await writeConfig(dir, { dataDir: join(dir, 'a-file', 'data') })
  const boot = spawnSync(bunPath, [mainPath, '--config', path], { encoding: 'utf8', timeout: 20000 })
  t.equal(boot.status, 1)
  t.match(boot.stderr, /data dir .* is not writable/)
  t.notMatch(boot.stdout, /"msg":"ready"/)
})

t.test('show commands, sim faults and degraded state without a restart', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) }, identity: { serial: 'MK-TEST-1' } })
  const service = await startService(config)
  t.teardown(() => service.stop())

  const version = await cliJson(config, ['show', 'version'])
  t.same(version.json, { firmwareVersion: JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')).version, model: 650, serial: 'MK-TEST-1', hal: 'sim' })
  const disks = (await cliJson(config, ['show', 'disks'])).json as { health: string }[]
  t.equal(disks.length, 4, 'model 650 has 4 disks')
  const nics = (await cliJson(config, ['show', 'nics'])).json as unknown[]
  t.equal(nics.length, 2)
  const raidBefore = (await cliJson(config, ['show', 'raid'])).json as { arrays: { state: string }[] }
  t.equal(raidBefore.arrays[0]!.state, 'clean')
  t.equal(((await cliJson(config, ['show', 'status'])).json as { state: string }).state, 'ok')

  const human = await runCli(['--config', config, 'show', 'raid'])
  t.match(human.stdout, /md\d+ raid5 clean/)

  const refused = await runCli(['--config', config, 'sim', 'fail-disk', '1'])
  t.equal(refused.code, 1)
  t.match(refused.stderr, /technician password/)
  const wrong = await runCli(['--config', config, 'sim', 'fail-disk', '1', '--password-stdin'], { input: 'not-it\n' })
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, /wrong technician password/)

  const failed = await runCli(['--config', config, 'sim', 'fail-disk', '1', '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal(failed.code, 0, failed.stderr)
  const raid = (await cliJson(config, ['show', 'raid'])).json as { arrays: { state: string; members: { state: string }[] }[] }
  t.equal(raid.arrays[0]!.state, 'degraded')
  t.ok(raid.arrays[0]!.members.some((member) => member.state === 'faulty'))
  const status = (await cliJson(config, ['show', 'status'])).json as { state: string; reasons: string[] }
  t.equal(status.state, 'degraded')
  t.ok(
    status.reasons.some((reason) => /raid md\d+ degraded/.test(reason)),
    status.reasons.join('; '),
  )

  const link = await runCli(['--config', config, 'sim', 'link', 'eth1', 'down', '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal(link.code, 0)
  t.ok(((await cliJson(config, ['show', 'status'])).json as { reasons: string[] }).reasons.includes('nic eth1 link down'))

  const usage = await runCli(['--config', config, 'sim', 'link', 'eth1', 'sideways'])
  t.equal(usage.code, 2)
  t.equal((await runCli(['--config', config, 'frobnicate'])).code, 2)

  const shown = await cliJson(config, ['show', 'config'])
  t.equal((shown.json as { technician: { passwordHash: string } }).technician.passwordHash, '[redacted]')
  const logs = service.lines.join('\n')
  t.notMatch(logs, technicianPassword, 'password never logged')
  t.notMatch(logs, /scrypt\$/, 'hash never logged')

  const second = spawnSync(bunPath, [mainPath, '--config', config], { encoding: 'utf8', timeout: 20000 })
  t.equal(second.status, 1, 'a second service on the same data dir is refused')
  t.match(second.stdout + second.stderr, /another mailkeep service/)
  t.equal(await service.stop(), 0)
})

t.test('CLI says clearly when the service is not running', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, {})
  const result = await runCli(['--config', config, 'show', 'status'])
  t.equal(result.code, 1)
  t.match(result.stderr, /mailkeep is not running/)
  const json = await cliJson(config, ['show', 'status'])
  t.same((json.json as { error: { code: string } }).error.code, 'NOT_RUNNING')
})

t.test('HTTP login throttling: audited with counts, never the technician locked out', async (t) => {
  const dir = await tempDir()
  const loginThrottle = { failuresBeforeDelay: 2, delayMsMin: 100, delayMsMax: 400, forgetAfterMs: 1_000 }
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) }, http: { port: 0, loginThrottle } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const base = `http://127.0.0.1:${portOf(service, 'http')}`
  const status = (localAddress: string, user: string, typed: string) =>
    new Promise<number>((resolve, reject) => {
      const authorization = `Basic ${Buffer.from(`${user}:${typed}`).toString('base64')}`
      const request = httpRequest(`${base}/api/v1/status`, { localAddress, agent: false, headers: { authorization } }, (response) => {
        response.resume()
        response.on('end', () => resolve(response.statusCode ?? 0))
      })
      request.on('error', reject)
      request.end()
    })
  for (let attempt = 0; attempt < 6; attempt += 1) t.equal(await status('127.0.0.2', 'admin', `http-guess-${attempt}`), 401)

  // The control socket and its technician login know nothing of HTTP failures.
  const technician = await runCli(['--config', config, 'sim', 'fail-disk', '1', '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal(technician.code, 0, technician.stderr)
  t.equal(await status('127.0.0.1', 'admin', password), 200, 'the admin from another address')
  await new Promise((resolve) => setTimeout(resolve, loginThrottle.forgetAfterMs + 100))
  t.equal(await status('127.0.0.2', 'admin', password), 200, 'the admin from the throttled address, once quiet')

  const shown = (await cliJson(config, ['audit', 'show', '--limit', '50'])).json as { actor: string; action: string; details: Record<string, unknown> }[]
  const logins = shown.filter((entry) => entry.action.startsWith('login.'))
  t.same(
    logins.map((entry) => entry.action),
    ['login.failed', 'login.throttled', 'login.throttle-ended'],
    'three entries for six failures',
  )
  t.match(logins[1], { actor: 'http@127.0.0.2', details: { via: 'http', remoteAddress: '127.0.0.2', user: 'admin', failures: 2, delayMs: 100 } })
  t.match(logins[2]!.details, { reason: 'quiet', failures: 6, delayedAttempts: 4, successes: 0 })
  t.notMatch(JSON.stringify(shown), /http-guess/, 'no password in the audit log')
  t.notMatch(JSON.stringify(shown), password)
  t.notMatch(service.lines.join('\n'), /http-guess/, 'nor in the log')
  t.equal((await cliJson(config, ['audit', 'verify'])).code, 0)
  t.equal(await service.stop(), 0)
})

/** Drives `mailkeep console` through a real pty (util-linux `script`), as a serial line would. */
function startConsole(config: string) {
  const command = `${process.execPath} ${cliPath} --config ${config} console`
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, TERM: 'dumb' } })
  let screen = ''
  // VT100 cursor sequences from readline's redraws are dropped: the test reads the text.
  child.stdout.on('data', (chunk) => (screen += chunk.toString().replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')))
  /** Waits until `pattern` appears in the screen after offset `from`. */
  const waitForScreen = (pattern: RegExp, from: number): Promise<true> =>
    waitUntil(() => pattern.test(screen.slice(from)), { what: `the console to show ${pattern}`, intervalMs: 50, observe: () => screen })
  return {
    child,
    screen: () => screen,
    /** Types text and waits until `pattern` appears in what came after it. */
    async type(text: string, pattern: RegExp) {
      const from = screen.length
      child.stdin.write(text)
      await waitForScreen(pattern, from)
      return screen.slice(from)
    },
    waitForScreen,
  }
}

t.test('serial console over a pty: help, ?, tab completion, enable, commands', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) }, identity: { serial: 'MK-CONSOLE' } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const console = startConsole(config)
  t.teardown(() => console.child.kill())
  await console.waitForScreen(/mailkeep 650 MK-CONSOLE> /, 0)

  const help = await console.type('help\r', /> $/)
  t.match(help, /show status\s+system state/)
  t.match(help, /sim fail-disk <index>/)

  const question = await console.type('show ?\r', /> $/)
  t.match(question, /show raid/)
  t.notMatch(question, /sim fail-disk/, '? lists only what completes the partial command')

  const completed = await console.type('show sta\t', /show status $/)
  t.match(completed, /status/)
  const status = await console.type('\r', /> $/)
  t.match(status, /state\s+ok/)

  const locked = await console.type('sim fail-disk 0\r', /> $/)
  t.match(locked, /AUTH_REQUIRED.*type enable/)
  await console.type('enable\r', /technician password:/)
  const unlocked = await console.type(technicianPassword + '\r', /> $/)
  t.match(unlocked, /technician commands unlocked/)
  t.notMatch(console.screen(), technicianPassword, 'the password is not echoed')
  const failed = await console.type('sim fail-disk 0\r', /> $/)
  t.match(failed, /disk 0 failed/)
  const raid = await console.type('show raid --json\r', /> $/)
  t.match(raid, /"state": "degraded"/)
  const unknown = await console.type('reboot now\r', /> $/)
  t.match(unknown, /unknown command/)

  // The console survives the service going away and says so.
  await service.stop()
  const down = await console.type('show status\r', /> $/)
  t.match(down, /not running/)
  console.child.stdin.write('exit\r')
  const code = await new Promise((resolve) => console.child.on('exit', resolve))
  t.equal(code, 0)
})

t.test('systemd units pass systemd-analyze verify', async (t) => {
  const which = spawnSync('which', ['systemd-analyze'])
  t.equal(which.status, 0, 'systemd-analyze is installed (.ci/run installs systemd)')
  if (which.status !== 0) return
  const dir = await tempDir()
  // verify checks that ExecStart binaries exist: point the image paths at this checkout.
  for (const unit of ['mailkeep.service', 'mailkeep-console@.service']) {
    const text = await readFile(join(repoRoot, 'boot', 'systemd', unit), 'utf8')
    await writeFile(join(dir, unit), text.replaceAll('/opt/mailkeep/node_modules/.bin/bun', bunPath))
  }
  await copyFile(join(dir, 'mailkeep-console@.service'), join(dir, 'mailkeep-console@ttyS0.service'))
  const verify = spawnSync('systemd-analyze', ['verify', join(dir, 'mailkeep.service'), join(dir, 'mailkeep-console@ttyS0.service')], { encoding: 'utf8' })
  t.equal(verify.status, 0, verify.stderr)
  const service = await readFile(join(repoRoot, 'boot', 'systemd', 'mailkeep.service'), 'utf8')
  t.match(service, /RestartPreventExitStatus=78/)
  t.notMatch(service, /MemoryDenyWriteExecute=yes/)
  // The check can fail: a broken unit is rejected.
  await writeFile(join(dir, 'broken.service'), '[Service]\nExecStart=relative/path\nRestart=sometimes\n')
  t.not(spawnSync('systemd-analyze', ['verify', join(dir, 'broken.service')]).status, 0)
})

t.test('build produces a bootable image with a manifest', async (t) => {
  const build = spawnSync(bunPath, [join(repoRoot, 'build.ts')], { cwd: repoRoot, encoding: 'utf8', timeout: 120000 })
  t.equal(build.status, 0, build.stderr)
  const manifest = JSON.parse(await readFile(join(repoRoot, 'dist', 'manifest.json'), 'utf8'))
  t.equal(manifest.firmwareVersion, JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')).version)
  t.same(manifest.mirroringModels, [450, 650, 850, 950, 1050])
  const { createHash } = await import('node:crypto')
  for (const [file, hash] of Object.entries(manifest.files as Record<string, string>)) {
    t.equal(
      createHash('sha256')
        .update(await readFile(join(repoRoot, 'dist', file)))
        .digest('hex'),
      hash,
      `hash of ${file}`,
    )
  }
  const dir = await tempDir()
  await mkdir(join(dir, 'data'), { recursive: true })
  const config = await writeConfig(dir, {})
  const child = spawn(join(repoRoot, 'dist', 'start.sh'), ['--config', config], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (chunk) => {
      out += chunk.toString()
      if (/"msg":"ready"/.test(out)) resolve()
    })
    child.on('exit', (code) => reject(new Error(`dist exited ${code}: ${out}`)))
  })
  child.kill('SIGTERM')
  t.equal(await new Promise((resolve) => child.on('exit', resolve)), 0)
})
