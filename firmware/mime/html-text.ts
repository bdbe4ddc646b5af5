import { compile as compileHtmlToText, type HtmlToTextOptions } from 'html-to-text'
import type { Logger } from '../common/logger.js'
import { cutToChars } from '../common/text.js'
import { htmlInputCharsMax, type MimeParserOptions } from './parser-options.js'

/**
 * HTML to searchable text with html-to-text: links without URLs, images skipped, table
 * cells on their own lines. Two converters are compiled once per parser (compiling is the
 * expensive part): one for body HTML, one for attachments, each with its input cap.
 */

/** The parser's HTML converters. */
export interface HtmlText {
  /** Body HTML as text; '' when the conversion failed (logged at debug). */
  body(html: string): string
  /** Attachment HTML as text; '' when the conversion failed (logged at debug). */
  attachment(html: string): string
  /** Characters of HTML handed to `attachment` at most (callers decode no more bytes than 4× this). */
  attachmentHtmlCharsMax: number
}

function converterOptions(inputCharsMax: number): HtmlToTextOptions {
  return {
    wordwrap: false,
    // html-to-text writes to stderr when its own input limit cuts; we cut before it.
    limits: { maxInputLength: inputCharsMax + 1, maxDepth: 256, maxChildNodes: 20_000, ellipsis: ' ' },
    selectors: [
      { selector: 'a', options: { ignoreHref: true } },
      { selector: 'img', format: 'skip' },
      // Table cells on their own lines, so words of neighbouring cells stay apart.
      { selector: 'td', format: 'block' },
      { selector: 'th', format: 'block' },
    ],
  }
}

/** Runs one converter on HTML cut to `inputCharsMax`; '' when it throws. */
function convert(logger: Logger, converter: (html: string) => string, html: string, inputCharsMax: number): string {
  try {
    return converter(cutToChars(html, inputCharsMax))
  } catch (error) {
    logger.debug('html to text failed', { error, htmlChars: html.length })
    return ''
  }
}

/**
 * Compiles the converters for the parser's text limits (4 characters of HTML per
 * character of text kept, at most `htmlInputCharsMax`).
 */
export function createHtmlText(logger: Logger, options: Pick<MimeParserOptions, 'textCharsMax' | 'attachmentTextCharsMax'>): HtmlText {
  const bodyHtmlCharsMax = Math.min(options.textCharsMax * 4, htmlInputCharsMax)
  const attachmentHtmlCharsMax = Math.min(options.attachmentTextCharsMax * 4, htmlInputCharsMax)
  const bodyConverter = compileHtmlToText(converterOptions(bodyHtmlCharsMax))
  const attachmentConverter = compileHtmlToText(converterOptions(attachmentHtmlCharsMax))
  return {
    body: (html) => convert(logger, bodyConverter, html, bodyHtmlCharsMax),
    attachment: (html) => convert(logger, attachmentConverter, html, attachmentHtmlCharsMax),
    attachmentHtmlCharsMax,
  }
}
