import { createHttpApi } from '../firmware/api/http-api.js'
import type { AdminCredential } from '../firmware/api/auth.js'
import { loginAuditEntry } from '../firmware/api/login-throttle.js'
import type { ArchiveStore } from '../firmware/archive/types.js'
import { createSearchRoute, type SearchIndex } from '../firmware/index/index.js'
import { policyApiRoutes, type AuditEvent, type PolicyService } from '../firmware/policy/index.js'
import type { ComposeContext } from './compose-context.js'
import { managed, type ManagedService } from './managed-service.js'

/**
 * The HTTP stage: the API (status, messages, search, policies, holds, audit) when
 * `http.enabled`; failed logins go to the audit log. Returns its service entry, or none.
 * Pure: the credential was loaded by the caller.
 */
export function composeHttp(
  context: ComposeContext,
  deps: {
    credential: AdminCredential
    archive: ArchiveStore
    status: () => Promise<unknown>
    search: Pick<SearchIndex, 'search'>
    policy: PolicyService
    audit: (event: AuditEvent) => void
  },
): ManagedService[] {
  const { config, logger, clock } = context
  if (!config.http.enabled) return []
  const http = createHttpApi(
    {
      logger: logger.child('http'),
      clock,
      credential: deps.credential,
      archive: deps.archive,
      status: deps.status,
      routes: new Map([['/api/v1/search', createSearchRoute(deps.search)]]),
      methodRoutes: policyApiRoutes(deps.policy),
      onLoginEvent: (event) => deps.audit(loginAuditEntry(event)),
    },
    { host: config.http.host, port: config.http.port, stopTimeoutMs: config.shutdown.timeoutMs, loginThrottle: config.http.loginThrottle },
  )
  const listeners = (): Record<string, string> => {
    const address = http.address()
    return { http: `${address.host}:${address.port}` }
  }
  return [managed('http', http, listeners)]
}
