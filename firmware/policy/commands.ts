import { ControlError } from '../control/errors.js'
import { PolicyError } from './errors.js'
import type { PolicyService } from './policy-service.js'

/**
 * The control-socket handlers (CLI and console) and the HTTP routes of retention, holds and
 * the audit log, over one policy service. Bodies are validated by the service (ajv).
 */

/** Most audit entries `audit show` and `GET /api/v1/audit` return at once. */
export const auditShowEntriesMax = 1_000

type Flags = Map<string, string[]>

/** `--name value` pairs after positional words; repeated flags collect. @throws ControlError USAGE */
function parseFlags(args: readonly string[], allowed: readonly string[]): { positional: string[]; flags: Flags } {
  const positional: string[] = []
  const flags: Flags = new Map()
  for (let index = 0; index < args.length; index++) {
    const word = args[index]!
    if (!word.startsWith('--')) {
      positional.push(word)
      continue
    }
    const name = word.slice(2)
    if (!allowed.includes(name)) throw new ControlError('USAGE', `unknown option --${name}; allowed: ${allowed.map((flag) => `--${flag}`).join(' ')}`)
    const value = args[++index]
    if (value === undefined) throw new ControlError('USAGE', `--${name} needs a value`)
    flags.set(name, [...(flags.get(name) ?? []), value])
  }
  return { positional, flags }
}

const one = (flags: Flags, name: string) => flags.get(name)?.at(-1)
/** `a,b` or repeated flags. */
const list = (flags: Flags, name: string) =>
  flags
    .get(name)
    ?.flatMap((value) => value.split(','))
    .map((value) => value.trim())
    .filter(Boolean)

/** `policy add NAME --days N|forever [--sender A] [--recipient A] [--source S] [--query Q]` → the API body. */
export function policyFromArgs(args: readonly string[]): unknown {
  const { positional, flags } = parseFlags(args, ['days', 'sender', 'recipient', 'source', 'query'])
  if (positional.length !== 1)
    throw new ControlError('USAGE', 'usage: policy add NAME --days N|forever [--sender ADDR|DOMAIN]… [--recipient ADDR|DOMAIN]… [--source smtp|journal|import|mirror]… [--query Q]')
  const days = one(flags, 'days')
  if (days === undefined) throw new ControlError('USAGE', 'policy add needs --days N (or --days forever for the default policy)')
  if (days !== 'forever' && !/^\d{1,6}$/.test(days)) throw new ControlError('USAGE', `--days must be a whole number of days or "forever" (got ${JSON.stringify(days)})`)
  const criteria: Record<string, unknown> = {}
  if (flags.has('sender')) criteria.senders = list(flags, 'sender')
  if (flags.has('recipient')) criteria.recipients = list(flags, 'recipient')
  if (flags.has('source')) criteria.sources = list(flags, 'source')
  if (flags.has('query')) criteria.query = one(flags, 'query')
  return { name: positional[0], retentionDays: days === 'forever' ? null : Number(days), ...(Object.keys(criteria).length > 0 ? { criteria } : {}) }
}

/** `hold add NAME --reason R [--by WHO] [--query Q] [--custodian A]… [--from DATE] [--until DATE]` → the API body. */
export function holdFromArgs(args: readonly string[]): unknown {
  const { positional, flags } = parseFlags(args, ['reason', 'by', 'query', 'custodian', 'from', 'until'])
  if (positional.length !== 1)
    throw new ControlError('USAGE', 'usage: hold add NAME --reason TEXT [--by WHO] [--query Q] [--custodian ADDR|DOMAIN]… [--from YYYY-MM-DD] [--until YYYY-MM-DD]')
  const body: Record<string, unknown> = { name: positional[0], reason: one(flags, 'reason') }
  if (flags.has('by')) body.placedBy = one(flags, 'by')
  if (flags.has('query')) body.query = one(flags, 'query')
  if (flags.has('custodian')) body.custodians = list(flags, 'custodian')
  if (flags.has('from')) body.from = one(flags, 'from')
  if (flags.has('until')) body.until = one(flags, 'until')
  return body
}

function auditQuery(args: readonly string[]): { afterSeq?: number; limit: number; actor?: string } {
  const { flags } = parseFlags(args, ['limit', 'after', 'actor'])
  const limitText = one(flags, 'limit') ?? '20'
  const afterText = one(flags, 'after')
  if (!/^\d{1,6}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > auditShowEntriesMax) throw new ControlError('USAGE', `--limit must be 1…${auditShowEntriesMax}`)
  if (afterText !== undefined && !/^\d{1,15}$/.test(afterText)) throw new ControlError('USAGE', '--after must be an audit sequence number')
  const actor = one(flags, 'actor')
  return { limit: Number(limitText), afterSeq: afterText === undefined ? undefined : Number(afterText), ...(actor === undefined ? {} : { actor }) }
}

