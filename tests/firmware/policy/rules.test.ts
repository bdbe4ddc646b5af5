import t from 'tap'
import {
  canonicalJson,
  describePolicySettings,
  diffPolicySettings,
  planPurge,
  validateHold,
  validatePolicy,
  type Hold,
  type MessageFacts,
  type Policy,
} from '../../../firmware/policy/index.js'
import { hasCode } from '../../../firmware/common/errors.js'
import { testSeed } from '../../helpers/random.js'

const dayMs = 86_400_000
const t0 = Date.parse('2025-01-01T00:00:00Z')
const meta = { nowMs: t0, actor: 'tester' }
const policy = (input: unknown) => validatePolicy(input, meta)
const hold = (input: unknown) => validateHold(input, meta)

function facts(id: string, overrides: Partial<MessageFacts> = {}): MessageFacts {
  return { id, sizeBytes: 100, archivedAtMs: t0, dateMs: t0, senders: ['a@ext.example'], recipients: ['b@corp.example'], sources: ['smtp'], indexed: true, ...overrides }
}

t.test('canonical JSON: key order does not matter, undefined members are left out', async (t) => {
  t.equal(canonicalJson({ b: 1, a: [true, null, { d: 'x', c: undefined }] }), '{"a":[true,null,{"d":"x"}],"b":1}')
  t.equal(canonicalJson({ a: 1, b: 2 }), canonicalJson({ b: 2, a: 1 }))
  t.throws(() => canonicalJson({ a: Number.NaN }))
})

t.test('plan: due exactly at the end of retention, never before; longest retention wins; default only when nothing else selects', async (t) => {
  const policies = [
    policy({ name: 'default', retentionDays: 100 }),
    policy({ name: 'short', retentionDays: 10, criteria: { senders: ['ext.example'] } }),
    policy({ name: 'long', retentionDays: 50, criteria: { recipients: ['b@corp.example'], sources: ['smtp'] } }),
  ]
  const messages = [facts('both'), facts('short-only', { recipients: ['c@corp.example'] }), facts('neither', { senders: ['x@corp.example'], recipients: ['y@corp.example'] })]
  const at = (days: number, offsetMs = 0) =>
    planPurge({ messages, policies, holds: [], nowMs: t0 + days * dayMs + offsetMs, matches: new Map(), mirrorPending: null }).due.map((item) => `${item.id}:${item.policy}`)
  t.same(at(10, -1), [], '1 ms before 10 days: nothing')
  t.same(at(10), ['short-only:short'])
  t.same(at(50, -1), ['short-only:short'], 'both policies select it: the 50-day one governs')
  t.same(at(50), ['both:long', 'short-only:short'])
  t.same(at(100), ['both:long', 'short-only:short', 'neither:default'])
  const forever = [policy({ name: 'default', retentionDays: null })]
  t.same(planPurge({ messages, policies: forever, holds: [], nowMs: t0 + 1e6 * dayMs, matches: new Map(), mirrorPending: null }).retained, 3, 'a default of null keeps forever')
  t.same(planPurge({ messages, policies: [], holds: [], nowMs: t0 + 1e6 * dayMs, matches: new Map(), mirrorPending: null }).due, [], 'no policy at all: nothing expires')
})

t.test('plan: holds win over any policy, by custodian, query, and date range (Date header or archive time)', async (t) => {
  const policies = [policy({ name: 'default', retentionDays: 1 })]
  const holds: Hold[] = [
    hold({ name: 'custodian', custodians: ['@legal.example'], reason: 'r' }),
    hold({ name: 'query', query: 'subject:merger', reason: 'r' }),
    hold({ name: 'range', from: '2024-06-01', until: '2024-06-30', reason: 'r' }),
    { ...hold({ name: 'released', custodians: ['b@corp.example'], reason: 'r' }), active: false },
  ]
  const messages = [
    facts('to-legal', { recipients: ['x@dept.legal.example'] }),
    facts('merger'),
    facts('june-date', { dateMs: Date.parse('2024-06-30T23:59:59Z') }),
    facts('june-archived', { archivedAtMs: Date.parse('2024-06-15T00:00:00Z'), dateMs: Date.parse('1990-01-01T00:00:00Z') }),
    facts('july', { dateMs: Date.parse('2024-07-01T00:00:00Z') }),
    facts('plain'),
  ]
  const plan = planPurge({ messages, policies, holds, nowMs: t0 + 2 * dayMs, matches: new Map([['subject:merger', new Set(['merger'])]]), mirrorPending: null })
  t.same(
    plan.due.map((item) => item.id),
    ['july', 'plain'],
    'a released hold protects nothing',
  )
  t.same(Object.fromEntries(plan.kept.map((item) => [item.id, item.holds])), { 'to-legal': ['custodian'], merger: ['query'], 'june-date': ['range'], 'june-archived': ['range'] })
})

t.test('plan: a message the index failed on is kept while any query is in use (a hold by query might cover it)', async (t) => {
  const policies = [policy({ name: 'default', retentionDays: 1 })]
  const messages = [facts('unindexed', { indexed: false }), facts('indexed')]
  const nowMs = t0 + 2 * dayMs
  const noQueries = planPurge({ messages, policies, holds: [hold({ name: 'c', custodians: ['z@z.example'], reason: 'r' })], nowMs, matches: new Map(), mirrorPending: null })
  t.same(
    noQueries.due.map((item) => item.id),
    ['unindexed', 'indexed'],
    'no query anywhere: the index does not matter',
  )
  const withQuery = planPurge({
    messages,
    policies,
    holds: [hold({ name: 'q', query: 'subject:merger', reason: 'r' })],
    nowMs,
    matches: new Map([['subject:merger', new Set<string>()]]),
    mirrorPending: null,
  })
  t.same(
    withQuery.due.map((item) => item.id),
    ['indexed'],
  )
  t.same(withQuery.kept, [{ id: 'unindexed', policy: 'default', reason: 'unindexed' }])
})

