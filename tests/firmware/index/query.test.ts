import t from 'tap'
import {
  addressExactTokens,
  addressQueryToken,
  isAddressLike,
  tokenCharsMax,
  spansAny,
  spansAscii,
  tokenize,
  tokenizeAny,
  tokenizeAscii,
  tokenizeWithSpans,
} from '../../../firmware/index/tokenize.js'
import { parseQuery, phraseTokensMax, queryCharsMax, queryNestingMax, queryTermsMax, type QueryNode } from '../../../firmware/index/query.js'
import { QuerySyntaxError } from '../../../firmware/index/errors.js'
import { makeSnippet } from '../../../firmware/index/snippet.js'
import { tokenHash } from '../../../firmware/index/term-table.js'
import { testSeed } from '../../helpers/random.js'
import { createBlockWriter, findInBlock, inlineValueBytesMax } from '../../../firmware/index/posting-blocks.js'
import { createFlushPostings, type FlushPostings } from '../../../firmware/index/flush-postings.js'
import { createPostingGroups, type PostingGroups } from '../../../firmware/index/posting-groups.js'
import { decodeChunkInto, encodeChunk } from '../../../firmware/index/posting-chunk.js'
import { difference, intersect, toDocidSet, union } from '../../../firmware/index/docid-sets.js'
import { defaultIndexOptions } from '../../../firmware/index/search-index.js'
import { buildFlush, buildFlushNow, sortByUtf8 } from '../../../firmware/index/flush-build.js'
import { decodeCursor, encodeCursor, selectPage } from '../../../firmware/index/result-page.js'
import { cacheSet, queryCacheDocidsMax, queryCacheFor, type CachedSet, type QueryCache } from '../../../firmware/index/query-cache.js'
import { collectDated } from '../../../firmware/index/date-column.js'
import { concatenated } from '../../../firmware/index/docid-sets.js'
import type { IndexState } from '../../../firmware/index/index-databases.js'
import type { PostingSizes } from '../../../firmware/index/posting-sink.js'
import { analyzeSequential } from '../../../firmware/index/document-analysis.js'
import { bodyStreamOf, decodeRecord, encodeRecord } from '../../../firmware/index/display-record.js'
import { decodeForward, encodeForward, forwardFieldIndex, streamHasPhrase, streamOf } from '../../../firmware/index/forward-record.js'
import { bodyPhraseTest, encodedForwardHasPhrase, phrasePattern } from '../../../firmware/index/phrase-match.js'

t.test('tokenize: case and accent folding, separators, compatibility forms', async (t) => {
  t.same(tokenize('Héllo, WÖRLD! naïve café'), ['hello', 'world', 'naive', 'cafe'])
  t.same(tokenize('ÉTÉ été Ete'), ['ete', 'ete', 'ete'])
  t.same(tokenize('ﬁle Ｆｕｌｌ'), ['file', 'full'], 'ligature and full-width forms fold')
  t.same(tokenize('İstanbul Straße'), ['istanbul', 'straße'], 'dotted capital I folds to i; ß stays')
  t.same(tokenize('e-mail john.smith@example.com 3.14'), ['e', 'mail', 'john', 'smith', 'example', 'com', '3', '14'])
  t.same(tokenize('⑴ item'), ['1', 'item'], 'folding that leaves punctuation splits again')
  t.same(tokenize('Ελληνικά Кириллица'), ['ελληνικα', 'кириллица'])
  t.same(tokenize('!!! --- ...'), [])
  t.same(tokenize(''), [])
})

t.test('tokenize: CJK characters are single tokens, emoji are separators', async (t) => {
  t.same(tokenize('東京都に行く'), ['東', '京', '都', 'に', '行', 'く'])
  t.same(tokenize('ｶﾀｶﾅ'), ['カ', 'タ', 'カ', 'ナ'], 'half-width katakana folds to full-width')
  t.same(tokenize('abc東京def'), ['abc', '東', '京', 'def'])
  t.same(tokenize('한국어 text'), ['한국어', 'text'], 'Hangul is spaced: whole words')
  t.same(tokenize('party 🎉🎉 time 👍🏽'), ['party', 'time'])
})

t.test('tokenize: limits', async (t) => {
  const long = 'a'.repeat(200)
  t.equal(tokenize(long)[0]!.length, tokenCharsMax, 'long tokens are cut')
  const surrogate = 'a'.repeat(tokenCharsMax - 1) + '𝒜𝒜'
  const cut = tokenize(surrogate)[0]!
  t.ok(cut.length <= tokenCharsMax && !/[\ud800-\udbff]$/.test(cut), 'never cuts inside a surrogate pair')
  t.same(tokenize('one two three four', 2), ['one', 'two'], 'token budget')
  t.same(tokenize('one', 0), [])
  const spans = tokenizeWithSpans('Hé  World')
  t.same(spans, [
    { token: 'he', start: 0, end: 2 },
    { token: 'world', start: 4, end: 9 },
  ])
})

t.test('tokenize: the ASCII fast paths give exactly what the general paths give', async (t) => {
  // Random ASCII texts over every code point 0…127 (separators, controls, long runs), with
  // budgets below and above their token counts. The seed is printed so a failure replays.
  const { seed, random } = testSeed(t, 'the texts')
  const pieces = ['a', 'Z', '0', '9', ' ', '\n', '\t', '.', '@', '_', '-', '\u0000', '\u007f', 'x'.repeat(70), 'Ab1']
  for (let round = 0; round < 300; round++) {
    let text = ''
    for (let length = random.int(40); length > 0; length--) text += random.int(3) === 0 ? String.fromCharCode(random.int(128)) : pieces[random.int(pieces.length)]!
    for (const budget of [1, 3, 1000]) {
      t.same(tokenizeAscii(text, budget), tokenizeAny(text, budget), `seed ${seed}, round ${round}, budget ${budget}: ${JSON.stringify(text)}`)
      t.same(spansAscii(text, budget), spansAny(text, budget), `spans: seed ${seed}, round ${round}, budget ${budget}: ${JSON.stringify(text)}`)
    }
  }
  t.same(tokenize('Hello WORLD 42 ' + 'a'.repeat(80)), ['hello', 'world', '42', 'a'.repeat(tokenCharsMax)])
  t.same(tokenize('Éte école'), ['ete', 'ecole'], 'a text with any non-ASCII character takes the general path')
})

