import t from 'tap'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { validateConfig, loadConfig, configPathFrom } from '../../config/load.js'
import { ConfigError, formatProblem } from '../../config/errors.js'
import { modelProfile, knownModels } from '../../config/models.js'

t.test('embedded defaults follow the contract', async (t) => {
  const config = validateConfig({}, '/srv/work')
  t.equal(config.dataDir, '/srv/work/var')
  t.equal(config.hal.provider, 'sim')
  t.equal(config.smtp.host, '127.0.0.1')
  t.equal(config.smtp.port, 2525)
  t.equal(config.http.port, 8080)
  t.equal(config.mirror.port, 9443)
  t.same(config.smtp.trustedNetworks, ['127.0.0.0/8'])
  t.equal(config.control.socketPath, '/srv/work/var/run/mailkeep.sock')
  t.ok(Object.isFrozen(config.smtp), 'slices are frozen')
  t.throws(() => {
    ;(config.smtp as { port: number }).port = 1
  })
})

t.test('a partial file is merged over defaults', async (t) => {
  const config = validateConfig({ smtp: { port: 0 }, dataDir: '/data' })
  t.equal(config.smtp.port, 0)
  t.equal(config.smtp.host, '127.0.0.1')
  t.equal(config.dataDir, '/data')
})

t.test('every error is reported with path, reason and value', async (t) => {
  const error = t.throws(() => validateConfig({ smtp: { port: 70000, bogus: true }, hal: { provider: 'vmware' }, identity: { serial: 'bad serial!' } })) as ConfigError
  t.type(error, ConfigError)
  const lines = error.problems.map(formatProblem)
  t.same(lines.sort(), [
    'hal.provider: must be one of ["sim","linux"] (got "vmware")',
    'identity.serial: must match pattern "^[A-Za-z0-9-]{1,64}$" (got "bad serial!")',
    'smtp.bogus: unknown key (got true)',
    'smtp.port: must be <= 65535 (got 70000)',
  ])
})

t.test('secrets are never echoed in errors', async (t) => {
  const secret = 'short-secret'
  const error = t.throws(() => validateConfig({ mirror: { sharedSecret: secret } })) as ConfigError
  const text = error.problems.map(formatProblem).join('\n')
  t.match(text, /mirror\.sharedSecret: must NOT have fewer than 20 characters/)
  t.notMatch(text, secret)
  t.notMatch(JSON.stringify(error), secret)
})

t.test('journal sources need unique names', async (t) => {
  const source = { name: 'j1', protocol: 'imap', host: 'h', user: 'u', password: 'p' }
  const error = t.throws(() => validateConfig({ journal: { sources: [source, source] } })) as ConfigError
  t.same(
    error.problems.map((p) => p.path),
    ['journal.sources.1.name'],
  )
  const ok = validateConfig({ journal: { sources: [source] } })
  t.equal(ok.journal.sources[0]!.afterArchive, 'delete', 'item defaults are filled')
})

t.test('files: missing, not JSON, not an object', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-config-'))
  await t.rejects(loadConfig(join(dir, 'absent.json')), { code: 'CONFIG_INVALID' })
  await writeFile(join(dir, 'bad.json'), '{ nope')
  const notJson = await loadConfig(join(dir, 'bad.json')).catch((e: ConfigError) => e)
  t.match(formatProblem((notJson as ConfigError).problems[0]!), /not valid JSON/)
  await writeFile(join(dir, 'array.json'), '[]')
  await t.rejects(loadConfig(join(dir, 'array.json')), ConfigError)
  await writeFile(join(dir, 'good.json'), JSON.stringify({ http: { port: 0 } }))
  t.equal((await loadConfig(join(dir, 'good.json'))).http.port, 0)
})

t.test('config path from argv or environment', async (t) => {
  t.equal(configPathFrom(['--config', 'a.json'], {}), 'a.json')
  t.equal(configPathFrom(['--config=b.json'], { MAILKEEP_CONFIG: 'c.json' }), 'b.json')
  t.equal(configPathFrom([], { MAILKEEP_CONFIG: 'c.json' }), 'c.json')
  t.equal(configPathFrom([], {}), undefined)
})

t.test('model profiles', async (t) => {
  t.same(knownModels(), [150, 350, 450, 650, 850, 950, 1050])
  for (const model of knownModels()) {
    const profile = modelProfile(model)!
    t.equal(profile.mirroringAllowed, model >= 450, `mirroring for ${model}`)
    t.ok(profile.diskCount >= 1 && profile.nicCount >= 1)
  }
  t.equal(modelProfile(999), undefined)
})
