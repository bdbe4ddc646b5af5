/**
 * Paced searches (issue: one search must not stall the appliance): evaluation in slices
 * between event-loop turns, a time budget that ends a query with QUERY_TOO_EXPENSIVE, one
 * search evaluating at a time with a bounded wait, and a start-over when a flush lands while
 * a search is paused. A real index in a real LMDB environment; the clock is injected so a
 * slice ends at every unit of work.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { join } from 'node:path'
import { open } from 'lmdb'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { systemClock, type Clock } from '../../../firmware/common/clock.js'
import { createIndex, type IndexOptions, type SearchIndex } from '../../../firmware/index/search-index.js'
import type { IndexInput } from '../../../firmware/index/index-input.js'
import { IndexError } from '../../../firmware/index/errors.js'
import { seededRandom } from '../../helpers/random.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const words = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot', 'golf', 'hotel', 'india', 'juliet', 'kilo', 'lima']

/** Message `n`: a body of random words from a small vocabulary (phrases of them are common), dated by n. */
function inputOf(n: number, random: (below: number) => number): IndexInput {
  const text = Array.from({ length: 40 }, () => words[random(words.length)]).join(' ')
  return {
    id: createHash('sha256').update(`message ${n}`).digest('hex'),
    parsed: {
      messageId: null,
      dateMs: Date.UTC(2024, 0, 1) + n * 60_000,
      from: [{ name: '', address: `sender${n % 7}@example.com` }],
      to: [{ name: '', address: 'team@example.net' }],
      cc: [],
      bcc: [],
      subject: `note ${n}`,
      text,
      attachments: [],
      flags: [],
    },
    archivedAtMs: Date.UTC(2024, 6, 1),
  }
}

/** A clock whose monotonic time moves `stepMs` at every reading: every check sees a slice used up. */
function steppingClock(stepMs: number): Clock {
  let now = 0
  return { now: () => Date.UTC(2024, 6, 1), monotonicMs: () => (now += stepMs) }
}

function indexWith(t: TestContext, count: number, clock: Clock, options: Partial<IndexOptions> = {}): { index: SearchIndex; add(from: number, to: number): void } {
  const root = open({ path: join(t.testdir(), 'lmdb'), maxDbs: 12 })
  t.teardown(() => root.close())
  const index = createIndex({ logger: createMemoryLogger('error'), clock }, { flushInBackground: false, pendingDocumentsMax: 64, ...options })
  index.databases(root)
  // Fixed: the answers are compared with the blocking search's, whatever the words are.
  const random = seededRandom(20_261_205)
  const add = (from: number, to: number): void => {
    root.transactionSync(() => {
      for (let n = from; n < to; n++) index.indexMessage(inputOf(n, random))
    })
  }
  add(0, count)
  return { index, add }
}

const ids = (result: { hits: Array<{ id: string }> }): string[] => result.hits.map((hit) => hit.id)

t.test('a paced search answers as the blocking one, and lets the event loop run between slices', async (t) => {
  const { index } = indexWith(t, 300, steppingClock(20), { queryTimeMsMax: 1e9 })
  const queries = ['alpha', '"alpha bravo"', '"charlie delta echo" OR "golf hotel"', 'kilo -lima', 'from:sender3@example.com "india juliet"', 'after:2024-01-01 before:2024-01-02']
  for (const query of queries) {
    const blocking = index.searchBlocking(query, { limit: 100 })
    const turns: string[] = []
    setImmediate(() => turns.push('event loop'))
    const paced = await index.search(query, { limit: 100 }).then((result) => (turns.push('answer'), result))
    t.same(ids(paced), ids(blocking), `${query}: the same hits`)
    t.equal(paced.total, blocking.total, `${query}: the same total`)
    t.equal(turns[0], 'event loop', `${query}: the event loop ran before the answer`)
  }
  t.ok(index.searchBlocking('"alpha bravo"').total > 0, 'the phrase is in the data')
})

t.test('over its budget a search ends with QUERY_TOO_EXPENSIVE, counted, and the next one runs', async (t) => {
  const { index } = indexWith(t, 300, steppingClock(25), { queryTimeMsMax: 400 })
  const bomb = Array.from({ length: 12 }, (_, i) => `"${words[i]} ${words[(i + 1) % 12]} ${words[(i + 2) % 12]}"`).join(' OR ')
  const error = await index.search(bomb).then(
    () => undefined,
    (caught: unknown) => caught,
  )
  t.ok(error instanceof IndexError && error.code === 'QUERY_TOO_EXPENSIVE', 'stopped over the budget')
  t.match((error as IndexError).message, /stopped after 400 ms \(search\.queryTimeMsMax\)/, 'a sentence naming the limit')
  t.equal((error as IndexError).retryable, true, 'retryable: the API answers 503')
  t.throws(() => index.searchBlocking(bomb), { code: 'QUERY_TOO_EXPENSIVE' }, 'the blocking search keeps the same budget')
  t.match(index.searchCounters(), { running: 0, waiting: 0, tooExpensive: 2 })
  const next = await index.search('alpha', { limit: 3 })
  t.same(ids(next), ids(index.searchBlocking('alpha', { limit: 3 })), 'the next search gets its turn and answers')
})

