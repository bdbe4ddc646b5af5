import { createHttpApi } from '../firmware/api/http-api.js'
import type { AdminCredential } from '../firmware/api/auth.js'
import type { HttpsCertificate } from '../firmware/api/tls-certificate.js'
import type { TlsMaterial } from '../firmware/api/http-server.js'
import { loginAuditEntry } from '../firmware/api/login-throttle.js'
import type { ArchiveStore } from '../firmware/archive/types.js'
import { createSearchRoute, type SearchIndex } from '../firmware/index/index.js'
import { policyApiRoutes, type AuditEvent, type PolicyService } from '../firmware/policy/index.js'
import type { ComposeContext } from './compose-context.js'
import { managed, type ManagedService } from './managed-service.js'
import type { AccountStore } from '../firmware/access/accounts.js'
import type { TokenStore } from '../firmware/access/tokens.js'
import type { SessionStore } from '../firmware/access/sessions.js'
import { createWebRoutes, type WebDeps } from '../firmware/web/web-routes.js'
import { createSavedSearches } from '../firmware/web/saved-searches.js'
import type { DirectorySource } from '../firmware/access/sign-in.js'
import { searchScopeFor } from '../firmware/access/roles.js'
import type { ApiRoute, ReadAudit } from '../firmware/api/http-routes.js'
import { exportRoutes, type ExportDeps } from '../firmware/api/export-routes.js'

/**
 * The routes beyond status and messages: search (narrowed to a `user`'s own mail) and
 * retention, holds and audit. Exported for the role table's test, which walks every route.
 */
export function extraRoutes(deps: {
  archive: Pick<ArchiveStore, 'getMeta' | 'getRaw'>
  search: Pick<SearchIndex, 'search'>
  policy: PolicyService
  audit?: ReadAudit
  /** What exports read, sign and audit with. */
  exporter: ExportDeps
}): ApiRoute[] {
  const search = createSearchRoute(deps.search)
  return [
    {
      method: 'GET',
      pattern: /^\/api\/v1\/search$/,
      permission: 'mail.search',
      // Audited with the query and the ids of the hits shown (their snippets are content).
      handle: async ({ url, principal, actor }) => {
        const result = await search({ url, scope: searchScopeFor(principal, (id) => deps.archive.getMeta(id)) })
        deps.audit?.({
          actor,
          action: 'mail.search',
          details: { role: principal.role, query: (url.searchParams.get('q') ?? '').slice(0, 1024), total: result.total, ids: result.hits.map((hit) => hit.id) },
        })
        return result
      },
    },
    ...policyApiRoutes(deps.policy),
    ...exportRoutes(deps.exporter),
  ]
}

/**
 * The HTTP stage: the API (status, messages, search, policies, holds, audit) over HTTPS
 * when `https.enabled` and plain HTTP when `http.enabled` (loopback clients only while
 * HTTPS is on); failed logins go to the audit log. Returns its service entry (or none) and how to swap the HTTPS certificate.
 * Pure: the credential and the certificate were loaded by the caller.
 */
export function composeHttp(
  context: ComposeContext,
  deps: {
    credential: AdminCredential
    accounts: AccountStore
    tokens: TokenStore
    sessions: SessionStore
    directory?: DirectorySource
    /** Exports: what they read, sign (the appliance's identity key) and audit with. */
    exporter: ExportDeps
    /** When `https.enabled`: the certificate, or why it cannot be used (HTTPS stays down until `tls install`). */
    https?: { certificate: HttpsCertificate } | { unavailableReason: string }
    archive: ArchiveStore
    status: () => Promise<unknown>
    search: Pick<SearchIndex, 'search'>
    policy: PolicyService
    audit: (event: AuditEvent) => void
  },
): { services: ManagedService[]; replaceTls?: (material: TlsMaterial) => Promise<void> } {
  const { config, logger, clock } = context
  const https = config.https.enabled ? deps.https : undefined
  if (!config.http.enabled && !https) return { services: [] }
  const stopTimeoutMs = config.shutdown.timeoutMs
  const http = createHttpApi(
    {
      logger: logger.child('http'),
      clock,
      signIn: { firstAdmin: deps.credential, accounts: deps.accounts, tokens: deps.tokens, ...(deps.directory ? { directory: deps.directory } : {}) },
      sessions: deps.sessions,
      pages: (shared) =>
        createWebRoutes({
          logger: logger.child('web'),
          clock,
          archive: deps.archive,
          status: deps.status,
          audit: deps.audit,
          search: (query, options) => deps.search.search(query, options) as ReturnType<WebDeps['search']>,
          auditLog: { entries: (query) => deps.policy.auditEntries(query), verify: () => deps.policy.auditVerify() },
          accounts: () => ({ accounts: deps.accounts.list(), tokens: deps.tokens.list() }),
          saved: createSavedSearches({ clock }, { dataDir: config.dataDir }),
          holds: { list: () => deps.policy.holds(), place: (input, actor) => deps.policy.placeHold(input, actor), release: (name, actor) => deps.policy.releaseHold(name, actor) },
          ...shared,
        }),
      archive: deps.archive,
      status: deps.status,
      routes: extraRoutes(deps),
      audit: deps.audit,
      onLoginEvent: (event) => deps.audit(loginAuditEntry(event)),
    },
    {
      ...(config.http.enabled ? { http: { host: config.http.host, port: config.http.port, stopTimeoutMs } } : {}),
      ...(https
        ? {
            https: {
              host: config.https.host,
              port: config.https.port,
              stopTimeoutMs,
              hstsMaxAgeSeconds: config.https.hstsMaxAgeSeconds,
              ...('certificate' in https ? { tls: https.certificate } : { unavailableReason: https.unavailableReason }),
            },
          }
        : {}),
      plainNetworks: config.http.plainNetworks,
      loginThrottle: config.http.loginThrottle,
    },
  )
  return { services: [managed('http', http, () => http.listeners())], replaceTls: (material) => http.replaceTls(material) }
}
