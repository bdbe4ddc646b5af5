/**
 * SMTP durable-ingest benchmark: boots the real appliance in-process (temporary data dir,
 * ports 0), sends the real corpus over `sessions` concurrent SMTP sessions, and counts a
 * message only when its 250 (given after the durable write) arrives. Reports messages/s,
 * MB/s and the disk bytes per raw byte of the store afterwards.
 *
 * Run alone: `node_modules/.bin/bun scripts/bench/smtp.ts [messages] [sessions]`.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { validateConfig } from '../../config/load.js'
import { createLogger } from '../../firmware/common/logger.js'
import { createAppliance } from '../../boot/appliance.js'
import { SmtpSession } from '../lib/smtp-client.js'
import { loadCorpus } from './parse.js'

export interface SmtpBenchResult {
  messages: number
  sessions: number
  seconds: number
  messagesPerSecond: number
  megabytesPerSecond: number
  rawBytes: number
  /** LMDB file size over the raw bytes archived. */
  diskBytesPerRawByte: number
  refused: number
}

/** SMTP needs CRLF line endings; the corpus files have LF. */
export function toCrlf(raw: Uint8Array): Buffer {
  return Buffer.from(Buffer.from(raw).toString('latin1').replace(/\r?\n/g, '\r\n'), 'latin1')
}

export async function runSmtpBench(options: { messages?: number; sessions?: number; corpus?: Uint8Array[] } = {}): Promise<SmtpBenchResult> {
  const sessions = options.sessions ?? 10
  const corpus = (options.corpus ?? (await loadCorpus(undefined, options.messages))).map(toCrlf)
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-bench-smtp-'))
  const config = validateConfig({ dataDir, smtp: { port: 0, archiveRecipients: ['journal@bench.local'] }, http: { port: 0 }, mirror: { port: 0 }, logging: { level: 'warn' } })
  const appliance = createAppliance({ config, logger: createLogger('bench', { level: 'error', write: () => undefined }) })
  await appliance.boot()
  try {
    const status = await appliance.status()
    const port = Number(String((status.listeners as Record<string, string>).smtp).split(':').pop())
    let next = 0
    let refused = 0
    let rawBytes = 0
    const startedMs = performance.now()
    await Promise.all(
      Array.from({ length: sessions }, async () => {
        const session = await SmtpSession.open(port)
        for (let index = next++; index < corpus.length; index = next++) {
          const raw = corpus[index]!
          const reply = await session.send('sender@bench.local', ['journal@bench.local'], raw)
          if (reply.code === 250) rawBytes += raw.byteLength
          else refused += 1
        }
        session.close()
      }),
    )
    const seconds = (performance.now() - startedMs) / 1000
    const { store } = (await appliance.status()) as unknown as { store: { fileBytes: number; rawBytes: number } }
    return {
      messages: corpus.length,
      sessions,
      seconds,
      messagesPerSecond: corpus.length / seconds,
      megabytesPerSecond: rawBytes / 1e6 / seconds,
      rawBytes,
      diskBytesPerRawByte: store.fileBytes / Math.max(1, store.rawBytes),
      refused,
    }
  } finally {
    await appliance.stop()
    await rm(dataDir, { recursive: true, force: true })
  }
}

// Bun sets import.meta.main for the entry script.
if ((import.meta as { main?: boolean }).main) {
  const result = await runSmtpBench({ messages: Number(process.argv[2] ?? Number.POSITIVE_INFINITY), sessions: Number(process.argv[3] ?? 10) })
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
}
