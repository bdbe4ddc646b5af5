import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import type { MessageMeta } from '../archive/types.js'
import { parseQuery } from '../index/query.js'
import { PolicyError } from './errors.js'
import type { DueItem, Hold, KeptItem, MessageFacts, Policy, PolicyCriteria, PurgePlan } from './types.js'

/**
 * The pure half of retention: validating policies and holds, matching them against a
 * message's facts, and planning a purge (STYLE 7). Nothing here reads a clock or a database.
 */

/** Name of the policy that applies to messages no named policy selects. */
export const defaultPolicyName = 'default'
/** Longest retention a policy may state, in days (100 years); longer: keep forever (null, default policy). */
export const retentionDaysMax = 36_500
export const dayMs = 86_400_000
/** Most entries in one address or source list of a policy or hold. */
export const listEntriesMax = 1_000
/** Longest query in a policy or hold, in characters. */
export const queryCharsMax = 2_000

const namePattern = '^[a-z0-9][a-z0-9._-]{0,63}$'
const addressEntry = { type: 'string', minLength: 1, maxLength: 320, pattern: '^[^\\s@]*@?[^\\s@]+$' } as const
const addressList = { type: 'array', items: addressEntry, minItems: 1, maxItems: listEntriesMax } as const
const dateText = { type: 'string', pattern: '^\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}(:\\d{2}(\\.\\d{1,3})?)?(Z|[+-]\\d{2}:\\d{2}))?$' } as const
const query = { type: 'string', minLength: 1, maxLength: queryCharsMax } as const

/** JSON Schema of a policy as given to `POST /api/v1/policies` (and built by the CLI). */
export const policyInputSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'retentionDays'],
  properties: {
    name: { type: 'string', pattern: namePattern },
    retentionDays: { type: ['integer', 'null'], minimum: 0, maximum: retentionDaysMax },
    criteria: {
      type: 'object',
      additionalProperties: false,
      properties: {
        senders: addressList,
        recipients: addressList,
        sources: { type: 'array', items: { enum: ['smtp', 'journal', 'import', 'mirror'] }, minItems: 1, maxItems: 4 },
        query,
      },
    },
  },
} as const

/** JSON Schema of a hold as given to `POST /api/v1/holds`. Dates: `YYYY-MM-DD` (whole day) or ISO 8601 with zone. */
export const holdInputSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'reason'],
  properties: {
    name: { type: 'string', pattern: namePattern },
    query,
    custodians: addressList,
    from: dateText,
    until: dateText,
    reason: { type: 'string', minLength: 1, maxLength: 1_000 },
    placedBy: { type: 'string', minLength: 1, maxLength: 200 },
  },
} as const

export interface PolicyInput {
  name: string
  retentionDays: number | null
  criteria?: PolicyCriteria
}

export interface HoldInput {
  name: string
  query?: string
  custodians?: string[]
  from?: string
  until?: string
  reason: string
  placedBy?: string
}

let validators: { policy: ValidateFunction; hold: ValidateFunction } | undefined
function compiled() {
  if (!validators) {
    const ajv = new Ajv({ allErrors: true, strict: true, allowUnionTypes: true })
    validators = { policy: ajv.compile(policyInputSchema), hold: ajv.compile(holdInputSchema) }
  }
  return validators
}

function invalid(what: string, problems: string[]): PolicyError {
  return new PolicyError('INVALID', `invalid ${what}: ${problems.join('; ')}`, { fields: { problems } })
}

