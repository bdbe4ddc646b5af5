/**
 * The build of one flush: the postings of tail documents gathered, put in UTF-8 token order
 * and packed into posting blocks, ready to be written (tail-flush.ts writes them). Reads
 * nothing itself: the terms come from `addTerms`.
 */

import { createFlushPostings } from './flush-postings.js'
import type { PostingSink, PostingSizes } from './posting-sink.js'
import { blockTokenBytesMax, createBlockWriter } from './posting-blocks.js'

/** The posting blocks of one flush, built from tail documents `first`..`last`. */
export interface BuiltFlush {
  first: number
  last: number
  /** In key order: each block's first token (UTF-8) and its bytes. */
  blocks: Array<{ firstToken: Buffer; block: Buffer }>
  /** Distinct tokens. */
  tokens: number
}

/** Postings a flush build adds between two chances to yield (0.4–2.5 ms of work: measured 0.1–0.6 µs per posting). */
const flushStepPostings = 4_096
/** Tokens a flush build encodes between two chances to yield. */
const flushStepTokens = 1_024

/**
 * Builds the posting blocks of tail documents `first`..`last` (one chunk per distinct
 * token, packed into blocks in UTF-8 token order). Yields every `flushStepPostings`
 * postings or `flushStepTokens` tokens, so a background build can let the event loop run
 * between slices; a flush inside a transaction runs it straight through.
 *
 * @param addTerms adds one document's terms to the sink, returns how many (PendingTail.addTerms)
 * @param sizes the sizes of the last flush's postings, which this one starts at; set to this one's once gathered
 */
export function* buildFlush(
  first: number,
  last: number,
  addTerms: (docid: number, sink: PostingSink) => number,
  pageSizeBytes: number,
  sizes: { last?: PostingSizes },
): Generator<void, BuiltFlush> {
  const groups = createFlushPostings(sizes.last)
  let sinceYield = 0
  for (let docid = first; docid <= last; docid++) {
    sinceYield += addTerms(docid, groups)
    if (sinceYield >= flushStepPostings) {
      sinceYield = 0
      yield
    }
  }
  const tokens = sortByUtf8(groups.tokens())
  sizes.last = groups.sizes()
  yield
  yield* groups.arrange(tokens, flushStepPostings)
  // Tokens and chunks are encoded into reused buffers: no allocation per token.
  const blocks: BuiltFlush['blocks'] = []
  const writer = createBlockWriter(
    pageSizeBytes,
    (tokenBytes) => 4 + tokenBytes,
    (firstToken, block) => blocks.push({ firstToken, block }),
  )
  const tokenBuffer = Buffer.allocUnsafe(blockTokenBytesMax)
  let chunkBuffer = Buffer.allocUnsafe(64 * 1024)
  for (let index = 0; index < tokens.length; index++) {
    const token = tokens[index]!
    const bytesMax = groups.chunkBytesMax(index)
    if (bytesMax > chunkBuffer.length) chunkBuffer = Buffer.allocUnsafe(2 * bytesMax)
    writer.add(tokenBuffer, tokenBuffer.write(token, 0, 'utf8'), chunkBuffer, groups.encodeInto(index, chunkBuffer))
    if (index % flushStepTokens === flushStepTokens - 1) yield
  }
  writer.finish()
  return { first, last, blocks, tokens: tokens.length }
}

/** Runs a build straight through (inside a transaction: nothing to yield to). */
export function buildFlushNow(steps: Generator<void, BuiltFlush>): BuiltFlush {
  let step = steps.next()
  while (!step.done) step = steps.next()
  return step.value
}

/**
 * A token with its UTF-16 units from U+D800 up swapped so that their order is code point
 * order: surrogates (astral characters) move above U+E000–U+FFFF, which move down. The
 * mapping is its own kind of inverse: `forward` false undoes it.
 */
function shiftHighUnits(token: string, forward: boolean): string {
  let out = ''
  for (let index = 0; index < token.length; index++) {
    const unit = token.charCodeAt(index)
    if (unit < 0xd800) out += token[index]
    else if (forward) out += String.fromCharCode(unit >= 0xe000 ? unit - 0x800 : unit + 0x2000)
    else out += String.fromCharCode(unit >= 0xf800 ? unit - 0x2000 : unit + 0x800)
  }
  return out
}

const highUnit = /[\uD800-\uFFFF]/

/**
 * Sorts tokens by their UTF-8 bytes (code point order), the order of posting keys and
 * blocks. JavaScript's sort compares UTF-16 units, which agrees except between a surrogate
 * and a unit in U+E000–U+FFFF: tokens with such units are sorted shifted (shiftHighUnits)
 * and shifted back, so the sort stays the native one (measured on a flush of 46,000 tokens:
 * a comparator function took 137 ms, comparing Buffer.from of both sides 245 ms, this ~35).
 */
export function sortByUtf8(tokens: string[]): string[] {
  if (!tokens.some((token) => /[\uD800-\uDFFF]/.test(token))) return tokens.sort()
  for (let index = 0; index < tokens.length; index++) if (highUnit.test(tokens[index]!)) tokens[index] = shiftHighUnits(tokens[index]!, true)
  tokens.sort()
  for (let index = 0; index < tokens.length; index++) if (highUnit.test(tokens[index]!)) tokens[index] = shiftHighUnits(tokens[index]!, false)
  return tokens
}
