/**
 * A crude, bounded scan of a message's header section, written without postal-mime so it
 * works on input postal-mime refuses or is not allowed to see (oversize, too many parts,
 * parse failure, time-out). It reads bytes only, never changes them, and never throws.
 */

/** A header line longer than this many octets (line break excluded) breaks RFC 5322 2.1.1. */
export const headerLineOctetsMax = 998
/** Header fields kept by one scan; the rest are counted but dropped. */
export const scannedHeadersMax = 2_000
/** Characters kept of one unfolded header value; longer values are cut. */
export const headerValueCharsMax = 64 * 1024

/** One header field as the crude scan read it. */
export interface ScannedHeader {
  /** The field name as written (without surrounding blanks). */
  name: string
  /** The field name lower-cased, for look-ups. */
  key: string
  /**
   * The unfolded value, trimmed, as text: UTF-8 when its bytes are valid UTF-8, else
   * windows-1252 (so raw Latin-1 headers read correctly). RFC 2047 encoded words are left
   * as they are; callers decode them where the field allows them.
   */
  value: string
  /**
   * The value's raw bytes (unfolded, untrimmed), kept only when they are 8-bit and not valid
   * UTF-8, so a caller that knows the message's charset can decode them properly.
   */
  legacyBytes?: Uint8Array
}

/** What scanHeaders found in a header section. */
export interface HeaderScan {
  headers: ScannedHeader[]
  /** Byte offset where the body starts (just after the blank line); null when no blank line was found within the scan. */
  bodyOffset: number | null
  /** True when the scan stopped at its byte bound before the header section ended. */
  truncated: boolean
  /** Header bytes ≥ 0x80 (raw 8-bit or UTF-8 text instead of RFC 2047 encoded words). */
  eightBit: boolean
  /** A header line over `headerLineOctetsMax` octets. */
  longLine: boolean
  /** A header line ending in LF without CR. */
  bareLineFeeds: boolean
  /** Lines in the header section that are neither a field nor a continuation (skipped). */
  malformedLineCount: number
  /** True when the input began with an mbox `From ` separator line, which was skipped. */
  mboxFromLine: boolean
}

const utf8Fatal = new TextDecoder('utf-8', { fatal: true })
const windows1252 = new TextDecoder('windows-1252')

/**
 * Decodes header or text bytes: UTF-8 when valid, else windows-1252 (a superset of
 * Latin-1 that every byte maps into), so the result is always some readable text.
 */
export function decodeTextBytes(bytes: Uint8Array): string {
  return decodeTextBytesDetailed(bytes).text
}

/** decodeTextBytes, also telling whether the windows-1252 fallback was taken. */
function decodeTextBytesDetailed(bytes: Uint8Array): { text: string; legacy: boolean } {
  let ascii = true
  for (let index = 0; index < bytes.length; index++) {
    if (bytes[index]! >= 0x80) {
      ascii = false
      break
    }
  }
  if (ascii) return { text: windows1252.decode(bytes), legacy: false }
  try {
    return { text: utf8Fatal.decode(bytes), legacy: false }
  } catch {
    return { text: windows1252.decode(bytes), legacy: true }
  }
}

/**
 * Decodes bytes in a declared charset (a MIME charset label such as `gb2312` or
 * `ks_c_5601-1987`); null when the runtime does not know the label.
 */
export function decodeWithCharset(bytes: Uint8Array, charset: string): string | null {
  try {
    return new TextDecoder(charset.trim().toLowerCase()).decode(bytes)
  } catch {
    return null
  }
}

function isBlank(byte: number | undefined): boolean {
  return byte === 0x20 || byte === 0x09
}

/**
 * Length of the field name at the start of `line` (bytes 33–126 except `:`), when the line
 * is `name *WSP ":" …`; -1 otherwise. Blanks before the colon are the obsolete syntax of
 * RFC 5322 4.5 and are accepted.
 */
function fieldNameLength(line: Uint8Array): number {
  let index = 0
  while (index < line.length) {
    const byte = line[index]!
    if (byte === 0x3a || byte < 33 || byte > 126) break
    index++
  }
  const nameLength = index
  if (nameLength === 0) return -1
  while (isBlank(line[index])) index++
  return line[index] === 0x3a ? nameLength : -1
}

