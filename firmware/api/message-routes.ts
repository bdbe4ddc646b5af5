import { inScope } from '../access/scope.js'
import { scopeOf } from '../access/roles.js'
import { BinaryAnswer, type ApiRoute, type ArchiveReader, type ReadAudit, type RouteRequest } from './http-routes.js'
import { HttpError } from './http-responses.js'
import { attachmentBytes } from '../mime/attachment-bytes.js'

const messageIdPattern = /^[0-9a-f]{64}$/

/**
 * The appliance's own routes:
 *   GET /api/v1/status             appliance status and store figures
 *   GET /api/v1/messages/{id}      metadata of one archived message
 *   GET /api/v1/messages/{id}/raw  the original bytes, byte-identical (message/rfc822)
 *   GET /api/v1/messages/{id}/attachments/{n}  attachment n (0-based, as the metadata lists them)
 * A message outside the caller's scope (scope.ts) answers 404 exactly as one that does not
 * exist: a `user` cannot tell whether someone else's message is archived. Each read
 * served is audited (`mail.read` with `part` metadata or raw).
 */
export function coreRoutes(deps: { archive: ArchiveReader; status: () => Promise<unknown>; audit?: ReadAudit; clock?: { monotonicMs(): number } }): ApiRoute[] {
  const audited = (request: RouteRequest, part: string, id: string): void =>
    deps.audit?.({ actor: request.actor, action: 'mail.read', details: { role: request.principal.role, part, ids: [id] } })
  const clock = deps.clock ?? { monotonicMs: () => performance.now() }
  /** @throws HttpError 400 (not an id), 404 (absent or outside the scope) */
  const visibleMeta = async (idText: string, principal: Parameters<typeof scopeOf>[0]) => {
    const id = idText.toLowerCase()
    if (!messageIdPattern.test(id)) throw new HttpError(400, 'BAD_ID', 'a message id is 64 hex digits (SHA-256)')
    const meta = await deps.archive.getMeta(id)
    if (!meta || !inScope(scopeOf(principal), meta)) throw new HttpError(404, 'NOT_FOUND', `no message ${id}`)
    return meta
  }
  return [
    {
      method: 'GET',
      pattern: /^\/api\/v1\/messages\/([^/]+)\/attachments\/(\d{1,4})$/,
      permission: 'mail.read',
      handle: async (request) => {
        const meta = await visibleMeta(request.params[0]!, request.principal)
        const index = Number(request.params[1])
        const listed = meta.attachments[index]
        if (!listed) throw new HttpError(404, 'NOT_FOUND', `message ${meta.id} has no attachment ${index} (it has ${meta.attachments.length})`)
        const raw = await deps.archive.getRaw(meta.id)
        const bytes = raw ? await attachmentBytes(raw, listed.sha256, clock) : undefined
        if (!bytes) throw new HttpError(404, 'NOT_FOUND', `attachment ${index} of ${meta.id} could not be found in the message again`)
        audited(request, `attachment ${index}`, meta.id)
        // Served as a download of an opaque type: never rendered by the browser in the appliance's origin.
        const name = (listed.filename ?? `attachment-${index}`).replace(/[^\w.\- ]+/g, '_').slice(0, 200)
        return new BinaryAnswer(bytes, {
          'content-type': 'application/octet-stream',
          'x-content-type-options': 'nosniff',
          'content-disposition': `attachment; filename="${name}"; filename*=UTF-8''${encodeURIComponent(listed.filename ?? name)}`,
          'x-attachment-content-type': listed.contentType.replace(/[^\w./+\-;= ]+/g, '').slice(0, 200),
          'x-attachment-sha256': listed.sha256,
          'cache-control': 'private, no-store',
        })
      },
    },
    { method: 'GET', pattern: /^\/api\/v1\/status$/, permission: 'status.read', handle: () => deps.status() },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/messages\/([^/]+)$/,
      permission: 'mail.read',
      handle: async (request) => {
        const meta = await visibleMeta(request.params[0]!, request.principal)
        audited(request, 'metadata', meta.id)
        return meta
      },
    },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/messages\/([^/]+)\/raw$/,
      permission: 'mail.read',
      handle: async (request) => {
        const { id } = await visibleMeta(request.params[0]!, request.principal)
        const bytes = await deps.archive.getRaw(id)
        if (!bytes) throw new HttpError(404, 'NOT_FOUND', `no message ${id}`)
        audited(request, 'raw', id)
        return new BinaryAnswer(bytes, {
          'content-type': 'message/rfc822',
          etag: `"${id}"`,
          'content-disposition': `attachment; filename="${id}.eml"`,
          'cache-control': 'private, max-age=31536000, immutable',
        })
      },
    },
  ]
}
