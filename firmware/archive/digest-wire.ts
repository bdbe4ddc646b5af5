import assert from 'node:assert/strict'
import { idBytes, isArchiveId } from './layout.js'
import {
  checkIdsCallable,
  digestFanout,
  digestIdsPerResponseMax,
  digestInvalid,
  digestLeafLevel,
  digestPrefixesPerRequestMax,
  digestWireHashBytes,
  parsePrefix,
  prefixOf,
  type DigestEntry,
  type DigestNode,
  type DigestView,
  type RemoteDigestView,
} from './digest-nodes.js'

/**
 * The id digest's wire format (id-digest.ts has the design, and why hashes travel truncated
 * to 16 bytes): the byte codec of a children or ids request and of their answers, strict
 * decoders, the responder's half of a comparison (answerChildren, answerIds) and the
 * initiator's view of a peer over a transport (remoteOverBytes). Pure: no I/O; the mirror
 * carries the bytes.
 */

// Layout:
//
// request (children or ids):  varint n, then n prefixes; a prefix is u8 level (0–4) and
//                             ceil(level / 2) bytes of hex digits, high nibble first, the
//                             last nibble of an odd level zero
// children answer:            per prefix 16 nodes; a node is varint count, and when count > 0
//                             varint bytes and the 16-byte hash
// ids answer:                 per prefix varint n, then n × (32-byte id, varint size)
// Varints are unsigned LEB128, minimal, at most 2^53 − 1. Every decoder is strict: trailing
// bytes, a short message, a non-minimal varint, an id outside its prefix or out of order
// are refused with DIGEST_INVALID.

class ByteWriter {
  private buffer = new Uint8Array(256)
  private length = 0

  private reserve(bytes: number): void {
    if (this.length + bytes <= this.buffer.byteLength) return
    const grown = new Uint8Array(Math.max(this.buffer.byteLength * 2, this.length + bytes))
    grown.set(this.buffer.subarray(0, this.length))
    this.buffer = grown
  }

  byte(value: number): void {
    this.reserve(1)
    this.buffer[this.length++] = value
  }

  varint(value: number): void {
    assert.ok(Number.isSafeInteger(value) && value >= 0, `a varint is a non-negative safe integer, got ${value}`)
    let rest = value
    while (rest >= 0x80) {
      this.byte((rest % 0x80) | 0x80)
      rest = Math.floor(rest / 0x80)
    }
    this.byte(rest)
  }

  bytes(bytes: Uint8Array): void {
    this.reserve(bytes.byteLength)
    this.buffer.set(bytes, this.length)
    this.length += bytes.byteLength
  }

  done(): Uint8Array {
    return this.buffer.slice(0, this.length)
  }
}

/** Longest minimal varint of a safe integer, in bytes. */
const varintBytesMax = 8

class ByteReader {
  private offset = 0
  constructor(
    private readonly input: Uint8Array,
    private readonly what: string,
  ) {}

  fail(reason: string): never {
    throw digestInvalid(`malformed digest ${this.what}: ${reason}`, { what: this.what, reason, offset: this.offset })
  }

  byte(): number {
    if (this.offset >= this.input.byteLength) this.fail('it ends early')
    return this.input[this.offset++]!
  }

  varint(): number {
    let value = 0
    let scale = 1
    for (let index = 0; index < varintBytesMax; index++) {
      const byte = this.byte()
      value += (byte & 0x7f) * scale
      if (byte < 0x80) {
        if (index > 0 && byte === 0) this.fail('a varint is not minimal')
        if (!Number.isSafeInteger(value)) this.fail('a varint is too large')
        return value
      }
      scale *= 0x80
    }
    return this.fail('a varint is too long')
  }

  bytes(length: number): Uint8Array {
    if (this.offset + length > this.input.byteLength) this.fail('it ends early')
    const bytes = this.input.slice(this.offset, this.offset + length)
    this.offset += length
    return bytes
  }

  end(): void {
    if (this.offset !== this.input.byteLength) this.fail(`${this.input.byteLength - this.offset} bytes after the end`)
  }
}

function writePrefix(writer: ByteWriter, prefixHex: string): void {
  const { level, index } = parsePrefix(prefixHex)
  writer.byte(level)
  const digits = level % 2 === 0 ? index : index * digestFanout
  for (let byte = Math.ceil(level / 2) - 1; byte >= 0; byte--) writer.byte(Math.floor(digits / 256 ** byte) % 256)
}

function readPrefix(reader: ByteReader): string {
  const level = reader.byte()
  if (level > digestLeafLevel) reader.fail(`a prefix of level ${level}`)
  let digits = 0
  for (let byte = 0; byte < Math.ceil(level / 2); byte++) digits = digits * 256 + reader.byte()
  if (level % 2 === 1 && digits % digestFanout !== 0) reader.fail('an odd prefix has a non-zero last digit')
  return prefixOf(level, level % 2 === 1 ? digits / digestFanout : digits)
}

/**
 * A children or ids request: the prefixes asked about.
 * @throws AssertionError over digestPrefixesPerRequestMax; ArchiveError DIGEST_INVALID on a malformed prefix
 */
export function encodePrefixes(prefixes: readonly string[]): Uint8Array {
  assert.ok(prefixes.length <= digestPrefixesPerRequestMax, `at most ${digestPrefixesPerRequestMax} prefixes a request`)
  const writer = new ByteWriter()
  writer.varint(prefixes.length)
  for (const prefix of prefixes) writePrefix(writer, prefix)
  return writer.done()
}

