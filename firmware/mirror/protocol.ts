import assert from 'node:assert/strict'
import type { TLSSocket } from 'node:tls'
import { MirrorError, isRefusalCode, type RefusalValue } from './errors.js'

/**
 * Framing of the mirror protocol over a TLS socket. A frame is
 *
 *     length (4 bytes, big-endian, payload bytes only) | type (1 byte) | payload
 *
 * Control frames (HELLO, REFUSE, CLOSE) carry UTF-8 JSON; PROOF carries 32 raw bytes;
 * READY and KEEPALIVE are empty; application frames (types 16–255, defined by the copy
 * layer) carry whatever their owner chooses, typically raw message bytes. Parsing is strict:
 * an unknown type, an over-long length or a malformed control payload is a PROTOCOL error,
 * the peer is sent a REFUSE and the connection is closed; nothing else is disturbed.
 */

/** Bytes before the payload: 4 of length and 1 of type. */
export const frameHeaderBytes = 5
/** Largest message the copy layer may put in one frame, in bytes (64 MiB). */
export const messagePayloadBytesMax = 64 * 1024 * 1024
/** Largest payload of any frame after the handshake, in bytes: a message plus 64 KiB of framing headroom. */
export const framePayloadBytesMax = messagePayloadBytesMax + 64 * 1024
/**
 * Largest payload during the handshake, in bytes. Small on purpose: an unauthenticated peer
 * must not make us buffer megabytes; a HELLO or a REFUSE is a few hundred bytes.
 */
export const handshakeFramePayloadBytesMax = 8 * 1024
/** Longest free-text message in a REFUSE or CLOSE frame, in characters (longer text is cut). */
export const refusalMessageLengthMax = 512
/** Longest string value in a REFUSE's expected/actual, in characters. */
const refusalValueLengthMax = 256
/** Received frames buffered ahead of the consumer before reading from the socket pauses. */
export const receiveQueueFramesMax = 64
/** Received payload bytes buffered ahead of the consumer before reading from the socket pauses. */
export const receiveQueueBytesMax = 16 * 1024 * 1024
/** Undecoded bytes held while nobody wants a frame, before reading from the socket pauses. */
const readBufferBytesHighWater = 64 * 1024
/** How long a closing side waits for the peer to read its last frame and close, in milliseconds. */
export const closeLingerMs = 2_000

/** Frame types. 1–15 belong to this layer; 16–255 to the layers built on the channel. */
export const FrameType = {
  hello: 1,
  refuse: 2,
  proof: 3,
  ready: 4,
  keepalive: 5,
  close: 6,
} as const
/** Lowest frame type the copy layer may use. */
export const applicationFrameTypeMin = 16
const controlFrameTypes: ReadonlySet<number> = new Set(Object.values(FrameType))

/** One decoded frame. */
export interface MirrorFrame {
  /** 1–255; see FrameType and applicationFrameTypeMin. */
  type: number
  payload: Buffer
}

/** The name of a frame type for logs and errors. */
export function frameTypeName(type: number): string {
  const entry = Object.entries(FrameType).find(([, value]) => value === type)
  return entry ? entry[0].toUpperCase() : `type ${type}`
}

/** The 5-byte header of a frame. */
export function encodeFrameHeader(type: number, payloadBytes: number): Buffer {
  assert.ok(Number.isInteger(type) && type >= 1 && type <= 255, 'frame type must be 1–255')
  assert.ok(Number.isInteger(payloadBytes) && payloadBytes >= 0 && payloadBytes <= framePayloadBytesMax, 'frame payload out of range')
  const header = Buffer.allocUnsafe(frameHeaderBytes)
  header.writeUInt32BE(payloadBytes, 0)
  header.writeUInt8(type, 4)
  return header
}

/** One whole frame as bytes (header and payload copied together; for small frames and tests). */
export function encodeFrame(type: number, payload: Uint8Array = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeFrameHeader(type, payload.byteLength), payload])
}

/** A JSON payload as bytes. */
export function encodeJson(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8')
}

/**
 * Parses a JSON control payload; only a plain object is accepted.
 * @throws MirrorError PROTOCOL when the bytes are not UTF-8 JSON of an object
 */