function trimBlanks(text: string): string {
  let start = 0
  let end = text.length
  while (start < end && (text.charCodeAt(start) === 0x20 || text.charCodeAt(start) === 0x09)) start++
  while (end > start && (text.charCodeAt(end - 1) === 0x20 || text.charCodeAt(end - 1) === 0x09)) end--
  return text.slice(start, end)
}

const mboxFromPrefix = [0x46, 0x72, 0x6f, 0x6d, 0x20] // "From "

/**
 * The header field being unfolded, as line slices, so that its value is decoded once as
 * a whole (a UTF-8 sequence cannot be split across a fold). One per scan, reused field
 * after field.
 */
interface PendingField {
  /** The field name, or null between fields. */
  name: string | null
  pieces: Uint8Array[]
  /** Bytes in `pieces`, at most `valueBytesMax`. */
  bytes: number
}

/** Raw bytes kept of one value: enough for `headerValueCharsMax` characters of UTF-8. */
const valueBytesMax = headerValueCharsMax * 4

/** Adds a line slice to the pending field's value, up to `valueBytesMax`. */
function appendFieldPiece(field: PendingField, piece: Uint8Array): void {
  const room = valueBytesMax - field.bytes
  if (room <= 0) return
  const kept = piece.byteLength > room ? piece.subarray(0, room) : piece
  field.pieces.push(kept)
  field.bytes += kept.byteLength
}

/** The pending field's value bytes as one array (the slice itself when it has one piece). */
function joinedValueBytes(field: PendingField): Uint8Array {
  if (field.pieces.length === 1) return field.pieces[0]!
  const joined = new Uint8Array(field.bytes)
  let offset = 0
  for (const piece of field.pieces) {
    joined.set(piece, offset)
    offset += piece.byteLength
  }
  return joined
}

/** Ends the pending field: decodes it onto `scan.headers` (while fewer than `scannedHeadersMax`) and clears it. */
function flushField(scan: HeaderScan, field: PendingField): void {
  if (field.name === null) return
  if (scan.headers.length < scannedHeadersMax) {
    const joined = joinedValueBytes(field)
    const decoded = decodeTextBytesDetailed(joined)
    let value = trimBlanks(decoded.text)
    if (value.length > headerValueCharsMax) value = value.slice(0, headerValueCharsMax)
    const header: ScannedHeader = { name: field.name, key: field.name.toLowerCase(), value }
    if (decoded.legacy) header.legacyBytes = joined.slice()
    scan.headers.push(header)
  }
  field.name = null
  field.pieces.length = 0
  field.bytes = 0
}

/** One header line (line break removed): a continuation of the pending field, a new field, or a malformed line. */
function consumeHeaderLine(scan: HeaderScan, field: PendingField, line: Uint8Array): void {
  for (let index = 0; index < line.byteLength; index++) {
    if (line[index]! >= 0x80) {
      scan.eightBit = true
      break
    }
  }
  if (isBlank(line[0])) {
    if (field.name === null) scan.malformedLineCount++
    else appendFieldPiece(field, line)
    return
  }
  flushField(scan, field)
  const nameLength = fieldNameLength(line)
  if (nameLength < 0) {
    scan.malformedLineCount++
    return
  }
  field.name = windows1252.decode(line.subarray(0, nameLength))
  appendFieldPiece(field, line.subarray(line.indexOf(0x3a, nameLength) + 1))
}

/**
 * Reads the lines of `raw` up to byte `end` into `scan` and `field`, until the empty line
 * that ends the header section (its offset becomes `bodyOffset`) or the bound.
 */
function scanHeaderLines(raw: Uint8Array, end: number, scan: HeaderScan, field: PendingField): void {
  let position = 0
  let first = true
  while (position < end) {
    const newline = raw.indexOf(0x0a, position)
    if (newline === -1 || newline >= end) {
      // The last line has no line break within the bound: either the message ends inside
      // its header section or the bound cut it.
      scan.truncated = end < raw.byteLength
      const line = raw.subarray(position, end)
      if (line.byteLength > headerLineOctetsMax) scan.longLine = true
      consumeHeaderLine(scan, field, line)
      return
    }
    let lineEnd = newline
    if (lineEnd > position && raw[lineEnd - 1] === 0x0d) lineEnd--
    else scan.bareLineFeeds = true
    const line = raw.subarray(position, lineEnd)
    position = newline + 1
    if (line.byteLength === 0) {
      scan.bodyOffset = position
      return
    }
    if (line.byteLength > headerLineOctetsMax) scan.longLine = true
    if (first && startsWith(line, mboxFromPrefix)) {
      scan.mboxFromLine = true
      first = false
      continue
    }
    first = false
    consumeHeaderLine(scan, field, line)
  }
}

