import t from 'tap'
import { fileURLToPath } from 'node:url'
import { fileLinesMax, formatterLineWidth, functionLinesMax, longFileAndLines, longFunctions } from '../../scripts/check-length.js'

/** A function named `name` whose syntax spans exactly `lines` lines. */
const functionOf = (name: string, lines: number): string => `function ${name}() {\n${'  work()\n'.repeat(lines - 2)}}\n`

t.test('functions: over the limit listed with name, line and length; at the limit not', async (t) => {
  const text = `/** A doc comment is not counted. */\n${functionOf('atLimit', functionLinesMax)}${functionOf('overLimit', functionLinesMax + 1)}`
  t.same(longFunctions('example.ts', text), [{ kind: 'function', file: 'example.ts', line: 2 + functionLinesMax, name: 'overLimit', length: functionLinesMax + 1 }])
  const arrow = `export const handler = async () => {\n${'  work()\n'.repeat(functionLinesMax)}}\n`
  t.same(
    longFunctions('arrow.ts', arrow).map((finding) => finding.name),
    ['handler'],
    'an arrow function is named after its variable',
  )
  const callback = `t.test('x', () => {\n${'  work()\n'.repeat(functionLinesMax)}})\n`
  t.same(
    longFunctions('callback.ts', callback).map((finding) => finding.name),
    ['(callback of t.test)'],
  )
})

t.test('files and lines: a file over the limit, each line wider than the width', async (t) => {
  t.same(longFileAndLines('short.ts', 'x\n'.repeat(fileLinesMax), 10), [], 'a file at the limit, lines within the width')
  t.same(longFileAndLines('long.ts', 'x\n'.repeat(fileLinesMax + 1), 10), [{ kind: 'file', file: 'long.ts', line: 1, name: '(file)', length: fileLinesMax + 1 }])
  t.same(
    longFileAndLines('wide.ts', `${'a'.repeat(10)}\n${'é'.repeat(11)}\n`, 10),
    [{ kind: 'line', file: 'wide.ts', line: 2, name: '(line)', length: 11 }],
    'columns are characters, not bytes',
  )
})

t.test('the line width is the formatter configuration', async (t) => {
  t.equal(typeof formatterLineWidth(fileURLToPath(new URL('../../biome.jsonc', import.meta.url))), 'number')
})
