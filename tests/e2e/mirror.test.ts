import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { hashPassword } from '../../firmware/common/password.js'
import { tempDir, startService, cliJson, runCli, type RunningService } from '../helpers/service.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'

const sharedSecret = 'K7QWX2M4PZ9RDV3TJ8NB6YHC5LEGFA2S'
const technicianPassword = 'mirror-technician-pass'
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

/** A free port on 127.0.0.1 (mirror peers need each other's port before they start). */
async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

function portOf(service: RunningService, name: string): number {
  return Number((service.ready.listeners as Record<string, string>)[name]!.split(':').pop())
}

async function rawFrom(service: RunningService, id: string): Promise<Buffer | number> {
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const response = await fetch(`http://127.0.0.1:${portOf(service, 'http')}/api/v1/messages/${id}/raw`, { headers: { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` } })
  return response.status === 200 ? Buffer.from(await response.arrayBuffer()) : response.status
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20000): Promise<T> {
  const startedMs = Date.now()
  for (;;) {
    const value = await probe()
    if (value !== undefined) return value
    if (Date.now() - startedMs > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

function message(subject: string): Buffer {
  return Buffer.from(`From: a@example.com\r\nTo: b@example.com\r\nSubject: ${subject}\r\nDate: Sun, 29 Nov 2026 02:00:00 +0000\r\n\r\nbody of ${subject}\r\n`)
}

async function node(dir: string, name: string, options: { mirrorPort: number; peers: number[]; model?: number; secret?: string; serial: string }) {
  const path = join(dir, `${name}.json`)
  await mkdir(join(dir, name), { recursive: true })
  await writeFile(
    path,
    JSON.stringify({
      dataDir: join(dir, name, 'data'),
      identity: { serial: options.serial, model: options.model ?? 650 },
      smtp: { port: 0, archiveRecipients: ['journal@archive.local'] },
      http: { port: 0 },
      mirror: { port: options.mirrorPort, sharedSecret: options.secret ?? sharedSecret, peers: options.peers.map((port) => ({ host: '127.0.0.1', port })) },
      technician: { passwordHash: await hashPassword(technicianPassword) },
    }),
  )
  return path
}

async function send(service: RunningService, subjects: string[]): Promise<Map<string, Buffer>> {
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const sent = new Map<string, Buffer>()
  for (const subject of subjects) {
    const raw = message(subject)
    const reply = await session.send('a@example.com', ['journal@archive.local'], raw)
    if (reply.code !== 250) throw new Error(`${reply.code} ${reply.text}`)
    sent.set(archivedId(reply)!, raw)
  }
  session.close()
  return sent
}

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
  const copied = await eventually('copy on B', async () => {
    const raw = await rawFrom(b, idA)
    return Buffer.isBuffer(raw) ? raw : undefined
  })
  t.same(copied, rawA, 'A → B byte-identical')
  const fromB = await send(b, ['hello from b'])
  const [idB, rawB] = [...fromB][0]!
  t.same(await eventually('copy on A', async () => {
    const raw = await rawFrom(a, idB)
    return Buffer.isBuffer(raw) ? raw : undefined
  }), rawB, 'B → A byte-identical')
  const search = (await cliJson(configB, ['search', 'subject:"hello from a"'])).json as { hits: { id: string }[] }
  t.same(search.hits.map((hit) => hit.id), [idA], 'the copy is searchable on B')
  const metaOnB = await (async () => {
    const password = (await readFile(join(b.dataDir, 'initial-admin-password'), 'utf8')).trim()
    const response = await fetch(`http://127.0.0.1:${portOf(b, 'http')}/api/v1/messages/${idA}`, { headers: { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` } })
    return (await response.json()) as { origin: string | null }
  })()
  t.equal(metaOnB.origin, 'MK650-A', 'marked with its origin')

  // B goes offline while A receives mail; B returns and gets each message once.
  await b.stop()
  const whileDown = await send(a, Array.from({ length: 20 }, (_, index) => `while b was down ${index}`))
  const queued = (await cliJson(configA, ['show', 'mirror'])).json as { peers: { state: string; queueMessages: number }[] }
  t.equal(queued.peers[0]!.queueMessages, 20, 'queue depth shows what B is missing')
  t.not(queued.peers[0]!.state, 'connected')
  b = await startService(configB)
  for (const [id, raw] of whileDown) {
    t.same(await eventually(`copy ${id} on B`, async () => {
      const stored = await rawFrom(b, id)
      return Buffer.isBuffer(stored) ? stored : undefined
    }), raw)
  }
  const storeB = (await cliJson(configB, ['show', 'store'])).json as { messages: number }
  t.equal(storeB.messages, 22, 'every message once on B (2 before, 20 after the outage)')
  const storeA = (await cliJson(configA, ['show', 'store'])).json as { messages: number }
  t.equal(storeA.messages, 22, 'nothing forwarded back to A as a new message')
  const after = await eventually('queue drained', async () => {
    const status = (await cliJson(configA, ['show', 'mirror'])).json as { peers: { state: string; queueMessages: number; serial: string }[] }
    return status.peers[0]!.queueMessages === 0 ? status : undefined
  })
  t.equal(after.peers[0]!.serial, 'MK650-B')
  t.equal(after.peers[0]!.state, 'connected')
})