t.test('one search evaluates at a time; a bounded number wait, the rest are refused SEARCH_BUSY', async (t) => {
  const { index } = indexWith(t, 300, steppingClock(20), { queryTimeMsMax: 1e9, searchesWaitingMax: 2 })
  const expected = index.searchBlocking('"alpha bravo"', { limit: 100 })
  const running = index.search('"alpha bravo"', { limit: 100 })
  const waiting = [index.search('bravo', { limit: 5 }), index.search('charlie', { limit: 5 })]
  t.match(index.searchCounters(), { running: 1, waiting: 2 })
  await t.rejects(index.search('delta'), { code: 'SEARCH_BUSY', retryable: true }, 'a third waiting search is refused')
  t.same(ids(await running), ids(expected), 'the running search answers')
  const [bravo, charlie] = await Promise.all(waiting)
  t.same(ids(bravo!), ids(index.searchBlocking('bravo', { limit: 5 })))
  t.same(ids(charlie!), ids(index.searchBlocking('charlie', { limit: 5 })))
  t.match(index.searchCounters(), { running: 0, waiting: 0, busy: 1 })
})

t.test('a flush while a search is paused makes it start over on the new state, with the right answer', async (t) => {
  const { index, add } = indexWith(t, 300, steppingClock(20), { queryTimeMsMax: 1e9 })
  const flushesBefore = index.stats().flushes
  const pending = index.search('"alpha bravo" OR "echo foxtrot"', { limit: 100 })
  // On the first pause: enough new documents to fill the tail, so the ingest flushes it.
  setImmediate(() => add(300, 400))
  const result = await pending
  t.ok(index.stats().flushes > flushesBefore, 'a flush happened meanwhile')
  t.ok(index.searchCounters().restarts >= 1, 'the search started over')
  const expected = index.searchBlocking('"alpha bravo" OR "echo foxtrot"', { limit: 100 })
  t.equal(result.total, expected.total, 'the total of the state after the flush')
  t.same(ids(result), ids(expected), 'the same hits as a search after it')
})

t.test('the real clock: a paced search of many phrases keeps timers firing', async (t) => {
  const { index } = indexWith(t, 1_500, systemClock, { queryTimeMsMax: 60_000, searchSliceMs: 5, pendingDocumentsMax: 256 })
  const bomb = Array.from({ length: 24 }, (_, i) => `"${words[i % 12]} ${words[(i + 5) % 12]} ${words[(i + 7) % 12]}"`).join(' OR ')
  // The first search loads the pending tail in one go (a step that is not paced): done
  // before the timing, so that the figure is the paced evaluation's.
  index.searchBlocking('alpha', { limit: 1 })
  let ticks = 0
  const timer = setInterval(() => ticks++, 1)
  const startedMs = performance.now()
  const result = await index.search(bomb, { limit: 10 })
  const elapsedMs = performance.now() - startedMs
  clearInterval(timer)
  t.equal(result.total, index.searchBlocking(bomb, { limit: 10 }).total, 'same total as the blocking search')
  t.comment(`paced search of 24 phrases over 1,500 documents: ${elapsedMs.toFixed(1)} ms, ${ticks} timer ticks`)
  // Slices of 5 ms: a search that took ten of them paused at least once, and a due timer
  // fires at every pause.
  t.ok(elapsedMs <= 50 || ticks >= 1, 'a search longer than ten slices let timers fire')
})

t.test('a scoped search counts only what the scope admits: narrowed by address, then each match put to the rule', async (t) => {
  const { index, add } = indexWith(t, 0, systemClock)
  add(0, 70)
  const idOf = (n: number) => createHash('sha256').update(`message ${n}`).digest('hex')
  const everyone = await index.search('note')
  t.equal(everyone.total, 70)
  // sender3 sent messages 3, 10, 17, … (n % 7 === 3): ten of them.
  const byAddress = await index.search('note', { limit: 4, scope: { addresses: ['sender3@example.com'], admits: () => true } })
  t.equal(byAddress.total, 10, 'narrowed to the scope addresses in the index')
  t.ok(
    byAddress.hits.every((hit) => Number.parseInt(hit.subject.split(' ')[1]!, 10) % 7 === 3),
    'only their messages',
  )
  t.notMatch(JSON.stringify(byAddress.hits.map((hit) => hit.snippet)), /sender3/, 'the scope address is not highlighted as if searched for')
  const refused = new Set([idOf(3), idOf(10)])
  const ruled = await index.search('note', { limit: 4, scope: { addresses: ['sender3@example.com'], admits: (id) => !refused.has(id) } })
  t.equal(ruled.total, 8, 'matches the rule refuses are not counted')
  const pages = [...ruled.hits]
  let cursor = ruled.nextCursor
  while (cursor) {
    const page = await index.search('note', { limit: 4, cursor, scope: { addresses: ['sender3@example.com'], admits: (id) => !refused.has(id) } })
    pages.push(...page.hits)
    cursor = page.nextCursor
  }
  t.equal(pages.length, 8, 'nor paged')
  t.notOk(pages.some((hit) => refused.has(hit.id)))
  const none = await index.search('note', { scope: { addresses: [], admits: () => true } })
  t.same([none.total, none.hits.length], [0, 0], 'a scope without addresses sees nothing')
})
