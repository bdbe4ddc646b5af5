import t from 'tap'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock, systemClock } from '../../../firmware/common/clock.js'
import { hashPassword } from '../../../firmware/common/password.js'
import { loadAdminCredential, initialPasswordFile, type AdminCredential } from '../../../firmware/api/auth.js'
import { createHttpApi } from '../../../firmware/api/http-api.js'
import type { LoginThrottleEvent } from '../../../firmware/api/login-throttle.js'
import { request as httpRequest } from 'node:http'
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
    {
      logger,
      clock,
      signIn: { firstAdmin: credential },
      archive,
      status: async () => ({ state: 'ok' }),
      routes: [{ method: 'GET', pattern: /^\/api\/v1\/echo$/, permission: 'mail.search', handle: ({ url }) => ({ q: url.searchParams.get('q') }) }],
    },
    { http: { host: '127.0.0.1', port: 0 } },
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

t.test('a configured scrypt hash wins over the initial password file', async (t) => {
  const dataDir = await tempDir()
  const { api, base, credential } = await startApi({ dataDir, adminPasswordHash: await hashPassword('configured-pass') })
  t.teardown(() => api.stop())
  t.equal(credential.source, 'config')
  await t.rejects(readFile(join(dataDir, initialPasswordFile)), 'no initial password file when one is configured')
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', 'configured-pass') })).status, 200)
  t.equal((await fetch(`${base}/api/v1/status`, { headers: basic('admin', 'guess') })).status, 401)
  await api.stop()
  await api.stop()
  t.equal(api.healthcheck().ok, false)
})

/** Small delays so the timings are visible and the test is quick; the rules are the defaults'. */
const throttleOptions = { failuresBeforeDelay: 3, delayMsMin: 200, delayMsMax: 1_600, forgetAfterMs: 60_000, pairsMax: 1_000 }

/**
 * One GET from a chosen loopback address (127.0.0.2… are distinct clients to the server):
 * its status, how long it took, when it started and ended (performance.now()), in ms.
 */
function getFrom(base: string, localAddress: string, user: string, password: string): Promise<{ status: number; ms: number; startedMs: number; endMs: number }> {
  const startedMs = performance.now()
  return new Promise((resolve, reject) => {
    const request = httpRequest(`${base}/api/v1/status`, { localAddress, agent: false, headers: basic(user, password) }, (response) => {
      response.resume()
      response.on('end', () => resolve({ status: response.statusCode ?? 0, ms: performance.now() - startedMs, startedMs, endMs: performance.now() }))
    })
    request.on('error', reject)
    request.end()
  })
}

/** An API with the small throttle delays; `wrap` may stand in front of its credential. */
async function startThrottledApi(wrap = (credential: AdminCredential) => credential) {
  const dataDir = await tempDir()
  const logger = createMemoryLogger()
  const events: LoginThrottleEvent[] = []
  const credential = wrap(await loadAdminCredential({ clock: systemClock }, { dataDir, adminPasswordHash: null }))
  const password = (await readFile(join(dataDir, initialPasswordFile), 'utf8')).trim()
  const api = createHttpApi(
    { logger, clock: systemClock, signIn: { firstAdmin: credential }, archive, status: async () => ({ state: 'ok' }), onLoginEvent: (event) => events.push(event) },
    { http: { host: '127.0.0.1', port: 0 }, loginThrottle: throttleOptions },
  )
  await api.start()
  return { api, base: `http://127.0.0.1:${api.address().port}`, password, logger, events }
}

