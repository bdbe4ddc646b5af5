import { join } from 'node:path'
import { randomInt } from 'node:crypto'
import { createRandom } from '../firmware/common/clock.js'
import { modelProfile } from '../config/models.js'
import type { IdentityCertificate } from '../firmware/mirror/certificate.js'
import { createMirrorService, type MirrorService } from '../firmware/mirror/mirror-service.js'
import type { MirrorServiceOptions } from '../firmware/mirror/mirror-service-options.js'
import { canonicalJson, type PolicyService } from '../firmware/policy/index.js'
import type { StoreStage } from './compose-store.js'
import type { ComposeContext } from './compose-context.js'
import { managed, type ManagedService } from './managed-service.js'

/** The mirror service, or why there is none. */
export interface MirrorStage {
  mirror: MirrorService | undefined
  /** Why mirroring is off (for `show mirror` and status); null when it runs. */
  disabledReason: string | null
  /** The mirror service entry when it runs, else none. */
  services: ManagedService[]
}

/**
 * Why this system does not mirror, or null: mirroring needs it enabled, a model that may
 * mirror (or peers configured, so that the peers learn why it refuses) and a shared secret.
 */
export function mirrorDisabledReason(context: Pick<ComposeContext, 'config' | 'identity'>): string | null {
  const { config, identity } = context
  if (!config.mirror.enabled) return 'disabled in config (mirror.enabled)'
  if (!modelProfile(identity.model)?.mirroringAllowed && config.mirror.peers.length === 0) return `model ${identity.model} does not mirror (models 450 and up do)`
  if (!config.mirror.sharedSecret) return 'no mirror.sharedSecret configured (generate one with `mailkeep mirror generate-secret`)'
  return null
}

/**
 * The mirror stage: the mirror service over the store stage's archive and pipeline (copies
 * received go through the same pipeline; each local ingest wakes the senders), or the
 * reason it is off. Pure.
 */
export function composeMirror(context: ComposeContext, store: Pick<StoreStage, 'archive' | 'pipeline' | 'policy' | 'audit'>, certificate: IdentityCertificate): MirrorStage {
  const disabledReason = mirrorDisabledReason(context)
  if (disabledReason) return { mirror: undefined, disabledReason, services: [] }
  const { logger, clock, identity } = context
  const mirror = createMirrorService(
    {
      logger,
      clock,
      random: createRandom(randomInt(2 ** 31)),
      archive: store.archive,
      pipeline: store.pipeline,
      identity: { model: identity.model, serial: identity.serial, firmwareVersion: identity.firmwareVersion },
      certificate,
      onHandshake: (event) => logger.child('audit').info('mirror handshake', { ...event }),
      audit: (entry) => store.audit(entry),
      ...retentionForMirror(store.policy),
    },
    mirrorOptions(context),
  )
  store.pipeline.addListener((result, delivery) => mirror.notify(result, delivery))
  const listeners = (): Record<string, string> => {
    const address = mirror.address()
    return address ? { mirror: `${address.host}:${address.port}` } : {}
  }
  return { mirror, disabledReason, services: [managed('mirror', mirror, listeners)] }
}

/**
 * What the mirror service reads from retention: the audit head, holds and purge entries for
 * `mirror verify`, and the settings peers compare (ARCHITECTURE: independent per system,
 * differences reported). Criteria travel as canonical JSON text.
 */
function retentionForMirror(policy: PolicyService) {
  return {
    retention: {
      auditHead: () => policy.auditHead(),
      holdsKeeping: (ids: readonly string[]) => policy.holdsKeeping(ids),
      purgeAuditSeq: (id: string, atMs: number) => policy.purgeAuditSeq(id, atMs),
    },
    policySettings: () => {
      const settings = policy.describe()
      return { ...settings, policies: settings.policies.map((entry) => ({ name: entry.name, retentionDays: entry.retentionDays, criteria: canonicalJson(entry.criteria) })) }
    },
  }
}

/** The mirror service's options, every value from the configuration (config/schema.ts has the defaults). */
function mirrorOptions(context: ComposeContext): MirrorServiceOptions {
  const { config } = context
  const { mirror } = config
  return {
    host: mirror.host,
    port: mirror.port,
    sharedSecret: mirror.sharedSecret!,
    peers: mirror.peers,
    stateDir: join(config.dataDir, 'mirror', 'peers'),
    localSourcesEnabled: config.smtp.enabled || config.journal.sources.some((source) => source.enabled),
    acceptJoins: mirror.acceptJoins,
    unreachableAlertMs: mirror.unreachableAlertMs,
    verifyIntervalMs: mirror.verifyIntervalMs,
    batchMessagesMax: mirror.batchMessagesMax,
    batchBytesMax: mirror.batchBytesMax,
    inflightBatchesMax: mirror.inflightBatchesMax,
    retryDelayMsMin: Math.min(mirror.retryDelayMsMin, mirror.retryDelayMsMax),
    retryDelayMsMax: mirror.retryDelayMsMax,
    handshakeTimeoutMs: mirror.handshakeTimeoutMs,
    ackTimeoutMs: mirror.ackTimeoutMs,
    idleTimeoutMs: mirror.idleTimeoutMs,
  }
}
