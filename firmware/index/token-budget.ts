/**
 * Tokenizing a message within its budgets: tokens per document over all fields, and
 * characters of body and attachment text (what the display record keeps).
 */

import { cutToChars } from '../common/text.js'
import { hasTokens, tokenize, tokenizeWithSpans } from './tokenize.js'
import type { TermTable } from './term-table.js'
import { fieldBits } from './field-bits.js'
import { bodySeparator } from './display-record.js'
import type { PhraseStreamWriter } from './phrase-stream.js'

const wordStart = /^[\p{L}\p{N}\p{M}]/u
const trailingWord = /[\p{L}\p{N}\p{M}]+$/u

/** `text` cut to at most `charsMax` characters, never inside a word (a word the cut would split is left out whole). */
export function cutBeforeWord(text: string, charsMax: number): string {
  if (text.length <= charsMax) return text
  const cut = cutToChars(text, Math.max(0, charsMax))
  return wordStart.test(text.slice(cut.length, cut.length + 2)) ? cut.replace(trailingWord, '') : cut
}

/**
 * Tokenizes texts one after another within a budget of `tokensMax` tokens; body texts also
 * within `textCharsMax` characters (what the display record keeps).
 */
export function tokenBudget(
  tokensMax: number,
  textCharsMax: number,
): { take(text: string): string[]; takeBody(texts: readonly string[], into?: TermTable, stream?: PhraseStreamWriter): BodyTaken; used(): number; truncated(): boolean } {
  let left = tokensMax
  let charsLeft = textCharsMax
  let truncated = false
  /** The tokens of `text` within the budget, and whether that is all of them. */
  const takeCounted = (text: string): { tokens: string[]; complete: boolean } => {
    if (left <= 0) {
      const complete = text.length === 0 || !hasTokens(text)
      if (!complete) truncated = true
      return { tokens: [], complete }
    }
    const tokens = tokenize(text, left + 1)
    const complete = tokens.length <= left
    if (!complete) {
      truncated = true
      tokens.length = left
    }
    left -= tokens.length
    return { tokens, complete }
  }
  /** As takeCounted, the tokens added to `table` with the body bit instead of returned in an array. */
  const takeInto = (text: string, table: TermTable, stream?: PhraseStreamWriter): { count: number; complete: boolean } => {
    if (left <= 0) {
      const { complete } = takeCounted(text)
      return { count: 0, complete }
    }
    const added = table.addText(text, fieldBits.body, left, stream)
    const complete = added <= left
    if (!complete) truncated = true
    const count = complete ? added : left
    left -= count
    return { count, complete }
  }
  return {
    take: (text) => takeCounted(text).tokens,
    takeBody(texts, into, stream) {
      const segments: string[][] = []
      const kept: string[] = []
      const counts: number[] = []
      for (const whole of texts) {
        // Past the character budget a text is cut before a word, and the rest is not indexed.
        const text = cutBeforeWord(whole, charsLeft)
        if (text.length < whole.length && hasTokens(whole.slice(text.length))) truncated = true
        let count: number
        let complete: boolean
        if (into) {
          ;({ count, complete } = takeInto(text, into, stream))
          stream?.endText()
        } else {
          const taken = takeCounted(text)
          segments.push(taken.tokens)
          count = taken.tokens.length
          complete = taken.complete
        }
        // A text cut by the budget is kept up to the end of its last indexed token.
        const stored = complete ? text : count === 0 ? '' : text.slice(0, tokenizeWithSpans(text, count)[count - 1]!.end)
        if (stored.length === 0) continue
        charsLeft -= stored.length + bodySeparator.length
        kept.push(stored)
        counts.push(stored.length, count)
      }
      return { segments, text: kept.join(bodySeparator), counts }
    },
    used: () => tokensMax - left,
    truncated: () => truncated,
  }
}

/** The body and attachment texts as indexed: token segments, and the text and segment list a display record keeps. */
export interface BodyTaken {
  /** The tokens of each text; none when they went into a TermTable. */
  segments: string[][]
  text: string
  counts: number[]
}
