import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { MessageMeta } from '../archive/types.js'
import { anonymous, roleMay, type Permission, type Principal } from '../access/roles.js'
import type { Authenticated } from './http-login.js'
import { HttpError, sendJson } from './http-responses.js'

/** What the HTTP API reads from the archive. */
export interface ArchiveReader {
  getMeta(id: string): Promise<MessageMeta | undefined> | MessageMeta | undefined
  getRaw(id: string): Promise<Uint8Array | undefined> | Uint8Array | undefined
}

/** What a route handler is given. */
export interface RouteRequest {
  url: URL
  /** The pattern's groups. */
  params: string[]
  /** The parsed JSON body of a POST; undefined for GET. */
  body: unknown
  remoteAddress: string
  /** Who asks (authenticated; the route's permission already checked). */
  principal: Principal
  /** `NAME@REMOTE-ADDRESS`: the actor in the audit log. */
  actor: string
  /** How the caller authenticated (a session's id for sign-out); undefined on an open route. */
  authenticated: Authenticated | undefined
  /** The request itself (the sign-in checks its password behind the throttle). */
  incoming: IncomingMessage
  /** Sets a header of the answer (a session cookie). */
  setHeader(name: string, value: string): void
}

/**
 * A route of the API: method, path pattern, the one permission it needs (roles.ts), and
 * its handler. The handler's result is answered as JSON with `status` (200 when absent),
 * or as bytes when it is a BinaryAnswer.
 */
export interface ApiRoute {
  method: 'GET' | 'POST'
  pattern: RegExp
  permission: Permission
  status?: number
  /** Open to requests without credentials (the sign-in): no authentication, `anonymous` as principal. */
  open?: true
  handle(request: RouteRequest): Promise<unknown> | unknown
}

/**
 * Chain of custody: told of every read of message content and every search (who, from
 * where, which ids or which query) for the audit log. Never a password, never content.
 */
export type ReadAudit = (event: { actor: string; action: string; details: Record<string, unknown> }) => void

/** An answer that is not JSON: a message's original bytes. */
export class BinaryAnswer {
  constructor(
    readonly bytes: Uint8Array,
    readonly headers: Record<string, string>,
  ) {}
}

/** An answer streamed as it is made (an export's zip); its headers come first. */
export class StreamAnswer {
  constructor(
    readonly stream: Readable,
    readonly headers: Record<string, string>,
  ) {}
}

/** Largest JSON request body accepted, in bytes. */
export const requestBodyBytesMax = 64 * 1024

/** What the routing table answers from, and the login check every route passes first. */
export interface RouteDeps {
  routes: readonly ApiRoute[]
  /** The account the request's credentials name. @throws HttpError (401, 403 CSRF, 499, 503) */
  authenticate(request: IncomingMessage, remoteAddress: string): Promise<Authenticated>
}

/**
 * Answers one request from the routing table. The method is checked first (a 405 costs no
 * password check), then the credentials, then the route's permission (403), then the
 * handler runs. A path no route has is 404 — after authentication, so that an anonymous
 * client learns nothing about which paths exist.
 * @throws HttpError (400, 401, 403, 404, 405, 413, 499, 503) and whatever a handler throws
 */
export async function routeRequest(deps: RouteDeps, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const remoteAddress = request.socket.remoteAddress ?? 'unknown'
  const url = new URL(request.url ?? '/', 'http://mailkeep.invalid')
  const path = url.pathname.replace(/\/+$/, '')
  const method = request.method === 'HEAD' ? 'GET' : request.method
  const route = deps.routes.find((candidate) => candidate.method === method && candidate.pattern.test(path))
  // Only GET (and HEAD) exist, plus the POSTs of some routes: there is no route that
  // deletes or edits an archived message (retention's purge is the only removal).
  if (!route && method !== 'GET') throw new HttpError(405, 'METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path.slice(0, 200)}`)
  const authenticated = route?.open ? undefined : await deps.authenticate(request, remoteAddress)
  if (!route) throw new HttpError(404, 'NOT_FOUND', `no route ${path.slice(0, 200)}`)
  const principal = authenticated?.principal ?? anonymous
  if (authenticated && !roleMay(principal.role, route.permission)) throw new HttpError(403, 'FORBIDDEN', `the ${principal.role} role may not do this (${route.permission})`)
  const body = method === 'POST' ? await readJsonBody(request) : undefined
  const params = route.pattern.exec(path)!.slice(1)
  const setHeader = (name: string, value: string): void => void response.setHeader(name, value)
  const result = await route.handle({ url, params, body, remoteAddress, principal, actor: `${principal.name}@${remoteAddress}`, authenticated, incoming: request, setHeader })
  if (result instanceof StreamAnswer) {
    response.writeHead(route.status ?? 200, result.headers)
    if (request.method === 'HEAD') {
      result.stream.destroy()
      response.end()
      return
    }
    // A failure mid-stream cannot change the status any more: the connection is cut, so the client sees a broken download.
    await pipeline(result.stream, response).catch(() => response.destroy())
    return
  }
  if (result instanceof BinaryAnswer) {
    response.writeHead(route.status ?? 200, { ...result.headers, 'content-length': result.bytes.byteLength })
    response.end(request.method === 'HEAD' ? undefined : Buffer.from(result.bytes.buffer, result.bytes.byteOffset, result.bytes.byteLength))
    return
  }
  sendJson(response, route.status ?? 200, result)
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
