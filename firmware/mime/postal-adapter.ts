/**
 * postal-mime with three additions it has no options for, made through a subclass that
 * touches documented-as-internal members (postal-mime 4.x: `processLine`, `currentNode`,
 * the content decoders' `chunks`). Every use is feature-checked, so a postal-mime that
 * changes them still parses correctly, only without the additions:
 *
 * 1. A time budget checked between lines. A parse is one long run of microtasks, so a
 *    timer can never interrupt it; a check inside the line loop can. What it bounds is the
 *    line loop; decoding of the parts at the end and tree collection run to completion
 *    (they are linear in the input, which the caller bounds by size and part count).
 * 2. No `Blob` per part. Each decoder ends with `new Blob(chunks).arrayBuffer()`, which on
 *    Node 20 is ~40% of the parse (NOTES.md); the decoder's chunks are joined directly
 *    instead, giving the same bytes.
 * 3. Damaged base64 is noticed (postal-mime silently drops what is not base64).
 */
import PostalMime, { type Email, type PostalMimeOptions } from 'postal-mime'
import { MimeError } from './errors.js'

/** Lines parsed between two looks at the clock. */
const linesPerBudgetCheck = 256

/** Thrown inside a parse when the time budget is spent; the caller turns it into a flag. */
export class ParseBudgetExceeded extends MimeError {
  constructor(budgetMs: number) {
    super('PARSE_BUDGET_EXCEEDED', `parse took longer than its budget of ${budgetMs} ms`, { fields: { budgetMs } })
  }
}

/** How parseWithBudget runs postal-mime. */
export interface BudgetedParseOptions {
  postal: PostalMimeOptions
  /** Monotonic clock, in ms. */
  monotonicMs: () => number
  /** Monotonic ms after which the line loop stops with ParseBudgetExceeded. */
  deadlineMs: number
  /** The budget the deadline came from, in ms, for the error message. */
  budgetMs: number
}

/** postal-mime's result and what the adapter noticed on the way. */
export interface BudgetedParseResult {
  email: Email
  /** A base64 part held characters outside the base64 alphabet or ended mid-unit. */
  badBase64: boolean
}

interface DecoderInternals {
  chunks?: unknown
  update?: (line: Uint8Array) => void
  finalize?: () => Promise<ArrayBuffer>
  remainder?: unknown
  flushRemainder?: () => void
  flushBuffer?: () => void
}

type ProcessLine = (this: unknown, line: Uint8Array, isFinal: boolean) => Promise<void>

const textEncoder = new TextEncoder()

/**
 * Joins decoder chunks (ArrayBuffer, Uint8Array or string pieces; postal-mime's
 * pass-through decoder adds a '\n' string after every line) into one ArrayBuffer. Null
 * when a chunk is of another kind, so the caller can fall back to postal-mime's own join.
 */
function joinChunks(chunks: readonly unknown[]): ArrayBuffer | null {
  let total = 0
  for (const chunk of chunks) {
    if (chunk instanceof Uint8Array || chunk instanceof ArrayBuffer) total += chunk.byteLength
    else if (typeof chunk === 'string') total += isAscii(chunk) ? chunk.length : textEncoder.encode(chunk).byteLength
    else return null
  }
  const joined = new Uint8Array(total)
  let offset = 0
  for (const chunk of chunks) {
    if (chunk instanceof Uint8Array) {
      joined.set(chunk, offset)
      offset += chunk.byteLength
    } else if (chunk instanceof ArrayBuffer) {
      joined.set(new Uint8Array(chunk), offset)
      offset += chunk.byteLength
    } else {
      const text = chunk as string
      if (isAscii(text)) {
        // Byte by byte: encoding a one-character string per line would dominate the join.
        for (let index = 0; index < text.length; index++) joined[offset++] = text.charCodeAt(index)
      } else {
        const encoded = textEncoder.encode(text)
        joined.set(encoded, offset)
        offset += encoded.byteLength
      }
    }
  }
  return joined.buffer
}

function isAscii(text: string): boolean {
  for (let index = 0; index < text.length; index++) if (text.charCodeAt(index) >= 0x80) return false
  return true
}

function isBase64Byte(byte: number): boolean {
  return (
    (byte >= 0x41 && byte <= 0x5a) ||
    (byte >= 0x61 && byte <= 0x7a) ||
    (byte >= 0x30 && byte <= 0x39) ||
    byte === 0x2b ||
    byte === 0x2f ||
    byte === 0x3d ||
    byte === 0x20 ||
    byte === 0x09 ||
    byte === 0x0d
  )
}