t.test('address tokens', async (t) => {
  t.same(addressExactTokens('John.Smith@Mail.Example.co.uk').sort(), ['co.uk', 'example.co.uk', 'john.smith', 'john.smith@mail.example.co.uk', 'mail.example.co.uk'].sort())
  t.same(addressExactTokens('bob@example.com').sort(), ['bob@example.com', 'example.com'], 'an all-letter local part is a word token already')
  t.same(addressExactTokens(''), [])
  t.ok(isAddressLike('bob@example.com') && isAddressLike('example.com') && !isAddressLike('bob') && !isAddressLike('John Smith'))
  t.equal(addressQueryToken('<Bob@Example.COM>'), 'bob@example.com')
})

function parseError(query: string): QuerySyntaxError {
  try {
    parseQuery(query)
  } catch (error) {
    if (error instanceof QuerySyntaxError) return error
    throw error
  }
  throw new Error(`expected a syntax error for ${JSON.stringify(query)}`)
}

/** A compact rendering of a tree, to compare shapes. */
function show(node: QueryNode): string {
  switch (node.kind) {
    case 'and':
      return `(${node.children.map(show).join(' & ')})`
    case 'or':
      return `(${node.children.map(show).join(' | ')})`
    case 'not':
      return `!${show(node.child)}`
    case 'match':
      return `${node.field}:${node.tokens.join('_')}`
    case 'address':
      return `${node.field}=${node.token}`
    case 'has':
      return 'has:attachment'
    case 'date':
      return `${node.bound}:${new Date(node.ms).toISOString().slice(0, 10)}`
  }
}

t.test('parser: every form', async (t) => {
  t.equal(show(parseQuery('hello')), 'any:hello')
  t.equal(show(parseQuery('Hello World')), '(any:hello & any:world)')
  t.equal(show(parseQuery('hello AND world')), '(any:hello & any:world)')
  t.equal(show(parseQuery('a OR b c')), '((any:a | any:b) & any:c)', 'OR binds tighter than AND')
  t.equal(show(parseQuery('a OR b OR c')), '(any:a | any:b | any:c)')
  t.equal(show(parseQuery('a -b NOT c')), '(any:a & !any:b & !any:c)')
  t.equal(show(parseQuery('"Exact  Phrase" x')), '(any:exact_phrase & any:x)')
  t.equal(show(parseQuery('e-mail')), 'any:e_mail', 'a word of several tokens is a phrase')
  t.equal(show(parseQuery('東京')), 'any:東_京')
  t.equal(show(parseQuery('from:bob@Example.com to:example.org')), '(from=bob@example.com & to=example.org)')
  t.equal(show(parseQuery('from:Bob to:"Jane Doe"')), '(from:bob & to:jane_doe)')
  t.equal(show(parseQuery('Subject:"Quarterly report" attachment:report.pdf')), '(subject:quarterly_report & attachment:report_pdf)')
  t.equal(show(parseQuery('has:attachment x')), '(has:attachment & any:x)')
  t.equal(show(parseQuery('after:2002-08-01 before:2002-09-01')), '(after:2002-08-01 & before:2002-09-01)')
  t.equal(show(parseQuery('(a OR b) -(c d)')), '((any:a | any:b) & !(any:c & any:d))')
  t.equal(show(parseQuery('http://example.com/x')), 'any:http_example_com_x', 'an unknown name: is text')
  t.equal(show(parseQuery('or and not')), '(any:or & any:and & any:not)', 'lower-case operators are words')
  t.equal(show(parseQuery('a & b')), '(any:a & any:b)', 'words without letters are dropped')
  t.equal(show(parseQuery('-spam after:2002-01-01')), '(!any:spam & after:2002-01-01)', 'a date bound is positive')
})

t.test('parser: errors name the position', async (t) => {
  const cases: Array<[string, number, RegExp]> = [
    ['', 0, /empty query/],
    ['   ', 0, /empty query/],
    ['say "hello', 4, /unterminated quote/],
    ['(a b', 0, /unclosed parenthesis/],
    ['a b)', 3, /unexpected \)/],
    ['a ()', 2, /empty parentheses/],
    ['OR a', 0, /OR needs a term/],
    ['a OR', 2, /OR needs a term/],
    ['a OR OR b', 2, /OR needs a term/],
    ['(a OR) b', 3, /OR needs a term/],
    ['AND a', 0, /AND needs a term/],
    ['a NOT', 2, /NOT must be followed/],
    ['a - b', 2, /'-' must be followed/],
    ['from: x', 5, /from: needs a value/],
    ['has:pdf', 4, /unknown has: value/],
    ['before:2002-13-01', 7, /expects a date/],
    ['after:2002-02-30', 6, /expects a date/],
    ['after:yesterday', 6, /expects a date/],
    ['subject:!!!', 8, /no searchable words/],
    ['!!! ???', 0, /no searchable words/],
    ['-spam', 0, /at least one term that is not negated/],
    ['NOT a NOT b', 0, /at least one term that is not negated/],
    ['a OR -b', 5, /each side of OR/],
    ['x -(-a)', 2, /negated term must not itself be only negations/],
    ['a OR !!!', 5, /this side of OR has no searchable words/],
  ]
  for (const [query, position, message] of cases) {
    const error = parseError(query)
    t.equal(error.position, position, `${JSON.stringify(query)}: position`)
    t.match(error.message, message, `${JSON.stringify(query)}: message`)
    t.equal(error.code, 'QUERY_SYNTAX')
    t.equal(error.retryable, false)
  }
})