/**
 * Scans the header section of `raw`, reading at most `bytesMax` bytes. Lines end at LF (a
 * CR before it is dropped); the section ends at the first empty line. Continuation lines
 * (starting with SP or HTAB) are unfolded onto the field before them; other lines that are
 * not `name: value` are skipped and counted. A leading mbox `From ` line is skipped.
 *
 * Pure and total: never throws, never writes to `raw`; work is linear in
 * min(raw.byteLength, bytesMax), and at most `scannedHeadersMax` fields of at most
 * `headerValueCharsMax` characters each are kept.
 *
 * @param raw the message bytes
 * @param bytesMax how many bytes the scan may read (the scan reports `truncated` when the
 *   header section goes on beyond them)
 */
export function scanHeaders(raw: Uint8Array, bytesMax: number): HeaderScan {
  const end = Math.max(0, Math.min(raw.byteLength, Math.floor(bytesMax)))
  const scan: HeaderScan = {
    headers: [],
    bodyOffset: null,
    truncated: false,
    eightBit: false,
    longLine: false,
    bareLineFeeds: false,
    malformedLineCount: 0,
    mboxFromLine: false,
  }
  const field: PendingField = { name: null, pieces: [], bytes: 0 }
  scanHeaderLines(raw, end, scan, field)
  flushField(scan, field)
  return scan
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  if (bytes.byteLength < prefix.length) return false
  for (let index = 0; index < prefix.length; index++) if (bytes[index] !== prefix[index]) return false
  return true
}

/** The first value of header `key` (lower-case), or null. */
export function headerValue(headers: readonly ScannedHeader[], key: string): string | null {
  for (const header of headers) if (header.key === key) return header.value
  return null
}

/** Every value of header `key` (lower-case), in order. */
export function headerValues(headers: readonly ScannedHeader[], key: string): string[] {
  const values: string[] = []
  for (const header of headers) if (header.key === key) values.push(header.value)
  return values
}

/** A parsed Content-Type (or Content-Disposition) value. */
export interface ContentType {
  /** Lower-cased `type/subtype`; `text/plain` when the header is missing or empty. */
  mediaType: string
  /** Parameters with lower-cased names; values unquoted. */
  params: Record<string, string>
}

/**
 * Parses a Content-Type (or Content-Disposition) value into its type and parameters.
 * Lenient: quoted values and backslash escapes are honoured, comments and RFC 2231
 * continuations are not. Pure; never throws.
 */
export function parseContentType(value: string | null): ContentType {
  const text = value ?? ''
  const params: Record<string, string> = Object.create(null) as Record<string, string>
  let index = text.indexOf(';')
  const mediaType = (index < 0 ? text : text.slice(0, index)).trim().toLowerCase() || 'text/plain'
  while (index >= 0 && index < text.length) {
    index++
    const equals = text.indexOf('=', index)
    if (equals < 0) break
    const name = text.slice(index, equals).trim().toLowerCase()
    let cursor = equals + 1
    while (text[cursor] === ' ' || text[cursor] === '\t') cursor++
    let parameterValue = ''
    if (text[cursor] === '"') {
      cursor++
      while (cursor < text.length && text[cursor] !== '"') {
        if (text[cursor] === '\\' && cursor + 1 < text.length) cursor++
        parameterValue += text[cursor]
        cursor++
      }
      const next = text.indexOf(';', cursor)
      index = next
    } else {
      const next = text.indexOf(';', cursor)
      parameterValue = (next < 0 ? text.slice(cursor) : text.slice(cursor, next)).trim()
      index = next
    }
    if (name && !(name in params)) params[name] = parameterValue
  }
  return { mediaType, params }
}
