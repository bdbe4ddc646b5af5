/**
 * A crude, linear pre-scan of a whole message, run before postal-mime so that hostile
 * structure is recognised without building a MIME tree: postal-mime bounds nesting depth
 * and header size but not the number of parts (NOTES.md), and one parse cannot be
 * interrupted once started. The scan only reads bytes and never throws.
 */

/** Characters of a `Content-Type` field (folded lines included) searched for a boundary. */
const contentTypeCharsMax = 8 * 1024
/** RFC 2046 allows 70; longer `--` lines are not compared with declared boundaries. */
const boundaryCharsMax = 200

/** What scanStructure estimated about a whole message. */
export interface StructureScan {
  /** A 0x00 byte anywhere. */
  nulBytes: boolean
  /** A line ending in LF without CR anywhere. */
  bareLineFeeds: boolean
  /** Estimated MIME parts: 1 + delimiter lines of declared, still-open boundaries. */
  partCount: number
  /** Estimated deepest multipart nesting (open boundaries at once). */
  nestingDepth: number
  /** A multipart that had parts but no closing delimiter (`--boundary--`). */
  unterminatedMultipart: boolean
}

interface OpenBoundary {
  value: string
  delimiterCount: number
}

const latin1 = new TextDecoder('latin1')
const contentTypePrefix = 'content-type:'
const boundaryPattern = /boundary\s*=\s*(?:"([^"]*)"|([^\s;"]+))/i

/**
 * Scans `raw` once, line by line. A `Content-Type: multipart/…; boundary=…` field anywhere
 * declares a boundary (opened as a child of the innermost open one); a line
 * `--boundary` starts a part and closes any deeper boundaries left open; `--boundary--`
 * closes it. This is what postal-mime does, without decoding anything, so the estimates
 * are close for real mail and bound the work for hostile mail. Declarations inside
 * bodies (a forwarded message quoted as text) may overestimate; never underestimates the
 * parts postal-mime will create, except for `message/rfc822` nesting without multiparts.
 *
 * Linear in raw.byteLength; callers bound the size first.
 *
 * @param raw the message bytes (read only)
 */
export function scanStructure(raw: Uint8Array): StructureScan {
  const result: StructureScan = {
    nulBytes: raw.indexOf(0) !== -1,
    bareLineFeeds: false,
    partCount: 1,
    nestingDepth: 0,
    unterminatedMultipart: false,
  }
  const open: OpenBoundary[] = []
  // Boundaries ever declared, so that `--` lines that match none are dismissed quickly.
  const declared = new Set<string>()
  const closeAbove = (index: number): void => {
    while (open.length > index + 1) {
      const dropped = open.pop()!
      if (dropped.delimiterCount > 0) result.unterminatedMultipart = true
    }
  }
  const findOpen = (value: string): number => {
    for (let index = open.length - 1; index >= 0; index--) if (open[index]!.value === value) return index
    return -1
  }

  let position = 0
  const length = raw.byteLength
  while (position < length) {
    let newline = raw.indexOf(0x0a, position)
    if (newline === -1) newline = length
    else if (newline === 0 || raw[newline - 1] !== 0x0d) result.bareLineFeeds = true
    const lineEnd = newline > position && raw[newline - 1] === 0x0d ? newline - 1 : newline
    const first = raw[position]
    if (first === 0x2d && raw[position + 1] === 0x2d && declared.size > 0 && lineEnd - position - 2 <= boundaryCharsMax + 2) {
      let candidate = latin1.decode(raw.subarray(position + 2, lineEnd))
      candidate = candidate.replace(/[ \t]+$/, '')
      let index = findOpen(candidate)
      if (index >= 0) {
        closeAbove(index)
        open[index]!.delimiterCount++
        result.partCount++
      } else if (candidate.endsWith('--')) {
        index = findOpen(candidate.slice(0, -2))
        if (index >= 0) {
          closeAbove(index)
          open.pop()
        }
      }
    } else if ((first === 0x43 || first === 0x63) && lineEnd - position >= contentTypePrefix.length) {
      const name = latin1.decode(raw.subarray(position, position + contentTypePrefix.length)).toLowerCase()
      if (name === contentTypePrefix) {
        const value = readFoldedField(raw, position, newline)
        if (/multipart\//i.test(value)) {
          const match = boundaryPattern.exec(value)
          const boundary = match ? (match[1] ?? match[2] ?? '') : ''
          if (boundary.length > 0 && boundary.length <= boundaryCharsMax) {
            declared.add(boundary)
            open.push({ value: boundary, delimiterCount: 0 })
            if (open.length > result.nestingDepth) result.nestingDepth = open.length
          }
        }
      }
    }
    position = newline + 1
  }
  closeAbove(-1)
  return result
}

/** The field starting at `start` with its continuation lines, bounded, as latin1 text. */
function readFoldedField(raw: Uint8Array, start: number, firstNewline: number): string {
  let end = firstNewline
  while (end < raw.byteLength && end - start < contentTypeCharsMax) {
    const next = raw[end + 1]
    if (next !== 0x20 && next !== 0x09) break
    const following = raw.indexOf(0x0a, end + 1)
    end = following === -1 ? raw.byteLength : following
  }
  return latin1.decode(raw.subarray(start, Math.min(end, start + contentTypeCharsMax)))
}
