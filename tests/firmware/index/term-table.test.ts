import t from 'tap'
import { createTermTable } from '../../../firmware/index/term-table.js'
import { tokenCharsMax, tokenize } from '../../../firmware/index/tokenize.js'
import { testSeed } from '../../helpers/random.js'

/** What addText must give: tokenize's tokens within the budget, distinct in first-occurrence order, and its count. */
function expected(text: string, tokensMax: number): { tokens: string[]; count: number } {
  const tokens = tokenize(text, tokensMax + 1)
  return { tokens: [...new Set(tokens.slice(0, tokensMax))], count: tokens.length }
}

t.test('term table: addText gives exactly the distinct tokens tokenize gives, ASCII and not, within a budget', async (t) => {
  // Random texts mixing ASCII words with what sends tokenize down its general path: accents
  // (precomposed and combining), CJK, a sign that lower-cases to ASCII (Kelvin), one that
  // lower-cases longer (İ), final sigma, emoji and lone surrogates, a no-break space, runs
  // longer than tokenCharsMax. The seed is printed so a failure replays.
  const { seed, random: draws } = testSeed(t, 'the texts')
  const random = (below: number): number => draws.int(below)
  const pieces = [
    'word',
    'Word',
    'WORD',
    'a1',
    '42',
    ' ',
    '\n',
    '.',
    '-',
    '@',
    'é',
    'E\u0301',
    'café',
    '日本',
    'カナ',
    '\u212Aelvin',
    'İ',
    'ΟΔΟΣ',
    'σ',
    '😀',
    '\ud800',
    '\udc00',
    '\u00a0',
    'x'.repeat(70),
    'é'.repeat(70),
    '\u0301',
    'ﬁ',
    '⑴',
  ]
  for (let round = 0; round < 400; round++) {
    let text = ''
    for (let length = random(30); length > 0; length--) text += random(4) === 0 ? String.fromCharCode(random(128)) : pieces[random(pieces.length)]!
    // Most rounds ASCII only: the fast path alone.
    if (round % 2 === 0) text = text.replace(/[^\x00-\x7f]/g, ' ')
    for (const budget of [1, 3, 7, 1000]) {
      const table = createTermTable()
      const count = table.addText(text, 2, budget)
      const want = expected(text, budget)
      const packed = table.pack()
      t.same({ tokens: packed.tokens === '' ? [] : packed.tokens.split(' '), count }, want, `seed ${seed}, round ${round}, budget ${budget}: ${JSON.stringify(text)}`)
      if (!packed.masks.every((bits) => bits === 2)) t.fail(`bits: seed ${seed}, round ${round}`)
    }
  }
  // Found by these draws: a lone combining mark past the budget folds to no token, so the
  // text holds no more tokens than the budget (addText said one more).
  const mark = createTermTable()
  t.same([mark.addText('a \u0301', 2, 1), expected('a \u0301', 1).count], [1, 1], 'a combining mark after the budget is not a token')
  const long = createTermTable()
  t.equal(long.addText(`${'Q'.repeat(80)} ${'q'.repeat(tokenCharsMax)}`, 2, 10), 2)
  t.same(long.pack().tokens, 'q'.repeat(tokenCharsMax), 'a run past tokenCharsMax is cut, and is then the same token as its cut start')
})

t.test('term table: bits OR per token across fields, order of first occurrence kept, the table grows', async (t) => {
  const table = createTermTable()
  table.addAll(['hello', 'world'], 1)
  t.equal(table.addText('World, HELLO again; hello.', 2, 100), 4)
  table.add('again', 16)
  table.add('\u0002attachment', 32)
  const packed = table.pack()
  t.same(packed.tokens.split(' '), ['hello', 'world', 'again', '\u0002attachment'])
  t.same([...packed.masks], [3, 3, 18, 32])
  t.equal(table.size(), 4)

  // Thousands of distinct tokens (the slots double several times): each once, in order,
  // and every one found again when it repeats.
  const big = createTermTable()
  const words = Array.from({ length: 5_000 }, (_, index) => `w${index.toString(36)}`)
  t.equal(big.addText(words.join(' '), 2, 100_000), 5_000)
  t.equal(big.addText(words.slice().reverse().join(' ').toUpperCase(), 8, 100_000), 5_000)
  const grown = big.pack()
  t.same(grown.tokens.split(' '), words)
  t.ok(
    grown.masks.every((bits) => bits === 10),
    'every repeat found (bits ORed), none added twice',
  )
  t.equal(big.addText('new', 2, 0), 1, 'a budget of 0 with a token left says there is more')
  t.equal(big.addText(' ,; ', 2, 0), 0, 'and nothing when no token is left')
  t.equal(big.size(), 5_000)
})