t.test('mismatched model and wrong secret are refused with their reason codes on both sides', async (t) => {
  const dir = await tempDir('mailkeep-mirror-e2e-')
  const [portA, portC, portD] = [await freePort(), await freePort(), await freePort()]
  const configA = await node(dir, 'a', { mirrorPort: portA, peers: [], serial: 'MK650-A2' })
  const configC = await node(dir, 'c', { mirrorPort: portC, peers: [portA], serial: 'MK850-C', model: 850 })
  const configD = await node(dir, 'd', { mirrorPort: portD, peers: [portA], serial: 'MK650-D', secret: 'ZZZZWRONGSECRETWRONGSECRET1234' })
  const a = await startService(configA)
  const c = await startService(configC)
  const d = await startService(configD)
  t.teardown(async () => {
    await Promise.all([a.stop(), c.stop(), d.stop()])
  })
  const onC = await eventually('refusal on C', async () => {
    const status = (await cliJson(configC, ['show', 'mirror'])).json as { peers: { state: string; reasonCode: string; expected: unknown; actual: unknown }[] }
    return status.peers[0]!.state === 'refused' ? status.peers[0]! : undefined
  })
  t.equal(onC.reasonCode, 'MODEL_MISMATCH')
  t.same([onC.expected, onC.actual], [650, 850], 'expected (the listener A) vs actual (C)')
  const onD = await eventually('refusal on D', async () => {
    const status = (await cliJson(configD, ['show', 'mirror'])).json as { peers: { state: string; reasonCode: string }[] }
    return status.peers[0]!.state === 'refused' ? status.peers[0]! : undefined
  })
  t.equal(onD.reasonCode, 'AUTH_FAILED')
  const onA = (await cliJson(configA, ['show', 'mirror'])).json as { inboundRefusals: { code: string }[] }
  const codes = new Set(onA.inboundRefusals.map((refusal) => refusal.code))
  t.ok(codes.has('MODEL_MISMATCH') && codes.has('AUTH_FAILED'), `A reports both refusals (${[...codes].join(', ')})`)
  const logs = [a, c, d].flatMap((service) => service.lines).join('\n')
  t.notMatch(logs, sharedSecret, 'the shared secret is never logged')
  t.notMatch(logs, 'ZZZZWRONGSECRETWRONGSECRET1234')

  const generated = await runCli(['--config', configA, 'mirror', 'generate-secret'])
  t.match(generated.stdout.trim(), /^[A-Z2-7]{32}$/, 'generated secrets are 160-bit base32')
})
