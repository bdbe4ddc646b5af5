import { createHash } from 'node:crypto'
import { mkdtemp, rm, mkdir, readFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { validateConfig } from '../../config/load.js'
import { createLogger } from '../../firmware/common/logger.js'
import { createAppliance } from '../../boot/appliance.js'
import { SmtpSession, archivedId } from '../lib/smtp-client.js'
import type { FactoryCheck } from './checks.js'

/** Messages ingested by the store self-test. */
export const storeSelfTestMessages = 20

/**
 * Boots a private firmware instance on the data volume (its own directory under
 * `<dataDir>/factory-test`, ports chosen by the system, bound to 127.0.0.1) for the
 * firmware checks, and removes it afterwards. The appliance's own archive is not touched.
 */
interface PrivateFirmware {
  port: number
  appliance: ReturnType<typeof createAppliance>
  http: string
  password: string
  mirror: string | undefined
}

async function withPrivateFirmware<T>(dataDir: string, use: (firmware: PrivateFirmware) => Promise<T>, overrides: Record<string, unknown> = {}): Promise<T> {
  await mkdir(join(dataDir, 'factory-test'), { recursive: true })
  const directory = await mkdtemp(join(dataDir, 'factory-test', 'firmware-'))
  const config = validateConfig({
    dataDir: directory,
    smtp: { host: '127.0.0.1', port: 0, archiveRecipients: ['factory@loopback.invalid'], trustedNetworks: [] },
    http: { host: '127.0.0.1', port: 0 },
    https: { host: '127.0.0.1', port: 0 },
    mirror: { host: '127.0.0.1', port: 0 },
    storage: { freeBytesMin: 0 },
    ...overrides,
  })
  const appliance = createAppliance({ config, logger: createLogger('factory-firmware', { level: 'error', write: (line) => process.stderr.write(line + '\n') }) })
  try {
    await appliance.boot()
    const status = await appliance.status()
    const listeners = status.listeners as Record<string, string>
    const password = (await readFile(join(directory, 'initial-admin-password'), 'utf8')).trim()
    return await use({ port: Number(listeners.smtp!.split(':').pop()), appliance, http: listeners.http!, password, mirror: listeners.mirror })
  } finally {
    await appliance.stop()
    await rm(directory, { recursive: true, force: true })
  }
}

function testMessage(index: number, token: string): Buffer {
  return Buffer.from(
    `From: factory@loopback.invalid\r\nTo: factory@loopback.invalid\r\nSubject: factory self-test ${index} ${token}\r\nDate: ${new Date().toUTCString()}\r\nMessage-ID: <${token}.${index}@loopback.invalid>\r\n\r\nfactory self-test body ${index} ${token}\r\n`,
  )
}

/**
 * SMTP loopback: the firmware sends a message to itself over SMTP, finds it by search
 * through the HTTP API, and fetches it byte-identical through /raw. Also checks that
 * every message of a short burst is archived (the store self-test) and that the store's
 * own verify() finds no corrupt blob.
 */
export const firmwareLoopbackCheck: FactoryCheck = {
  name: 'firmware-loopback',
  async run({ dataDir }) {
    return withPrivateFirmware(dataDir, async ({ port, http, password }) => {
      const token = createHash('sha256')
        .update(String(Date.now()) + Math.random())
        .digest('hex')
        .slice(0, 16)
      const problems: string[] = []
      const session = await SmtpSession.open(port)
      const sent = new Map<string, Buffer>()
      const startedMs = performance.now()
      try {
        for (let index = 0; index < storeSelfTestMessages; index += 1) {
          const raw = testMessage(index, token)
          const reply = await session.send('factory@loopback.invalid', ['factory@loopback.invalid'], raw)
          const id = archivedId(reply)
          if (reply.code !== 250 || !id) problems.push(`message ${index} refused: ${reply.code} ${reply.text}`)
          else sent.set(id, raw)
        }
      } finally {
        session.close()
      }
      const ingestSeconds = (performance.now() - startedMs) / 1000
      const authorization = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
      const search = await fetch(`http://${http}/api/v1/search?q=${encodeURIComponent(`subject:${token}`)}&limit=100`, { headers: { authorization } })
      const found = search.status === 200 ? ((await search.json()) as { total: number }).total : -1
      if (found !== sent.size) problems.push(`search found ${found} of ${sent.size} messages`)
      let identical = 0
      for (const [id, raw] of sent) {
        const response = await fetch(`http://${http}/api/v1/messages/${id}/raw`, { headers: { authorization } })
        if (response.status === 200 && Buffer.from(await response.arrayBuffer()).equals(raw)) identical += 1
      }
      if (identical !== sent.size) problems.push(`${sent.size - identical} message(s) not byte-identical through /raw`)
      return {
        ok: problems.length === 0,
        message: problems.length ? problems.join('; ') : `${sent.size} messages sent over SMTP, found by search and fetched byte-identical`,
        value: { sent: sent.size, found, identical, messagesPerSecond: Number((sent.size / ingestSeconds).toFixed(1)) },
        limit: { messages: storeSelfTestMessages },
      }
    })
  },
}

/** Longest wait for a message to be copied between the two loopback instances, in ms. */
export const mirrorLoopbackTimeoutMs = 30_000

/**
 * Mirror loopback (models that mirror): two private instances of this model with a fresh
 * shared secret; a message sent over SMTP to the first must arrive byte-identical on the
 * second through the real TLS handshake and copy queue.
 */
export const mirrorLoopbackCheck: FactoryCheck = {
  name: 'mirror-loopback',
  async run({ dataDir, hal, profile }) {
    const identity = await hal.identity()
    if (!profile?.mirroringAllowed) {
      return { ok: true, message: `model ${identity.model} does not mirror: not applicable`, value: null, limit: { mirroringAllowed: false } }
    }
    const secret = randomBytes(24).toString('base64url')
    const common = { identity: { model: identity.model, serial: null } }
    return withPrivateFirmware(
      dataDir,
      async (second) => {
        const [host, port] = [second.mirror!.split(':')[0]!, Number(second.mirror!.split(':').pop())]
        return withPrivateFirmware(
          dataDir,
          async (first) => {
            const raw = testMessage(0, randomBytes(8).toString('hex'))
            const session = await SmtpSession.open(first.port)
            const reply = await session.send('factory@loopback.invalid', ['factory@loopback.invalid'], raw).finally(() => session.close())
            const id = archivedId(reply)
            if (!id) return { ok: false, message: `SMTP refused the test message: ${reply.code} ${reply.text}`, value: null, limit: null }
            const startedMs = performance.now()
            const authorization = `Basic ${Buffer.from(`admin:${second.password}`).toString('base64')}`
            while (performance.now() - startedMs < mirrorLoopbackTimeoutMs) {
              const response = await fetch(`http://${second.http}/api/v1/messages/${id}/raw`, { headers: { authorization } })
              if (response.status === 200) {
                const copied = Buffer.from(await response.arrayBuffer())
                const lagMs = Math.round(performance.now() - startedMs)
                return {
                  ok: copied.equals(raw),
                  message: copied.equals(raw) ? `copied to the second instance in ${lagMs} ms, byte-identical` : 'the copy differs from the original',
                  value: { lagMs, identical: copied.equals(raw) },
                  limit: { lagMsMax: mirrorLoopbackTimeoutMs },
                }
              }
              await new Promise((resolve) => setTimeout(resolve, 100))
            }
            return { ok: false, message: `no copy on the second instance within ${mirrorLoopbackTimeoutMs} ms`, value: null, limit: { lagMsMax: mirrorLoopbackTimeoutMs } }
          },
          {
            ...common,
            identity: { model: identity.model, serial: `${identity.serial}-L1`.slice(0, 64) },
            mirror: { host: '127.0.0.1', port: 0, sharedSecret: secret, peers: [{ host, port }] },
          },
        )
      },
      // The second instance does not know the first's port in advance: it takes it as a join
      // (a private pair on loopback with a secret made for this run).
      {
        ...common,
        identity: { model: identity.model, serial: `${identity.serial}-L2`.slice(0, 64) },
        mirror: { host: '127.0.0.1', port: 0, sharedSecret: secret, peers: [], acceptJoins: true },
      },
    )
  },
}