t.test('parser: limits', async (t) => {
  const long = parseError('a'.repeat(queryCharsMax + 1))
  t.equal(long.position, queryCharsMax)
  t.doesNotThrow(() => parseQuery(Array.from({ length: queryTermsMax }, (_, i) => `w${i}`).join(' ')))
  const words = Array.from({ length: queryTermsMax + 1 }, (_, i) => `w${i}`)
  const tooMany = parseError(words.join(' '))
  t.equal(tooMany.position, words.slice(0, queryTermsMax).join(' ').length + 1, 'points at the first term over the limit')
  t.match(tooMany.message, /too many terms/)
  const phrase = parseError(`"${Array.from({ length: phraseTokensMax + 1 }, () => 'w').join(' ')}"`)
  t.match(phrase.message, /phrase longer than/)
  const deep = '('.repeat(queryNestingMax + 1) + 'a' + ')'.repeat(queryNestingMax + 1)
  const nesting = parseError(deep)
  t.equal(nesting.position, queryNestingMax)
  t.match(nesting.message, /nesting deeper/)
  t.doesNotThrow(() => parseQuery('('.repeat(queryNestingMax) + 'a' + ')'.repeat(queryNestingMax)))
  const negations = parseError('x ' + '-'.repeat(queryNestingMax + 1) + 'a')
  t.match(negations.message, /nesting deeper/)
})

t.test('postings: chunk codec and set operations', async (t) => {
  const chunk = encodeChunk([1, 2, 300, 1, 70_000, 3, 4_000_000_000, 2])
  const body: number[] = []
  t.ok(decodeChunkInto(chunk, 2, body))
  t.same(body, [1, 70_000, 4_000_000_000])
  const subject: number[] = []
  t.ok(decodeChunkInto(chunk, 1, subject))
  t.same(subject, [300, 70_000])
  t.notOk(decodeChunkInto(chunk.subarray(0, chunk.length - 1), 2, []), 'a cut chunk is reported, not misread')
  t.same([...toDocidSet([5, 1, 5, 3])], [1, 3, 5])
  const a = Uint32Array.from([1, 3, 5, 7, 9, 1000, 5000])
  const b = Uint32Array.from([3, 4, 5, 1000, 6000])
  t.same([...intersect(a, b)], [3, 5, 1000])
  t.same([...intersect(Uint32Array.from([9]), Uint32Array.from(Array.from({ length: 1000 }, (_, i) => i * 3)))], [9], 'galloping finds a far element')
  t.same([...union(a, b)], [1, 3, 4, 5, 7, 9, 1000, 5000, 6000])
  t.same([...difference(a, b)], [1, 7, 9, 5000])
})

/** Packs sorted, distinct (token, chunk) entries into blocks with createBlockWriter, all at once. */
function packBlocks(entries: ReadonlyArray<{ token: Buffer; chunk: Buffer }>, pageSizeBytes: number, keyBytesOf: (tokenBytes: number) => number): Array<{ first: Buffer; block: Buffer }> {
  const blocks: Array<{ first: Buffer; block: Buffer }> = []
  const writer = createBlockWriter(pageSizeBytes, keyBytesOf, (first, block) => blocks.push({ first, block }))
  for (const { token, chunk } of entries) writer.add(token, token.byteLength, chunk, chunk.byteLength)
  writer.finish()
  return blocks
}

/** Arranges `flush` in UTF-8 token order (counting its yields) and encodes every chunk: token → chunk, in chunk order. */
function chunksOf(flush: FlushPostings, step = 1000): { chunks: Map<string, Buffer>; yields: number } {
  const sorted = sortByUtf8(flush.tokens())
  let yields = 0
  for (const _ of flush.arrange(sorted, step)) yields++
  const chunks = new Map<string, Buffer>()
  sorted.forEach((token, index) => {
    const buffer = Buffer.alloc(flush.chunkBytesMax(index))
    chunks.set(token, buffer.subarray(0, flush.encodeInto(index, buffer)))
  })
  return { chunks, yields }
}

/** A tail's lists as `collect` gives them, one field bit at a time: token → docids per bit. */
function listsOf(groups: PostingGroups): Map<string, string> {
  const lists = new Map<string, string>()
  for (const token of groups.tokens()) {
    lists.set(
      token,
      JSON.stringify(
        [1, 2, 4, 8, 16].map((bit) => {
          const out: number[] = []
          groups.collect(token, bit, out)
          return out
        }),
      ),
    )
  }
  return lists
}

