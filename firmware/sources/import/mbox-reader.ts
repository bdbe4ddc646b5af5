// Over 80 lines: readMbox is one streaming scan whose carried bytes, held pieces and message bounds change together at every read.
import assert from 'node:assert/strict'
import { open } from 'node:fs/promises'
import { ImportError, importErrorFromFs } from './errors.js'
import { importReadChunkBytesDefault } from './types.js'

/**
 * Streaming mbox reader.
 *
 * Framing (RFC 4155, the rule mutt, Dovecot and Python's mailbox share): a message starts
 * with a `From ` line at the start of the file or right after an empty line; the empty
 * line before it belongs to the framing, not to the previous message. So a message is the
 * bytes after its `From ` line up to, not including, the empty line that precedes the next
 * `From ` line (or the end of the file). LF and CRLF files work alike; a final message
 * without a trailing newline is kept as it is.
 *
 * Quoting: `>From ` lines (mboxo and mboxrd) are NOT un-quoted. The two variants cannot be
 * told apart from the file, and un-quoting the wrong one rewrites bytes that were in the
 * original (mboxrd would turn a genuine `>From` into `From`); the archive keeps what the
 * mailbox holds, byte for byte, and the same file always yields the same content hashes.
 */

/** The bytes that begin every mbox separator line. */
const fromLinePrefix = Buffer.from('From ', 'latin1')
/** A separator candidate: a line feed followed by a `From ` line. */
const separatorPattern = Buffer.from('\nFrom ', 'latin1')
/**
 * Bytes of the previous read kept in front of the next one: a separator pattern cut by
 * the read boundary (6 bytes) plus the one byte before its line feed that tells whether
 * the preceding line was empty (two bytes for CRLF, overlapping the pattern's own start).
 */
const carriedBytes = 7
const lineFeed = 0x0a
const carriageReturn = 0x0d

interface MboxEntryPosition {
  /** Byte offset of the message's `From ` line; resuming here re-reads the message. */
  startOffset: number
  /** Byte offset of the next message's `From ` line, or where reading stopped (end of file). */
  endOffset: number
  /** Size of the message without its `From ` line and framing, in bytes. */
  sizeBytes: number
}

/**
 * One mbox entry: the message's raw bytes, or (`kind: 'oversize'`) only its position when
 * it is larger than `messageBytesMax`, so the caller reports it instead of losing it.
 */
export type MboxEntry = (MboxEntryPosition & { kind: 'message'; raw: Uint8Array }) | (MboxEntryPosition & { kind: 'oversize' })

export interface ReadMboxOptions {
  /** Where to start, in bytes: 0 or the `startOffset`/`endOffset` of an entry read before. */
  fromOffset?: number
  /** Stop reading at this byte offset (the file size when the job began, so appended mail is not half-read); default: end of file. */
  toOffset?: number
  /** Larger messages are yielded as `oversize`, without their bytes. In bytes. */
  messageBytesMax: number
  /** Bytes read per call. See `importReadChunkBytesDefault`. */
  chunkBytes?: number
}

/**
 * Where the message ends when the line feed at `lineFeedIndex` is the last byte before a
 * separator (or the end of the file): one index past the message's last byte, which is the
 * line feed before the empty framing line. Null when the line before is not empty, i.e.
 * this is no separator. `byteAt` gives bytes by index, undefined outside the data.
 */
function messageEndBeforeSeparator(byteAt: (index: number) => number | undefined, lineFeedIndex: number): number | null {
  const previous = byteAt(lineFeedIndex - 1)
  if (previous === lineFeed) return lineFeedIndex
  if (previous === carriageReturn && byteAt(lineFeedIndex - 2) === lineFeed) return lineFeedIndex - 1
  return null
}

/** The bytes [from, to) out of pieces that cover that range, each `{ start, bytes }` with an absolute start. */
function gather(pieces: readonly { start: number; bytes: Buffer }[], from: number, to: number): Buffer {
  const parts: Buffer[] = []
  for (const piece of pieces) {
    const low = Math.max(from, piece.start)
    const high = Math.min(to, piece.start + piece.bytes.length)
    if (high > low) parts.push(piece.bytes.subarray(low - piece.start, high - piece.start))
  }
  const raw = parts.length === 1 ? Buffer.from(parts[0]!) : Buffer.concat(parts)
  assert.equal(raw.length, to - from, 'gathered message bytes must cover the whole range')
  return raw
}

/**
 * True when a `From ` separator line starts at `offset` of the file (offset 0: the file
 * looks like an mbox). @throws ImportError PATH_NOT_FOUND, PATH_UNREADABLE
 */
export async function mboxSeparatorAt(path: string, offset: number): Promise<boolean> {
  let handle
  try {
    handle = await open(path, 'r')
    const head = Buffer.alloc(fromLinePrefix.length)
    const { bytesRead } = await handle.read(head, 0, head.length, offset)
    return bytesRead === head.length && head.equals(fromLinePrefix)
  } catch (error) {
    throw importErrorFromFs(error, path, 'mbox')
  } finally {
    await handle?.close()
  }
}

/**
 * Reads an mbox file as a stream of entries, in file order, holding at most one message
 * (up to `messageBytesMax`) and one read chunk in memory. Entries are contiguous:
 * each `endOffset` is the next `startOffset`, and the last one ends at the end of the
 * file (or `toOffset`). An empty message (two separators in a row) is yielded with zero
 * bytes, for the caller to report.
 *
 * @throws ImportError OFFSET_NOT_AT_MESSAGE when `fromOffset` is not the start of a
 *   `From ` line (offset 0: the file is no mbox); PATH_NOT_FOUND / PATH_UNREADABLE when the
 *   file cannot be opened or read; READ_FAILED when it becomes shorter while it is read
 */