t.test('failed logins: the delay grows and is capped; other addresses and users are never touched', async (t) => {
  const { api, base, password, logger, events } = await startThrottledApi()
  t.teardown(() => api.stop())
  const guesses: Awaited<ReturnType<typeof getFrom>>[] = []
  for (let attempt = 0; attempt < 8; attempt += 1) guesses.push(await getFrom(base, '127.0.0.2', 'admin', `guess-${attempt}`))
  t.same(
    guesses.map((guess) => guess.status),
    [401, 401, 401, 401, 401, 401, 401, 401],
    'wrong passwords are answered 401, never 429',
  )
  const expected = [0, 0, 0, 200, 400, 800, 1_600, 1_600]
  guesses.forEach((guess, attempt) => {
    // The delay runs from the previous failure, recorded after the previous attempt started
    // (measuring from its answer would depend on when this busy event loop saw that answer).
    const sincePreviousMs = attempt === 0 ? guess.ms : guess.endMs - guesses[attempt - 1]!.startedMs
    t.ok(sincePreviousMs >= expected[attempt]!, `attempt ${attempt + 1} answered ${Math.round(sincePreviousMs)} ms after the previous one started (delay ${expected[attempt]})`)
    t.ok(guess.ms < expected[attempt]! + 300, `attempt ${attempt + 1} waited no more than its delay (${Math.round(guess.ms)} ms)`)
  })

  // 127.0.0.2 is throttled now: the right password from another address is answered at once,
  // also while a guess from 127.0.0.2 is being held.
  const held = getFrom(base, '127.0.0.2', 'admin', 'guess-held')
  const elsewhere = await getFrom(base, '127.0.0.1', 'admin', password)
  t.equal(elsewhere.status, 200, 'the correct password from another address')
  // 127.0.0.2's pair is at its 1,600 ms cap: anything far below that was not delayed.
  t.ok(elsewhere.ms < 400, `without a delay (${Math.round(elsewhere.ms)} ms)`)
  t.same((await held).status, 401)

  // One user's failures never touch another user: an unknown user name fails from 127.0.0.3
  // until throttled, then admin from 127.0.0.3 is checked at once, wrong and right.
  let lastOperator = await getFrom(base, '127.0.0.3', 'operator', 'guess-0')
  for (let attempt = 1; attempt < 5; attempt += 1) lastOperator = await getFrom(base, '127.0.0.3', 'operator', `guess-${attempt}`)
  const operatorAgain = await getFrom(base, '127.0.0.3', 'operator', 'guess-again')
  // Measured as above, from the previous attempt's start: the delay runs from its failure.
  const operatorSinceMs = operatorAgain.endMs - lastOperator.startedMs
  t.ok(operatorSinceMs >= 800, `the operator pair is throttled (${Math.round(operatorSinceMs)} ms after the previous attempt started)`)
  t.ok(operatorAgain.ms >= 400, `and this attempt was held (${Math.round(operatorAgain.ms)} ms)`)
  const adminWrong = await getFrom(base, '127.0.0.3', 'admin', 'typo')
  t.ok(adminWrong.ms < 400, `admin from the same address is not delayed (${Math.round(adminWrong.ms)} ms)`)
  const adminRight = await getFrom(base, '127.0.0.3', 'admin', password)
  t.equal(adminRight.status, 200)
  t.ok(adminRight.ms < 400, `the correct password for admin is accepted at once (${Math.round(adminRight.ms)} ms)`)

  // Audit events: each free failure, one when throttling starts, no event per later failure.
  const forAdmin2 = events.filter((event) => 'address' in event && event.address === '127.0.0.2')
  t.same(
    forAdmin2.map((event) => event.kind),
    ['failed', 'failed', 'throttled'],
  )
  t.match(forAdmin2[2], { user: 'admin', failures: 3, delayMs: 200 })
  t.match(api.healthcheck().detail, /2 login pair\(s\) throttled/)
  await api.stop()
  const ended = events.filter((event) => event.kind === 'throttle-ended')
  t.equal(ended.length, 2, 'a summary for each throttled pair when the service stops')
  t.match(
    ended.find((event) => event.address === '127.0.0.2'),
    { user: 'admin', reason: 'stopped', failures: 9, delayedAttempts: 6, successes: 0 },
  )
  t.match(
    ended.find((event) => event.address === '127.0.0.3'),
    { user: 'operator', failures: 6 },
  )
  const written = JSON.stringify([events, logger.records])
  t.notMatch(written, /guess-|typo/, 'no wrong password in the events or the log')
  t.notMatch(written, password, 'no right password either')
})

t.test("an attacker on the admin's own address and user name cannot keep the admin out", async (t) => {
  const { api, base, password, events } = await startThrottledApi()
  t.teardown(() => api.stop())
  for (let attempt = 0; attempt < 7; attempt += 1) await getFrom(base, '127.0.0.4', 'admin', `guess-${attempt}`)
  // Four connections keep guessing as admin from 127.0.0.4 while the admin logs in from there.
  let attacking = true
  const statuses: number[] = []
  const attackers = Array.from({ length: 4 }, async (_, connection) => {
    for (let attempt = 0; attacking; attempt += 1) statuses.push((await getFrom(base, '127.0.0.4', 'admin', `guess-${connection}-${attempt}`)).status)
  })
  await new Promise((resolve) => setTimeout(resolve, 300))
  const admin = await getFrom(base, '127.0.0.4', 'admin', password)
  attacking = false
  t.equal(admin.status, 200, 'the correct password is accepted')
  t.ok(admin.ms <= throttleOptions.delayMsMax + 300, `within the delay cap (${Math.round(admin.ms)} ms)`)
  await Promise.all(attackers)
  t.ok(statuses.length >= 4)
  t.same([...new Set(statuses)], [401], 'the guesses were answered 401, after their delay')
  t.equal(events.filter((event) => event.kind === 'throttled').length, 1, 'one audit event for the pair, however many guesses')

  // A client that leaves while held is not checked; stop() answers held attempts at once.
  const abandoned = httpRequest(`${base}/api/v1/status`, { localAddress: '127.0.0.4', agent: false, headers: basic('admin', 'left') })
  abandoned.on('error', () => undefined)
  abandoned.end()
  await new Promise((resolve) => setTimeout(resolve, 100))
  abandoned.destroy()
  const waiting = getFrom(base, '127.0.0.4', 'admin', 'held-at-stop')
  await new Promise((resolve) => setTimeout(resolve, 100))
  const stopStartedMs = performance.now()
  await api.stop()
  t.ok(performance.now() - stopStartedMs < 500, 'stop does not wait for held attempts')
  t.equal((await waiting).status, 503)
  t.match(
    events.find((event) => event.kind === 'throttle-ended'),
    { address: '127.0.0.4', reason: 'stopped', failures: 7 + statuses.length, successes: 1 },
    'the abandoned attempt and the one released by stop were not checked',
  )
  t.notMatch(JSON.stringify(events), /left|held-at-stop/)
})

