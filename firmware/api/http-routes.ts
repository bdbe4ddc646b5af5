import type { IncomingMessage, ServerResponse } from 'node:http'
import type { MessageMeta } from '../archive/types.js'
import { HttpError, sendJson } from './http-responses.js'

/** What the HTTP API reads from the archive. */
export interface ArchiveReader {
  getMeta(id: string): Promise<MessageMeta | undefined> | MessageMeta | undefined
  getRaw(id: string): Promise<Uint8Array | undefined> | Uint8Array | undefined
}

/** A route handler beyond the built-in ones (search is added by the index module). */
export type ApiRoute = (request: { url: URL; remoteAddress: string }) => Promise<unknown>

/**
 * A route with a method and a path pattern (retention, holds, audit). `params` are the
 * pattern's groups; `body` is the parsed JSON body of a POST (undefined for GET); `actor`
 * is `admin@REMOTE-ADDRESS` for the audit log.
 */
export interface ApiMethodRoute {
  method: 'GET' | 'POST'
  pattern: RegExp
  /** Status of a successful answer (201 for a creation); 200 when absent. */
  status?: number
  handle(request: { url: URL; params: string[]; body: unknown; actor: string; remoteAddress: string }): Promise<unknown> | unknown
}

/** Largest JSON request body accepted, in bytes. */
export const requestBodyBytesMax = 64 * 1024

/** What the routing table answers from, and the login check every route passes first. */
export interface RouteDeps {
  archive: ArchiveReader
  status: () => Promise<unknown>
  routes?: ReadonlyMap<string, ApiRoute>
  methodRoutes?: readonly ApiMethodRoute[]
  /** Resolves when the request carries the admin's credentials. @throws HttpError (401, 499, 503) */
  authenticate(request: IncomingMessage, remoteAddress: string): Promise<void>
}

const messageIdPattern = /^[0-9a-f]{64}$/
const messagePathPattern = /^\/api\/v1\/messages\/([^/]+)(\/raw)?$/

/**
 * Answers one request from the routing table: the method routes, then status, a message's
 * metadata or raw bytes, then the extra routes. Authentication comes after the method check
 * (a 405 costs no password check) and before anything is read.
 * @throws HttpError (400, 401, 404, 405, 413, 499, 503) and whatever a handler throws
 */
export async function routeRequest(deps: RouteDeps, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const remoteAddress = request.socket.remoteAddress ?? 'unknown'
  const url = new URL(request.url ?? '/', 'http://mailkeep.invalid')
  const path = url.pathname.replace(/\/+$/, '')
  const method = request.method === 'HEAD' ? 'GET' : request.method
  const methodRoute = deps.methodRoutes?.find((candidate) => candidate.method === method && candidate.pattern.test(path))
  // Only GET (and HEAD) exist, plus the POSTs of the method routes: there is no route that
  // deletes or edits an archived message (retention's purge is the only removal).
  if (method !== 'GET' && !methodRoute) throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path.slice(0, 200)}`)
  await deps.authenticate(request, remoteAddress)
  if (methodRoute) {
    const body = method === 'POST' ? await readJsonBody(request) : undefined
    const params = methodRoute.pattern.exec(path)!.slice(1)
    const result = await methodRoute.handle({ url, params, body, actor: `admin@${remoteAddress}`, remoteAddress })
    return sendJson(response, methodRoute.status ?? 200, result)
  }
  if (path === '/api/v1/status') return sendJson(response, 200, await deps.status())
  const message = messagePathPattern.exec(path)
  if (message) return sendMessage(deps.archive, request, response, message[1]!.toLowerCase(), message[2] !== undefined)
  const extra = deps.routes?.get(path)
  if (extra) return sendJson(response, 200, await extra({ url, remoteAddress }))
  throw new HttpError(404, 'NOT_FOUND', `no route ${path}`)
}

/** A message's metadata (JSON) or its original bytes, byte-identical (message/rfc822). @throws HttpError (400, 404) */
async function sendMessage(archive: ArchiveReader, request: IncomingMessage, response: ServerResponse, id: string, raw: boolean): Promise<void> {
  if (!messageIdPattern.test(id)) throw new HttpError(400, 'BAD_ID', 'a message id is 64 hex digits (SHA-256)')
  if (!raw) {
    const meta = await archive.getMeta(id)
    if (!meta) throw new HttpError(404, 'NOT_FOUND', `no message ${id}`)
    return sendJson(response, 200, meta)
  }
  const bytes = await archive.getRaw(id)
  if (!bytes) throw new HttpError(404, 'NOT_FOUND', `no message ${id}`)
  response.writeHead(200, {
    'content-type': 'message/rfc822',
    'content-length': bytes.byteLength,
    etag: `"${id}"`,
    'content-disposition': `attachment; filename="${id}.eml"`,
    'cache-control': 'private, max-age=31536000, immutable',
  })
  response.end(request.method === 'HEAD' ? undefined : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
}

/** The JSON body of a POST, undefined when empty. @throws HttpError 413 over requestBodyBytesMax, 400 when not JSON */
async function readJsonBody(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let bytes = 0
  for await (const chunk of request) {
    bytes += (chunk as Buffer).byteLength
    if (bytes > requestBodyBytesMax) throw new HttpError(413, 'BODY_TOO_LARGE', `the request body is over ${requestBodyBytesMax} bytes`)
    chunks.push(chunk as Buffer)
  }
  // An action without parameters (release) has no body; routes that need one validate it.
  if (bytes === 0) return undefined
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
  } catch (error) {
    throw new HttpError(400, 'BAD_JSON', `the body is not JSON: ${(error as Error).message.slice(0, 200)}`)
  }
}
