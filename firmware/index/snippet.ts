import { tokenizeWithSpans } from './tokenize.js'

/** Characters of context kept on each side of the first match in a snippet. */
export const snippetContextChars = 80
/** Longest snippet, in characters of source text (before escaping and marks). */
export const snippetCharsMax = 240
/** Tokens of a document scanned for a match before falling back to its start. */
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
  const spans = tokenizeWithSpans(text, snippetScanTokensMax)
  const firstMatch = spans.findIndex((span) => tokens.has(span.token))
  let start = 0
  let matchEnd = 0
  if (firstMatch >= 0) {
    const match = spans[firstMatch]!
    matchEnd = match.end
    start = Math.max(0, match.start - snippetContextChars)
    // Start and end at word boundaries rather than mid-word.
    const boundary = text.indexOf(' ', start)
    if (start > 0 && boundary >= 0 && boundary < match.start) start = boundary + 1
  }
  let end = Math.min(text.length, start + snippetCharsMax)
  if (end < text.length) {
    const boundary = text.lastIndexOf(' ', end)
    if (boundary > Math.max(start, matchEnd)) end = boundary
  }
  let out = start > 0 ? '…' : ''
  let cursor = start
  let lastMarkEnd = -1
  for (const span of spans) {
    if (span.start < start || span.end > end) continue
    if (!tokens.has(span.token) || span.start < lastMarkEnd) continue
    out += escapeHtml(text.slice(cursor, span.start)) + '<mark>' + escapeHtml(text.slice(span.start, span.end)) + '</mark>'
    cursor = span.end
    lastMarkEnd = span.end
  }
  out += escapeHtml(text.slice(cursor, end))
  if (end < text.length) out += '…'
  return out.replace(/\s+/g, ' ').trim()
}