t.test('flush postings: postings gathered as they come give, token by token in UTF-8 order, the chunks encodeChunk gives', async (t) => {
  const flush = createFlushPostings()
  const expected = new Map<string, number[]>()
  // Enough tokens and postings to grow every array; each document lists some tokens twice
  // (bits OR-ed); tokens whose UTF-16 and UTF-8 orders differ.
  for (let docid = 1; docid <= 400; docid++) {
    for (let n = 0; n < 300; n++) {
      const token = [`t${(docid * n) % 1500}`, `\uFF21${n % 7}`, `\u{1D518}${n % 5}`][n % 3]!
      const mask = 1 << (n % 5)
      flush.add(token, docid, mask)
      const entries = expected.get(token) ?? []
      if (entries[entries.length - 2] === docid) entries[entries.length - 1]! |= mask
      else entries.push(docid, mask)
      expected.set(token, entries)
    }
  }
  t.same(flush.tokens().sort(), [...expected.keys()].sort(), 'the distinct tokens')
  t.same(flush.sizes(), { tokens: expected.size, postings: [...expected.values()].reduce((sum, entries) => sum + entries.length / 2, 0) }, 'sizes: tokens and postings')
  const { chunks, yields } = chunksOf(flush, 997)
  let mismatches = 0
  for (const [token, entries] of expected) if (!chunks.get(token)?.equals(encodeChunk(entries))) mismatches++
  t.equal(mismatches, 0, 'every chunk as encodeChunk encodes it')
  t.same(
    [...chunks.keys()].map((token) => Buffer.from(token)),
    [...chunks.keys()].map((token) => Buffer.from(token)).sort(Buffer.compare),
    'chunks in UTF-8 byte order of their tokens',
  )
  t.ok(yields >= Math.floor((flush.sizes().postings + flush.sizes().tokens) / 997) - 1, `arrange yielded ${yields} times`)
  t.throws(() => flush.add('late', 401, 1), /docid order, before arrange/, 'nothing is added after arrange')

  const wrong = createFlushPostings()
  wrong.add('a', 1, 1)
  wrong.add('b', 1, 1)
  t.throws(() => wrong.add('a', 0, 1), /docid order/, 'a docid before the latest is refused')
  t.throws(() => wrong.chunkBytesMax(0), /after arrange/)
  t.throws(() => [...wrong.arrange(['a'], 10)], /every token once/, 'a token missing')
  t.throws(() => [...wrong.arrange(['a', 'a'], 10)], /every token once/, 'a token twice')
  t.throws(() => [...wrong.arrange(['a', 'c'], 10)], /no postings for "c"/, 'a token it does not hold')
})

t.test('flush postings and tail groups: packed terms add as their tokens one by one; the token table grows and tells near tokens apart', async (t) => {
  // Packed terms with their hashes, as a prepared document brings them: right ones, and on
  // every third document wrong ones (which must not file a token twice or lose it).
  const makers = { byToken: 0, packed: 0, hashed: 0 }
  const flushes = Object.fromEntries(Object.keys(makers).map((name) => [name, createFlushPostings()])) as Record<keyof typeof makers, FlushPostings>
  const tails = Object.fromEntries(Object.keys(makers).map((name) => [name, createPostingGroups()])) as Record<keyof typeof makers, PostingGroups>
  // 20,000 distinct tokens (the table doubles several times), near ones (one unit apart,
  // prefixes of each other), non-ASCII and astral ones; each document lists a token twice.
  const vocabulary = Array.from({ length: 20_000 }, (_, n) => [`w${n}`, `w${n}x`, `ß${n}`, `𝔘${n}`, `é`.repeat(1 + (n % 4)) + n][n % 5]!)
  for (let docid = 1; docid <= 300; docid++) {
    const tokens: string[] = []
    const masks: number[] = []
    for (let k = 0; k < 120; k++) {
      tokens.push(vocabulary[(docid * 977 + k * 131) % vocabulary.length]!)
      masks.push(1 << (k % 4))
    }
    tokens.push(tokens[0]!)
    masks.push(16)
    const hashes = Int32Array.from(tokens, (token, index) => (docid % 3 === 0 ? (index * 7919) | 0 : tokenHash(token, 0, token.length)))
    for (const sink of [flushes, tails]) {
      for (let index = 0; index < tokens.length; index++) sink.byToken.add(tokens[index]!, docid, masks[index]!)
      t.equal(sink.packed.addPacked(tokens.join(' '), Uint8Array.from(masks), docid), true)
      t.equal(sink.hashed.addPacked(tokens.join(' '), Uint8Array.from(masks), docid, hashes), true)
    }
  }
  for (const packed of [flushes.packed, tails.packed]) {
    t.equal(packed.addPacked('', new Uint8Array(0), 301), true, 'a document without terms')
    t.equal(packed.addPacked('a b', new Uint8Array(1), 302), false, 'counts that differ are refused')
    t.equal(packed.addPacked('', new Uint8Array(1), 303), false)
    t.same(packed.tokens().sort(), flushes.byToken.tokens().sort(), 'the same distinct tokens (nothing of the refused documents)')
  }
  t.same(flushes.hashed.tokens().sort(), flushes.byToken.tokens().sort(), 'with hashes given, right or wrong: the same distinct tokens')
  t.ok(flushes.byToken.tokens().length > 4_000, `${flushes.byToken.tokens().length} tokens`)
  const expectedChunks = chunksOf(flushes.byToken).chunks
  for (const name of ['packed', 'hashed'] as const) {
    const chunks = chunksOf(flushes[name]).chunks
    t.equal([...expectedChunks].filter(([token, chunk]) => !chunks.get(token)?.equals(chunk)).length, 0, `flush, ${name}: every token the same chunk`)
  }
  const expectedLists = listsOf(tails.byToken)
  t.ok(expectedLists.size > 4_000)
  for (const name of ['packed', 'hashed'] as const) {
    const lists = listsOf(tails[name])
    t.equal([...expectedLists].filter(([token, list]) => lists.get(token) !== list).length, 0, `tail, ${name}: every token the same docids per field bit`)
  }
  for (const absent of ['w1y', 'w', 'ß', '𝔘', 'éé', '']) {
    const out: number[] = []
    tails.packed.collect(absent, 31, out)
    t.same(out, [], `${JSON.stringify(absent)} is not a token`)
  }
})

