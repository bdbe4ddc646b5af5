/**
 * Helpers for mirror tests with real firmware processes: configs for appliances that name each
 * other as peers, SMTP sends, and reads over the real HTTP API (raw bytes, metadata, search,
 * status) — in-process fetches, much cheaper than a CLI process per poll.
 */
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { hashPassword } from '../../firmware/common/password.js'
import { portOf, type RunningService } from './service.js'
import { SmtpSession, archivedId } from './smtp.js'

export const testSharedSecret = 'K7QWX2M4PZ9RDV3TJ8NB6YHC5LEGFA2S'
export const technicianPassword = 'mirror-technician-pass'

/** A free port on 127.0.0.1 (mirror peers need each other's port before they start). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

/**
 * `waitUntil` options for a probe that asks a running appliance (HTTP or the CLI): every
 * 50 ms rather than 10, and 30 s, since a probe costs a request and two appliances share
 * the machine with the test.
 */
export const appliancePolling = { intervalMs: 50, timeoutMs: 30_000 } as const

/** A small test message; `padBytes` adds a body of that many bytes (to make transfers take time). */
export function testMessage(subject: string, padBytes = 0): Buffer {
  const pad = padBytes > 0 ? `${'x'.repeat(76)}\r\n`.repeat(Math.ceil(padBytes / 78)) : ''
  return Buffer.from(`From: a@example.com\r\nTo: b@example.com\r\nSubject: ${subject}\r\nDate: Sun, 29 Nov 2026 02:00:00 +0000\r\n\r\nbody of ${subject}\r\n${pad}`)
}

export interface ApplianceConfigOptions {
  serial: string
  mirrorPort: number
  /** Mirror ports of the peers on 127.0.0.1. */
  peers: number[]
  model?: number
  secret?: string
  /** Simulated firmware version (hal.sim.firmwareVersion). */
  firmwareVersion?: string
  /** Extra mirror keys (timeouts, retry delays). */
  mirror?: Record<string, unknown>
  /** Extra top-level keys (e.g. journal). */
  extra?: Record<string, unknown>
}

/** Writes `<dir>/<name>.json` for one appliance (data in `<dir>/<name>/data`) and returns its path. */
export async function writeApplianceConfig(dir: string, name: string, options: ApplianceConfigOptions): Promise<string> {
  const path = join(dir, `${name}.json`)
  await mkdir(join(dir, name), { recursive: true })
  await writeFile(
    path,
    JSON.stringify({
      dataDir: join(dir, name, 'data'),
      identity: { serial: options.serial, model: options.model ?? 650 },
      ...(options.firmwareVersion ? { hal: { sim: { firmwareVersion: options.firmwareVersion } } } : {}),
      smtp: { port: 0, archiveRecipients: ['journal@archive.local'] },
      http: { port: 0 },
      https: { port: 0 },
      mirror: {
        port: options.mirrorPort,
        sharedSecret: options.secret ?? testSharedSecret,
        peers: options.peers.map((port) => ({ host: '127.0.0.1', port })),
        retryDelayMsMin: 100,
        retryDelayMsMax: 1000,
        ...options.mirror,
      },
      technician: { passwordHash: await hashPassword(technicianPassword) },
      ...options.extra,
    }),
  )
  return path
}

/** Sends each subject's message over one SMTP session; returns archive id → raw bytes. */
export async function sendMail(service: RunningService, raws: Buffer[]): Promise<Map<string, Buffer>> {
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const sent = new Map<string, Buffer>()
  try {
    for (const raw of raws) {
      const reply = await session.send('a@example.com', ['journal@archive.local'], raw)
      if (reply.code !== 250) throw new Error(`${reply.code} ${reply.text}`)
      sent.set(archivedId(reply)!, raw)
    }
  } finally {
    session.close()
  }
  return sent
}

async function authorization(service: RunningService): Promise<string> {
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  return `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
}

/** GET on the service's HTTP API; the response, or undefined when the service does not answer. */
export async function apiGet(service: RunningService, path: string): Promise<Response | undefined> {
  try {
    return await fetch(`http://127.0.0.1:${portOf(service, 'http')}${path}`, { headers: { authorization: await authorization(service) } })
  } catch {
    return undefined
  }
}

/** The raw bytes of a message, or the HTTP status when it is not there. */
export async function rawFrom(service: RunningService, id: string): Promise<Buffer | number> {
  const response = await apiGet(service, `/api/v1/messages/${id}/raw`)
  if (!response) return 0
  return response.status === 200 ? Buffer.from(await response.arrayBuffer()) : response.status
}

/** `/api/v1/status` as JSON. */
export async function statusOf(service: RunningService): Promise<{ store: { messages: number }; mirror: MirrorStatusView }> {
  const response = await apiGet(service, '/api/v1/status')
  if (!response || response.status !== 200) throw new Error(`status: ${response?.status ?? 'no answer'}`)
  return (await response.json()) as { store: { messages: number }; mirror: MirrorStatusView }
}

/** Every search hit's id for a query (all pages). */
export async function searchIds(service: RunningService, query: string): Promise<string[]> {
  const ids: string[] = []
  let cursor: string | null = null
  do {
    const response = await apiGet(service, `/api/v1/search?q=${encodeURIComponent(query)}&limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
    if (!response || response.status !== 200) throw new Error(`search: ${response?.status ?? 'no answer'}`)
    const page = (await response.json()) as { hits: { id: string }[]; nextCursor: string | null }
    ids.push(...page.hits.map((hit) => hit.id))
    cursor = page.nextCursor
  } while (cursor)
  return ids
}

/** The parts of `show mirror --json` / status.mirror the tests read. */
export interface MirrorStatusView {
  lastSequence: number
  warning: string | null
  peers: {
    host: string
    port: number
    serial: string | null
    state: string
    reasonCode: string | null
    expected: unknown
    actual: unknown
    queueMessages: number
    cursor: number
    connectedSinceMs: number | null
    policyMismatch: string[]
  }[]
  inbound: { serial: string; messagesStored: number; messagesDuplicate: number; policyMismatch: string[] }[]
  inboundRefusals: { code: string; expected: unknown; actual: unknown; serial: string | null }[]
}
