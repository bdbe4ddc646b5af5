import assert from 'node:assert/strict'
import type { Logger } from '../common/logger.js'
import { MirrorError } from './errors.js'
import { FrameType, applicationFrameTypeMin, encodeJson, framePayloadBytesMax, type FramedSocket, type MirrorFrame } from './protocol.js'
import type { MirrorPeerIdentity } from './handshake.js'
import { startChannelLiveness } from './channel-liveness.js'
import { channelEndReason, interceptControlFrames, receiveApplicationFrame, type ChannelEnding } from './channel-frames.js'

/** A channel with no bytes from the peer for this long is dropped as dead, in milliseconds. */
export const channelIdleTimeoutMsDefault = 60_000

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

/**
 * Wraps a framed socket whose handshake has succeeded into a MirrorChannel: keepalives and the
 * idle timeout (channel-liveness.ts), control frames and receiving (channel-frames.ts).
 */
export function createMirrorChannel(deps: { logger: Logger }, framed: FramedSocket, peer: MirrorPeer, options: MirrorChannelOptions): MirrorChannel {
  assert.ok(options.idleTimeoutMs >= 100, 'idleTimeoutMs must be at least 100 ms')
  const logger = deps.logger.child('channel', { peerSerial: peer.serial, direction: options.direction })
  const ending: ChannelEnding = { closingCleanly: false, peerReason: undefined }
  const liveness = startChannelLiveness(framed, options.idleTimeoutMs)
  interceptControlFrames(framed, ending)
  framed.setEager(framePayloadBytesMax)

  const closed = framed.closed.then(() => {
    liveness.stop()
    const reason = channelEndReason(framed, ending)
    if (reason) logger.warn('mirror channel failed', { code: reason.code, origin: reason.origin, error: reason.message })
    else logger.info('mirror channel closed')
    return reason
  })
  const receive = (): Promise<MirrorFrame | null> => receiveApplicationFrame(framed, ending, logger)

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
          ending.closingCleanly = true
          framed.finish(FrameType.close, encodeJson({ message: 'closing' }), new MirrorError('CLOSED', 'the channel was closed'))
        }
      }
      await framed.closed
    },
  }
  return channel
}
