import type { Clock } from '../common/clock.js'
import type { MirrorChannel } from './channel.js'
import { CopyFrameType, decodePolicy, encodePolicy, encodeQueueStatus } from './copy-protocol.js'
import type { PolicySettings } from './types.js'

/**
 * How often a connected sender looks whether its queue figures or this system's policy
 * settings changed, and tells the peer (QUEUE_STATUS, POLICY), in milliseconds.
 */
export const statusTickMs = 500
/** An unchanged queue figure is repeated this often all the same (the receiver's "as of" time), in milliseconds. */
export const queueStatusRepeatMs = 10_000
/** A paused sender re-checks its state this often, in milliseconds (resume() wakes it at once). */
export const pausedRecheckMs = 60_000

/** What the status reporter reads: this system's settings and the peer's queue figures. */
export interface StatusReporterDeps {
  clock: Clock
  policySettings: () => PolicySettings
  queueDepth?: () => { messages: number; bytes: number; estimated: boolean }
}

/**
 * Tells the peer, on an authenticated channel, this system's policy settings (again when they
 * change) and how much is still queued for it (QUEUE_STATUS, again when it changes and every
 * queueStatusRepeatMs): the peer's searches say whether they are complete.
 */
export function createStatusReporter(deps: StatusReporterDeps, target: MirrorChannel) {
  let queueSent: { key: string; atMs: number } | undefined
  let policySent = ''
  let timer: NodeJS.Timeout | undefined
  const reportQueue = (force = false): void => {
    const depth = deps.queueDepth?.()
    if (!depth || !target.isOpen) return
    const key = `${depth.messages} ${depth.bytes} ${depth.estimated}`
    const now = deps.clock.monotonicMs()
    if (!force && queueSent?.key === key && now - queueSent.atMs < queueStatusRepeatMs) return
    queueSent = { key, atMs: now }
    target.send(CopyFrameType.queueStatus, encodeQueueStatus({ queuedMessages: depth.messages, queuedBytes: depth.bytes, estimated: depth.estimated })).catch(() => undefined)
  }
  const reportPolicy = (): void => {
    const settings = deps.policySettings()
    if (settings.fingerprint === policySent || !target.isOpen) return
    policySent = settings.fingerprint
    target.send(CopyFrameType.policy, encodePolicy(settings)).catch(() => undefined)
  }
  return {
    reportQueue,
    /** Sends the settings and the queue now, then watches both. Only ever on an authenticated channel: the settings are not for strangers. */
    async start(): Promise<void> {
      const settings = deps.policySettings()
      policySent = settings.fingerprint
      await target.send(CopyFrameType.policy, encodePolicy(settings))
      reportQueue(true)
      timer = setInterval(() => {
        reportQueue()
        reportPolicy()
      }, statusTickMs).unref()
    },
    stop(): void {
      clearInterval(timer)
    },
  }
}

/** What a paused session needs of its sender. */
export interface PausedSessionHost {
  deps: StatusReporterDeps
  /** True while the sender is paused and not stopped. */
  stillPaused: () => boolean
  /** Resolves at a wake-up of the sender's control signal or after `timeoutMs`. */
  waitControl: (timeoutMs: number) => Promise<unknown>
  /** The peer's policy settings arrived. */
  onPeerPolicy: (settings: PolicySettings) => void
}

/**
 * While paused: a channel that copies nothing but keeps telling the peer how much waits for
 * it, so its searches say they may be incomplete (a paused peer would otherwise look caught
 * up). Returns when resumed or stopped, or when the channel ends.
 */
export async function runPausedSession(host: PausedSessionHost, target: MirrorChannel): Promise<void> {
  const status = createStatusReporter(host.deps, target)
  const reader = (async () => {
    for (;;) {
      const frame = await target.receive()
      if (frame === null) return
      if (frame.type === CopyFrameType.policy) host.onPeerPolicy(decodePolicy(frame.payload))
    }
  })().catch(() => undefined)
  try {
    await status.start()
    while (host.stillPaused() && target.isOpen) await Promise.race([host.waitControl(pausedRecheckMs), target.closed])
  } finally {
    status.stop()
    await target.close()
    await reader
  }
}
