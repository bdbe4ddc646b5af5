import t from 'tap'
import { mkdtemp, readFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { systemClock } from '../../../firmware/common/clock.js'
import { loadAdminCredential, initialPasswordFile } from '../../../firmware/api/auth.js'
import { createHttpApi, type HttpApiOptions } from '../../../firmware/api/http-api.js'
import { loadOrCreateHttpsCertificate, type HttpsCertificate } from '../../../firmware/api/tls-certificate.js'
import { basicAuth, fetchAnswer } from '../../helpers/https-client.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const archive = { getMeta: () => undefined, getRaw: () => undefined }

/** An API on 127.0.0.1 with both listeners (any free ports) and the generated certificate. */
async function startApi(t: TestContext, options: Partial<HttpApiOptions> & { unusable?: boolean } = {}) {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-https-api-'))
  const logger = createMemoryLogger()
  const certificate = await loadOrCreateHttpsCertificate({ logger, clock: systemClock }, { dataDir, serial: 'MK650-HTTPS' })
  const credential = await loadAdminCredential({ clock: systemClock }, { dataDir, adminPasswordHash: null })
  const password = (await readFile(join(dataDir, initialPasswordFile), 'utf8')).trim()
  const { unusable, ...rest } = options
  const api = createHttpApi(
    { logger, clock: systemClock, signIn: { firstAdmin: credential }, archive, status: async () => ({ state: 'ok' }) },
    {
      http: { host: '127.0.0.1', port: 0, stopTimeoutMs: 500 },
      https: {
        host: '127.0.0.1',
        port: 0,
        stopTimeoutMs: 500,
        hstsMaxAgeSeconds: 31536000,
        ...(unusable ? { unavailableReason: 'installed certificate unusable (KEY_MISMATCH)' } : { tls: certificate }),
      },
      ...rest,
    },
  )
  await api.start()
  t.teardown(() => api.stop())
  const pinned = { certificatePem: certificate.certificatePem, fingerprint: certificate.fingerprint }
  return { api, logger, certificate, pinned, auth: basicAuth('admin', password) }
}

const url = (scheme: 'http' | 'https', port: number, path: string) => `${scheme}://127.0.0.1:${port}${path}`

t.test('HTTPS serves the API with HSTS; plain HTTP serves loopback clients without it', async (t) => {
  const { api, pinned, auth } = await startApi(t)
  const secure = await fetchAnswer(url('https', api.address('https').port, '/api/v1/status'), { pinned, headers: auth })
  t.equal(secure.status, 200)
  t.same(secure.json, { state: 'ok' })
  t.equal(secure.headers['strict-transport-security'], 'max-age=31536000', 'HSTS on every HTTPS answer')
  const refused = await fetchAnswer(url('https', api.address('https').port, '/api/v1/status'), { pinned })
  t.equal(refused.status, 401, 'HTTPS still asks for credentials')
  t.equal(refused.headers['strict-transport-security'], 'max-age=31536000', 'errors carry HSTS too')

  const local = await fetchAnswer(url('http', api.address().port, '/api/v1/status'), { headers: auth })
  t.equal(local.status, 200, 'a loopback client is served over plain HTTP (local scripts)')
  t.equal(local.headers['strict-transport-security'], undefined, 'no HSTS over plain HTTP')
  t.same(api.listeners(), { http: `127.0.0.1:${api.address().port}`, https: `127.0.0.1:${api.address('https').port}` })

  const other = { ...pinned, fingerprint: '0'.repeat(64) }
  await t.rejects(
    fetchAnswer(url('https', api.address('https').port, '/api/v1/status'), { pinned: other, headers: auth }),
    /not the pinned one/,
    'a client pinning another certificate never sends its request',
  )
})

t.test('a client outside plainNetworks is redirected (308) to HTTPS and nothing is served', async (t) => {
  // Only 127.0.0.1 counts as local: a client bound to 127.0.0.2 stands for a remote one.
  const { api, pinned, auth } = await startApi(t, { plainNetworks: ['127.0.0.1/32', '::1/128'] })
  const plainPort = api.address().port
  const httpsPort = api.address('https').port
  const remote = await fetchAnswer(url('http', plainPort, '/api/v1/status?x=1'), { headers: auth, localAddress: '127.0.0.2' })
  t.equal(remote.status, 308)
  t.equal(remote.headers.location, `https://127.0.0.1:${httpsPort}/api/v1/status?x=1`, 'same host, the HTTPS port, same path and query')
  t.notMatch(remote.body.toString(), /"state"/, 'the redirect carries no API answer')

  const named = await fetchAnswer(url('http', plainPort, '/api/v1/search?q=a'), { headers: { ...auth, host: 'archive.example.com:8080' }, localAddress: '127.0.0.2' })
  t.equal(named.headers.location, `https://archive.example.com:${httpsPort}/api/v1/search?q=a`, 'the host the client asked for')
  const bogus = await fetchAnswer(url('http', plainPort, '/'), { headers: { host: 'evil.example/x?' }, localAddress: '127.0.0.2' })
  t.equal(bogus.headers.location, `https://127.0.0.1:${httpsPort}/`, 'a Host that is not a host name falls back to the configured host')
  const post = await fetchAnswer(url('http', plainPort, '/api/v1/holds'), { method: 'POST', body: '{}', headers: auth, localAddress: '127.0.0.2' })
  t.equal(post.status, 308, 'a POST is redirected too (308 keeps the method)')

  const followed = await fetchAnswer(remote.headers.location!, { pinned, headers: auth, localAddress: '127.0.0.2' })
  t.equal(followed.status, 200, 'following the redirect reaches the API over HTTPS')
  const local = await fetchAnswer(url('http', plainPort, '/api/v1/status'), { headers: auth, localAddress: '127.0.0.1' })
  t.equal(local.status, 200, '127.0.0.1 is still served over plain HTTP')
})

t.test('an unusable certificate keeps HTTPS down (degraded, plain still loopback only) until one is installed', async (t) => {
  const { api, certificate, pinned, auth } = await startApi(t, { plainNetworks: ['127.0.0.1/32'], unusable: true })
  t.match(api.healthcheck(), { ok: false, detail: /https is down: installed certificate unusable \(KEY_MISMATCH\)/ })
  t.same(Object.keys(api.listeners()), ['http'])
  const remote = await fetchAnswer(url('http', api.address().port, '/api/v1/status'), { headers: auth, localAddress: '127.0.0.2' })
  t.equal(remote.status, 503, 'a remote client is not served in plain text because HTTPS is down')
  t.match(remote.json, { error: { code: 'HTTPS_UNAVAILABLE' } })
  const local = await fetchAnswer(url('http', api.address().port, '/api/v1/status'), { headers: auth })
  t.equal(local.status, 200, 'local scripts still work')

  await api.replaceTls(certificate as HttpsCertificate)
  t.match(api.healthcheck(), { ok: true })
  const secure = await fetchAnswer(url('https', api.address('https').port, '/api/v1/status'), { pinned, headers: auth })
  t.equal(secure.status, 200, 'HTTPS comes up with the installed certificate')
  const redirected = await fetchAnswer(url('http', api.address().port, '/api/v1/status'), { headers: auth, localAddress: '127.0.0.2' })
  t.equal(redirected.status, 308, 'and remote plain clients are redirected from then on')
})

t.test('options: a bad plainNetworks entry names its path; no listener at all is refused', async (t) => {
  const logger = createMemoryLogger()
  const credential = await loadAdminCredential({ clock: systemClock }, { dataDir: await mkdtemp(join(tmpdir(), 'mailkeep-https-opt-')), adminPasswordHash: null })
  const deps = { logger, clock: systemClock, signIn: { firstAdmin: credential }, archive, status: async () => ({}) }
  t.throws(() => createHttpApi(deps, { http: { host: '127.0.0.1', port: 0 }, plainNetworks: ['127.0.0.1/33'] }), {
    code: 'INVALID_OPTIONS',
    message: /http\.plainNetworks\[0\]: not a CIDR network/,
  })
  t.throws(() => createHttpApi(deps, {}), { code: 'INVALID_OPTIONS' })
})
