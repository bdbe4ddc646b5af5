import sanitizeHtml from 'sanitize-html'

/**
 * A message's HTML body made safe to show (sanitize-html with an allowlist): formatting,
 * tables, lists and links stay; scripts, event handlers, styles, forms, frames, embedded
 * objects and every URL scheme but http, https and mailto go; images keep only inline
 * `data:` sources (a remote image would tell the sender the mail was read). The page that
 * serves the result adds the second wall: `Content-Security-Policy: sandbox; default-src
 * 'none'` (no script, no request to any host) and a sandboxed frame.
 */

/** Most characters of HTML sanitized and shown. */
export const htmlBodyCharsMax = 2_000_000

const options: sanitizeHtml.IOptions = {
  allowedTags: [
    'a',
    'abbr',
    'b',
    'blockquote',
    'br',
    'caption',
    'center',
    'code',
    'col',
    'colgroup',
    'dd',
    'div',
    'dl',
    'dt',
    'em',
    'font',
    'h1',
    'h2',
    'h3',
    'h4',
    'h5',
    'h6',
    'hr',
    'i',
    'img',
    'li',
    'ol',
    'p',
    'pre',
    'q',
    's',
    'small',
    'span',
    'strike',
    'strong',
    'sub',
    'sup',
    'table',
    'tbody',
    'td',
    'tfoot',
    'th',
    'thead',
    'tr',
    'u',
    'ul',
  ],
  allowedAttributes: {
    a: ['href', 'title', 'target', 'rel'],
    img: ['src', 'alt', 'width', 'height'],
    td: ['colspan', 'rowspan', 'align', 'valign'],
    th: ['colspan', 'rowspan', 'align', 'valign'],
    font: ['color'],
  },
  allowedSchemes: ['http', 'https', 'mailto'],
  allowedSchemesByTag: { img: ['data'] },
  allowProtocolRelative: false,
  disallowedTagsMode: 'discard',
  // Links open outside the frame, telling the target nothing about the archive.
  transformTags: { a: sanitizeHtml.simpleTransform('a', { target: '_blank', rel: 'noopener noreferrer' }) },
}

/** The sanitized HTML (a fragment). */
export function sanitizeMailHtml(html: string): string {
  return sanitizeHtml(html.slice(0, htmlBodyCharsMax), options)
}

/** The document served into the message page's sandboxed frame. */
export function htmlBodyDocument(sanitized: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="referrer" content="no-referrer"></head><body>${sanitized}</body></html>`
}

/** Headers of that document: a sandbox with no script and no request to any host. */
export const htmlBodyHeaders: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': "sandbox; default-src 'none'; img-src data:; frame-ancestors 'self'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'SAMEORIGIN',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
})
