import { createHash, sign } from 'node:crypto'
import { Readable } from 'node:stream'
import yazl from 'yazl'
import type { MessageMeta } from '../archive/types.js'
import { searchScopeFor, type Principal } from '../access/roles.js'
import { HttpError } from './http-responses.js'
import { StreamAnswer, type ApiRoute, type ArchiveReader, type ReadAudit } from './http-routes.js'

/**
 * Export with chain of custody: `GET /api/v1/export?q=QUERY` streams a zip of the messages
 * the query finds within the caller's scope — `messages/<id>.eml`, byte-identical — with
 * `manifest.json` (per message: id = SHA-256 of its bytes, size, date, from, subject,
 * archive time, deliveries), `manifest.sig` (the manifest signed by the appliance's identity
 * key, RSA-SHA256, base64) and `certificate.pem` (to check it). Messages are read one at a
 * time as the zip is written, so memory does not grow with the export. One audit entry
 * (`mail.export`) names the query, the count and the manifest's SHA-256.
 */

/** Most messages in one export. */
export const exportMessagesMax = 100_000
/** Search page size while collecting an export's ids. */
const collectPageSize = 1_000

/** One message as the manifest lists it. */
export interface ManifestEntry {
  id: string
  sizeBytes: number
  date: string | null
  from: string[]
  subject: string | null
  archivedAt: string
  deliveries: { source: string; sourceName: string | null; receivedAt: string; envelopeFrom: string | null; envelopeTo: string[]; envelopeBcc: string[] }[]
}

export function manifestEntryOf(meta: MessageMeta): ManifestEntry {
  return {
    id: meta.id,
    sizeBytes: meta.sizeBytes,
    date: meta.dateMs === null ? null : new Date(meta.dateMs).toISOString(),
    from: meta.from,
    subject: meta.subject,
    archivedAt: new Date(meta.firstArchivedAtMs).toISOString(),
    deliveries: meta.deliveries.map((delivery) => ({
      source: delivery.source,
      sourceName: delivery.sourceName,
      receivedAt: new Date(delivery.receivedAtMs).toISOString(),
      envelopeFrom: delivery.envelopeFrom,
      envelopeTo: delivery.envelopeTo,
      envelopeBcc: delivery.envelopeBcc,
    })),
  }
}

export interface ExportDeps {
  archive: { getMeta(id: string): MessageMeta | undefined; getRaw: ArchiveReader['getRaw'] }
  search(
    query: string,
    options: { limit: number; cursor: string | null; scope?: { addresses: readonly string[]; admits(id: string): boolean } },
  ): Promise<{ hits: { id: string }[]; nextCursor: string | null }>
  /** The appliance's identity key and certificate (PEM). */
  signer: { privateKeyPem: string; certificatePem: string; serial: string }
  audit?: ReadAudit
  clock: { now(): number }
}

/** The ids a query finds within `principal`'s scope, newest first. @throws HttpError 413 over exportMessagesMax */
async function collectIds(deps: ExportDeps, query: string, principal: Principal): Promise<string[]> {
  const scope = searchScopeFor(principal, (id) => deps.archive.getMeta(id))
  const ids: string[] = []
  let cursor: string | null = null
  do {
    const page: { hits: { id: string }[]; nextCursor: string | null } = await deps.search(query, { limit: collectPageSize, cursor, ...(scope ? { scope } : {}) })
    for (const hit of page.hits) ids.push(hit.id)
    if (ids.length > exportMessagesMax) throw new HttpError(413, 'EXPORT_TOO_LARGE', `the query finds more than ${exportMessagesMax} messages: narrow it (a date range) and export in parts`)
    cursor = page.nextCursor
  } while (cursor)
  return ids
}

/** A zip being written: its stream, and what its manifest says. */
export interface ExportStream {
  stream: Readable
  count: number
  manifestSha256: string
  exportedAt: string
}

/**
 * The zip of the messages `query` finds within `principal`'s scope, streamed as it is read;
 * audited as one `mail.export` entry by `actor`.
 * @throws HttpError 400 (no query), 413 (over exportMessagesMax); the search's errors
 */
export async function buildExport(deps: ExportDeps, query: string, principal: Principal, actor: string): Promise<ExportStream> {
  if (!query.trim()) throw new HttpError(400, 'QUERY_REQUIRED', 'an export needs a query (q=…)')
  const ids = await collectIds(deps, query, principal)
  const metas = ids.map((id) => deps.archive.getMeta(id)).filter((meta): meta is MessageMeta => meta !== undefined)
  const exportedAt = new Date(deps.clock.now()).toISOString()
  const manifest = Buffer.from(
    JSON.stringify({ appliance: deps.signer.serial, exportedAt, exportedBy: principal.name, query, count: metas.length, messages: metas.map(manifestEntryOf) }, null, 1) + '\n',
  )
  const manifestSha256 = createHash('sha256').update(manifest).digest('hex')
  const signature = sign('sha256', manifest, deps.signer.privateKeyPem).toString('base64')
  const zip = new yazl.ZipFile()
  const mtime = new Date(deps.clock.now())
  zip.addBuffer(manifest, 'manifest.json', { mtime })
  zip.addBuffer(Buffer.from(signature + '\n'), 'manifest.sig', { mtime })
  zip.addBuffer(Buffer.from(deps.signer.certificatePem), 'certificate.pem', { mtime })
  for (const meta of metas) {
    zip.addReadStreamLazy(`messages/${meta.id}.eml`, { mtime: new Date(meta.firstArchivedAtMs), size: meta.sizeBytes }, (done) => {
      Promise.resolve(deps.archive.getRaw(meta.id)).then(
        (bytes) => (bytes ? done(null, Readable.from([Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)])) : done(new Error(`message ${meta.id} is gone`), Readable.from([]))),
        (error: unknown) => done(error, Readable.from([])),
      )
    })
  }
  zip.end()
  deps.audit?.({ actor, action: 'mail.export', details: { role: principal.role, query: query.slice(0, 1024), count: metas.length, manifestSha256 } })
  return { stream: zip.outputStream as unknown as Readable, count: metas.length, manifestSha256, exportedAt }
}

export function exportRoutes(deps: ExportDeps): ApiRoute[] {
  return [
    {
      method: 'GET',
      pattern: /^\/api\/v1\/export$/,
      permission: 'mail.export',
      handle: async ({ url, principal, actor }) => {
        const built = await buildExport(deps, url.searchParams.get('q') ?? '', principal, actor)
        const name = `mailkeep-export-${built.exportedAt.replace(/[:.]/g, '-')}.zip`
        return new StreamAnswer(built.stream, {
          'content-type': 'application/zip',
          'content-disposition': `attachment; filename="${name}"`,
          'x-manifest-sha256': built.manifestSha256,
          'cache-control': 'no-store',
        })
      },
    },
  ]
}