/**
 * An API whose password check takes 100 ms, as scrypt does on this hardware (without its CPU
 * cost), so parallel attempts are in flight together; `guessCheckedMs` notes when the check
 * of each password starting with `parallel-` starts (performance.now()).
 */
async function startSlowCheckApi() {
  const guessCheckedMs: number[] = []
  const slowCheck = (credential: AdminCredential): AdminCredential => ({
    source: credential.source,
    async verify(user, typed) {
      if (typed.startsWith('parallel-')) guessCheckedMs.push(performance.now())
      await new Promise((resolve) => setTimeout(resolve, 100))
      return credential.verify(user, typed)
    },
  })
  return { ...(await startThrottledApi(slowCheck)), guessCheckedMs }
}

t.test('parallel guesses from one address are each counted and delayed, not checked at once', async (t) => {
  const { api, base, password, guessCheckedMs, events } = await startSlowCheckApi()
  t.teardown(() => api.stop())

  const parallel = 50
  const startedMs = performance.now()
  const guessing = Promise.all(Array.from({ length: parallel }, (_, guess) => getFrom(base, '127.0.0.5', 'admin', `parallel-${guess}`)))
  await new Promise((resolve) => setTimeout(resolve, 50))
  const admin = await getFrom(base, '127.0.0.1', 'admin', password)
  const guesses = await guessing
  t.same([...new Set(guesses.map((guess) => guess.status))], [401])
  t.equal(admin.status, 200, 'the correct password from another address is accepted meanwhile')
  t.ok(admin.ms < 1_000, `and not held behind the guesses (${Math.round(admin.ms)} ms)`)

  // Each guess in flight counts as a failure for the next one: only the free guesses are
  // checked at once, the next ones each wait the growing delay after the one before, the
  // rest the cap.
  t.equal(guessCheckedMs.length, parallel, 'every guess was checked')
  const checkedMs = guessCheckedMs.map((ms) => ms - startedMs).sort((a, b) => a - b)
  const { failuresBeforeDelay, delayMsMin, delayMsMax } = throttleOptions
  t.ok(checkedMs.filter((ms) => ms < delayMsMin).length <= failuresBeforeDelay, `at most ${failuresBeforeDelay} guesses checked without a delay`)
  const floorMs = [0, 0, 0, 200, 600, 1_400, ...Array<number>(parallel - 6).fill(delayMsMax)]
  const early = checkedMs.flatMap((ms, guess) => (ms < floorMs[guess]! - 5 ? [`guess ${guess + 1} checked at ${Math.round(ms)} ms`] : []))
  t.same(early, [], 'no guess checked before the delay of the guesses in flight before it')
  await api.stop()
  t.match(
    events.find((event) => event.kind === 'throttle-ended'),
    { address: '127.0.0.5', failures: parallel, delayedAttempts: parallel - failuresBeforeDelay },
  )
})

t.test('a client sending its right password in parallel is not held by its own attempts', async (t) => {
  const { api, base, password } = await startSlowCheckApi()
  t.teardown(() => api.stop())
  // Eight requests at once from a new pair: the ones beyond the free failures wait while the
  // first are checked, and go as soon as one of them turns out right.
  const answers = await Promise.all(Array.from({ length: 8 }, () => getFrom(base, '127.0.0.6', 'admin', password)))
  t.same([...new Set(answers.map((answer) => answer.status))], [200])
  const slowestMs = Math.max(...answers.map((answer) => answer.ms))
  t.ok(slowestMs < throttleOptions.delayMsMax / 2, `all answered within ${Math.round(slowestMs)} ms`)
})
