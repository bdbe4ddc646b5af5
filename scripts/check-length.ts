/**
 * Warns about code that has grown past what a reader holds in one sitting (STYLE.md 21):
 * functions over 80 lines, files over 500 lines, and lines wider than the formatter's
 * lineWidth (read from biome.jsonc, so the two never disagree). It prints `file:line`, the
 * name and the length of each, and exits 0: these are warnings. With `--strict` it exits 1
 * when anything is listed.
 *
 * Usage: check-length.ts [--strict] [folder…]   (default folders: firmware hal boot config)
 *
 * Functions are found with the TypeScript parser, so a function's length is that of its
 * syntax (from its first token, without the doc comment above it, to its closing brace); a
 * function nested in another counts on its own, and also within the outer one.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join, relative, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import ts from 'typescript'

/** Limits, in lines. */
export const functionLinesMax = 80
export const fileLinesMax = 500

const defaultFolders = ['firmware', 'hal', 'boot', 'config']
const sourceExtensions = ['.ts', '.mts', '.cts', '.js', '.mjs', '.cjs']
const skippedFolders = new Set(['node_modules', 'fixtures'])

/** One warning: where, what and how long (lines for a function or file, columns for a line). */
export interface LengthFinding {
  readonly kind: 'function' | 'file' | 'line'
  readonly file: string
  readonly line: number
  readonly name: string
  readonly length: number
}

/** The formatter's lineWidth in columns, from the Biome configuration (JSON with comments). */
export function formatterLineWidth(configPath: string): number {
  const { config, error } = ts.parseConfigFileTextToJson(configPath, readFileSync(configPath, 'utf8'))
  const width: unknown = config?.formatter?.lineWidth
  if (error || typeof width !== 'number') throw new Error(`${configPath}: no formatter.lineWidth`)
  return width
}

/** Source files below a folder, sorted, without node_modules and fixture folders. */
export function sourceFiles(folder: string): string[] {
  const files: string[] = []
  for (const entry of readdirSync(folder, { withFileTypes: true })) {
    const path = join(folder, entry.name)
    if (entry.isDirectory() && !skippedFolders.has(entry.name)) files.push(...sourceFiles(path))
    else if (entry.isFile() && sourceExtensions.some((extension) => entry.name.endsWith(extension))) files.push(path)
  }
  return files.sort()
}

/** A readable name for a function node: its own, or that of what it is assigned or passed to. */
function functionName(node: ts.FunctionLikeDeclaration, source: ts.SourceFile): string {
  if (ts.isConstructorDeclaration(node)) return 'constructor'
  if (node.name) return node.name.getText(source)
  const parent = node.parent
  if (ts.isVariableDeclaration(parent) || ts.isPropertyAssignment(parent) || ts.isPropertyDeclaration(parent)) return parent.name.getText(source)
  if (ts.isBinaryExpression(parent)) return parent.left.getText(source)
  if (ts.isCallExpression(parent)) return `(callback of ${parent.expression.getText(source).slice(0, 40)})`
  return '(anonymous)'
}

function isMeasuredFunction(node: ts.Node): node is ts.FunctionLikeDeclaration {
  const isFunction = ts.isFunctionDeclaration(node) || ts.isFunctionExpression(node) || ts.isArrowFunction(node)
  return (isFunction || ts.isMethodDeclaration(node) || ts.isConstructorDeclaration(node) || ts.isAccessor(node)) && node.body !== undefined
}

/** Functions of one file longer than functionLinesMax. */
export function longFunctions(file: string, text: string): LengthFinding[] {
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
  const findings: LengthFinding[] = []
  const visit = (node: ts.Node): void => {
    if (isMeasuredFunction(node)) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line
      const last = source.getLineAndCharacterOfPosition(node.getEnd()).line
      const length = last - first + 1
      if (length > functionLinesMax) findings.push({ kind: 'function', file, line: first + 1, name: functionName(node, source), length })
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return findings
}

/** The file itself when longer than fileLinesMax, and each line wider than `lineWidth` columns. */
export function longFileAndLines(file: string, text: string, lineWidth: number): LengthFinding[] {
  const lines = text.split('\n')
  if (lines.at(-1) === '') lines.pop()
  const findings: LengthFinding[] = []
  if (lines.length > fileLinesMax) findings.push({ kind: 'file', file, line: 1, name: '(file)', length: lines.length })
  lines.forEach((line, index) => {
    // Columns as the formatter counts them: characters, not UTF-16 units or bytes.
    const columns = [...line].length
    if (columns > lineWidth) findings.push({ kind: 'line', file, line: index + 1, name: '(line)', length: columns })
  })
  return findings
}

function report(title: string, findings: readonly LengthFinding[], unit: string): void {
  if (findings.length === 0) return
  process.stdout.write(`${title} (${findings.length}):\n`)
  for (const finding of findings) {
    const name = finding.kind === 'line' ? '' : `  ${finding.name}`
    process.stdout.write(`  ${finding.file}:${finding.line}${name}  ${finding.length} ${unit}\n`)
  }
}

function main(argv: readonly string[]): number {
  const strict = argv.includes('--strict')
  const folders = argv.filter((argument) => !argument.startsWith('--'))
  const lineWidth = formatterLineWidth('biome.jsonc')
  const findings: LengthFinding[] = []
  for (const folder of folders.length > 0 ? folders : defaultFolders) {
    for (const path of sourceFiles(folder)) {
      const file = relative(process.cwd(), path)
      const text = readFileSync(path, 'utf8')
      findings.push(...longFunctions(file, text), ...longFileAndLines(file, text, lineWidth))
    }
  }
  const ofKind = (kind: LengthFinding['kind']) => findings.filter((finding) => finding.kind === kind)
  report(`functions over ${functionLinesMax} lines`, ofKind('function'), 'lines')
  report(`files over ${fileLinesMax} lines`, ofKind('file'), 'lines')
  report(`lines over ${lineWidth} columns`, ofKind('line'), 'columns')
  process.stdout.write(`check-length: ${findings.length} warning(s)${strict ? '' : ' (warnings only; --strict fails on them)'}\n`)
  return strict && findings.length > 0 ? 1 : 0
}

// Run only as a command, so that a test can import the functions above.
if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) process.exitCode = main(process.argv.slice(2))
