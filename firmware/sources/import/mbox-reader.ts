import assert from 'node:assert/strict'
import { open, type FileHandle } from 'node:fs/promises'
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

/** A slice of the file held in memory, with the absolute offset of its first byte. */
interface HeldPiece {
  start: number
  bytes: Buffer
}

/** The bytes [from, to) out of pieces that cover that range, each `{ start, bytes }` with an absolute start. */
function gather(pieces: readonly HeldPiece[], from: number, to: number): Buffer {
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
 * The framing state of one read through an mbox file, fed one chunk at a time: the bytes
 * carried from the previous chunk, where the current message starts, and its bytes from
 * earlier chunks. Per chunk: `begin`, then `nextEntry` until it returns null, then `end`;
 * after the last chunk, `finish`.
 */
class MboxFraming {
  private carried: Buffer = Buffer.alloc(0)
  /** Offset of the current message's `From ` line. */
  private messageStart: number
  /** Offset of the current message's first byte, once its `From ` line's end has been read. */
  private bodyStart: number | null = null
  /** Bytes of the current message from earlier reads, dropped once it is known to be oversize. */
  private pending: HeldPiece[] = []
  private oversize = false
  // The chunk being scanned, behind the carried bytes.
  private chunk: Buffer = Buffer.alloc(0)
  private chunkStart = 0
  private combined: Buffer = Buffer.alloc(0)
  private combinedStart = 0
  private searchFrom = 0
  private readonly byteAt = (index: number): number | undefined => this.combined[index]

  constructor(
    fromOffset: number,
    private readonly messageBytesMax: number,
  ) {
    this.messageStart = fromOffset
  }

  /** Starts scanning `chunk`, read at file offset `chunkStart`. */
  begin(chunk: Buffer, chunkStart: number): void {
    const carried = this.carried
    this.chunk = chunk
    this.chunkStart = chunkStart
    this.combined = carried.length > 0 ? Buffer.concat([carried, chunk]) : chunk
    this.combinedStart = chunkStart - carried.length
    // Patterns that ended inside the carried bytes were examined by the previous read.
    this.searchFrom = Math.max(0, carried.length - (separatorPattern.length - 1))
  }

  /** The next message that ends in the current chunk; null when the chunk holds no more separators. */
  nextEntry(): MboxEntry | null {
    const { combined, combinedStart } = this
    for (;;) {
      if (this.bodyStart === null) {
        const lineEnd = combined.indexOf(lineFeed, Math.max(0, this.messageStart - combinedStart))
        if (lineEnd < 0) return null
        this.bodyStart = combinedStart + lineEnd + 1
      }
      const hit = combined.indexOf(separatorPattern, Math.max(this.searchFrom, this.bodyStart - combinedStart))
      if (hit < 0) return null
      this.searchFrom = hit + 1
      const end = messageEndBeforeSeparator(this.byteAt, hit)
      if (end === null) continue
      const entry = this.entry(combinedStart + end, combinedStart + hit + 1, [...this.pending, { start: this.chunkStart, bytes: this.chunk }])
      this.messageStart = combinedStart + hit + 1
      this.bodyStart = null
      this.pending = []
      this.oversize = false
      return entry
    }
  }

  /** Ends the current chunk (whose last byte is at `position` - 1): holds what the open message needs of it. */
  end(position: number): void {
    const { bodyStart, chunk, chunkStart, combined } = this
    if (bodyStart !== null && !this.oversize) {
      const keepFrom = Math.max(chunkStart, bodyStart)
      this.pending.push({ start: keepFrom, bytes: chunk.subarray(keepFrom - chunkStart) })
      // The end of this message is at most `carriedBytes` before what has been read, so
      // once that much more than the limit is held it is over the limit for sure.
      if (position - bodyStart > this.messageBytesMax + carriedBytes) {
        this.oversize = true
        this.pending = []
      }
    }
    this.carried = Buffer.from(combined.subarray(Math.max(0, combined.length - carriedBytes)))
  }

  /**
   * The last message: the end of the data at `position` ends it, as a separator would; a
   * `From ` line without a line feed is a message without bytes.
   */
  finish(position: number): MboxEntry {
    const carried = this.carried
    if (this.bodyStart === null) this.bodyStart = position
    const carriedStart = position - carried.length
    const lastIndex = carried.length - 1
    const framingEnd = carried[lastIndex] === lineFeed ? messageEndBeforeSeparator((index) => carried[index], lastIndex) : null
    const end = framingEnd === null ? position : Math.max(this.bodyStart, carriedStart + framingEnd)
    return this.entry(end, position, this.pending)
  }

  /** The current message as an entry ending at `end`, the next one starting at `next`; its bytes come from `pieces`. */
  private entry(end: number, next: number, pieces: readonly HeldPiece[]): MboxEntry {
    const bodyStart = this.bodyStart
    assert.ok(bodyStart !== null && end >= bodyStart, 'a message ends after its body starts')
    const sizeBytes = end - bodyStart
    const where = { startOffset: this.messageStart, endOffset: next, sizeBytes }
    if (sizeBytes > this.messageBytesMax) return { kind: 'oversize', ...where }
    assert.ok(!this.oversize, 'a message dropped as oversize is over the limit')
    return { kind: 'message', raw: gather(pieces, bodyStart, end), ...where }
  }
}

/** Checks that a `From ` line starts at `fromOffset`. @throws ImportError OFFSET_NOT_AT_MESSAGE */
async function expectSeparatorAt(handle: FileHandle, path: string, fromOffset: number): Promise<void> {
  const head = Buffer.alloc(fromLinePrefix.length)
  const { bytesRead } = await handle.read(head, 0, head.length, fromOffset)
  if (bytesRead === head.length && head.equals(fromLinePrefix)) return
  throw new ImportError(
    'OFFSET_NOT_AT_MESSAGE',
    fromOffset === 0 ? `${path} is not an mbox: it does not start with a "From " line` : `${path}: offset ${fromOffset} is not the start of a "From " line`,
    { fields: { path, offset: fromOffset } },
  )
}

/**
 * Reads `want` bytes at `position` into a new buffer (possibly fewer).
 * @throws ImportError READ_FAILED when the file ends before `limit`; PATH_NOT_FOUND / PATH_UNREADABLE
 */
async function readChunk(handle: FileHandle, path: string, position: number, want: number, limit: number): Promise<Buffer> {
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
  return data.subarray(0, bytesRead)
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

  let handle: FileHandle
  try {
    handle = await open(path, 'r')
  } catch (error) {
    throw importErrorFromFs(error, path, 'mbox')
  }
  try {
    const fileBytes = (await handle.stat()).size
    const limit = Math.min(options.toOffset ?? fileBytes, fileBytes)
    if (fromOffset >= limit) return
    await expectSeparatorAt(handle, path, fromOffset)
    const framing = new MboxFraming(fromOffset, messageBytesMax)
    let position = fromOffset
    while (position < limit) {
      const chunk = await readChunk(handle, path, position, Math.min(chunkBytes, limit - position), limit)
      framing.begin(chunk, position)
      position += chunk.length
      for (let entry = framing.nextEntry(); entry !== null; entry = framing.nextEntry()) yield entry
      framing.end(position)
    }
    yield framing.finish(position)
  } finally {
    await handle.close()
  }
}
