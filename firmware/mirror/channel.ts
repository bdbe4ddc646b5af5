import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import { MirrorError } from './errors.js'
import {
  FrameType,
  applicationFrameTypeMin,
  decodeRefusal,
  encodeJson,
  framePayloadBytesMax,
  frameTypeName,
  parseJsonObject,
  sanitizePeerText,
  refusalMessageLengthMax,
  type FramedSocket,
  type MirrorFrame,
} from './protocol.js'
import type { MirrorPeerIdentity } from './handshake.js'

/** A channel with no bytes from the peer for this long is dropped as dead, in milliseconds. */
export const channelIdleTimeoutMsDefault = 60_000
/** Keepalives go out this many times per idle timeout, so a live but quiet peer is never dropped. */
const keepalivesPerIdleTimeout = 3

/** The authenticated peer of a channel and where it is. */
export interface MirrorPeer extends MirrorPeerIdentity {
  address: string
  port: number
}

/**
 * An authenticated, framed, bidirectional connection to one peer. The copy layer defines
 * frame types 16–255 and their payloads; this layer keeps the channel alive (keepalives,
 * idle timeout), bounds what it buffers, and closes it cleanly.
 */
export interface MirrorChannel {
  readonly peer: MirrorPeer
  /** `inbound`: the peer connected to our listener; `outbound`: we connected to it. */
  readonly direction: 'inbound' | 'outbound'
  /** True until the channel starts closing (either side). */
  readonly isOpen: boolean
  /**
   * Resolves once the connection is gone: null after a clean close by either side, else why
   * it ended (a peer's REFUSE, TIMEOUT, PROTOCOL, CONNECTION_CLOSED). Never rejects.
   */
  readonly closed: Promise<MirrorError | null>
  /**
   * Sends one application frame; resolves when it has been handed to TLS (await it for
   * backpressure). Frames of concurrent calls never interleave.
   * @throws AssertionError for a type outside 16–255
   * @throws MirrorError CLOSED when the channel is closing or closed; FRAME_TOO_LARGE above framePayloadBytesMax
   */
  send(type: number, payload: Uint8Array): Promise<void>
  /** send() with a JSON payload. @throws as send */
  sendJson(type: number, value: unknown): Promise<void>
  /**
   * The next application frame, or null once the channel has closed cleanly. One caller at a
   * time. While nobody receives, at most receiveQueueFramesMax frames / receiveQueueBytesMax
   * bytes are buffered, then reading from the peer pauses.
   * @throws MirrorError why the channel failed (peer REFUSE, TIMEOUT, PROTOCOL, CONNECTION_CLOSED)
   */
  receive(): Promise<MirrorFrame | null>
  /** Application frames until a clean close; throws as receive(). */
  [Symbol.asyncIterator](): AsyncIterator<MirrorFrame>
  /**
   * Closes the channel: a CLOSE frame, or a REFUSE carrying `error` (refusal codes only), then
   * a half-close; the socket is destroyed if the peer has not closed within closeLingerMs.
   * Idempotent. Resolves when the socket has closed.
   */
  close(error?: MirrorError): Promise<void>
}

/** How a channel behaves once authenticated. */
export interface MirrorChannelOptions {
  direction: 'inbound' | 'outbound'
  /** Drop the channel after this long without a byte from the peer, in milliseconds. */
  idleTimeoutMs: number
}

