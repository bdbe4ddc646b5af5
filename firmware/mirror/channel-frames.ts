import type { Logger } from '../common/logger.js'
import { MirrorError } from './errors.js'
import {
  FrameType,
  applicationFrameTypeMin,
  decodeRefusal,
  encodeJson,
  frameTypeName,
  parseJsonObject,
  sanitizePeerText,
  refusalMessageLengthMax,
  type FramedSocket,
  type MirrorFrame,
} from './protocol.js'

/** How a channel is ending, as far as its control frames (and our own close) have said. */
export interface ChannelEnding {
  /** A CLOSE came from the peer, or we closed cleanly: a bare connection end is then no failure. */
  closingCleanly: boolean
  /** Why the peer refused, from its REFUSE frame (or why that frame could not be read). */
  peerReason: MirrorError | undefined
}

/**
 * Lets the framed socket swallow keepalives and note CLOSE and REFUSE as they arrive, so why
 * the peer is leaving is remembered even if nobody is receiving right now.
 */
export function interceptControlFrames(framed: FramedSocket, ending: ChannelEnding): void {
  framed.intercept = (frame) => {
    if (frame.type === FrameType.keepalive) return true
    if (frame.type === FrameType.close) ending.closingCleanly = true
    if (frame.type === FrameType.refuse) {
      try {
        ending.peerReason = decodeRefusal(frame.payload)
      } catch (error) {
        ending.peerReason = error as MirrorError
      }
    }
    return false
  }
}

/** Why a closed channel ended: the peer's refusal, else the socket's failure unless the close was clean; null for a clean close. */
export function channelEndReason(framed: FramedSocket, ending: ChannelEnding): MirrorError | null {
  const failure = framed.failure
  return ending.peerReason ?? (ending.closingCleanly && (!failure || failure.code === 'CLOSED' || failure.code === 'CONNECTION_CLOSED') ? null : (failure ?? null))
}

/**
 * The next application frame of an authenticated channel, or null once it closed cleanly (a
 * peer's CLOSE is answered with ours). A peer's REFUSE ends the channel with its reason; any
 * other control frame is a PROTOCOL refusal.
 * @throws MirrorError why the channel failed (peer REFUSE, TIMEOUT, PROTOCOL, CONNECTION_CLOSED)
 */
export async function receiveApplicationFrame(framed: FramedSocket, ending: ChannelEnding, logger: Logger): Promise<MirrorFrame | null> {
  let frame: MirrorFrame
  try {
    frame = await framed.receive()
  } catch (error) {
    if (ending.closingCleanly && (error as MirrorError).code !== 'TIMEOUT') return null
    throw error
  }
  if (frame.type >= applicationFrameTypeMin) return frame
  if (frame.type === FrameType.close) {
    ending.closingCleanly = true
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

/** The message of a peer's CLOSE frame, sanitised; a malformed one is reported, not fatal. */
function readCloseMessage(payload: Buffer): string {
  try {
    const message = parseJsonObject(payload, 'CLOSE').message
    return typeof message === 'string' ? sanitizePeerText(message, refusalMessageLengthMax) : '(none)'
  } catch {
    return '(malformed)'
  }
}