/** @throws ArchiveError DIGEST_INVALID */
export function decodePrefixes(bytes: Uint8Array): string[] {
  const reader = new ByteReader(bytes, 'request')
  const count = reader.varint()
  if (count > digestPrefixesPerRequestMax) reader.fail(`${count} prefixes, more than ${digestPrefixesPerRequestMax}`)
  const prefixes = Array.from({ length: count }, () => readPrefix(reader))
  reader.end()
  return prefixes
}

/** A children answer: 16 nodes per prefix asked about, hashes truncated to 16 bytes. */
export function encodeChildren(groups: readonly DigestNode[][]): Uint8Array {
  const writer = new ByteWriter()
  for (const group of groups) {
    assert.ok(group.length === digestFanout, 'a node has 16 children')
    for (const node of group) {
      writer.varint(node.count)
      if (node.count === 0) {
        assert.ok(node.bytes === 0, 'an empty node has no bytes')
        continue
      }
      writer.varint(node.bytes)
      assert.ok(node.hash.byteLength >= digestWireHashBytes)
      writer.bytes(node.hash.subarray(0, digestWireHashBytes))
    }
  }
  return writer.done()
}

/** @throws ArchiveError DIGEST_INVALID */
export function decodeChildren(bytes: Uint8Array, prefixCount: number): DigestNode[][] {
  const reader = new ByteReader(bytes, 'children answer')
  const groups = Array.from({ length: prefixCount }, () =>
    Array.from({ length: digestFanout }, (): DigestNode => {
      const count = reader.varint()
      if (count === 0) return { count, bytes: 0, hash: new Uint8Array(digestWireHashBytes) }
      return { count, bytes: reader.varint(), hash: reader.bytes(digestWireHashBytes) }
    }),
  )
  reader.end()
  return groups
}

/** An ids answer: the entries under each prefix asked about, in id order. */
export function encodeIds(groups: readonly DigestEntry[][]): Uint8Array {
  const writer = new ByteWriter()
  for (const entries of groups) {
    writer.varint(entries.length)
    for (const entry of entries) {
      writer.bytes(Buffer.from(entry.id, 'hex'))
      writer.varint(entry.sizeBytes)
    }
  }
  return writer.done()
}

/** @throws ArchiveError DIGEST_INVALID (also for an id outside its prefix, out of order, or too many ids) */
export function decodeIds(bytes: Uint8Array, prefixes: readonly string[]): DigestEntry[][] {
  const reader = new ByteReader(bytes, 'ids answer')
  let total = 0
  const groups = prefixes.map((prefix) => {
    const count = reader.varint()
    total += count
    if (total > digestIdsPerResponseMax) reader.fail(`more than ${digestIdsPerResponseMax} ids`)
    const entries: DigestEntry[] = []
    for (let index = 0; index < count; index++) entries.push({ id: Buffer.from(reader.bytes(idBytes)).toString('hex'), sizeBytes: reader.varint() })
    const problem = entriesProblem(prefix, entries)
    if (problem) reader.fail(problem)
    return entries
  })
  reader.end()
  return groups
}

/** Why a list of entries cannot be the ids under `prefix` in id order; null when it can. */
export function entriesProblem(prefix: string, entries: readonly DigestEntry[]): string | null {
  for (let index = 0; index < entries.length; index++) {
    const { id, sizeBytes } = entries[index]!
    if (!isArchiveId(id) || !id.startsWith(prefix)) return `id ${id.slice(0, 70)} is not under prefix '${prefix}'`
    if (index > 0 && entries[index - 1]!.id >= id) return `ids under prefix '${prefix}' are not in strictly ascending order`
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) return `id ${id} has size ${sizeBytes}`
  }
  return null
}

/**
 * Answers a children request (encodePrefixes' bytes) from a local view: the peer's half of
 * a comparison, for the transport to call.
 * @throws ArchiveError DIGEST_INVALID on a malformed request or a leaf prefix; DIGEST_SNAPSHOT_CLOSED from a closed snapshot
 */
export function answerChildren(view: DigestView, request: Uint8Array): Uint8Array {
  return encodeChildren(decodePrefixes(request).map((prefix) => view.children(prefix)))
}

/**
 * Answers an ids request from a local view, refusing one that would list more than
 * digestIdsPerResponseMax ids.
 * @throws ArchiveError DIGEST_INVALID; DIGEST_SNAPSHOT_CLOSED from a closed snapshot
 */
export function answerIds(view: DigestView, request: Uint8Array): Uint8Array {
  const prefixes = decodePrefixes(request)
  checkIdsCallable(
    prefixes.join(','),
    prefixes.reduce((sum, prefix) => sum + view.node(prefix).count, 0),
  )
  return encodeIds(prefixes.map((prefix) => view.idsInBucket(prefix)))
}

/** The two calls a transport carries: a request's bytes out, the answer's bytes back. */
export interface DigestExchange {
  children(request: Uint8Array): Promise<Uint8Array>
  ids(request: Uint8Array): Promise<Uint8Array>
}

/** A RemoteDigestView over a transport, decoding answers strictly. */
export function remoteOverBytes(exchange: DigestExchange): RemoteDigestView {
  return {
    async children(prefixes) {
      return decodeChildren(await exchange.children(encodePrefixes(prefixes)), prefixes.length)
    },
    async ids(prefixes) {
      return decodeIds(await exchange.ids(encodePrefixes(prefixes)), prefixes)
    },
  }
}
