import assert from 'node:assert/strict'
import { mkdir } from 'node:fs/promises'
import type { AdmitPeer } from './handshake.js'
import { createMirrorListener, type MirrorListener } from './listener.js'
import { toMirrorSecret } from './secret.js'
import { effectivePeers } from './peer-state.js'
import type { CopyReceiver } from './receiver.js'
import type { VerifyCoordinator } from './verify-service.js'
import type { PeerOperations } from './peer-operations.js'
import { ineligibleModelWarning, mirrorServiceDefaults, noLocalSourceWarning } from './mirror-service-options.js'
import { retainBacklog, startSender } from './mirror-senders.js'
import type { MirrorServiceContext } from './mirror-service-context.js'

/** The parts the service starts and stops beside its senders. */
export interface MirrorServiceParts {
  receiver: CopyReceiver
  verifier: VerifyCoordinator
  operations: PeerOperations
  admitInbound: AdmitPeer
}

/** The listener: inbound channels to the receiver, admission by the peers' senders, failures of pinned certificates never limiting others. */
function createServiceListener(context: MirrorServiceContext, parts: MirrorServiceParts): MirrorListener {
  const { options, secret } = context
  assert.ok(secret, 'started')
  return createMirrorListener(
    {
      ...context.transport,
      audit: context.auditing.handshake,
      onChannel: (channel) => parts.receiver.handle(channel),
      admit: parts.admitInbound,
      isPinnedFingerprint: (fingerprint) => [...context.peers.senders.values()].some(({ sender }) => sender.pinned().fingerprint === fingerprint),
    },
    {
      host: options.host,
      port: options.port,
      sharedSecret: secret,
      handshakeTimeoutMs: options.handshakeTimeoutMs,
      connectionsMax: options.connectionsMax ?? mirrorServiceDefaults.connectionsMax,
      ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
    },
  )
}

/**
 * Derives the secret, loads the queue state, listens and starts a sender per peer.
 * @throws MirrorError SECRET_WEAK, LISTEN_FAILED; fs errors reading stateDir
 */
export async function startService(context: MirrorServiceContext, parts: MirrorServiceParts): Promise<void> {
  const { deps, options, store, peers, logger } = context
  assert.equal(context.started, false, 'start() once')
  context.started = true
  context.secret = await toMirrorSecret(options.sharedSecret)
  context.storeId = deps.archive.storeId()
  context.transport.identity = { ...deps.identity, storeId: context.storeId }
  await mkdir(options.stateDir, { recursive: true, mode: 0o700 })
  peers.overlay = await store.readOverlay()
  peers.pendingJoins = await store.readJoins()
  const effective = effectivePeers(options.peers, peers.overlay)
  const records = await Promise.all(effective.map((peer) => store.read(peer)))
  // A model below 450 does not listen, but its senders still say hello: the handshake then
  // refuses with MODEL_NOT_ELIGIBLE, so both this system and each peer show why nothing is copied.
  if (context.eligible) {
    context.listener = createServiceListener(context, parts)
    await context.listener.start()
  }
  effective.forEach((peer, index) => startSender(context, peer, records[index]!))
  await parts.verifier.start()
  retainBacklog(context)
  context.pollTimer = setInterval(() => void context.tracker.refresh(), context.pollIntervalMs).unref()
  logger.info('mirror service started', {
    address: context.listener?.address() ?? null,
    peers: effective.map((peer) => `${peer.host}:${peer.port}`),
    localSourcesEnabled: options.localSourcesEnabled,
  })
  if (!context.eligible) logger.warn(ineligibleModelWarning(deps.identity.model))
  else if (!options.localSourcesEnabled) logger.warn(noLocalSourceWarning)
}

/** Stops the peer operations, the verifier, then the senders and the listener side by side. */
export async function stopService(context: MirrorServiceContext, parts: MirrorServiceParts): Promise<void> {
  clearInterval(context.pollTimer)
  await parts.operations.settled()
  await parts.verifier.stop()
  await Promise.all([...[...context.peers.senders.values()].map(({ sender }) => sender.stop()), context.listener?.stop()])
  context.logger.info('mirror service stopped')
}
