/**
 * Export under a memory bound (issue: web interface, export): one appliance (the firmware
 * under Bun, a process of its own) fed `messages` corpus copies over SMTP, then one export of
 * them all through `GET /api/v1/export` written to a file. Printed: the service's resident
 * memory before and at its peak during the export (sampled every 50 ms from /proc), beside
 * the export's size (the anchor: growth must be a small fraction of it, not grow with it),
 * the export rate, and the manifest checked: its signature, and every .eml's SHA-256 against
 * its id.
 *
 *   node_modules/.bin/bun scripts/bench/export.ts      (BENCH_MESSAGES, default 10,000)
 */
import { X509Certificate, createHash, verify } from 'node:crypto'
import { createWriteStream } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { fileURLToPath } from 'node:url'
import { SmtpSession } from '../lib/smtp-client.js'
import { portOf, startService, tempDir, writeConfig } from '../../tests/helpers/service.js'
import { unzip } from '../../tests/helpers/zip.js'
import { corpusDirectoryDefault, loadCorpusMessages, syntheticRaw } from '../make-synthetic-archive.js'
import { toCrlf } from './smtp.js'

export interface ExportReport {
  messages: number
  exportedBytes: number
  seconds: number
  rssBeforeBytes: number
  rssPeakBytes: number
  anonBeforeBytes: number
  anonPeakBytes: number
  anonAfterBytes: number
  manifestVerified: boolean
  hashesMatched: number
}

/** Resident memory of a process, in bytes: all of it, and the anonymous part (heap, not the LMDB file's pages). */
async function rssOf(pid: number): Promise<{ rss: number; anon: number }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024
  return { rss: kb('VmRSS'), anon: kb('RssAnon') }
}

export async function runExportBench(options: { messages: number; write: (line: string) => void }): Promise<ExportReport> {
  const dir = await tempDir('mailkeep-bench-export-')
  const config = await writeConfig(dir, { smtp: { port: 0, archiveRecipients: ['journal@bench.local'] } })
  const service = await startService(config, { timeoutMs: 60_000 })
  try {
    const corpus = await loadCorpusMessages(corpusDirectoryDefault)
    options.write(`export: delivering ${options.messages} messages over SMTP…`)
    let next = 0
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        const session = await SmtpSession.open(portOf(service, 'smtp'))
        for (let index = next++; index < options.messages; index = next++) {
          const raw = toCrlf(Buffer.from(syntheticRaw(corpus[index % corpus.length]!, Math.floor(index / corpus.length), index)))
          const reply = await session.sendPipelined('sender@bench.local', ['journal@bench.local'], raw)
          if (reply.code !== 250) throw new Error(`refused: ${reply.code} ${reply.text}`)
        }
        session.close()
      }),
    )
    const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
    const pid = service.process.pid!
    // Let the ingest's buffers settle before the baseline.
    await new Promise((resolve) => setTimeout(resolve, 2_000))
    const before = await rssOf(pid)
    let rssPeakBytes = before.rss
    let anonPeakBytes = before.anon
    const sampler = setInterval(
      () =>
        void rssOf(pid).then((now) => {
          rssPeakBytes = Math.max(rssPeakBytes, now.rss)
          anonPeakBytes = Math.max(anonPeakBytes, now.anon)
        }),
      50,
    )
    const out = join(dir, 'export.zip')
    const startedMs = performance.now()
    // Every message is in a date range; `after:1970-01-01` is the query that finds them all.
    await new Promise<void>((resolve, reject) => {
      const get = request(
        {
          host: '127.0.0.1',
          port: portOf(service, 'http'),
          path: `/api/v1/export?q=${encodeURIComponent('after:1970-01-01')}`,
          headers: { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` },
        },
        (response) => {
          if (response.statusCode !== 200) return reject(new Error(`export answered ${response.statusCode}`))
          pipeline(response, createWriteStream(out)).then(resolve, reject)
        },
      )
      get.on('error', reject)
      get.end()
    })
    const seconds = (performance.now() - startedMs) / 1000
    clearInterval(sampler)
    // What stays once the export is over: retained memory, as opposed to garbage not yet collected at the peak.
    await new Promise((resolve) => setTimeout(resolve, 10_000))
    const after = await rssOf(pid)
    const exportedBytes = (await stat(out)).size
    const files = await unzip(await readFile(out))
    const manifestBytes = files.get('manifest.json')!
    const manifest = JSON.parse(manifestBytes.toString()) as { count: number; messages: { id: string }[] }
    const certificate = new X509Certificate(files.get('certificate.pem')!.toString())
    const manifestVerified = verify('sha256', manifestBytes, certificate.publicKey, Buffer.from(files.get('manifest.sig')!.toString().trim(), 'base64'))
    let hashesMatched = 0
    for (const message of manifest.messages) {
      const bytes = files.get(`messages/${message.id}.eml`)
      if (bytes && createHash('sha256').update(bytes).digest('hex') === message.id) hashesMatched++
    }
    return {
      messages: manifest.count,
      exportedBytes,
      seconds,
      rssBeforeBytes: before.rss,
      rssPeakBytes,
      anonBeforeBytes: before.anon,
      anonPeakBytes,
      anonAfterBytes: after.anon,
      manifestVerified,
      hashesMatched,
    }
  } finally {
    await service.stop()
  }
}

export function exportReportLines(report: ExportReport): string[] {
  const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1)
  return [
    `export: ${report.messages} messages, ${mib(report.exportedBytes)} MiB zip in ${report.seconds.toFixed(2)} s = ${(report.messages / report.seconds).toFixed(0)} msg/s`,
    `  service RSS ${mib(report.rssBeforeBytes)} MiB before, ${mib(report.rssPeakBytes)} MiB peak (growth ${mib(report.rssPeakBytes - report.rssBeforeBytes)} MiB, most of it the LMDB file's pages read)`,
    `  anonymous memory ${mib(report.anonBeforeBytes)} MiB before, ${mib(report.anonPeakBytes)} MiB peak: growth ${mib(report.anonPeakBytes - report.anonBeforeBytes)} MiB = ${(((report.anonPeakBytes - report.anonBeforeBytes) / report.exportedBytes) * 100).toFixed(1)}% of the export's size (anchor); ${mib(report.anonAfterBytes)} MiB 10 s after it ended`,
    `  manifest signature ${report.manifestVerified ? 'verified' : 'NOT VERIFIED'}; ${report.hashesMatched} of ${report.messages} .eml SHA-256 match their ids ${report.hashesMatched === report.messages ? 'MET' : 'NOT MET'}`,
  ]
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const report = await runExportBench({ messages: Number(process.env.BENCH_MESSAGES ?? 10_000), write: (line) => console.log(line) })
  for (const line of exportReportLines(report)) console.log(line)
}
