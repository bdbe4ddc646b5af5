import { foldRun, tokenizeWithSpans, wordRunPattern } from './tokenize.js'

/** Characters of context kept on each side of the first match in a snippet. */
export const snippetContextChars = 80
/** Longest snippet, in characters of source text (before escaping and marks). */
export const snippetCharsMax = 240
/** Words of a document scanned for a match before falling back to its start. */
export const snippetScanTokensMax = 20_000

const escapes: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

/** Escapes text for HTML (`&`, `<`, `>`, quotes). */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => escapes[char]!)
}

const asciiToken = /^[\x00-\x7f]+$/
const nonAsciiCharacter = /[^\x00-\x7f]/
const regexSpecial = /[.*+?^${}()|[\]\\]/g

/** The last token set's pattern: one search makes a snippet per hit with the same set. */
let lastPattern: { tokens: ReadonlySet<string>; ascii: string[]; pattern: RegExp | null } | undefined

/** The case-insensitive whole-word pattern of the ASCII tokens of `tokens` (null when there is none). */
function asciiPatternOf(tokens: ReadonlySet<string>): { ascii: string[]; pattern: RegExp | null } {
  if (lastPattern?.tokens === tokens) return lastPattern
  const ascii = [...tokens].filter((token) => asciiToken.test(token))
  const pattern = ascii.length === 0 ? null : new RegExp(`(?<![\\p{L}\\p{N}\\p{M}])(?:${ascii.map((token) => token.replace(regexSpecial, '\\$&')).join('|')})(?![\\p{L}\\p{N}\\p{M}])`, 'iu')
  lastPattern = { tokens, ascii, pattern }
  return lastPattern
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
  const spans = matchStart < 0 ? [] : tokenizeWithSpans(excerpt)
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