export async function* readMbox(path: string, options: ReadMboxOptions): AsyncGenerator<MboxEntry, void, undefined> {
  const fromOffset = options.fromOffset ?? 0
  const chunkBytes = options.chunkBytes ?? importReadChunkBytesDefault
  const messageBytesMax = options.messageBytesMax
  assert.ok(Number.isSafeInteger(fromOffset) && fromOffset >= 0, 'fromOffset must be a byte offset')
  assert.ok(Number.isSafeInteger(chunkBytes) && chunkBytes >= 1, 'chunkBytes must be a positive integer')
  assert.ok(Number.isSafeInteger(messageBytesMax) && messageBytesMax >= 0, 'messageBytesMax must be a byte count')

  let handle
  try {
    handle = await open(path, 'r')
  } catch (error) {
    throw importErrorFromFs(error, path, 'mbox')
  }
  try {
    const fileBytes = (await handle.stat()).size
    const limit = Math.min(options.toOffset ?? fileBytes, fileBytes)
    if (fromOffset >= limit) return

    const head = Buffer.alloc(fromLinePrefix.length)
    const { bytesRead: headBytes } = await handle.read(head, 0, head.length, fromOffset)
    if (headBytes < head.length || !head.equals(fromLinePrefix)) {
      throw new ImportError(
        'OFFSET_NOT_AT_MESSAGE',
        fromOffset === 0 ? `${path} is not an mbox: it does not start with a "From " line` : `${path}: offset ${fromOffset} is not the start of a "From " line`,
        { fields: { path, offset: fromOffset } },
      )
    }

    let position = fromOffset
    let carried: Buffer = Buffer.alloc(0)
    /** Offset of the current message's `From ` line. */
    let messageStart = fromOffset
    /** Offset of the current message's first byte, once its `From ` line's end has been read. */
    let bodyStart: number | null = null
    /** Bytes of the current message from earlier reads, dropped once it is known to be oversize. */
    let pending: { start: number; bytes: Buffer }[] = []
    let oversize = false

    const entry = (end: number, next: number, current: readonly { start: number; bytes: Buffer }[]): MboxEntry => {
      assert.ok(bodyStart !== null && end >= bodyStart, 'a message ends after its body starts')
      const sizeBytes = end - bodyStart
      const where = { startOffset: messageStart, endOffset: next, sizeBytes }
      if (sizeBytes > messageBytesMax) return { kind: 'oversize', ...where }
      assert.ok(!oversize, 'a message dropped as oversize is over the limit')
      return { kind: 'message', raw: gather(current, bodyStart, end), ...where }
    }

    while (position < limit) {
      const want = Math.min(chunkBytes, limit - position)
      const data = Buffer.allocUnsafe(want)
      let bytesRead: number
      try {
        ;({ bytesRead } = await handle.read(data, 0, want, position))
      } catch (error) {
        throw importErrorFromFs(error, path, 'mbox')
      }
      if (bytesRead === 0) {
        // Shorter than when it was opened: a mail client rewrote it (expunge) while it was
        // read, and the message being read would be cut short.
        throw new ImportError('READ_FAILED', `${path} became shorter while it was read (${position} of ${limit} bytes); import it when no mail client uses it`, {
          fields: { path, offset: position, sizeBytes: limit },
        })
      }
      const chunk = data.subarray(0, bytesRead)
      const chunkStart = position
      position += bytesRead
      const combined = carried.length > 0 ? Buffer.concat([carried, chunk]) : chunk
      const combinedStart = chunkStart - carried.length
      const byteAt = (index: number): number | undefined => combined[index]
      // Patterns that ended inside the carried bytes were examined by the previous read.
      let searchFrom = Math.max(0, carried.length - (separatorPattern.length - 1))

      for (;;) {
        if (bodyStart === null) {
          const lineEnd = combined.indexOf(lineFeed, Math.max(0, messageStart - combinedStart))
          if (lineEnd < 0) break
          bodyStart = combinedStart + lineEnd + 1
        }
        const hit = combined.indexOf(separatorPattern, Math.max(searchFrom, bodyStart - combinedStart))
        if (hit < 0) break
        searchFrom = hit + 1
        const end = messageEndBeforeSeparator(byteAt, hit)
        if (end === null) continue
        yield entry(combinedStart + end, combinedStart + hit + 1, [...pending, { start: chunkStart, bytes: chunk }])
        messageStart = combinedStart + hit + 1
        bodyStart = null
        pending = []
        oversize = false
      }

      if (bodyStart !== null && !oversize) {
        const keepFrom = Math.max(chunkStart, bodyStart)
        pending.push({ start: keepFrom, bytes: chunk.subarray(keepFrom - chunkStart) })
        // The end of this message is at most `carriedBytes` before what has been read, so
        // once that much more than the limit is held it is over the limit for sure.
        if (position - bodyStart > messageBytesMax + carriedBytes) {
          oversize = true
          pending = []
        }
      }
      carried = Buffer.from(combined.subarray(Math.max(0, combined.length - carriedBytes)))
    }

    // The end of the data ends the last message, as a separator would; a `From ` line
    // without a line feed is a message without bytes.
    if (bodyStart === null) bodyStart = position
    const carriedStart = position - carried.length
    const lastIndex = carried.length - 1
    const framingEnd =
      carried[lastIndex] === lineFeed ? messageEndBeforeSeparator((index) => carried[index], lastIndex) : null
    const end = framingEnd === null ? position : Math.max(bodyStart, carriedStart + framingEnd)
    yield entry(end, position, pending)
  } finally {
    await handle.close()
  }
}
