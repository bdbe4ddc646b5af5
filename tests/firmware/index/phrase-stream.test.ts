import t from 'tap'
import { createPhraseStreamWriter, phraseStreamHas, phraseStreamOf, phraseStreamPattern } from '../../../firmware/index/phrase-stream.js'
import { createTermTable } from '../../../firmware/index/term-table.js'
import { fieldBits } from '../../../firmware/index/field-bits.js'
import { tokenize } from '../../../firmware/index/tokenize.js'

const has = (texts: string[][], phrase: string[]): boolean => phraseStreamHas(phraseStreamOf(texts), phraseStreamPattern(phrase))

t.test('a phrase is found where its tokens follow each other within one text', async (t) => {
  const texts = [tokenize('Please click here to unsubscribe'), tokenize('see the list')]
  t.ok(has(texts, ['click', 'here']))
  t.ok(has(texts, ['click', 'here', 'to', 'unsubscribe']))
  t.ok(has(texts, ['the', 'list']))
  t.notOk(has(texts, ['here', 'click']), 'order counts')
  t.notOk(has(texts, ['click', 'to']), 'adjacency counts')
  t.notOk(has(texts, ['unsubscribe', 'see']), 'never across two texts (body and an attachment)')
  t.notOk(has(texts, ['click', 'here', 'now']))
})

t.test('separators stand only between texts that have tokens; an empty stream is one separator', async (t) => {
  t.same(Buffer.from(phraseStreamOf([[], ['a'], [], [], ['b'], []])), Buffer.from(phraseStreamOf([['a'], ['b']])))
  t.same([...phraseStreamOf([])], [0, 0, 0, 0])
  t.same([...phraseStreamOf([[], []])], [0, 0, 0, 0])
  t.equal(phraseStreamOf([['a', 'b'], ['c']]).byteLength, 16, 'three tokens and one separator, 4 bytes each')
})

t.test('the term table pushes the same stream as the token arrays give', async (t) => {
  const texts = ['Grüße aus Zürich: CAFÉ, café, naïve ﬁle İstanbul', 'plain ascii words, 42 and x86_64', '', 'ＦＵＬＬ width and combining e\u0301']
  const writer = createPhraseStreamWriter()
  const table = createTermTable()
  for (const text of texts) {
    table.addText(text, fieldBits.body, 1_000, writer)
    writer.endText()
  }
  t.same(Buffer.from(writer.finish()), Buffer.from(phraseStreamOf(texts.map((text) => tokenize(text)))))
  // At a budget: exactly the tokens added, as the one-pass analysis cuts them.
  const cut = createPhraseStreamWriter()
  createTermTable().addText(texts[1]!, fieldBits.body, 3, cut)
  t.same(Buffer.from(cut.finish()), Buffer.from(phraseStreamOf([tokenize(texts[1]!).slice(0, 3)])))
})

t.test('a byte match that does not start on a token boundary is not a hit', async (t) => {
  const stream = phraseStreamOf([tokenize('alpha beta gamma delta')])
  const bytes = Buffer.from(stream)
  t.ok(phraseStreamHas(stream, bytes.subarray(4, 12)), 'aligned: tokens 2 and 3')
  t.notOk(phraseStreamHas(stream, bytes.subarray(2, 10)), 'the same length two bytes off')
  // The unaligned bytes occur first, then aligned: the search goes past the first.
  const repeated = Buffer.concat([bytes.subarray(2, 10), Buffer.alloc(2), bytes.subarray(0, 16)])
  t.ok(phraseStreamHas(repeated, bytes.subarray(2, 10)), 'found again at a boundary further on')
})

t.test('a stream is read by its length: a view whose byteLength runs past the value', async (t) => {
  // Under Bun, lmdb-js getBinaryFast answers a view of its shared read buffer whose
  // `length` alone is the value's; what lies after it belongs to other reads.
  const value = phraseStreamOf([tokenize('nothing to see')])
  const shared = Buffer.concat([value, Buffer.from(phraseStreamOf([tokenize('click here')]))])
  Object.defineProperty(shared, 'length', { value: value.byteLength })
  t.notOk(phraseStreamHas(shared, phraseStreamPattern(['click', 'here'])), 'nothing past the value is searched')
  t.ok(phraseStreamHas(shared, phraseStreamPattern(['to', 'see'])))
})