t.test('posting groups as the search tail: collect by field bits, drop a flushed start, add after it', async (t) => {
  const groups = createPostingGroups()
  const expected = new Map<string, Array<[number, number]>>()
  const add = (token: string, docid: number, mask: number): void => {
    groups.add(token, docid, mask)
    const entries = expected.get(token) ?? []
    const lastEntry = entries[entries.length - 1]
    if (lastEntry?.[0] === docid) lastEntry[1] |= mask
    else entries.push([docid, mask])
    expected.set(token, entries)
  }
  const check = (label: string): void => {
    let mismatches = 0
    for (const [token, entries] of expected) {
      for (const bits of [1, 2, 4, 7]) {
        const got: number[] = []
        groups.collect(token, bits, got)
        if (JSON.stringify(got) !== JSON.stringify(entries.filter(([, mask]) => (mask & bits) !== 0).map(([docid]) => docid))) mismatches++
      }
    }
    t.equal(mismatches, 0, `${label}: every token's docids, per field bits`)
    t.equal(
      groups.held().postings,
      [...expected.values()].reduce((sum, entries) => sum + entries.length, 0),
      `${label}: postings held`,
    )
  }
  let docid = 0
  const addDocuments = (count: number): void => {
    for (let n = 0; n < count; n++) {
      docid++
      for (let k = 0; k < 40; k++) add(`w${(docid * 31 + k * k) % 97}`, docid, 1 << (k % 3))
    }
  }
  addDocuments(200)
  check('loaded')
  const empty: number[] = []
  groups.collect('absent', 7, empty)
  t.same(empty, [], 'an unknown token has none')
  for (const through of [50, 50, 180, 200]) {
    groups.dropThrough(through)
    for (const [token, entries] of expected)
      expected.set(
        token,
        entries.filter(([id]) => id > through),
      )
    check(`dropped through ${through}`)
    addDocuments(30)
    check(`then 30 more documents`)
  }
  t.ok(groups.held().slots > groups.held().postings, 'dropped postings keep their slots until the groups are made again')
})

t.test('posting blocks: every token found in the one block that can hold it, blocks sized to pages', async (t) => {
  const pageSize = 4096
  // Sorted, distinct tokens sharing prefixes, a few with large chunks (common words).
  const tokens = Array.from({ length: 3000 }, (_, n) => `tok${(n * 7919) % 100_000}`)
  const distinct = [...new Set(tokens)].map((token) => Buffer.from(token)).sort(Buffer.compare)
  const entries = distinct.map((token, n) => ({ token, chunk: encodeChunk(n % 500 === 0 ? Array.from({ length: 2000 }, (_, d) => [d + 1, 2]).flat() : [n + 1, 2]) }))
  const keyBytesOf = (tokenBytes: number): number => 4 + tokenBytes
  const blocks = packBlocks(entries, pageSize, keyBytesOf)
  t.ok(blocks.length < entries.length / 20, `${entries.length} entries in ${blocks.length} blocks`)
  // Inline blocks stay under LMDB's inline size; larger ones (a big chunk first) fill their last overflow page.
  for (const { first, block } of blocks) {
    const inline = inlineValueBytesMax(pageSize, keyBytesOf(first.byteLength))
    if (block.byteLength > inline) t.ok(Math.ceil((block.byteLength + 24) / pageSize) * pageSize - 24 - block.byteLength < pageSize, 'overflow block within its pages')
  }
  t.ok(
    blocks.some(({ block, first }) => block.byteLength > inlineValueBytesMax(pageSize, keyBytesOf(first.byteLength))),
    'big chunks make overflow blocks',
  )
  const lookup = (token: Buffer): Uint8Array | null | false => {
    // The last block whose first token is not after `token`, as the index seeks it.
    let found: Buffer | undefined
    for (const { first, block } of blocks) if (Buffer.compare(Buffer.from(first), token) <= 0) found = block
    return found === undefined ? null : findInBlock(found, token)
  }
  let mismatches = 0
  entries.forEach(({ token, chunk }) => {
    const found = lookup(token)
    if (!found || Buffer.compare(Buffer.from(found), chunk) !== 0) mismatches++
  })
  t.equal(mismatches, 0, 'every token finds its own chunk')
  t.equal(lookup(Buffer.from('tok1x')), null, 'a token between two others: absent')
  t.equal(lookup(Buffer.from('zzz')), null, 'after the last: absent')
  t.equal(lookup(Buffer.from('a')), null, 'before the first: no block')
  const sample = blocks[1]!.block
  t.equal(findInBlock(sample.subarray(0, sample.byteLength - 1), Buffer.from('tok99999')), false, 'a cut block is reported, not misread')
  t.equal(findInBlock(Buffer.from([5, 1, 0x61, 0]), Buffer.from('a')), false, 'a prefix longer than the token before it is malformed')
})

