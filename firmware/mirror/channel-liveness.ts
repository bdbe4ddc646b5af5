import { MirrorError } from './errors.js'
import { FrameType, type FramedSocket } from './protocol.js'

/** Keepalives go out this many times per idle timeout, so a live but quiet peer is never dropped. */
const keepalivesPerIdleTimeout = 3

/**
 * Keeps an authenticated channel alive and drops a dead one: a KEEPALIVE every
 * idleTimeoutMs / keepalivesPerIdleTimeout, and a TIMEOUT refusal after idleTimeoutMs without a
 * byte from the peer (not counted while reading is paused because our own consumer is behind).
 * Timers are unref'ed. @returns stop(), which clears both timers
 */
export function startChannelLiveness(framed: FramedSocket, idleTimeoutMs: number): { stop(): void } {
  const idleTimer = setTimeout(onIdle, idleTimeoutMs).unref()
  const keepaliveTimer = setInterval(
    () => {
      framed.send(FrameType.keepalive).catch(() => undefined)
    },
    Math.floor(idleTimeoutMs / keepalivesPerIdleTimeout),
  ).unref()

  function onIdle(): void {
    // Reading is paused while our consumer is behind: silence is then ours, not the peer's.
    if (framed.paused) {
      idleTimer.refresh()
      return
    }
    framed.refuse(
      new MirrorError('TIMEOUT', `no data from the peer for ${idleTimeoutMs} ms`, {
        expected: `data within ${idleTimeoutMs} ms`,
        actual: null,
      }),
    )
  }

  framed.onActivity = () => idleTimer.refresh()
  return {
    stop(): void {
      clearTimeout(idleTimer)
      clearInterval(keepaliveTimer)
    },
  }
}
