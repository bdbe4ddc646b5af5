import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { MailkeepError } from '../common/errors.js'
import type { MessageMeta } from '../archive/types.js'
import { inScope } from '../access/scope.js'
import { roleMay, scopeOf, searchScopeFor, type Principal } from '../access/roles.js'
import type { SessionStore } from '../access/sessions.js'
import { parseWithBudget } from '../mime/postal-adapter.js'
import { styleSheet } from './assets.js'
import { htmlBodyDocument, htmlBodyHeaders, sanitizeMailHtml } from './html-body.js'
import type { SavedSearches } from './saved-searches.js'
import type { Html } from './html.js'
import {
  accountsPage,
  auditPage,
  errorPage,
  holdsPage,
  messagePage,
  searchPage,
  signInPage,
  statusPage,
  type AccountsView,
  type AuditRow,
  type HoldRow,
  type SearchView,
  type Viewer,
} from './pages.js'

/**
 * The web interface: server-rendered pages on the API's listeners, over the same services
 * the JSON API uses (search with the caller's scope, metadata and raw bytes through the
 * scope rule, status), signed in with a browser session. No script in any page; a strict
 * Content-Security-Policy on every answer; forms post back here only, each change with the
 * session's CSRF token. Reads are audited as the API's are.
 */

/** Sent with every page. */
export const webSecurityHeaders: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': "default-src 'none'; style-src 'self'; img-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  // same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on the page's own forms.
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
})

/** Largest form body accepted, in bytes. */
export const formBytesMax = 16 * 1024
/** Audit entries shown on the audit page (newest first). */
export const webAuditEntries = 200
/** Hits per search page. */
export const webPageHits = 25
/** Most characters of a message's text shown. */
export const webBodyCharsMax = 200_000

export interface WebDeps {
  logger: Logger
  clock: Clock
  sessions: SessionStore
  /** The throttled password check (firmware/api/http-login.ts). @throws HttpError-like MailkeepError with a status */
  checkPassword(name: string, password: string, request: IncomingMessage, remoteAddress: string): Promise<Principal>
  search(
    query: string,
    options: { limit: number; cursor: string | null; scope?: { addresses: readonly string[]; admits(id: string): boolean } },
  ): Promise<{
    total: number
    hits: SearchView['hits']
    nextCursor: string | null
    completeness?: { complete: boolean; peers: { serial: string; queuedMessages: number; queueEstimated: boolean }[] }
  }>
  archive: { getMeta(id: string): MessageMeta | undefined | Promise<MessageMeta | undefined>; getRaw(id: string): Uint8Array | undefined | Promise<Uint8Array | undefined> }
  status(): Promise<unknown>
  /** The audit log (firmware/policy): the last entries (of one account), and its verification. */
  auditLog?: {
    entries(query: { limit: number; actor?: string }): AuditRow[]
    verify(): { ok: boolean; entries: number; problems: { seq: number | null; message: string }[] }
  }
  /** Local accounts and API tokens, listed for admins. */
  accounts?: () => AccountsView
  /** Saved searches per account. */
  saved?: SavedSearches
  /** Litigation holds (firmware/policy): the same rules and audit entries as the CLI and the API. */
  holds?: {
    list(): HoldRow[]
    place(input: unknown, actor: string): Promise<unknown>
    release(name: string, actor: string): Promise<unknown>
  }
  audit?: (event: { actor: string; action: string; details: Record<string, unknown> }) => void
  cookieName: string
  absoluteTimeoutMs: number
}

function send(response: ServerResponse, status: number, body: Html | string, contentType = 'text/html; charset=utf-8', headers: Record<string, string> = {}): void {
  const text = String(body)
  response.writeHead(status, { ...webSecurityHeaders, 'content-type': contentType, 'content-length': Buffer.byteLength(text), ...headers })
  response.end(text)
}

const redirect = (response: ServerResponse, location: string, headers: Record<string, string> = {}) => {
  response.writeHead(303, { ...webSecurityHeaders, location, 'content-length': 0, ...headers })
  response.end()
}