t.test('forward and display records round-trip; phrases stay inside a segment', async (t) => {
  const forward = {
    subject: streamOf([['hello', 'world']]),
    body: streamOf([
      ['a', 'b'],
      ['c', 'd'],
    ]),
    from: '',
    to: streamOf([['x']]),
    attachmentNames: '',
    fromExact: ['bob@example.com', 'example.com'],
    toExact: [],
    hasAttachment: 1 as const,
  }
  t.same(decodeForward(encodeForward(forward)), { ...forward, body: '' }, 'the body stream is not stored in the forward record')
  t.ok(streamHasPhrase(forward.body, ['a', 'b']))
  t.notOk(streamHasPhrase(forward.body, ['b', 'c']), 'no phrase across two segments')
  t.notOk(streamHasPhrase(forward.subject, ['hell']), 'whole tokens only')
  t.equal(decodeForward(Buffer.from('garbage')), undefined)
  const bytes = encodeForward(forward)
  const has = (first: number, last: number, tokens: string[]): boolean => encodedForwardHasPhrase(bytes, first, last, phrasePattern(tokens))
  t.ok(has(forwardFieldIndex.subject, forwardFieldIndex.attachmentNames, ['hello', 'world']), 'phrase found in the stored bytes')
  t.notOk(has(forwardFieldIndex.subject, forwardFieldIndex.attachmentNames, ['b', 'c']), 'not across segments')
  t.notOk(has(forwardFieldIndex.to, forwardFieldIndex.to, ['example']), 'exact address tokens are not phrase text')
  const record = { id: 'f'.repeat(64), dateMs: 1_000, from: 'Bob <bob@example.com>', subject: 'Hi "there"', text: 'body\u0000with nul', segments: [13, 3] }
  t.same(decodeRecord(encodeRecord(record)), record)
  t.equal(decodeRecord(encodeRecord({ ...record, segments: [12, 3] })), undefined, 'segments that do not fit the text: not a record')
  t.equal(decodeRecord(encodeRecord({ ...record, segments: [13] })), undefined)
})

t.test('body text: the body stream is derived from the stored text; phrases are found in it as in the stream', async (t) => {
  const texts = ['Click HERE now, then click-here again', 'Zürich  office\ttomorrow', '!!!', '東京タワー visit', `${'a'.repeat(70)} tail`]
  const segments = texts.flatMap((text) => [text.length, tokenize(text).length])
  const record = { text: texts.join('\n\n'), segments }
  const stream = bodyStreamOf(record)
  t.equal(stream, streamOf(texts.map((text) => tokenize(text))), 'tokenized again text by text')
  const bytes = encodeRecord({ id: 'e'.repeat(64), dateMs: 0, from: '', subject: '', ...record })
  const phrases: string[][] = [
    ['click', 'here'],
    ['here', 'now'],
    ['here', 'again'],
    ['now', 'click'],
    ['again', 'zurich'],
    ['zurich', 'office'],
    ['office', 'tomorrow'],
    ['tomorrow', 'office'],
    ['東', '京'],
    ['ワ', 'ー', 'visit'],
    ['a'.repeat(64), 'tail'],
    ['a'.repeat(63), 'tail'],
    ['lick', 'here'],
    ['click', 'her'],
  ]
  for (const phrase of phrases) t.equal(bodyPhraseTest(phrase)(bytes), streamHasPhrase(stream, phrase), `"${phrase.join(' ')}" as in the stream (${streamHasPhrase(stream, phrase)})`)
  // One text per record: accents that fold away, non-ASCII separators and letters next to a word.
  const single = ['Clíck thére, then ＣＬＩＣＫ here', 'éclick here', 'click×here and click\u00a0now', 'click — here', 'ǅclick here', 'click_here', 'Straße click here']
  const singlePhrases: string[][] = [
    ['click', 'there'],
    ['click', 'here'],
    ['eclick', 'here'],
    ['click', 'now'],
    ['here', 'and'],
    ['strasse', 'click'],
    ['then', 'click'],
    ['dzclick', 'here'],
  ]
  for (const text of single) {
    const one = { text, segments: [text.length, tokenize(text).length] }
    const oneBytes = encodeRecord({ id: 'e'.repeat(64), dateMs: 0, from: '', subject: '', ...one })
    for (const phrase of singlePhrases) {
      const expected = streamHasPhrase(bodyStreamOf(one), phrase)
      t.equal(bodyPhraseTest(phrase)(oneBytes), expected, `${JSON.stringify(text)}: "${phrase.join(' ')}" ${expected}`)
    }
  }
  // A budget that runs out inside a text: the record keeps the text up to its last indexed token.
  const parsed = {
    messageId: null,
    dateMs: null,
    from: [],
    to: [],
    cc: [],
    bcc: [],
    subject: null,
    text: 'Alpha, beta; gamma delta',
    attachments: [{ filename: null, contentType: 'text/plain', sizeBytes: 9, sha256: 'b'.repeat(64), text: 'epsilon' }],
    flags: [],
  }
  const analyzed = analyzeSequential({ id: 'e'.repeat(64), parsed, archivedAtMs: 0 }, { ...defaultIndexOptions, tokensPerDocumentMax: 3 })
  t.same(
    { text: analyzed.record.text, segments: analyzed.record.segments },
    { text: 'Alpha, beta; gamma', segments: [18, 3] },
    'cut after the third token; the attachment text past the budget is left out',
  )
  t.equal(bodyStreamOf({ text: analyzed.record.text!, segments: analyzed.record.segments }), analyzed.forward.body)
  // A text with few tokens and much else (punctuation): the character budget bounds what is kept, cut before a word.
  const noisy = { ...parsed, text: `${'!'.repeat(50)} alpha ${'-'.repeat(50)} betagamma delta`, attachments: [] }
  const bounded = analyzeSequential({ id: 'e'.repeat(64), parsed: noisy, archivedAtMs: 0 }, { ...defaultIndexOptions, textCharsPerDocumentMax: 110 })
  t.equal(bounded.record.text, `${'!'.repeat(50)} alpha ${'-'.repeat(50)} `, 'cut at 110 characters, before the word the cut would split')
  t.equal(bounded.forward.body, ' alpha ')
  t.ok(bounded.truncated, 'reported as cut short')
  const unbounded = analyzeSequential({ id: 'e'.repeat(64), parsed: noisy, archivedAtMs: 0 }, { ...defaultIndexOptions })
  t.equal(unbounded.forward.body, ' alpha betagamma delta ')
  t.notOk(unbounded.truncated)
  const cutBytes = encodeRecord(analyzed.record)
  t.ok(bodyPhraseTest(['beta', 'gamma'])(cutBytes))
  t.notOk(bodyPhraseTest(['gamma', 'delta'])(cutBytes), 'a token past the budget is not in the body stream')
  t.notOk(bodyPhraseTest(['gamma', 'epsilon'])(cutBytes))
})

