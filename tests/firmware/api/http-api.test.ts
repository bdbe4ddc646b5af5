import t from 'tap'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock, systemClock } from '../../../firmware/common/clock.js'
import { hashPassword } from '../../../firmware/common/password.js'
import { loadAdminCredential, initialPasswordFile, loginFailuresMax } from '../../../firmware/api/auth.js'
import { createHttpApi } from '../../../firmware/api/http-api.js'
import type { MessageMeta } from '../../../firmware/archive/types.js'
import { tempDir } from '../../helpers/service.js'

const raw = Buffer.concat([Buffer.from('Subject: bytes\r\n\r\nline\r\n'), Buffer.from([0, 0xff, 0x80, 0x0d, 0x0a])])
const id = createHash('sha256').update(raw).digest('hex')
const meta = { id, sizeBytes: raw.byteLength, subject: 'bytes' } as unknown as MessageMeta
const archive = { getMeta: (key: string) => (key === id ? meta : undefined), getRaw: (key: string) => (key === id ? new Uint8Array(raw) : undefined) }

async function startApi(credentialOptions: { dataDir: string; adminPasswordHash: string | null }, clock = createManualClock()) {
  const logger = createMemoryLogger()
  const credential = await loadAdminCredential({ clock: systemClock }, credentialOptions)
  const api = createHttpApi(
    { logger, clock, credential, archive, status: async () => ({ state: 'ok' }), routes: new Map([['/api/v1/echo', async ({ url }) => ({ q: url.searchParams.get('q') })]]) },
    { host: '127.0.0.1', port: 0 },
  )
  await api.start()
  const base = `http://127.0.0.1:${api.address().port}`
  return { api, base, logger, credential }
}

const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` })

t.test('first boot writes a random admin password (0600) and the API requires it', async (t) => {
  const dataDir = await tempDir()
  const { api, base, logger } = await startApi({ dataDir, adminPasswordHash: null })
  t.teardown(() => api.stop())
  const path = join(dataDir, initialPasswordFile)
  const password = (await readFile(path, 'utf8')).trim()
  t.ok(password.length >= 20, 'long random password')
  t.equal((await stat(path)).mode & 0o777, 0o600)
  t.equal((await loadAdminCredential({ clock: systemClock }, { dataDir, adminPasswordHash: null })).source, 'initial-file')
  t.equal((await readFile(path, 'utf8')).trim(), password, 'kept across restarts')

  const anonymous = await fetch(`${base}/api/v1/status`)
  t.equal(anonymous.status, 401)
  t.match(anonymous.headers.get('www-authenticate'), /^Basic realm="mailkeep"/)
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', 'wrong') })).status, 401)
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('root', password) })).status, 401)
  const ok = await fetch(`${base}/api/v1/status`, { headers: basic('admin', password) })
  t.equal(ok.status, 200)
  t.same(await ok.json(), { state: 'ok' })
  t.notMatch(JSON.stringify(logger.records), password)
  t.ok(logger.records.some((record) => record.msg === 'login failed'))

  const rawResponse = await fetch(`${base}/api/v1/messages/${id}/raw`, { headers: basic('admin', password) })
  t.equal(rawResponse.status, 200)
  t.equal(rawResponse.headers.get('content-type'), 'message/rfc822')
  t.same(Buffer.from(await rawResponse.arrayBuffer()), raw, 'byte-identical')
  const metaResponse = await fetch(`${base}/api/v1/messages/${id.toUpperCase()}`, { headers: basic('admin', password) })
  t.same(await metaResponse.json(), meta)
  const notFound = await fetch(`${base}/api/v1/messages/${'0'.repeat(64)}`, { headers: basic('admin', password) })
  t.equal(notFound.status, 404)
  t.equal(((await notFound.json()) as { error: { code: string } }).error.code, 'NOT_FOUND')
  t.equal((await fetch(`${base}/api/v1/messages/../../etc/passwd`, { headers: basic('admin', password) })).status, 404)
  t.equal((await fetch(`${base}/api/v1/messages/xyz/raw`, { headers: basic('admin', password) })).status, 400)
  t.equal((await fetch(`${base}/api/v1/status`, { method: 'DELETE', headers: basic('admin', password) })).status, 405)
  t.same(await (await fetch(`${base}/api/v1/echo?q=a%20b`, { headers: basic('admin', password) })).json(), { q: 'a b' })
})

t.test('a configured scrypt hash wins and failed logins are rate limited per address', async (t) => {
  const dataDir = await tempDir()
  const clock = createManualClock()
  const { api, base, credential } = await startApi({ dataDir, adminPasswordHash: await hashPassword('configured-pass') }, clock)
  t.teardown(() => api.stop())
  t.equal(credential.source, 'config')
  await t.rejects(readFile(join(dataDir, initialPasswordFile)), 'no initial password file when one is configured')
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', 'configured-pass') })).status, 200)
  for (let attempt = 0; attempt < loginFailuresMax; attempt += 1) {
    t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', `guess-${attempt}`) })).status, 401)
  }
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', 'configured-pass') })).status, 429, 'locked out even with the right password')
  clock.advance(61_000)
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', 'configured-pass') })).status, 200)
  await api.stop()
  await api.stop()
  t.equal(api.healthcheck().ok, false)
})
