import t from 'tap'
import { tempDir, startService, cliJson, runCli } from '../helpers/service.js'
import {
  apiGet,
  appliancePolling,
  freePort,
  rawFrom,
  sendMail,
  technicianPassword,
  testMessage,
  testSharedSecret as sharedSecret,
  writeApplianceConfig as node,
} from '../helpers/mirror-appliances.js'
import { waitUntil } from '../helpers/wait.js'

const send = (service: Parameters<typeof sendMail>[0], subjects: string[]) =>
  sendMail(
    service,
    subjects.map((subject) => testMessage(subject)),
  )

t.test('two appliances mirror each other: copies byte-identical, searchable, not forwarded back; an offline peer catches up', async (t) => {
  const dir = await tempDir('mailkeep-mirror-e2e-')
  const [portA, portB] = [await freePort(), await freePort()]
  const configA = await node(dir, 'a', { mirrorPort: portA, peers: [portB], serial: 'MK650-A' })
  const configB = await node(dir, 'b', { mirrorPort: portB, peers: [portA], serial: 'MK650-B' })
  const a = await startService(configA)
  let b = await startService(configB)
  t.teardown(async () => {
    await a.stop()
    await b.stop()
  })

  const fromA = await send(a, ['hello from a'])
  const [idA, rawA] = [...fromA][0]!
  const copied = await waitUntil(
    async () => {
      const raw = await rawFrom(b, idA)
      return Buffer.isBuffer(raw) ? raw : undefined
    },
    { ...appliancePolling, what: 'copy on B' },
  )
  t.same(copied, rawA, 'A → B byte-identical')
  const fromB = await send(b, ['hello from b'])
  const [idB, rawB] = [...fromB][0]!
  t.same(
    await waitUntil(
      async () => {
        const raw = await rawFrom(a, idB)
        return Buffer.isBuffer(raw) ? raw : undefined
      },
      { ...appliancePolling, what: 'copy on A' },
    ),
    rawB,
    'B → A byte-identical',
  )
  const search = (await cliJson(configB, ['search', 'subject:"hello from a"'])).json as { hits: { id: string }[] }
  t.same(
    search.hits.map((hit) => hit.id),
    [idA],
    'the copy is searchable on B',
  )
  const metaOnB = (await (await apiGet(b, `/api/v1/messages/${idA}`))!.json()) as { origin: string | null }
  t.equal(metaOnB.origin, 'MK650-A', 'marked with its origin')

  // B goes offline while A receives mail; B returns and gets each message once.
  await b.stop()
  // A retention policy added on A meanwhile: the peers compare settings at the next handshake.
  const added = await cliJson(configA, ['policy', 'add', 'short-lived', '--days', '30', '--sender', '@lists.example', '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal(added.code, 0, added.stderr)
  const whileDown = await send(
    a,
    Array.from({ length: 20 }, (_, index) => `while b was down ${index}`),
  )
  const queued = (await cliJson(configA, ['show', 'mirror'])).json as { peers: { state: string; queueMessages: number }[] }
  t.equal(queued.peers[0]!.queueMessages, 20, 'queue depth shows what B is missing')
  t.not(queued.peers[0]!.state, 'connected')
  b = await startService(configB)
  for (const [id, raw] of whileDown) {
    t.same(
      await waitUntil(
        async () => {
          const stored = await rawFrom(b, id)
          return Buffer.isBuffer(stored) ? stored : undefined
        },
        { ...appliancePolling, what: `copy ${id} on B` },
      ),
      raw,
    )
  }
  const storeB = (await cliJson(configB, ['show', 'store'])).json as { messages: number }
  t.equal(storeB.messages, 22, 'every message once on B (2 before, 20 after the outage)')
  const storeA = (await cliJson(configA, ['show', 'store'])).json as { messages: number }
  t.equal(storeA.messages, 22, 'nothing forwarded back to A as a new message')
  const after = await waitUntil(
    async () => {
      const status = (await cliJson(configA, ['show', 'mirror'])).json as { peers: { state: string; queueMessages: number; serial: string }[] }
      return status.peers[0]!.queueMessages === 0 ? status : undefined
    },
    { ...appliancePolling, what: 'queue drained' },
  )
  t.equal(after.peers[0]!.serial, 'MK650-B')
  t.equal(after.peers[0]!.state, 'connected')
  // Retention stays independent per system, but each side reports that the settings differ.
  for (const [config, side] of [
    [configA, 'A'],
    [configB, 'B'],
  ] as const) {
    const mismatch = await waitUntil(
      async () => {
        const status = (await cliJson(config, ['show', 'mirror'])).json as { peers: { policyMismatch: string[] }[] }
        return status.peers[0]!.policyMismatch.length > 0 ? status.peers[0]!.policyMismatch : undefined
      },
      { ...appliancePolling, what: `policy difference shown on ${side}` },
    )
    t.match(mismatch.join('\n'), /short-lived/, `${side} names the differing policy`)
  }
})

t.test('mismatched model, mismatched firmware, model 350 and a wrong secret are refused with their reason codes on both sides', async (t) => {
  const dir = await tempDir('mailkeep-mirror-e2e-')
  const [portA, portC, portD, portE, portF] = [await freePort(), await freePort(), await freePort(), await freePort(), await freePort()]
  const wrongSecret = 'ZZZZWRONGSECRETWRONGSECRET1234'
  const configA = await node(dir, 'a', { mirrorPort: portA, peers: [], serial: 'MK650-A2' })
  const cases = [
    { name: 'c', config: await node(dir, 'c', { mirrorPort: portC, peers: [portA], serial: 'MK850-C', model: 850 }), serial: 'MK850-C', code: 'MODEL_MISMATCH', expected: 650, actual: 850 },
    {
      name: 'd',
      config: await node(dir, 'd', { mirrorPort: portD, peers: [portA], serial: 'MK650-D', secret: wrongSecret, mirror: { retryDelayMsMin: 60_000, retryDelayMsMax: 60_000 } }),
      serial: 'MK650-D',
      code: 'AUTH_FAILED',
      expected: null,
      actual: null,
    },
    {
      name: 'e',
      config: await node(dir, 'e', { mirrorPort: portE, peers: [portA], serial: 'MK650-E', firmwareVersion: '0.0.1-older' }),
      serial: 'MK650-E',
      code: 'FIRMWARE_MISMATCH',
      expected: undefined,
      actual: '0.0.1-older',
    },
    {
      name: 'f',
      config: await node(dir, 'f', { mirrorPort: portF, peers: [portA], serial: 'MK350-F', model: 350 }),
      serial: 'MK350-F',
      code: 'MODEL_NOT_ELIGIBLE',
      expected: '>= 450',
      actual: 350,
    },
  ]
  // All of them connect from 127.0.0.1: D (wrong secret) tries once (A is up first), so A's per-address limit on
  // failed proofs (5 per minute) does not turn the other refusals into RATE_LIMITED.
  const a = await startService(configA, { timeoutMs: 60_000 })
  // Four boots at once on a loaded 2-core machine: a generous bound, and every one that did start is stopped.
  const started = await Promise.allSettled(cases.map((entry) => startService(entry.config, { timeoutMs: 60_000 })))
  const services = [a, ...started.flatMap((result) => (result.status === 'fulfilled' ? [result.value] : []))]
  t.teardown(() => Promise.all(services.map((service) => service.stop())))
  const failed = started.find((result): result is PromiseRejectedResult => result.status === 'rejected')
  if (failed) throw failed.reason
  const ownFirmware = ((await cliJson(configA, ['show', 'status'])).json as { firmwareVersion: string }).firmwareVersion
  t.not(ownFirmware, '0.0.1-older')

  for (const entry of cases) {
    const peer = await waitUntil(
      async () => {
        const status = (await cliJson(entry.config, ['show', 'mirror'])).json as { peers: { state: string; reasonCode: string; expected: unknown; actual: unknown }[] }
        return status.peers[0]?.state === 'refused' ? status.peers[0] : undefined
      },
      { ...appliancePolling, what: `refusal on ${entry.name}` },
    )
    t.equal(peer.reasonCode, entry.code, `${entry.serial} shows ${entry.code}`)
    if (entry.code !== 'AUTH_FAILED') t.same([peer.expected, peer.actual], [entry.expected ?? ownFirmware, entry.actual], `${entry.code}: expected (the listener A) vs actual`)
  }
  const onA = await waitUntil(
    async () => {
      const status = (await cliJson(configA, ['show', 'mirror'])).json as { inboundRefusals: { code: string; serial: string | null; expected: unknown; actual: unknown }[] }
      return cases.every((entry) => status.inboundRefusals.some((refusal) => refusal.code === entry.code)) ? status : undefined
    },
    { ...appliancePolling, what: 'every refusal on A' },
  )
  for (const entry of cases) {
    const refusal = onA.inboundRefusals.find((candidate) => candidate.code === entry.code)!
    t.equal(refusal.serial, entry.serial, `A shows ${entry.code} for ${entry.serial}`)
    if (entry.code !== 'AUTH_FAILED') t.same([refusal.expected, refusal.actual], [entry.expected ?? ownFirmware, entry.actual], 'with the same expected vs actual')
  }
  const f = (await cliJson(cases[3]!.config, ['show', 'mirror'])).json as { listening: unknown; warning: string }
  t.equal(f.listening, null, 'a model 350 does not listen')
  t.match(f.warning, /model 350 may not mirror/)
  const logs = services.flatMap((service) => service.lines).join('\n')
  t.notMatch(logs, sharedSecret, 'the shared secret is never logged')
  t.notMatch(logs, wrongSecret)

  const generated = await runCli(['--config', configA, 'mirror', 'generate-secret'])
  t.match(generated.stdout.trim(), /^[A-Z2-7]{32}$/, 'generated secrets are 160-bit base32')
})