/** Control handlers by command name. `actor` names who acts over the control socket. */
export function policyCommandHandlers(policy: PolicyService, actor = 'technician'): Map<string, (args: string[]) => Promise<unknown> | unknown> {
  return new Map<string, (args: string[]) => Promise<unknown> | unknown>([
    ['policy list', () => ({ ...policy.describe(), policies: policy.policies() })],
    ['policy add', (args) => policy.setPolicy(policyFromArgs(args), actor)],
    ['policy remove', ([name]) => policy.removePolicy(name!, actor)],
    ['policy preview', () => policy.preview()],
    ['hold list', () => policy.holds()],
    ['hold add', (args) => policy.placeHold(holdFromArgs(args), actor)],
    ['hold release', ([name]) => policy.releaseHold(name!, actor)],
    ['purge run', () => policy.runPurge(actor)],
    [
      'audit verify',
      () => {
        const report = policy.auditVerify()
        if (report.ok) return report
        const problems = report.problems.slice(0, 10).map((problem) => `${problem.code} at ${problem.seq ?? '-'}: ${problem.message}`)
        throw new PolicyError('AUDIT_DAMAGED', `the audit log is damaged (${report.entries} entries):\n  ${problems.join('\n  ')}`, { fields: { report } })
      },
    ],
    ['audit show', (args) => policy.auditEntries(auditQuery(args))],
  ])
}

/** A route of the HTTP API with a method (firmware/api's `methodRoutes`). */
export interface PolicyApiRoute {
  method: 'GET' | 'POST'
  pattern: RegExp
  /** What the caller's role must allow (firmware/access/roles.ts). */
  permission: 'policy.read' | 'policy.write' | 'audit.read'
  /** Status of a successful answer; 200 when absent. */
  status?: number
  handle(request: { url: URL; params: string[]; body: unknown; actor: string }): Promise<unknown> | unknown
}

/**
 * The admin API of retention:
 *   GET  /api/v1/policies                 policies and the settings fingerprint
 *   POST /api/v1/policies                 create or replace a policy (policyInputSchema)
 *   POST /api/v1/policies/{name}/remove   remove a policy
 *   GET  /api/v1/policies/preview         the purge plan now
 *   GET  /api/v1/holds                    holds, released ones included
 *   POST /api/v1/holds                    place a hold (holdInputSchema)
 *   POST /api/v1/holds/{name}/release     release a hold
 *   GET  /api/v1/audit?after=&limit=      audit entries
 *   GET  /api/v1/audit/verify             verify the audit chain
 * Removal is a POST to a sub-resource, not DELETE, so that no DELETE route exists at all
 * (an archive's API has nothing to DELETE: messages are removed only by a policy purge).
 */
export function policyApiRoutes(policy: PolicyService): PolicyApiRoute[] {
  const name = '([a-z0-9][a-z0-9._-]{0,63})'
  return [
    { method: 'GET', pattern: /^\/api\/v1\/policies$/, permission: 'policy.read', handle: () => ({ ...policy.describe(), policies: policy.policies() }) },
    { method: 'POST', pattern: /^\/api\/v1\/policies$/, permission: 'policy.write', status: 201, handle: ({ body, actor }) => policy.setPolicy(body, actor) },
    { method: 'GET', pattern: /^\/api\/v1\/policies\/preview$/, permission: 'policy.read', handle: () => policy.preview() },
    { method: 'POST', pattern: new RegExp(`^/api/v1/policies/${name}/remove$`), permission: 'policy.write', handle: ({ params, actor }) => policy.removePolicy(params[0]!, actor) },
    { method: 'GET', pattern: /^\/api\/v1\/holds$/, permission: 'policy.read', handle: () => policy.holds() },
    { method: 'POST', pattern: /^\/api\/v1\/holds$/, permission: 'policy.write', status: 201, handle: ({ body, actor }) => policy.placeHold(body, actor) },
    { method: 'POST', pattern: new RegExp(`^/api/v1/holds/${name}/release$`), permission: 'policy.write', handle: ({ params, actor }) => policy.releaseHold(params[0]!, actor) },
    { method: 'GET', pattern: /^\/api\/v1\/audit\/verify$/, permission: 'audit.read', handle: () => policy.auditVerify() },
    {
      method: 'GET',
      pattern: /^\/api\/v1\/audit$/,
      permission: 'audit.read',
      handle: ({ url }) => {
        const limit = Number(url.searchParams.get('limit') ?? '100')
        const afterText = url.searchParams.get('after')
        if (!Number.isSafeInteger(limit) || limit < 1 || limit > auditShowEntriesMax) throw new PolicyError('INVALID', `limit must be 1…${auditShowEntriesMax}`)
        const afterSeq = afterText === null ? undefined : Number(afterText)
        if (afterSeq !== undefined && (!Number.isSafeInteger(afterSeq) || afterSeq < 0)) throw new PolicyError('INVALID', 'after must be an audit sequence number')
        const actor = url.searchParams.get('actor')
        return policy.auditEntries({ afterSeq, limit, ...(actor ? { actor } : {}) })
      },
    },
  ]
}