function describeErrors(errors: ErrorObject[] | null | undefined): string[] {
  return (errors ?? []).map((error) => {
    const path = error.instancePath.replace(/^\//, '').replace(/\//g, '.') || '(body)'
    const extra = error.keyword === 'additionalProperties' ? ` (${String((error.params as { additionalProperty: string }).additionalProperty)})` : ''
    return `${path}: ${error.message ?? error.keyword}${extra}`
  })
}

function checkQuery(text: string | undefined, path: string, problems: string[]): void {
  if (text === undefined) return
  try {
    parseQuery(text)
  } catch (error) {
    problems.push(`${path}: ${(error as Error).message}`)
  }
}

function normalizeAddresses(list: string[] | undefined): string[] | undefined {
  if (!list) return undefined
  return [...new Set(list.map((entry) => entry.trim().toLowerCase()))].sort()
}

/**
 * Validates and normalizes a policy. The default policy states only a retention (or null:
 * keep forever); named policies need a retention in days and at least one criterion.
 * @throws PolicyError INVALID with every problem
 */
export function validatePolicy(input: unknown, meta: { nowMs: number; actor: string }): Policy {
  const { policy: validate } = compiled()
  if (!validate(input)) throw invalid('policy', describeErrors(validate.errors))
  const body = input as PolicyInput
  const criteria: PolicyCriteria = {
    senders: normalizeAddresses(body.criteria?.senders),
    recipients: normalizeAddresses(body.criteria?.recipients),
    sources: body.criteria?.sources ? [...new Set(body.criteria.sources)].sort() : undefined,
    query: body.criteria?.query?.trim() || undefined,
  }
  const hasCriteria = Object.values(criteria).some((value) => value !== undefined)
  const problems: string[] = []
  if (body.name === defaultPolicyName && hasCriteria) problems.push('criteria: the default policy applies to every message no other policy selects, so it takes no criteria')
  if (body.name !== defaultPolicyName && !hasCriteria)
    problems.push(`criteria: a named policy needs at least one criterion (to set the retention of all other mail, use the name "${defaultPolicyName}")`)
  if (body.name !== defaultPolicyName && body.retentionDays === null) problems.push('retentionDays: only the default policy may keep forever (null)')
  checkQuery(criteria.query, 'criteria.query', problems)
  if (problems.length > 0) throw invalid('policy', problems)
  return { name: body.name, retentionDays: body.retentionDays, criteria: JSON.parse(JSON.stringify(criteria)) as PolicyCriteria, createdAtMs: meta.nowMs, createdBy: meta.actor }
}

/** `YYYY-MM-DD` is the whole day in UTC: as a start its midnight, as an end the next midnight. */
function parseDate(text: string, end: boolean): number {
  const dateOnly = /^\d{4}-\d{2}-\d{2}$/.test(text)
  const ms = Date.parse(dateOnly ? `${text}T00:00:00Z` : text)
  return dateOnly && end ? ms + dayMs : ms
}

/**
 * Validates and normalizes a hold: at least one of query, custodians, from/until.
 * @throws PolicyError INVALID with every problem
 */
export function validateHold(input: unknown, meta: { nowMs: number; actor: string }): Hold {
  const { hold: validate } = compiled()
  if (!validate(input)) throw invalid('hold', describeErrors(validate.errors))
  const body = input as HoldInput
  const problems: string[] = []
  const fromMs = body.from === undefined ? undefined : parseDate(body.from, false)
  const untilMs = body.until === undefined ? undefined : parseDate(body.until, true)
  if (fromMs !== undefined && !Number.isFinite(fromMs)) problems.push(`from: not a date (${body.from})`)
  if (untilMs !== undefined && !Number.isFinite(untilMs)) problems.push(`until: not a date (${body.until})`)
  if (fromMs !== undefined && untilMs !== undefined && untilMs <= fromMs) problems.push('until: must be after from')
  const queryText = body.query?.trim() || undefined
  checkQuery(queryText, 'query', problems)
  if (queryText === undefined && body.custodians === undefined && fromMs === undefined && untilMs === undefined) {
    problems.push('a hold needs a query, custodians or a date range (from/until)')
  }
  if (problems.length > 0) throw invalid('hold', problems)
  const hold: Hold = { name: body.name, reason: body.reason, placedBy: body.placedBy ?? meta.actor, placedAtMs: meta.nowMs, active: true }
  if (queryText !== undefined) hold.query = queryText
  if (body.custodians) hold.custodians = normalizeAddresses(body.custodians)
  if (fromMs !== undefined) hold.fromMs = fromMs
  if (untilMs !== undefined) hold.untilMs = untilMs
  return hold
}

/** The facts of a stored message that policies and holds look at. */
export function factsOf(meta: MessageMeta): MessageFacts {
  const lower = (list: Iterable<string | null>) => [...new Set([...list].filter((value): value is string => Boolean(value)).map((value) => value.toLowerCase()))]
  return {
    id: meta.id,
    sizeBytes: meta.sizeBytes,
    archivedAtMs: meta.firstArchivedAtMs,
    dateMs: meta.dateMs,
    senders: lower([...meta.from, ...meta.deliveries.map((delivery) => delivery.envelopeFrom)]),
    recipients: lower([...meta.to, ...meta.cc, ...meta.bcc, ...meta.deliveries.flatMap((delivery) => [...delivery.envelopeTo, ...delivery.envelopeBcc])]),
    sources: [...new Set(meta.deliveries.map((delivery) => delivery.source))],
    indexed: !meta.flags.includes('index-failed'),
  }
}

/** Whether `address` (lower-case) matches an entry: exact address, or a domain and its subdomains. */
export function addressMatches(address: string, entry: string): boolean {
  const at = entry.indexOf('@')
  if (at > 0) return address === entry
  const domain = at === 0 ? entry.slice(1) : entry
  const addressDomain = address.slice(address.lastIndexOf('@') + 1)
  return addressDomain === domain || addressDomain.endsWith(`.${domain}`)
}

const anyMatches = (addresses: readonly string[], entries: readonly string[]) => addresses.some((address) => entries.some((entry) => addressMatches(address, entry)))

/** Ids matching each query, computed by the caller (the search index) before planning. */
export type QueryMatches = ReadonlyMap<string, ReadonlySet<string>>

function queryMatches(matches: QueryMatches, queryText: string, id: string): boolean {
  const ids = matches.get(queryText)
  if (!ids) throw new Error(`planPurge was not given the matches of query ${JSON.stringify(queryText)}`)
  return ids.has(id)
}

/** Whether a named policy's criteria select the message. */
export function policySelects(policy: Policy, facts: MessageFacts, matches: QueryMatches): boolean {
  const { senders, recipients, sources, query: queryText } = policy.criteria
  if (senders && !anyMatches(facts.senders, senders)) return false
  if (recipients && !anyMatches(facts.recipients, recipients)) return false
  if (sources && !facts.sources.some((source) => sources.includes(source))) return false
  if (queryText !== undefined && !queryMatches(matches, queryText, facts.id)) return false
  return true
}

/** Whether an active hold covers the message. A date range matches the Date header OR the archive time, so a forged date cannot take mail out of a hold. */
export function holdCovers(hold: Hold, facts: MessageFacts, matches: QueryMatches): boolean {
  if (!hold.active) return false
  if (hold.custodians && !anyMatches([...facts.senders, ...facts.recipients], hold.custodians)) return false
  if (hold.fromMs !== undefined || hold.untilMs !== undefined) {
    const inRange = (ms: number | null) => ms !== null && (hold.fromMs === undefined || ms >= hold.fromMs) && (hold.untilMs === undefined || ms < hold.untilMs)
    if (!inRange(facts.dateMs) && !inRange(facts.archivedAtMs)) return false
  }
  if (hold.query !== undefined && !queryMatches(matches, hold.query, facts.id)) return false
  return true
}

/**
 * The policy that governs a message: among the named policies that select it, the one
 * with the LONGEST retention (ties: the first name in order), so adding a policy can never
 * shorten what another policy promised to keep; the default policy when none selects it.
 * Returns undefined when there is no default policy and nothing selects it (kept forever).
 */
export function governingPolicy(policies: readonly Policy[], facts: MessageFacts, matches: QueryMatches): Policy | undefined {
  let best: Policy | undefined
  for (const policy of policies) {
    if (policy.name === defaultPolicyName || !policySelects(policy, facts, matches)) continue
    if (!best || longer(policy, best) || (policy.retentionDays === best.retentionDays && policy.name < best.name)) best = policy
  }
  return best ?? policies.find((policy) => policy.name === defaultPolicyName)
}

function longer(a: Policy, b: Policy): boolean {
  if (a.retentionDays === b.retentionDays) return false
  if (a.retentionDays === null) return true
  if (b.retentionDays === null) return false
  return a.retentionDays > b.retentionDays
}

/** The distinct queries that planning with these policies and holds needs matches for. */
export function queriesOf(policies: readonly Policy[], holds: readonly Hold[]): string[] {
  const queries = new Set<string>()
  for (const policy of policies) if (policy.criteria.query !== undefined) queries.add(policy.criteria.query)
  for (const hold of holds) if (hold.active && hold.query !== undefined) queries.add(hold.query)
  return [...queries]
}

export interface PlanInput {
  messages: Iterable<MessageFacts>
  policies: readonly Policy[]
  holds: readonly Hold[]
  nowMs: number
  matches: QueryMatches
  /** Ids a mirror peer has not acknowledged yet (change-log entries above the lowest peer cursor); null: no peers. */
  mirrorPending: ReadonlySet<string> | null
}

/**
 * Plans a purge: which messages are past the retention of the policy that governs them,
 * and which of those are kept anyway because an active hold covers them or a mirror peer
 * has not yet acknowledged their copy. Pure: the same input gives the same plan. A message
 * is due when `nowMs >= archivedAtMs + retentionDays days`, never earlier.
 */
export function planPurge(input: PlanInput): PurgePlan {
  const plan: PurgePlan = { nowMs: input.nowMs, scanned: 0, retained: 0, due: [], kept: [], dueBytes: 0 }
  const activeHolds = input.holds.filter((hold) => hold.active)
  const queriesInUse = queriesOf(input.policies, activeHolds).length > 0
  for (const facts of input.messages) {
    plan.scanned++
    const policy = governingPolicy(input.policies, facts, input.matches)
    if (!policy || policy.retentionDays === null) {
      plan.retained++
      continue
    }
    const expiredAtMs = facts.archivedAtMs + policy.retentionDays * dayMs
    if (input.nowMs < expiredAtMs) {
      plan.retained++
      continue
    }
    const holds = activeHolds.filter((hold) => holdCovers(hold, facts, input.matches)).map((hold) => hold.name)
    if (holds.length > 0) {
      plan.kept.push({ id: facts.id, policy: policy.name, reason: 'held', holds } satisfies KeptItem)
      continue
    }
    // Which query would select it is unknown: a hold by query might cover it, or a policy
    // by query might keep it longer. An archive errs on keeping.
    if (!facts.indexed && queriesInUse) {
      plan.kept.push({ id: facts.id, policy: policy.name, reason: 'unindexed' })
      continue
    }
    if (input.mirrorPending?.has(facts.id)) {
      plan.kept.push({ id: facts.id, policy: policy.name, reason: 'mirror-pending' })
      continue
    }
    const item: DueItem = {
      id: facts.id,
      sha256: facts.id,
      sizeBytes: facts.sizeBytes,
      policy: policy.name,
      retentionDays: policy.retentionDays,
      archivedAtMs: facts.archivedAtMs,
      expiredAtMs,
      reason: `policy ${policy.name}: ${policy.retentionDays} day(s) after archive time, expired ${new Date(expiredAtMs).toISOString()}`,
    }
    plan.due.push(item)
    plan.dueBytes += facts.sizeBytes
  }
  return plan
}
