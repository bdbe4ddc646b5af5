import { cutToChars } from '../common/text.js'

/**
 * Tokenizing rules of the search index. The same functions cut documents at index time
 * and query words at search time, and the reference scan in the tests uses them too, so a
 * word typed in a query matches exactly the tokens its document produced.
 *
 * Rules:
 * - A token is a run of letters, digits and combining marks (`\p{L}\p{N}\p{M}`), except
 *   that every Han, Hiragana and Katakana character is a token of its own: those scripts
 *   do not separate words with spaces, so a CJK word in a query becomes a phrase of its
 *   characters (matched adjacent), which finds it without a dictionary.
 * - Folding: lower-case, then Unicode NFKD, then combining marks removed, then NFC (which
 *   recomposes Hangul syllables). `Éte`, `ete`
 *   and `ÉTÉ` are one token; compatibility forms fold too (`ﬁ` → `fi`, full-width and
 *   half-width forms → their plain form). If folding leaves characters that are not
 *   letters or digits (`⑴` → `(1)`), the folded text is split again.
 * - Punctuation, symbols and emoji are separators and never tokens.
 * - A token longer than `tokenCharsMax` is cut to that length (base64 runs and hashes are
 *   long; cutting keeps them searchable by their start and bounds the key size).
 */

/** Longest token kept, in UTF-16 code units; longer ones are cut (never split inside a surrogate pair). */
export const tokenCharsMax = 64

/** Longest address token kept (a whole address, its local part or domain), in UTF-16 code units. */
export const addressTokenCharsMax = 254

/** The runs of text that tokens come from (letters, digits, marks); global, copy before use. */
export const wordRunPattern = /[\p{L}\p{N}\p{M}]+/gu
const cjkCharacter = /[\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}]/u
const cjkOrRest = /[\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}]|[^\p{sc=Han}\p{sc=Hiragana}\p{sc=Katakana}]+/gu
const letterOrDigitRun = /[\p{L}\p{N}]+/gu
const combiningMarks = /\p{M}+/gu
const nonAscii = /[^\x00-\x7f]/
const asciiOnly = /^[\x00-\x7f]*$/

/** A token with where it came from in the original text (for highlighting). */
export interface TokenSpan {
  token: string
  /** Offset of the first character in the original text, in UTF-16 code units. */
  start: number
  /** Offset after the last character, in UTF-16 code units. */
  end: number
}

export { cutToChars }

/**
 * Folds one raw word (a run the word pattern matched) into zero or more tokens and calls
 * `emit` for each. Most mail is ASCII, which only needs lower-casing. (One `u` regex and
 * a split of the rare CJK runs is several times faster than a single `v`-flag pattern
 * with class subtraction, on Bun especially.)
 */
export function foldRun(run: string, emit: (token: string) => void): void {
  if (!nonAscii.test(run)) {
    emit(cutToChars(run.toLowerCase(), tokenCharsMax))
    return
  }
  if (cjkCharacter.test(run)) {
    // Each Han, Hiragana or Katakana character is a token of its own (see the file doc).
    cjkOrRest.lastIndex = 0
    for (let part = cjkOrRest.exec(run); part !== null; part = cjkOrRest.exec(run)) foldPlain(part[0], emit)
    return
  }
  foldPlain(run, emit)
}

function foldPlain(run: string, emit: (token: string) => void): void {
  // NFC at the end recomposes what NFKD split but is not a mark (Hangul syllables).
  const folded = run.toLowerCase().normalize('NFKD').replace(combiningMarks, '').normalize('NFC')
  // A local regex: foldPlain is re-entered from foldRun's loop over another global regex.
  const letters = new RegExp(letterOrDigitRun)
  for (let match = letters.exec(folded); match !== null; match = letters.exec(folded)) {
    emit(cutToChars(match[0], tokenCharsMax))
  }
}

/**
 * Folds a string the way tokens are folded (lower-case, NFKD, marks removed) without
 * splitting it. Used for whole address tokens (`john.smith@example.com`).
 */
export function foldText(text: string): string {
  if (asciiOnly.test(text)) return text.toLowerCase()
  return text.toLowerCase().normalize('NFKD').replace(combiningMarks, '').normalize('NFC')
}

/**
 * Tokens of `text`, in order, at most `tokensMax` of them.
 *
 * @param text any text (a body, a subject, a query word)
 * @param tokensMax stop after this many tokens (the per-document budget)
 * @returns folded tokens; empty when the text has no letters or digits
 */
export function tokenize(text: string, tokensMax = Number.POSITIVE_INFINITY): string[] {
  const tokens: string[] = []
  if (tokensMax <= 0) return tokens
  return asciiOnly.test(text) ? tokenizeAscii(text, tokensMax) : tokenizeAny(text, tokensMax)
}

/** `tokenize` for any text: one Unicode pattern, then each run folded (foldRun). */
export function tokenizeAny(text: string, tokensMax: number): string[] {
  const tokens: string[] = []
  const pattern = new RegExp(wordRunPattern)
  const emit = (token: string): void => {
    if (tokens.length < tokensMax) tokens.push(token)
  }
  for (let match = pattern.exec(text); match !== null; match = pattern.exec(text)) {
    foldRun(match[0], emit)
    if (tokens.length >= tokensMax) break
  }
  return tokens
}