const processLineOfBase = (PostalMime.prototype as unknown as { processLine?: ProcessLine }).processLine

interface LineHooks {
  /** Called every `linesPerBudgetCheck` lines; throws to stop the parse. */
  checkBudget(): void
  /** Called with each decoder that appeared during a line. */
  adopt(decoder: DecoderInternals): void
}

interface NodeState {
  state?: unknown
  contentDecoder?: DecoderInternals | null
}

/** postal-mime whose line loop calls back into our hooks (see the file comment). */
class HookedPostalMime extends PostalMime {
  readonly #hooks: LineHooks
  #lines = 0

  constructor(postalOptions: PostalMimeOptions, hooks: LineHooks) {
    super(postalOptions)
    this.#hooks = hooks
  }

  // Not async on purpose: it hands back postal-mime's own promise, so a line costs no
  // extra promise. postal-mime feeds a non-boundary line to the current node
  // synchronously, before its first await, which is when a part's header section ends
  // and its decoder appears; so the decoder can be adopted right after the call, before
  // any body line reaches it.
  processLine(line: Uint8Array, isFinal: boolean): Promise<void> {
    if (++this.#lines % linesPerBudgetCheck === 0) this.#hooks.checkBudget()
    const node = (this as unknown as { currentNode?: NodeState }).currentNode
    const inHeader = node?.state === 'header'
    const pending = processLineOfBase!.call(this, line, isFinal)
    if (inHeader && node?.contentDecoder) this.#hooks.adopt(node.contentDecoder)
    return pending
  }
}

/**
 * Parses `raw` with postal-mime under a time budget, without Blob, noting damaged base64.
 *
 * @throws ParseBudgetExceeded (MimeError PARSE_BUDGET_EXCEEDED) when the line loop passes `deadlineMs`
 * @throws whatever postal-mime throws (nesting or header size limits, internal errors)
 */
export async function parseWithBudget(raw: Uint8Array, options: BudgetedParseOptions): Promise<BudgetedParseResult> {
  const state = { badBase64: false }
  if (typeof processLineOfBase !== 'function') {
    // postal-mime changed its internals: parse plainly (correct, with Blob, no line budget).
    return { email: await PostalMime.parse(raw, options.postal), badBase64: false }
  }
  const seen = new WeakSet<object>()
  const hooks: LineHooks = {
    checkBudget() {
      if (options.monotonicMs() > options.deadlineMs) throw new ParseBudgetExceeded(options.budgetMs)
    },
    adopt(decoder) {
      if (typeof decoder !== 'object' || seen.has(decoder)) return
      seen.add(decoder)
      adoptDecoder(decoder, state)
    },
  }
  const email = await new HookedPostalMime(options.postal, hooks).parse(raw)
  return { email, badBase64: state.badBase64 }
}

/** Replaces a decoder's Blob-based finalize with a direct join; watches base64 input. */
function adoptDecoder(decoder: DecoderInternals, state: { badBase64: boolean }): void {
  if (!Array.isArray(decoder.chunks) || typeof decoder.finalize !== 'function') return
  const originalFinalize = decoder.finalize.bind(decoder)
  const isBase64 = typeof decoder.flushRemainder === 'function' && typeof decoder.remainder === 'string'
  const isQuotedPrintable = typeof decoder.flushBuffer === 'function'
  if (isBase64 && typeof decoder.update === 'function') {
    const originalUpdate = decoder.update.bind(decoder)
    decoder.update = (line: Uint8Array): void => {
      if (!state.badBase64) {
        for (let index = 0; index < line.byteLength; index++) {
          if (!isBase64Byte(line[index]!)) {
            state.badBase64 = true
            break
          }
        }
      }
      originalUpdate(line)
    }
  }
  decoder.finalize = (): Promise<ArrayBuffer> => {
    if (isBase64) {
      // One leftover character cannot encode a byte: the data was cut short.
      if ((decoder.remainder as string).length % 4 === 1) state.badBase64 = true
      decoder.flushRemainder!()
    } else if (isQuotedPrintable) {
      decoder.flushBuffer!()
    }
    const joined = Array.isArray(decoder.chunks) ? joinChunks(decoder.chunks) : null
    return joined === null ? originalFinalize() : Promise.resolve(joined)
  }
}
