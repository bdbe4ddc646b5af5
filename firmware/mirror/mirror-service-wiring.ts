import assert from 'node:assert/strict'
import { connectToPeer } from './peer-connect.js'
import { createCopyReceiver, type CopyReceiver } from './receiver.js'
import type { VerifyArchive, VerifyLocalDeps } from './verify-facts.js'
import { createVerifyCoordinator, verifyIntervalMsDefault, type VerifyCoordinator } from './verify-service.js'
import type { MirrorServiceDeps } from './mirror-service-options.js'
import type { MirrorServiceContext } from './mirror-service-context.js'
import type { PolicySettings } from './types.js'

/** What `mirror verify` reads of this system; undefined when the archive cannot take digest snapshots (verify unavailable). */
export function verifyLocalDeps(deps: MirrorServiceDeps, policySettings: () => PolicySettings): VerifyLocalDeps | undefined {
  const { archive } = deps
  if (!archive.digestSnapshot || !archive.purgedAt) return undefined
  return {
    archive: archive as VerifyArchive,
    serial: deps.identity.serial,
    fingerprint: deps.certificate.fingerprint,
    privateKeyPem: deps.certificate.privateKeyPem,
    certificatePem: deps.certificate.certificatePem,
    auditHead: () => deps.retention?.auditHead() ?? { seq: 0, hash: '' },
    policyFingerprint: () => policySettings().fingerprint,
    holdsKeeping: (ids) => deps.retention?.holdsKeeping(ids) ?? Promise.resolve(new Map()),
    purgeAuditSeq: (id, atMs) => deps.retention?.purgeAuditSeq(id, atMs) ?? null,
  }
}

/** The service's `mirror verify`: over the senders' peers, on its own channel admitted as each peer's pinned identity. */
export function createServiceVerifier(context: MirrorServiceContext): VerifyCoordinator {
  const { deps, options } = context
  return createVerifyCoordinator(
    {
      logger: context.logger,
      clock: deps.clock,
      local: verifyLocalDeps(deps, context.policySettings),
      targets: () => [...context.peers.senders.values()],
      connect: ({ peer, sender }) => {
        assert.ok(context.secret, 'started')
        return connectToPeer(context.transport, {
          host: peer.host,
          port: peer.port,
          sharedSecret: context.secret,
          timeoutMs: options.handshakeTimeoutMs,
          ...(options.idleTimeoutMs ? { idleTimeoutMs: options.idleTimeoutMs } : {}),
          admit: sender.admit,
        })
      },
      audit: context.auditing.write,
      stateDir: options.stateDir,
    },
    { intervalMs: options.verifyIntervalMs ?? verifyIntervalMsDefault },
  )
}

/** The receiver of inbound channels: copies into the pipeline, the peers' policies compared, verifies answered. */
export function createServiceReceiver(context: MirrorServiceContext, verifier: VerifyCoordinator): CopyReceiver {
  const { deps, options } = context
  const { archive } = deps
  return createCopyReceiver(
    {
      logger: context.logger,
      clock: deps.clock,
      pipeline: deps.pipeline,
      policySettings: context.policySettings,
      onPolicy: (peer, settings) => context.policies.compare({ serial: peer.serial, direction: 'inbound' }, settings),
      verify: verifier.responder,
      ...(archive.purgedAt ? { purgedAt: (id: string) => archive.purgedAt!(id) } : {}),
    },
    {
      ...(options.receiverSubmitsInFlightMax ? { submitsInFlightMax: options.receiverSubmitsInFlightMax } : {}),
      ...(options.receiverBytesInFlightMax ? { bytesInFlightMax: options.receiverBytesInFlightMax } : {}),
    },
  )
}
