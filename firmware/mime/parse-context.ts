import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { HtmlText } from './html-text.js'
import type { MimeParserOptions } from './parser-options.js'
import type { PdfTextExtractor } from './pdf-text.js'
import type { MimeFlag } from './types.js'

/**
 * What every step of a parse reads: built once by createMimeParser (parser.ts) and passed
 * to each step, so no step allocates anything of its own per message.
 */
export interface ParseContext {
  /** Parse problems are logged with sizes and flags, never content. */
  logger: Logger
  /** Monotonic time for the parse budget. */
  clock: Clock
  pdf: PdfTextExtractor
  options: Readonly<MimeParserOptions>
  html: HtmlText
}

/** True (and flags `parse-timeout`) once the parse's deadline, in monotonic ms, has passed. */
export function overBudget(context: ParseContext, deadlineMs: number, flags: Set<MimeFlag>): boolean {
  if (context.clock.monotonicMs() <= deadlineMs) return false
  flags.add('parse-timeout')
  return true
}
