import { tokenizeWithSpans, wordRunPattern } from './tokenize.js'

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
  const pattern = new RegExp(wordRunPattern)
  let matchStart = -1
  let matchEnd = 0
  let scanned = 0
  for (let run = pattern.exec(text); run !== null && matchStart < 0 && scanned < snippetScanTokensMax; run = pattern.exec(text)) {
    scanned++
    for (const span of tokenizeWithSpans(run[0])) {
      if (tokens.has(span.token)) {
        matchStart = run.index
        matchEnd = run.index + run[0].length
        break
      }
    }
  }
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
  for (const span of tokenizeWithSpans(excerpt)) {
    if (!tokens.has(span.token) || span.start < lastMarkEnd) continue
    out += escapeHtml(excerpt.slice(cursor, span.start)) + '<mark>' + escapeHtml(excerpt.slice(span.start, span.end)) + '</mark>'
    cursor = span.end
    lastMarkEnd = span.end
  }
  out += escapeHtml(excerpt.slice(cursor))
  if (end < text.length) out += '…'
  return out.replace(/\s+/g, ' ').trim()
}