export function parseJsonObject(payload: Buffer, what: string): Record<string, unknown> {
  let value: unknown
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch {
    throw new MirrorError('PROTOCOL', `malformed ${what}: not UTF-8 JSON`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new MirrorError('PROTOCOL', `malformed ${what}: not a JSON object`)
  }
  return value as Record<string, unknown>
}

/** Drops control characters from text a peer sent, so it cannot forge log lines or terminal output. */
export function sanitizePeerText(text: string, lengthMax: number): string {
  return text.replace(/[\u0000-\u001f\u007f-\u009f]/g, ' ').slice(0, lengthMax)
}

/** The payload of a REFUSE frame for `error`. @throws AssertionError when the code may not travel */
export function encodeRefusal(error: MirrorError): Buffer {
  assert.ok(isRefusalCode(error.code), `${error.code} is not a refusal code`)
  return encodeJson({
    code: error.code,
    expected: error.expected,
    actual: error.actual,
    message: error.message.slice(0, refusalMessageLengthMax),
  })
}

function isRefusalValue(value: unknown): value is RefusalValue {
  return value === null || (typeof value === 'string' && value.length <= refusalValueLengthMax) || (typeof value === 'number' && Number.isFinite(value))
}

/**
 * The MirrorError a peer's REFUSE frame stands for (origin `peer`).
 * @throws MirrorError PROTOCOL when the payload is malformed or names an unknown code
 */
export function decodeRefusal(payload: Buffer): MirrorError {
  const body = parseJsonObject(payload, 'REFUSE')
  const { code, expected, actual, message } = body
  if (!isRefusalCode(code) || !isRefusalValue(expected) || !isRefusalValue(actual) || typeof message !== 'string') {
    throw new MirrorError('PROTOCOL', 'malformed REFUSE: unknown code or bad fields')
  }
  return new MirrorError(code, `peer refused: ${sanitizePeerText(message, refusalMessageLengthMax)}`, {
    expected,
    actual,
    origin: 'peer',
  })
}

/**
 * Splits a byte stream into frames. `push` only stores bytes; `next` cuts one frame under the
 * limit given at that moment, so a caller can raise the limit between two frames of one chunk
 * (the handshake does, after READY).
 */
export class FrameDecoder {
  #chunks: Buffer[] = []
  #bufferedBytes = 0
  #header: { type: number; payloadBytes: number } | undefined

  /** Bytes received and not yet returned as frames. */
  get bufferedBytes(): number {
    return this.#bufferedBytes
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return
    this.#chunks.push(chunk)
    this.#bufferedBytes += chunk.length
  }

  /**
   * The next complete frame, or undefined when more bytes are needed.
   * @throws MirrorError FRAME_TOO_LARGE when the announced payload exceeds `payloadBytesMax`;
   *   PROTOCOL for type 0 or a reserved type (7–15). The decoder is unusable afterwards.
   */
  next(payloadBytesMax: number): MirrorFrame | undefined {
    if (this.#header === undefined) {
      if (this.#bufferedBytes < frameHeaderBytes) return undefined
      const header = this.#take(frameHeaderBytes)
      const payloadBytes = header.readUInt32BE(0)
      const type = header.readUInt8(4)
      if (type === 0 || (type < applicationFrameTypeMin && !controlFrameTypes.has(type))) {
        throw new MirrorError('PROTOCOL', `unknown frame type ${type}`, { actual: type })
      }
      if (payloadBytes > payloadBytesMax) {
        throw new MirrorError('FRAME_TOO_LARGE', `a ${frameTypeName(type)} frame of ${payloadBytes} bytes exceeds the limit`, {
          expected: `<= ${payloadBytesMax}`,
          actual: payloadBytes,
        })
      }
      this.#header = { type, payloadBytes }
    }
    if (this.#bufferedBytes < this.#header.payloadBytes) return undefined
    const frame = { type: this.#header.type, payload: this.#take(this.#header.payloadBytes) }
    this.#header = undefined
    return frame
  }

  /** Removes `size` bytes from the front, copying only when they span chunks. */
  #take(size: number): Buffer {
    this.#bufferedBytes -= size
    const first = this.#chunks[0]
    if (size === 0) return Buffer.alloc(0)
    if (first !== undefined && first.length >= size) {
      if (first.length === size) this.#chunks.shift()
      else this.#chunks[0] = first.subarray(size)
      return first.subarray(0, size)
    }
    const out = Buffer.allocUnsafe(size)
    let filled = 0
    while (filled < size) {
      const chunk = this.#chunks[0]!
      const used = Math.min(chunk.length, size - filled)
      chunk.copy(out, filled, 0, used)
      filled += used
      if (used === chunk.length) this.#chunks.shift()
      else this.#chunks[0] = chunk.subarray(used)
    }
    return out
  }
}

/** Maps a socket error to a MirrorError with a stable code. */
export function socketFailure(error: Error & { code?: string }): MirrorError {
  const code = error.code ?? ''
  if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS') || /SSL|TLS|certificate/i.test(error.message)) {
    return new MirrorError('TLS_FAILED', `TLS failed: ${error.message}`, { cause: error, fields: { causeCode: code } })
  }
  return new MirrorError('CONNECTION_CLOSED', `connection failed: ${code || error.message}`, { cause: error, fields: { causeCode: code } })
}

/**
 * A TLS socket seen as a stream of frames, pulled with `receive()`. Before `setEager()` a
 * frame is decoded only when someone waits for one (the handshake: each step may change the
 * limit); after it, frames are decoded as they arrive into a bounded queue, and reading from
 * the socket pauses while the queue is full (backpressure on a slow consumer).
 */
export class FramedSocket {
  readonly socket: TLSSocket
  /** Called with each frame decoded in eager mode; return true to consume it (keepalives). */
  intercept: ((frame: MirrorFrame) => boolean) | undefined
  /** Called whenever bytes arrive, for idle detection. */
  onActivity: (() => void) | undefined
  /** Resolves when the socket has closed; never rejects. */
  readonly closed: Promise<void>

  #decoder = new FrameDecoder()
  #payloadBytesMax: number
  #eager = false
  #queue: MirrorFrame[] = []
  #queuedBytes = 0
  #waiter: { resolve(frame: MirrorFrame): void; reject(error: MirrorError): void } | undefined
  /** Why no more bytes will arrive (the peer ended, an error, close); frames already received are still delivered. */
  #inputClosed: MirrorError | undefined
  /** Why nothing more is delivered at all (a local refusal or close); set once. */
  #fatal: MirrorError | undefined
  #ending = false
  #paused = false

  constructor(socket: TLSSocket, payloadBytesMax: number) {
    this.socket = socket
    this.#payloadBytesMax = payloadBytesMax
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()))
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.on('end', () => this.#closeInput(new MirrorError('CONNECTION_CLOSED', 'the peer closed the connection')))
    socket.on('error', (error: Error) => this.#closeInput(socketFailure(error)))
    socket.on('close', () => this.#closeInput(new MirrorError('CONNECTION_CLOSED', 'the connection closed')))
  }

  /** True while reading from the socket is paused because nobody consumes frames. */
  get paused(): boolean {
    return this.#paused
  }

  /** Why the stream stopped, or undefined while it runs. */
  get failure(): MirrorError | undefined {
    return this.#fatal ?? this.#inputClosed
  }

  /** Switches to eager decoding with a new payload limit (after the handshake). */
  setEager(payloadBytesMax: number): void {
    this.#eager = true
    this.#payloadBytesMax = payloadBytesMax
    this.#pump()
  }

  /**
   * The next frame. Queued frames are still delivered after the peer ends the stream.
   * @throws MirrorError why the stream stopped (CONNECTION_CLOSED, PROTOCOL, TLS_FAILED,
   *   FRAME_TOO_LARGE, or the local refusal given to refuse())
   */
  receive(): Promise<MirrorFrame> {
    assert.equal(this.#waiter, undefined, 'one receive() at a time')
    if (this.#fatal) return Promise.reject(this.#fatal)
    const queued = this.#dequeue()
    if (queued) return Promise.resolve(queued)
    const promise = new Promise<MirrorFrame>((resolve, reject) => {
      this.#waiter = { resolve, reject }
    })
    this.#pump()
    return promise
  }

  /**
   * Sends one frame; resolves when the bytes have been handed to the TLS layer. Frames of
   * concurrent calls never interleave.
   * @throws MirrorError CLOSED when the stream is closing or closed; FRAME_TOO_LARGE when the
   *   payload exceeds the post-handshake limit
   */
  send(type: number, payload: Uint8Array = Buffer.alloc(0)): Promise<void> {
    if (this.#ending || this.socket.destroyed || !this.socket.writable) {
      return Promise.reject(new MirrorError('CLOSED', 'the mirror connection is closed', { retryable: true }))
    }
    if (payload.byteLength > framePayloadBytesMax) {
      return Promise.reject(
        new MirrorError('FRAME_TOO_LARGE', `a payload of ${payload.byteLength} bytes exceeds the frame limit`, {
          expected: `<= ${framePayloadBytesMax}`,
          actual: payload.byteLength,
        }),
      )
    }
    return this.#write(type, payload)
  }

  /**
   * Sends a last frame (a REFUSE or a CLOSE), half-closes, and destroys the socket if the peer
   * has not closed within closeLingerMs. Input after this is ignored. Idempotent: only the
   * first call sends. `failure` becomes what later receive() calls reject with.
   */
  finish(type: number, payload: Buffer, failure: MirrorError): void {
    if (this.#ending) return
    this.#ending = true
    this.#halt(failure)
    this.#discardInput()
    if (!this.socket.destroyed && this.socket.writable) {
      this.#write(type, payload).catch(() => undefined)
      this.socket.end()
    }
    setTimeout(() => this.socket.destroy(), closeLingerMs).unref()
  }

  /** Sends a REFUSE for `error` and closes (see finish). */
  refuse(error: MirrorError): void {
    this.finish(FrameType.refuse, encodeRefusal(error), error)
  }

  /** Drops the connection at once, without a last frame. */
  destroy(failure: MirrorError): void {
    this.#ending = true
    this.#halt(failure)
    this.socket.destroy()
  }

  #write(type: number, payload: Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      const done = (error?: Error | null): void => (error ? reject(new MirrorError('CLOSED', 'the mirror connection closed while sending', { retryable: true, cause: error })) : resolve())
      const header = encodeFrameHeader(type, payload.byteLength)
      // Small frames go out in one write (one TLS record); big ones avoid a copy of the payload.
      if (payload.byteLength <= readBufferBytesHighWater) {
        this.socket.write(Buffer.concat([header, payload]), done)
      } else {
        this.socket.write(header)
        this.socket.write(payload, done)
      }
    })
  }

  #onData(chunk: Buffer): void {
    this.onActivity?.()
    if (this.#fatal) return
    this.#decoder.push(chunk)
    this.#pump()
  }

  #dequeue(): MirrorFrame | undefined {
    const frame = this.#queue.shift()
    if (frame) {
      this.#queuedBytes -= frame.payload.length
      // Room again: decode what is buffered and read on.
      queueMicrotask(() => this.#pump())
    }
    return frame
  }

  /** Decodes as far as wanted, hands a frame to a waiter, and pauses or resumes reading. */
  #pump(): void {
    while (this.#fatal === undefined) {
      const wanted = this.#eager ? this.#queue.length < receiveQueueFramesMax && this.#queuedBytes < receiveQueueBytesMax : this.#waiter !== undefined && this.#queue.length === 0
      if (!wanted) break
      let frame: MirrorFrame | undefined
      try {
        frame = this.#decoder.next(this.#payloadBytesMax)
      } catch (error) {
        this.refuse(error as MirrorError)
        break
      }
      if (frame === undefined) break
      if (this.#eager && this.intercept?.(frame)) continue
      this.#queue.push(frame)
      this.#queuedBytes += frame.payload.length
    }
    const waiter = this.#waiter
    if (waiter) {
      const failure = this.#fatal
      const frame = failure ? undefined : this.#queue.shift()
      if (frame) {
        this.#queuedBytes -= frame.payload.length
        this.#waiter = undefined
        waiter.resolve(frame)
      } else if (failure ?? this.#inputClosed) {
        this.#waiter = undefined
        waiter.reject((failure ?? this.#inputClosed)!)
      }
    }
    this.#flowControl()
  }

  #flowControl(): void {
    if (this.#fatal || this.#inputClosed) return
    const full = this.#eager ? this.#queue.length >= receiveQueueFramesMax || this.#queuedBytes >= receiveQueueBytesMax : this.#waiter === undefined || this.#queue.length > 0
    const pause = full && this.#decoder.bufferedBytes >= readBufferBytesHighWater
    if (pause && !this.#paused) {
      this.#paused = true
      this.socket.pause()
    } else if (!pause && this.#paused) {
      this.#paused = false
      this.socket.resume()
    }
  }

  /** After a last frame, keep reading (so the peer's late frames do not cause a reset) but ignore it. */
  #discardInput(): void {
    this.#queue = []
    this.#queuedBytes = 0
    if (this.#paused) {
      this.#paused = false
      this.socket.resume()
    }
  }

  #closeInput(reason: MirrorError): void {
    if (this.#inputClosed === undefined) this.#inputClosed = reason
    this.#pump()
  }

  #halt(failure: MirrorError): void {
    if (this.#fatal === undefined) this.#fatal = failure
    this.#pump()
  }
}