t.test('plan is pure and order-independent (randomized; seed printed on failure)', async (t) => {
  const { seed, random } = testSeed(t, 'the messages and their order')
  const policies = [policy({ name: 'default', retentionDays: 30 }), policy({ name: 'p', retentionDays: 5, criteria: { senders: ['@s1.example'] } })]
  const holds = [hold({ name: 'h', custodians: ['r1@corp.example'], reason: 'r' })]
  const messages = Array.from({ length: 200 }, (_, index) =>
    facts(`m${index}`, { archivedAtMs: t0 - random.int(60) * dayMs, senders: [`x@s${random.int(3)}.example`], recipients: [`r${random.int(3)}@corp.example`] }),
  )
  const shuffled = [...messages].sort(() => random.next() - 0.5)
  const input = { policies, holds, nowMs: t0, matches: new Map(), mirrorPending: new Set(['m1', 'm2']) }
  const a = planPurge({ ...input, messages })
  const b = planPurge({ ...input, messages: shuffled })
  const key = (plan: ReturnType<typeof planPurge>) => JSON.stringify([plan.due.map((item) => item.id).sort(), plan.kept.map((item) => item.id).sort(), plan.retained])
  t.equal(key(a), key(b), `seed ${seed}`)
  for (const item of a.due) {
    const message = messages.find((candidate) => candidate.id === item.id)!
    t.ok(t0 >= message.archivedAtMs + item.retentionDays * dayMs, `seed ${seed}: ${item.id} is past its retention`)
    t.notOk(message.recipients.includes('r1@corp.example'), `seed ${seed}: ${item.id} is not held`)
  }
})

t.test('validation: every problem named; default takes no criteria; named needs criteria', async (t) => {
  const problems = (fn: () => unknown) => {
    try {
      fn()
      return []
    } catch (error) {
      t.ok(hasCode(error, 'INVALID'))
      return (error as { fields: { problems: string[] } }).fields.problems
    }
  }
  t.match(
    problems(() => policy({ name: 'default', retentionDays: 5, criteria: { senders: ['a@b.example'] } })),
    [/default policy .* no criteria/],
  )
  t.match(
    problems(() => policy({ name: 'p', retentionDays: null, criteria: { sources: ['smtp'] } })),
    [/only the default policy may keep forever/],
  )
  t.match(
    problems(() => policy({ name: 'p', retentionDays: 1.5, criteria: { sources: ['fax'] } })),
    [/retentionDays: must be integer/, /sources.0: must be equal to one of the allowed values/],
  )
  t.match(
    problems(() => hold({ name: 'h', reason: 'r' })),
    [/needs a query, custodians or a date range/],
  )
  t.match(
    problems(() => hold({ name: 'h', reason: 'r', from: '2024-02-01', until: '2024-01-01' })),
    [/until: must be after from/],
  )
  t.match(
    problems(() => hold({ name: 'h', reason: 'r', query: 'from:' })),
    [/^query: /],
  )
  t.same(
    policy({ name: 'p', retentionDays: 3, criteria: { senders: ['B@Corp.Example', 'b@corp.example'] } }).criteria,
    { senders: ['b@corp.example'] },
    'addresses lower-cased and deduplicated',
  )
})

t.test('describePolicySettings and diffPolicySettings', async (t) => {
  const base: Policy[] = [policy({ name: 'default', retentionDays: 365 }), policy({ name: 'news', retentionDays: 30, criteria: { senders: ['@news.example'] } })]
  const holds = [hold({ name: 'case', custodians: ['a@b.example'], reason: 'secret case name' })]
  const here = describePolicySettings(base, holds)
  const later = describePolicySettings(
    [...base].reverse().map((item) => ({ ...item, createdAtMs: 1, createdBy: 'someone else' })),
    holds,
  )
  t.equal(here.fingerprint, later.fingerprint, 'order, time and author do not change the fingerprint')
  t.match(here.fingerprint, /^[0-9a-f]{64}$/)
  t.notOk(JSON.stringify(here).includes('secret case name'), 'hold reasons are not exchanged')
  t.same(diffPolicySettings(here, later), [])
  const peer = describePolicySettings(
    [
      policy({ name: 'default', retentionDays: 730 }),
      policy({ name: 'news', retentionDays: 30, criteria: { senders: ['@news2.example'] } }),
      policy({ name: 'extra', retentionDays: 5, criteria: { sources: ['import'] } }),
    ],
    [{ ...holds[0]!, active: false }, hold({ name: 'other', query: 'x', reason: 'r' })],
  )
  t.not(peer.fingerprint, here.fingerprint)
  t.same(diffPolicySettings(here, peer), [
    'policy default: retention 365 days here, 730 days on the peer',
    'policy news: criteria {"senders":["@news.example"]} here, {"senders":["@news2.example"]} on the peer',
    'policy extra (5 days) only on the peer',
    'hold case: active here, released on the peer',
    'hold other (active) only on the peer',
  ])
})