/**
 * `tokenize` for a text with no character above U+007F (most mail bodies): there a run of
 * letters, digits and marks is a run of `[A-Za-z0-9]`, and folding is lower-casing, so the
 * whole text is lower-cased once and matched with one ASCII pattern instead of a Unicode
 * pattern and a fold per run (all tokens in one native `match`).
 * A test checks it against the general path.
 */
export function tokenizeAscii(text: string, tokensMax: number): string[] {
  const lower = text.toLowerCase()
  let tokens: string[]
  // A text has at most (length + 1) / 2 tokens: below that budget, stop at the budget instead
  // of matching a long text to the end (a budget of 1 asks only whether there is a token).
  if (tokensMax >= (lower.length + 1) / 2) tokens = lower.match(/[a-z0-9]+/g) ?? []
  else {
    tokens = []
    const pattern = /[a-z0-9]+/g
    for (let match = pattern.exec(lower); match !== null && tokens.length < tokensMax; match = pattern.exec(lower)) tokens.push(match[0])
  }
  for (let index = 0; index < tokens.length; index++) {
    if (tokens[index]!.length > tokenCharsMax) tokens[index] = tokens[index]!.slice(0, tokenCharsMax)
  }
  return tokens
}

/**
 * Tokens of `text` with their offsets in `text`, for highlighting snippets. Tokens that
 * folding split share the offsets of the run they came from.
 *
 * @param tokensMax stop after this many tokens
 */
export function tokenizeWithSpans(text: string, tokensMax = Number.POSITIVE_INFINITY): TokenSpan[] {
  return asciiOnly.test(text) ? spansAscii(text, tokensMax) : spansAny(text, tokensMax)
}

/** tokenizeWithSpans for an ASCII text, as tokenizeAscii (lower-casing ASCII keeps every offset). */
export function spansAscii(text: string, tokensMax: number): TokenSpan[] {
  const spans: TokenSpan[] = []
  const lower = text.toLowerCase()
  const pattern = /[a-z0-9]+/g
  for (let match = pattern.exec(lower); match !== null && spans.length < tokensMax; match = pattern.exec(lower)) {
    const token = match[0]
    spans.push({ token: token.length > tokenCharsMax ? token.slice(0, tokenCharsMax) : token, start: match.index, end: match.index + token.length })
  }
  return spans
}

/** tokenizeWithSpans for any text. */
export function spansAny(text: string, tokensMax: number): TokenSpan[] {
  const spans: TokenSpan[] = []
  const pattern = new RegExp(wordRunPattern)
  for (let match = pattern.exec(text); match !== null && spans.length < tokensMax; match = pattern.exec(text)) {
    const start = match.index
    const end = start + match[0].length
    foldRun(match[0], (token) => {
      if (spans.length < tokensMax) spans.push({ token, start, end })
    })
  }
  return spans
}

/** True when `text` yields at least one token. */
export function hasTokens(text: string): boolean {
  return tokenize(text, 1).length > 0
}

/**
 * Exact-match tokens of one mail address for the `from:` and `to:` fields, beside the
 * word tokens of the address and the display name (which `addressWords` gives):
 * the whole address, its local part, its domain and every parent domain with at least
 * two labels (`mail.example.co.uk` → `example.co.uk`, `co.uk`), each folded. A text that
 * is not an address (no `@`) gives the folded whole text only when it contains a dot or
 * an `@`-free identifier worth matching whole; otherwise nothing (its words still count).
 *
 * @param address the address as parsed (`john.smith@example.com`); may be empty or junk
 * @returns distinct tokens, each at most `addressTokenCharsMax` long
 */
export function addressExactTokens(address: string): string[] {
  // Control characters are dropped: they never belong in an address, and the stored form
  // of the forward record uses two of them as separators.
  const folded = foldText(
    address
      .trim()
      .replace(/^<|>$/g, '')
      .replace(/[\u0000-\u001f]/g, ''),
  )
  if (folded.length === 0) return []
  const tokens = new Set<string>()
  const add = (token: string): void => {
    // A token made of letters and digits only is already a word token; keeping it here too
    // would duplicate the postings for nothing.
    if (token.length > 0 && !/^[\p{L}\p{N}]+$/u.test(token)) tokens.add(cutToChars(token, addressTokenCharsMax))
  }
  add(folded)
  const at = folded.lastIndexOf('@')
  if (at >= 0) {
    add(folded.slice(0, at))
    const domain = folded.slice(at + 1)
    add(domain)
    const labels = domain.split('.')
    for (let first = 1; first < labels.length - 1; first++) add(labels.slice(first).join('.'))
  }
  return [...tokens]
}

/**
 * How a value typed after `from:` or `to:` is matched: a value with `@` or `.` inside a
 * single run of non-space characters is one exact address token (`john@example.com`,
 * `example.com`, `john.smith`); anything else is matched by its words.
 */
export function isAddressLike(value: string): boolean {
  return /^\S+$/u.test(value) && /[@.]/.test(value) && tokenize(value).length > 0
}

/** The exact token a `from:`/`to:` value stands for (see isAddressLike). */
export function addressQueryToken(value: string): string {
  return cutToChars(foldText(value.trim().replace(/^<|>$/g, '')), addressTokenCharsMax)
}
