import { foldRun, tokenizeWithSpans, wordRunPattern } from './tokenize.js'

/** Characters of context kept on each side of the first match in a snippet. */
export const snippetContextChars = 80
/** Longest snippet, in characters of source text (before escaping and marks). */
export const snippetCharsMax = 240
/** Words of a document scanned for a match before falling back to its start. */
export const snippetScanTokensMax = 20_000

const htmlSpecial = /[&<>"']/
const escapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/** Escapes text for HTML (`&`, `<`, `>`, quotes). */
export function escapeHtml(text: string): string {
  // Most excerpts have nothing to escape: one native test instead of a replace with a callback.
  return htmlSpecial.test(text) ? text.replace(/[&<>"']/g, (char) => escapes[char]!) : text
}

const asciiToken = /^[\x00-\x7f]+$/
const nonAsciiCharacter = /[^\x00-\x7f]/
const regexSpecial = /[.*+?^${}()|[\]\\]/g

interface TokenPatterns {
  tokens: ReadonlySet<string>
  ascii: string[]
  /** The first whole-word occurrence of an ASCII token, any case (null when no token is ASCII). */
  pattern: RegExp | null
  /** The same, global: every occurrence in an excerpt. */
  every: RegExp | null
}

/** The last token set's patterns: one search makes a snippet per hit with the same set. */
let lastPatterns: TokenPatterns | undefined

/** The case-insensitive whole-word patterns of the ASCII tokens of `tokens`. */
function asciiPatternOf(tokens: ReadonlySet<string>): TokenPatterns {
  if (lastPatterns?.tokens === tokens) return lastPatterns
  const ascii = [...tokens].filter((token) => asciiToken.test(token))
  const source = `(?<![\\p{L}\\p{N}\\p{M}])(?:${ascii.map((token) => token.replace(regexSpecial, '\\$&')).join('|')})(?![\\p{L}\\p{N}\\p{M}])`
  lastPatterns = { tokens, ascii, pattern: ascii.length === 0 ? null : new RegExp(source, 'iu'), every: ascii.length === 0 ? null : new RegExp(source, 'giu') }
  return lastPatterns
}

/**
 * Start and end of the first word of `text` that folds to one of `tokens`, or [-1, 0].
 * ASCII tokens are looked for with one native case-insensitive search first; the word by
 * word scan runs only when that finds nothing and the text has non-ASCII characters
 * (which may fold to a token: `Zürich` → `zurich`) or a token is not ASCII.
 */
function firstMatch(text: string, tokens: ReadonlySet<string>): [number, number] {
  const { ascii, pattern } = asciiPatternOf(tokens)
  if (pattern !== null) {
    const found = pattern.exec(text)
    if (found) return [found.index, found.index + found[0].length]
    if (ascii.length === tokens.size && !nonAsciiCharacter.test(text)) return [-1, 0]
  }
  // When every token is ASCII and the search above ran, an ASCII-only word cannot be the
  // match (the search would have found it): only words with other characters are folded.
  const onlyFoldedWords = pattern !== null && ascii.length === tokens.size
  const runs = new RegExp(wordRunPattern)
  let scanned = 0
  let found = false
  // Folding each run straight into a set lookup: no token objects, no regex per word.
  const check = (token: string): void => {
    if (tokens.has(token)) found = true
  }
  for (let run = runs.exec(text); run !== null && scanned < snippetScanTokensMax; run = runs.exec(text)) {
    scanned++
    if (onlyFoldedWords && !nonAsciiCharacter.test(run[0])) continue
    foldRun(run[0], check)
    if (found) return [run.index, run.index + run[0].length]
  }
  return [-1, 0]
}

/**
 * The words of `excerpt` to mark: when every token is ASCII and so is the excerpt, the
 * whole-word matches of the tokens' pattern (no word other than a match can fold to a
 * token); otherwise every word's folded tokens, for the caller to pick from.
 */
function marksOf(excerpt: string, tokens: ReadonlySet<string>): Array<{ token: string; start: number; end: number }> {
  const { ascii, every } = asciiPatternOf(tokens)
  if (every === null || ascii.length !== tokens.size || nonAsciiCharacter.test(excerpt)) return tokenizeWithSpans(excerpt)
  const marks: Array<{ token: string; start: number; end: number }> = []
  every.lastIndex = 0
  for (let found = every.exec(excerpt); found !== null; found = every.exec(excerpt)) {
    marks.push({ token: found[0].toLowerCase(), start: found.index, end: found.index + found[0].length })
  }
  return marks
}

/**
 * A short, HTML-safe excerpt of `text` around the first occurrence of any of `tokens`,
 * with every occurrence inside the excerpt wrapped in `<mark>…</mark>`; `…` marks a cut.
 * Whitespace runs are collapsed to one space. Without a match the excerpt is the start
 * of the text.
 *
 * @param text the document text (original case and accents)
 * @param tokens folded query tokens to highlight
 */
export function makeSnippet(text: string, tokens: ReadonlySet<string>): string {
  // Find the first match without tokenizing the whole text (hits can be long); then
  // tokenize only the excerpt. A snippet costs O(offset of the first match + excerpt).
  const [matchStart, matchEnd] = tokens.size === 0 ? [-1, 0] : firstMatch(text, tokens)
  let start = 0
  if (matchStart >= 0) {
    start = Math.max(0, matchStart - snippetContextChars)
    // Start and end at word boundaries rather than mid-word.
    const boundary = text.indexOf(' ', start)
    if (start > 0 && boundary >= 0 && boundary < matchStart) start = boundary + 1
  }
  let end = Math.min(text.length, start + snippetCharsMax)
  if (end < text.length) {
    const boundary = text.lastIndexOf(' ', end)
    if (boundary > Math.max(start, matchEnd)) end = boundary
  }
  const excerpt = text.slice(start, end)
  let out = start > 0 ? '…' : ''
  let cursor = 0
  let lastMarkEnd = -1
  // No match in the text (a query of dates or of other fields, say): the excerpt is the
  // text's start, inside what firstMatch scanned, so it has nothing to mark.
  const spans = matchStart < 0 ? [] : marksOf(excerpt, tokens)
  for (const span of spans) {
    if (!tokens.has(span.token) || span.start < lastMarkEnd) continue
    out += escapeHtml(excerpt.slice(cursor, span.start)) + '<mark>' + escapeHtml(excerpt.slice(span.start, span.end)) + '</mark>'
    cursor = span.end
    lastMarkEnd = span.end
  }
  out += escapeHtml(excerpt.slice(cursor))
  if (end < text.length) out += '…'
  return out.replace(/\s+/g, ' ').trim()
}