t.test('snippets highlight matches and escape HTML', async (t) => {
  const snippet = makeSnippet('Dear <user>, the Café & bar opens at noon. Café again.', new Set(['cafe']))
  t.equal(snippet, 'Dear &lt;user&gt;, the <mark>Café</mark> &amp; bar opens at noon. <mark>Café</mark> again.')
  const long = `${'filler '.repeat(100)}needle here ${'tail '.repeat(100)}`
  const cut = makeSnippet(long, new Set(['needle']))
  t.match(cut, /^…filler .*<mark>needle<\/mark> here tail .*…$/)
  t.ok(cut.length < 400)
  t.equal(makeSnippet('no match here', new Set(['zzz'])), 'no match here')
  t.equal(makeSnippet('<script>', new Set()), '&lt;script&gt;')
  // An ASCII token found only as a folded non-ASCII word, far into the text, after ASCII
  // words that merely contain it.
  const folded = makeSnippet(`${'zurichs zurich1 '.repeat(30)}Ünïcode then Zürich at last`, new Set(['zurich']))
  t.match(folded, /<mark>Zürich<\/mark> at last$/)
  t.notMatch(folded, /<mark>zurich/)
  // Two searches in a row with different token sets (the pattern of the last set is reused only for that set).
  const first = new Set(['alpha'])
  t.equal(makeSnippet('alpha beta', first), '<mark>alpha</mark> beta')
  t.equal(makeSnippet('alpha beta', new Set(['beta'])), 'alpha <mark>beta</mark>')
  t.equal(makeSnippet('beta alpha', first), 'beta <mark>alpha</mark>')
  // An ASCII excerpt with ASCII tokens (marks from the tokens' pattern): whole words only,
  // any case, every occurrence, a token cut out of a longer word or run of digits not marked.
  t.equal(
    makeSnippet('Money, MONEY_talk moneys money2 "money" & cash.', new Set(['money', 'cash'])),
    '<mark>Money</mark>, <mark>MONEY</mark>_talk moneys money2 &quot;<mark>money</mark>&quot; &amp; <mark>cash</mark>.',
  )
  // The same tokens over an excerpt with a non-ASCII word: the word-by-word path marks the folded word too.
  t.equal(makeSnippet('money for the café, Cafe money', new Set(['money', 'cafe'])), '<mark>money</mark> for the <mark>café</mark>, <mark>Cafe</mark> <mark>money</mark>')
})

t.test("flush build, alone: the blocks of given terms hold every token's docids and masks; the build yields", async (t) => {
  // 300 documents of 40 tokens each, among them a shared one, as addTerms would add them.
  const postings = new Map<string, Array<[number, number]>>()
  const addTerms = (docid: number, sink: { add(token: string, docid: number, mask: number): void }): number => {
    for (let index = 0; index < 40; index++) {
      const token = index === 0 ? 'common' : `t${(docid * 7 + index * 13) % 997}é`
      const mask = 1 << (index % 5)
      sink.add(token, docid, mask)
      const list = postings.get(token) ?? []
      const previous = list[list.length - 1]
      if (previous && previous[0] === docid) previous[1] |= mask
      else list.push([docid, mask])
      postings.set(token, list)
    }
    return 40
  }
  const sizes: { last?: PostingSizes } = {}
  const steps = buildFlush(1, 300, addTerms, 4096, sizes)
  let yields = 0
  let step = steps.next()
  while (!step.done) {
    yields++
    step = steps.next()
  }
  const built = step.value
  t.ok(yields >= 3, `yields between slices (${yields})`)
  t.same({ first: built.first, last: built.last, tokens: built.tokens }, { first: 1, last: 300, tokens: postings.size })
  t.same(sizes.last, { tokens: postings.size, postings: [...postings.values()].reduce((sum, list) => sum + list.length, 0) }, 'the sizes the next flush starts at')
  const firsts = built.blocks.map((entry) => entry.firstToken)
  t.same(firsts, [...firsts].sort(Buffer.compare), 'blocks in UTF-8 key order')
  for (const [token, list] of postings) {
    const bytes = Buffer.from(token)
    const holder = built.blocks.filter((entry) => Buffer.compare(entry.firstToken, bytes) <= 0).pop()!
    const chunk = findInBlock(holder.block, bytes)
    t.ok(chunk instanceof Uint8Array, `${token} found in its block`)
    for (const bit of [1, 2, 4, 8, 16]) {
      const docids: number[] = []
      decodeChunkInto(chunk as Uint8Array, bit, docids)
      if (
        docids.join() !==
        list
          .filter(([, mask]) => (mask & bit) !== 0)
          .map(([docid]) => docid)
          .join()
      )
        t.fail(`${token}, bit ${bit}`)
    }
  }
  // Run straight through, as a flush inside a transaction does: the same blocks.
  const again = buildFlushNow(buildFlush(1, 300, (docid, sink) => addTerms(docid, sink), 4096, {}))
  t.same(again.blocks, built.blocks)
})