async function readForm(request: IncomingMessage): Promise<URLSearchParams | undefined> {
  const chunks: Buffer[] = []
  let bytes = 0
  for await (const chunk of request) {
    bytes += (chunk as Buffer).byteLength
    if (bytes > formBytesMax) return undefined
    chunks.push(chunk as Buffer)
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
}

/** A POST from another site's page (its Origin names another host) is refused before anything else. */
function crossSite(request: IncomingMessage): boolean {
  const origin = request.headers.origin
  if (origin === undefined || origin === 'null') return origin === 'null'
  try {
    return new URL(origin).host !== request.headers.host
  } catch {
    return true
  }
}

/** A message's bodies, parsed again from its raw bytes: the text, and the HTML when it has one. */
async function bodiesOf(raw: Uint8Array, clock: Clock): Promise<{ text: string | null; html: string | null }> {
  try {
    const { email } = await parseWithBudget(raw, { postal: {}, monotonicMs: () => clock.monotonicMs(), deadlineMs: clock.monotonicMs() + 5_000, budgetMs: 5_000 })
    return { text: email.text === undefined ? null : email.text.slice(0, webBodyCharsMax), html: email.html ?? null }
  } catch {
    return { text: null, html: null }
  }
}

/**
 * The query the filter fields add up to, in the query language: the typed query, then
 * `from:` `to:` `after:` `before:` `has:attachment`. Values with spaces or quotes are refused.
 * @returns the query, or a sentence saying which field is wrong
 */
export function filteredQuery(params: URLSearchParams): { query: string } | { problem: string } {
  const parts = [(params.get('q') ?? '').trim()]
  for (const field of ['from', 'to'] as const) {
    const value = (params.get(field) ?? '').trim()
    if (!value) continue
    if (/[\s"()]/.test(value)) return { problem: `${field}: one address, local part or domain, without spaces or quotes` }
    parts.push(`${field}:${value}`)
  }
  for (const field of ['after', 'before'] as const) {
    const value = (params.get(field) ?? '').trim()
    if (!value) continue
    if (!/^\d{4}-\d{2}-\d{2}$/.test(value)) return { problem: `${field}: a date YYYY-MM-DD` }
    parts.push(`${field}:${value}`)
  }
  if (params.get('attachment')) parts.push('has:attachment')
  return { query: parts.filter(Boolean).join(' ') }
}

/** The web handler: true when it answered (a page path), false for paths it does not serve (the API). */
export function createWebRoutes(deps: WebDeps) {
  const cookie = (value: string, maxAgeSeconds: number) => `${deps.cookieName}=${value}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=${maxAgeSeconds}`
  const sessionOf = (request: IncomingMessage): { viewer: Viewer; id: string; csrfMatches(token: string | undefined): boolean } | undefined => {
    for (const part of (request.headers.cookie ?? '').split(';')) {
      const [name, ...value] = part.trim().split('=')
      if (name !== deps.cookieName) continue
      const id = value.join('=')
      const resumed = deps.sessions.resume(id)
      if (!resumed) return undefined
      return {
        id,
        csrfMatches: resumed.csrfMatches,
        viewer: { principal: resumed.principal, csrfToken: resumed.session.csrfToken, expiresAt: resumed.session.expiresAt, idleExpiresAt: resumed.session.idleExpiresAt },
      }
    }
    return undefined
  }
  const actorOf = (viewer: Viewer, request: IncomingMessage) => `${viewer.principal.name}@${request.socket.remoteAddress ?? 'unknown'}`

  async function signIn(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const form = await readForm(request)
    const user = form?.get('user') ?? ''
    const password = form?.get('password') ?? ''
    if (!user || !password) return send(response, 400, signInPage('Type your user name and password.', user.slice(0, 200)))
    try {
      const remote = request.socket.remoteAddress ?? 'unknown'
      const principal = await deps.checkPassword(user, password, request, remote)
      const { id } = deps.sessions.create(principal)
      deps.audit?.({ actor: `${principal.name}@${remote}`, action: 'session.start', details: { role: principal.role, source: principal.source, via: 'web' } })
      redirect(response, '/search', { 'set-cookie': cookie(id, Math.floor(deps.absoluteTimeoutMs / 1000)) })
    } catch (error) {
      const status = error instanceof MailkeepError && 'status' in error ? Number((error as { status: number }).status) : 500
      const message = status === 503 ? (error as Error).message : status === 401 ? `Sign-in refused: ${(error as Error).message}.` : 'Sign-in failed.'
      send(response, status === 503 ? 503 : 401, signInPage(message, user.slice(0, 200)))
    }
  }

  async function searchRoute(viewer: Viewer, url: URL, request: IncomingMessage, response: ServerResponse): Promise<void> {
    // The filter form: its fields become the query (shown in the box), then a plain search.
    if (['from', 'to', 'after', 'before', 'attachment'].some((field) => url.searchParams.has(field))) {
      const filtered = filteredQuery(url.searchParams)
      if ('problem' in filtered)
        return send(
          response,
          400,
          searchPage(viewer, { query: url.searchParams.get('q') ?? '', total: 0, hits: [], nextCursor: null, incomplete: [], problem: filtered.problem }, url.searchParams.get('q') ?? ''),
        )
      return redirect(response, `/search?q=${encodeURIComponent(filtered.query)}`)
    }
    const query = (url.searchParams.get('q') ?? '').slice(0, 1024)
    const saved = (await deps.saved?.list(viewer.principal.name)) ?? []
    if (!query.trim()) return send(response, 200, searchPage(viewer, undefined, '', saved))
    const scope = searchScopeFor(viewer.principal, (id) => deps.archive.getMeta(id) as MessageMeta | undefined)
    try {
      const result = await deps.search(query, { limit: webPageHits, cursor: url.searchParams.get('cursor'), ...(scope ? { scope } : {}) })
      deps.audit?.({
        actor: actorOf(viewer, request),
        action: 'mail.search',
        details: { role: viewer.principal.role, query, total: result.total, ids: result.hits.map((hit) => hit.id), via: 'web' },
      })
      const incomplete = (result.completeness?.peers ?? [])
        .filter((peer) => peer.queuedMessages > 0)
        .map((peer) => `Results may be incomplete: ${peer.queueEstimated ? 'about ' : ''}${peer.queuedMessages} message(s) from ${peer.serial} not yet received here.`)
      send(response, 200, searchPage(viewer, { query, total: result.total, hits: result.hits, nextCursor: result.nextCursor, incomplete }, query, saved))
    } catch (error) {
      if (!(error instanceof MailkeepError)) throw error
      send(response, 400, searchPage(viewer, { query, total: 0, hits: [], nextCursor: null, incomplete: [], problem: error.message }, query))
    }
  }

  async function messageRoute(viewer: Viewer, id: string, htmlFrame: boolean, request: IncomingMessage, response: ServerResponse): Promise<void> {
    const meta = /^[0-9a-f]{64}$/.test(id) ? await deps.archive.getMeta(id) : undefined
    // Another's message answers exactly as one that does not exist.
    if (!meta || !inScope(scopeOf(viewer.principal), meta)) return send(response, 404, errorPage(viewer, 'Not found', 'There is no such message.'))
    const raw = await deps.archive.getRaw(meta.id)
    const bodies = raw ? await bodiesOf(raw, deps.clock) : { text: null, html: null }
    deps.audit?.({ actor: actorOf(viewer, request), action: 'mail.read', details: { role: viewer.principal.role, part: htmlFrame ? 'html' : 'view', ids: [meta.id], via: 'web' } })
    if (!htmlFrame) return send(response, 200, messagePage(viewer, meta, bodies.text, bodies.html !== null))
    const document = htmlBodyDocument(bodies.html === null ? '' : sanitizeMailHtml(bodies.html))
    response.writeHead(200, { ...htmlBodyHeaders, 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(document) })
    response.end(document)
  }

  /** Saves the query of the form under its label, or deletes a saved search; back to the search page. */
  async function savedChange(
    session: { viewer: Viewer; csrfMatches(token: string | undefined): boolean },
    remove: boolean,
    response: ServerResponse,
    request: IncomingMessage,
  ): Promise<void> {
    const { viewer } = session
    const form = await readForm(request)
    if (!session.csrfMatches(form?.get('_csrf') ?? undefined)) return send(response, 403, errorPage(viewer, 'Refused', 'The form is stale or forged (CSRF token); reload the page.'))
    if (!deps.saved) return send(response, 404, errorPage(viewer, 'Not found', 'Saved searches are not available.'))
    const query = form?.get('q') ?? ''
    try {
      if (remove) await deps.saved.remove(viewer.principal.name, form?.get('label') ?? '')
      else await deps.saved.add(viewer.principal.name, form?.get('label') ?? '', query)
      redirect(response, remove ? '/search' : `/search?q=${encodeURIComponent(query)}`)
    } catch (error) {
      if (!(error instanceof MailkeepError)) throw error
      send(response, 400, errorPage(viewer, 'Not saved', error.message))
    }
  }

  /** Places a hold (name undefined) or releases one: admins only, with the form's CSRF token. */
  async function holdChange(
    session: { viewer: Viewer; csrfMatches(token: string | undefined): boolean },
    release: string | undefined,
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const { viewer } = session
    const form = await readForm(request)
    if (!deps.holds || !roleMay(viewer.principal.role, 'policy.write'))
      return send(response, 403, errorPage(viewer, 'Not allowed', `The ${viewer.principal.role} role may not change holds.`))
    if (!session.csrfMatches(form?.get('_csrf') ?? undefined)) return send(response, 403, errorPage(viewer, 'Refused', 'The form is stale or forged (CSRF token); reload the page.'))
    const actor = actorOf(viewer, request)
    try {
      if (release) await deps.holds.release(release, actor)
      else {
        const text = (name: string) => (form?.get(name) ?? '').trim()
        const custodians = text('custodians')
          .split(',')
          .map((value) => value.trim())
          .filter(Boolean)
        await deps.holds.place(
          { name: text('name'), reason: text('reason'), placedBy: viewer.principal.name, ...(text('query') ? { query: text('query') } : {}), ...(custodians.length ? { custodians } : {}) },
          actor,
        )
      }
      redirect(response, '/holds')
    } catch (error) {
      if (!(error instanceof MailkeepError)) throw error
      send(response, 400, holdsPage(viewer, deps.holds.list(), error.message))
    }
  }

  /** Answers a page request; false when the path is not the web interface's. */
  return async function handle(request: IncomingMessage, response: ServerResponse): Promise<boolean> {
    const url = new URL(request.url ?? '/', 'https://mailkeep.invalid')
    const path = url.pathname
    if (path.startsWith('/api/')) return false
    const method = request.method === 'HEAD' ? 'GET' : request.method
    if (path === '/assets/app.css' && method === 'GET') {
      send(response, 200, styleSheet, 'text/css; charset=utf-8', { 'cache-control': 'public, max-age=3600' })
      return true
    }
    if (method === 'POST' && crossSite(request)) {
      send(response, 403, errorPage(undefined, 'Refused', 'A form from another site cannot act here.'))
      return true
    }
    if (path === '/signin') {
      if (method === 'POST') await signIn(request, response)
      else send(response, 200, signInPage(undefined, ''))
      return true
    }
    const session = sessionOf(request)
    if (!session) {
      if (method === 'GET') redirect(response, '/signin')
      else send(response, 401, errorPage(undefined, 'Signed out', 'Your session has ended; sign in again.'))
      return true
    }
    const { viewer } = session
    const holdAction = /^\/holds(?:\/([a-z0-9][a-z0-9._-]{0,63})\/release)?$/.exec(path)
    if (holdAction && method === 'POST') {
      await holdChange(session, holdAction[1], request, response)
      return true
    }
    if ((path === '/saved' || path === '/saved/delete') && method === 'POST') {
      await savedChange(session, path === '/saved/delete', response, request)
      return true
    }
    if (path === '/signout' && method === 'POST') {
      const form = await readForm(request)
      if (!session.csrfMatches(form?.get('_csrf') ?? undefined)) {
        send(response, 403, errorPage(viewer, 'Refused', 'The form is stale or forged (CSRF token); reload the page.'))
        return true
      }
      deps.sessions.end(session.id)
      deps.audit?.({ actor: actorOf(viewer, request), action: 'session.end', details: { reason: 'signout', via: 'web' } })
      redirect(response, '/signin', { 'set-cookie': cookie('', 0) })
      return true
    }
    if (method !== 'GET') {
      send(response, 405, errorPage(viewer, 'Not allowed', `${request.method} is not allowed here.`))
      return true
    }
    const message = /^\/messages\/([^/]+?)(\/html)?$/.exec(path)
    if (path === '/' || path === '') redirect(response, '/search')
    else if (path === '/search') await searchRoute(viewer, url, request, response)
    else if (message) await messageRoute(viewer, message[1]!.toLowerCase(), message[2] !== undefined, request, response)
    else if (path === '/audit' && deps.auditLog && roleMay(viewer.principal.role, 'audit.read')) {
      const actor = (url.searchParams.get('actor') ?? '').trim().slice(0, 200)
      const verify = url.searchParams.get('verify') ? deps.auditLog.verify() : undefined
      send(response, 200, auditPage(viewer, deps.auditLog.entries({ limit: webAuditEntries, ...(actor ? { actor } : {}) }).reverse(), actor, verify))
    } else if (path === '/accounts' && deps.accounts && roleMay(viewer.principal.role, 'accounts.read')) send(response, 200, accountsPage(viewer, deps.accounts()))
    else if (path === '/holds' && deps.holds && roleMay(viewer.principal.role, 'policy.read')) send(response, 200, holdsPage(viewer, deps.holds.list(), undefined))
    else if (path === '/status' && roleMay(viewer.principal.role, 'status.read')) send(response, 200, statusPage(viewer, (await deps.status()) as Record<string, unknown>))
    else send(response, 404, errorPage(viewer, 'Not found', 'There is no such page.'))
    return true
  }
}
