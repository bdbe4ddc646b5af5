/**
 * A real archive (LMDB) with the real search index and a policy service over it, driven by
 * a manual clock: the retention tests' world.
 */
import { randomBytes } from 'node:crypto'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { createArchiveStore } from '../../../firmware/archive/store.js'
import type { Delivery } from '../../../firmware/archive/types.js'
import { createMimeParser, defaultMimeParserOptions } from '../../../firmware/mime/parser.js'
import { createIndex, createArchiveIndexer } from '../../../firmware/index/index.js'
import { createAuditLog, createPolicyService, withArchiveDatabases, type PolicyServiceOptions } from '../../../firmware/policy/index.js'
import { tempDir } from '../../helpers/service.js'

export const dayMs = 86_400_000

/** A raw message; `padBytes` of random base64 make it large and incompressible. */
export function rawMessage(fields: { from: string; to: string; subject: string; body?: string; date?: string; padBytes?: number }): Buffer {
  const pad = fields.padBytes ? `\r\n${randomBytes(fields.padBytes).toString('base64').replace(/.{76}/g, '$&\r\n')}` : ''
  return Buffer.from(
    `From: ${fields.from}\r\nTo: ${fields.to}\r\nSubject: ${fields.subject}\r\nDate: ${fields.date ?? 'Tue, 14 Nov 2023 22:13:20 +0000'}\r\nMessage-ID: <${randomBytes(8).toString('hex')}@test>\r\n\r\n${fields.body ?? 'hello'}${pad}\r\n`,
  )
}

type Options = Partial<PolicyServiceOptions> & { watermark?: () => number | null; key?: Buffer | null; path?: string }

export async function retentionWorld(options: Options = {}) {
  const path = options.path ?? (await tempDir('mailkeep-policy-'))
  const logger = createMemoryLogger('warn')
  const clock = createManualClock()
  const parser = createMimeParser({ logger, clock }, { ...defaultMimeParserOptions })
  const index = createIndex({ logger, clock })
  const key = options.key === undefined ? randomBytes(32) : options.key
  const audit = createAuditLog({ logger, clock, key })
  let archiveRef: ReturnType<typeof createArchiveStore> | undefined
  const policy = createPolicyService(
    {
      logger,
      clock,
      archive: {
        listIds: (after, limit) => archiveRef!.listIds(after, limit),
        getMeta: (id) => archiveRef!.getMeta(id),
        delete: (id) => archiveRef!.delete(id),
        changes: (after, limit) => archiveRef!.changes(after, limit),
        lastSequence: () => archiveRef!.lastSequence(),
      },
      audit,
      matchQuery: (query) => {
        const ids = new Set<string>()
        let cursor: string | null = null
        do {
          const page = index.search(query, { limit: 100, cursor })
          for (const hit of page.hits) ids.add(hit.id)
          cursor = page.nextCursor
        } while (cursor)
        return ids
      },
      mirrorLowWatermark: options.watermark,
      digestKey: key,
    },
    { purgeIntervalMs: 0, batchMessagesMax: 3, stopTimeoutMs: 5_000, ...options },
  )
  const archive = createArchiveStore(
    { logger, clock },
    { path, mapSizeBytes: 256 * 1024 * 1024, freeBytesMin: 0, messageBytesMax: 8 * 1024 * 1024, indexer: withArchiveDatabases(createArchiveIndexer(index, { logger }), [policy]) },
  )
  archiveRef = archive
  await archive.start()
  await policy.start()
  const ingest = async (raw: Buffer, delivery: Partial<Delivery> = {}) => {
    const parsed = await parser.parse(raw)
    const result = await archive.ingest({
      raw,
      parsed,
      delivery: { source: 'smtp', sourceName: 'smtp', receivedAtMs: clock.now(), envelopeFrom: null, envelopeTo: [], envelopeBcc: [], remoteAddress: '127.0.0.1', journalEnvelopeText: null, ...delivery },
    })
    return result.id
  }
  const stop = async () => {
    await policy.stop()
    await archive.stop()
  }
  return { path, clock, archive, policy, audit, index, ingest, stop, logger, key }
}