t.test('result page: newest first after the cursor, bounded to the limit; removed documents are no matches', async (t) => {
  const { seed, random } = testSeed(t, 'the documents and dates')
  const dates = new Map<number, number>()
  const matched: number[] = []
  for (let docid = 1; docid <= 500; docid++) {
    if (random.int(3) === 0) continue
    matched.push(docid)
    // Few distinct dates, so that docids break ties; some removed (NaN).
    dates.set(docid, random.int(10) === 0 ? Number.NaN : 1_700_000_000_000 + random.int(40) * 1000)
  }
  const dateOf = (docid: number): number => dates.get(docid)!
  const expected = matched.filter((docid) => !Number.isNaN(dateOf(docid))).sort((a, b) => dateOf(b) - dateOf(a) || b - a)
  const seen: number[] = []
  let after: { dateMs: number; docid: number } | null = null
  for (;;) {
    const page = selectPage(Uint32Array.from(matched), dateOf, after, 7)
    t.equal(page.total, expected.length, `seed ${seed}: total`)
    if (page.remaining !== expected.length - seen.length) t.fail(`seed ${seed}: remaining`)
    if (page.docids.some((docid, index) => page.dates[index] !== dateOf(docid))) t.fail(`seed ${seed}: dates`)
    seen.push(...page.docids)
    if (page.remaining <= 7) break
    const last = page.docids.length - 1
    after = decodeCursor(encodeCursor(page.dates[last]!, page.docids[last]!))
  }
  t.same(seen, expected, `seed ${seed}: the pages concatenate to the whole order`)
  t.same(selectPage(new Uint32Array(0), dateOf, null, 5), { total: 0, remaining: 0, docids: [], dates: [] })
})

t.test("cursor: round-trips a position; anything else, another layout's included, is BAD_CURSOR", async (t) => {
  t.same(decodeCursor(encodeCursor(1_700_000_000_000, 42)), { dateMs: 1_700_000_000_000, docid: 42 })
  t.same(decodeCursor(encodeCursor(-5, 0)), { dateMs: -5, docid: 0 })
  for (const cursor of [
    '',
    'not a cursor!',
    'x'.repeat(65),
    Buffer.from('3.1.2').toString('base64url'),
    Buffer.from('4.1').toString('base64url'),
    Buffer.from('4.1.-2').toString('base64url'),
  ]) {
    t.throws(() => decodeCursor(cursor), { code: 'BAD_CURSOR' }, JSON.stringify(cursor))
  }
})

t.test('query cache: sets bounded in docids, oldest dropped first; state changes start it over or drop the tail parts', async (t) => {
  const state = (fields: Partial<IndexState> = {}): IndexState => ({ v: 4, next: 100, flushed: 50, chunks: 2, generation: 1, documents: 99, removed: 0, ...fields })
  const cache: QueryCache = queryCacheFor(undefined, 1, state())
  // Only the length of a set counts against the budget.
  const sized = (length: number): CachedSet => ({ set: { length } as Uint32Array, chunks: 2, flushed: 50 })
  const quarter = queryCacheDocidsMax / 4
  cacheSet(cache, 'too big', sized(quarter + 1))
  t.notOk(cache.sets.has('too big'), 'a set over a quarter of the budget is not kept')
  for (const key of ['a', 'b', 'c', 'd']) cacheSet(cache, key, sized(quarter - 10))
  t.same([...cache.sets.keys()], ['a', 'b', 'c', 'd'])
  cacheSet(cache, 'e', sized(100))
  t.same([...cache.sets.keys()], ['b', 'c', 'd', 'e'], 'the oldest dropped past the budget')
  cacheSet(cache, 'c', sized(5))
  t.same([...cache.sets.keys()], ['b', 'd', 'e', 'c'], 'a replaced set counts once, as the newest')
  t.equal(cache.docids, 2 * (quarter - 10) + 100 + 5)

  cache.tailDates.set(0, new Float64Array(1))
  cache.records.set(60, { record: { id: 'x', dateMs: 0, from: '', subject: '', text: '', segments: [] } })
  t.equal(queryCacheFor(cache, 1, state({ chunks: 3, flushed: 80 })), cache, 'a flush keeps the cache')
  t.equal(cache.sets.size, 4)
  t.equal(cache.tailDates.size, 1, 'same tail (next and generation): its date blocks stay')
  queryCacheFor(cache, 1, state({ chunks: 3, flushed: 80, next: 101 }))
  t.equal(cache.tailDates.size, 0, 'an ingest drops the tail date blocks')
  t.equal(cache.records.size, 1, 'but not the records')
  queryCacheFor(cache, 1, state({ chunks: 3, flushed: 80, next: 101, generation: 2 }))
  t.equal(cache.records.size, 0, 'a change in the tail drops the records')
  t.not(queryCacheFor(cache, 1, state({ chunks: 3, flushed: 80, next: 101, generation: 2, patched: 1 })), cache, 'a patch starts over')
  t.not(queryCacheFor(cache, 2, state({ chunks: 3, flushed: 80, next: 101, generation: 2 })), cache, 'a new epoch starts over')
  t.not(queryCacheFor(cache, 1, state({ chunks: 1, flushed: 20, next: 101, generation: 2 })), cache, 'a state that went back starts over')
})

t.test("date column: a block's docids dated in [from, to), NaN in no range; a set grown at its end", async (t) => {
  const dates = Float64Array.from([5, Number.NaN, 10, 15, 9.5, Number.NEGATIVE_INFINITY])
  const out = new Uint32Array(10)
  out[0] = 7
  const count = collectDated(dates, 9.5, 15, 256, out, 1)
  t.same([...out.subarray(0, count)], [7, 258, 260])
  t.equal(collectDated(dates, Number.NEGATIVE_INFINITY, Number.POSITIVE_INFINITY, 0, new Uint32Array(10), 0), 5, 'every dated slot, NaN left out')
  const set = Uint32Array.from([1, 2])
  t.equal(concatenated(set, []), set, 'nothing to add: the same set')
  t.same([...concatenated(set, [5, 9])], [1, 2, 5, 9])
})
