import { connectToPeer } from './peer-connect.js'
import type { MirrorChannel } from './channel.js'
import type { AdmitPeer } from './handshake.js'
import { runCopySession } from './copy-session.js'
import { pausedRecheckMs, runPausedSession } from './sender-status-reporter.js'
import { isActive, type SenderContext } from './sender-context.js'
import { acknowledgeBatch, returnOwnOf, setPositions } from './sender-queue.js'
import { markConnected, markStopped, recordAcknowledged, recordFailure } from './sender-link.js'
import type { PolicySettings } from './types.js'

/** How long stop() waits for the sender's loop to finish, in milliseconds. */
export const senderStopTimeoutMs = 5_000

/** The peer's policy settings arrived on a channel to `serial`: kept with how they differ from ours. */
function onPeerPolicy(context: SenderContext, serial: string, settings: PolicySettings): void {
  const { link, peer } = context
  link.peerPolicyFingerprint = settings.fingerprint
  link.policyMismatch = context.deps.onPolicy?.({ host: peer.host, port: peer.port, serial }, settings) ?? []
}

/** One connection attempt to the peer, admitted as this peer's pinned identity. */
function connectOnce(context: SenderContext, admit: AdmitPeer): Promise<MirrorChannel> {
  const { deps, options, peer } = context
  return (deps.connect ?? connectToPeer)(deps.transport, {
    host: peer.host,
    port: peer.port,
    sharedSecret: options.sharedSecret,
    timeoutMs: options.handshakeTimeoutMs,
    ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    admit,
  })
}

/** One authenticated connection: runs until it fails (throws) or the sender stops or pauses (returns); see copy-session.ts. */
function copySession(context: SenderContext, target: MirrorChannel): Promise<void> {
  const { deps, link } = context
  return runCopySession(
    {
      deps,
      options: context.options,
      logger: context.logger,
      record: context.record,
      work: context.work,
      batches: context.batches,
      splitThresholdEntries: context.splitThresholdEntries,
      active: () => isActive(context),
      queueEpoch: () => context.queueEpoch,
      setPositions: (next) => setPositions(context, next),
      acknowledged: (batch, rejected) => acknowledgeBatch(context, batch, rejected),
      returnOwn: () => returnOwnOf(context),
      onAcknowledged: (batch, rejected) => recordAcknowledged(link, batch, rejected, deps.clock.now()),
      onCaughtUp() {
        link.consecutiveFailures = 0
      },
      onPeerPolicy: (settings) => onPeerPolicy(context, target.peer.serial, settings),
    },
    target,
  )
}

/** Paused: a status-only channel to the peer while it answers (sender-status-reporter.ts); otherwise a wait until resumed or pausedRecheckMs. */
async function reportWhilePaused(context: SenderContext, admit: AdmitPeer): Promise<void> {
  const { record, control } = context
  let target: MirrorChannel
  try {
    target = await connectOnce(context, admit)
  } catch (error) {
    context.logger.debug('paused mirror peer cannot be told its queue', { error })
    await control.wait(pausedRecheckMs)
    return
  }
  context.channel = target
  try {
    await runPausedSession(
      {
        deps: context.deps,
        stillPaused: () => !context.stopped && record.paused,
        waitControl: (timeoutMs) => control.wait(timeoutMs),
        onPeerPolicy: (settings) => onPeerPolicy(context, target.peer.serial, settings),
      },
      target,
    )
  } finally {
    context.channel = undefined
  }
  // The peer closed the channel: wait a little before the next status channel.
  if (!context.stopped && record.paused) await control.wait(context.options.retryDelayMsMax)
}

/**
 * The sender's loop until it stops: connect, run a copy session (or, paused, a status-only
 * one), and after any failure wait a capped, jittered backoff before the next attempt. Saves
 * the record when it ends.
 */
export async function runSenderLoop(context: SenderContext, admit: AdmitPeer): Promise<void> {
  const { deps, link, record, control } = context
  const failureDeps = { clock: deps.clock, random: deps.random, logger: context.logger, limits: context.options }
  while (!context.stopped) {
    if (record.paused) {
      link.state = 'paused'
      link.nextRetryAtMs = null
      await reportWhilePaused(context, admit)
      continue
    }
    let target: MirrorChannel
    try {
      target = await connectOnce(context, admit)
    } catch (error) {
      // nextRetryAtMs stays set through the attempt: "retrying since then", until it succeeds.
      await control.wait(recordFailure(link, error, failureDeps))
      continue
    }
    context.channel = target
    try {
      if (!isActive(context)) continue
      markConnected(link, deps.clock, context.logger, { serial: target.peer.serial, cursor: record.cursor })
      await copySession(context, target)
    } catch (error) {
      const delayMs = recordFailure(link, error, failureDeps)
      await target.close()
      await control.wait(delayMs)
    } finally {
      await target.close()
      context.channel = undefined
      if (link.state === 'connected') link.connectedSinceMs = null
    }
  }
  await context.persist.flush()
}

/**
 * Stops the sender: wakes the loop's waits and awaits it up to senderStopTimeoutMs (a connect
 * attempt still running then is closed when it ends), then saves the record.
 */
export async function stopSender(context: SenderContext, running: Promise<void> | undefined): Promise<void> {
  context.stopped = true
  context.work.notify()
  context.control.notify()
  if (running) {
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, senderStopTimeoutMs).unref()
    })
    await Promise.race([running, timedOut])
    clearTimeout(timer)
  }
  await context.persist.flush()
  markStopped(context.link)
}