/** Wraps a framed socket whose handshake has succeeded into a MirrorChannel. */
export function createMirrorChannel(
  deps: { logger: Logger },
  framed: FramedSocket,
  peer: MirrorPeer,
  options: MirrorChannelOptions,
): MirrorChannel {
  assert.ok(options.idleTimeoutMs >= 100, 'idleTimeoutMs must be at least 100 ms')
  const logger = deps.logger.child('channel', { peerSerial: peer.serial, direction: options.direction })
  let closingCleanly = false
  let peerReason: MirrorError | undefined

  const idleTimer = setTimeout(onIdle, options.idleTimeoutMs).unref()
  const keepaliveTimer = setInterval(() => {
    framed.send(FrameType.keepalive).catch(() => undefined)
  }, Math.floor(options.idleTimeoutMs / keepalivesPerIdleTimeout)).unref()

  function onIdle(): void {
    // Reading is paused while our consumer is behind: silence is then ours, not the peer's.
    if (framed.paused) {
      idleTimer.refresh()
      return
    }
    framed.refuse(
      new MirrorError('TIMEOUT', `no data from the peer for ${options.idleTimeoutMs} ms`, {
        expected: `data within ${options.idleTimeoutMs} ms`,
        actual: null,
      }),
    )
  }

  framed.onActivity = () => idleTimer.refresh()
  framed.intercept = (frame) => {
    if (frame.type === FrameType.keepalive) return true
    // Remember why the peer is leaving even if nobody is receiving right now.
    if (frame.type === FrameType.close) closingCleanly = true
    if (frame.type === FrameType.refuse) {
      try {
        peerReason = decodeRefusal(frame.payload)
      } catch (error) {
        peerReason = error as MirrorError
      }
    }
    return false
  }
  framed.setEager(framePayloadBytesMax)

  const closed = framed.closed.then(() => {
    clearTimeout(idleTimer)
    clearInterval(keepaliveTimer)
    const failure = framed.failure
    const reason = peerReason ?? (closingCleanly && (!failure || failure.code === 'CLOSED' || failure.code === 'CONNECTION_CLOSED') ? null : failure ?? null)
    if (reason) logger.warn('mirror channel failed', { code: reason.code, origin: reason.origin, error: reason.message })
    else logger.info('mirror channel closed')
    return reason
  })

  async function receive(): Promise<MirrorFrame | null> {
    let frame: MirrorFrame
    try {
      frame = await framed.receive()
    } catch (error) {
      if (closingCleanly && (error as MirrorError).code !== 'TIMEOUT') return null
      throw error
    }
    if (frame.type >= applicationFrameTypeMin) return frame
    if (frame.type === FrameType.close) {
      closingCleanly = true
      const message = readCloseMessage(frame.payload)
      logger.info('peer closed the mirror channel', { reason: message })
      framed.finish(FrameType.close, encodeJson({ message: 'closing after the peer' }), new MirrorError('CLOSED', 'the peer closed the channel'))
      return null
    }
    if (frame.type === FrameType.refuse) {
      const error = decodeRefusal(frame.payload)
      framed.destroy(error)
      throw error
    }
    const error = new MirrorError('PROTOCOL', `unexpected ${frameTypeName(frame.type)} frame after the handshake`, {
      actual: frameTypeName(frame.type),
    })
    framed.refuse(error)
    throw error
  }

  const channel: MirrorChannel = {
    peer,
    direction: options.direction,
    get isOpen() {
      return framed.failure === undefined
    },
    closed,
    send(type, payload) {
      assert.ok(Number.isInteger(type) && type >= applicationFrameTypeMin && type <= 255, `application frame types are ${applicationFrameTypeMin}–255`)
      return framed.send(type, payload)
    },
    sendJson(type, value) {
      return channel.send(type, encodeJson(value))
    },
    receive,
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const frame = await receive()
        if (frame === null) return
        yield frame
      }
    },
    async close(error) {
      if (framed.failure === undefined) {
        if (error) {
          framed.refuse(error)
        } else {
          closingCleanly = true
          framed.finish(FrameType.close, encodeJson({ message: 'closing' }), new MirrorError('CLOSED', 'the channel was closed'))
        }
      }
      await framed.closed
    },
  }
  return channel
}

/** The message of a peer's CLOSE frame, sanitised; a malformed one is reported, not fatal. */
function readCloseMessage(payload: Buffer): string {
  try {
    const message = parseJsonObject(payload, 'CLOSE').message
    return typeof message === 'string' ? sanitizePeerText(message, refusalMessageLengthMax) : '(none)'
  } catch {
    return '(malformed)'
  }
}
