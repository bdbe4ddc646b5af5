import { createHash } from 'node:crypto'
import type { Logger } from '../common/logger.js'
import type { PolicySettings, PolicySettingsDiff } from './types.js'

/** Distinct (peer, pair of fingerprints) warnings remembered, so each is logged once. */
const warningsRememberedMax = 1_024

/** The settings of a system with no retention policy and no hold (used when none are injected). */
export function emptyPolicySettings(): PolicySettings {
  return {
    fingerprint: createHash('sha256')
      .update(JSON.stringify({ policies: [], holds: [] }))
      .digest('hex'),
    policies: [],
    holds: [],
  }
}

/**
 * A plain comparison used when firmware/policy's diff is not injected: by policy and hold name.
 * Pure. @returns one sentence per difference; empty when the fingerprints agree
 */
export const basicPolicyDiff: PolicySettingsDiff = (local, peer) => {
  const days = (value: number | null): string => (value === null ? 'kept forever' : `${value} days`)
  if (local.fingerprint === peer.fingerprint) return []
  const differences: string[] = []
  const peerPolicies = new Map(peer.policies.map((policy) => [policy.name, policy]))
  const localNames = new Set(local.policies.map((policy) => policy.name))
  for (const policy of local.policies) {
    const other = peerPolicies.get(policy.name)
    if (!other) differences.push(`retention policy "${policy.name}" exists only here`)
    else if (other.retentionDays !== policy.retentionDays || other.criteria !== policy.criteria) {
      differences.push(`retention policy "${policy.name}": ${days(policy.retentionDays)} (${policy.criteria}) here, ${days(other.retentionDays)} (${other.criteria}) on the peer`)
    }
  }
  for (const policy of peer.policies) if (!localNames.has(policy.name)) differences.push(`retention policy "${policy.name}" exists only on the peer`)
  const peerHolds = new Map(peer.holds.map((hold) => [hold.name, hold]))
  const localHolds = new Set(local.holds.map((hold) => hold.name))
  for (const hold of local.holds) {
    const other = peerHolds.get(hold.name)
    if (!other) differences.push(`hold "${hold.name}" exists only here`)
    else if (other.active !== hold.active) differences.push(`hold "${hold.name}" is ${hold.active ? 'active' : 'released'} here, ${other.active ? 'active' : 'released'} on the peer`)
  }
  for (const hold of peer.holds) if (!localHolds.has(hold.name)) differences.push(`hold "${hold.name}" exists only on the peer`)
  return differences.length > 0 ? differences : ['retention or hold settings differ (different fingerprints)']
}

/**
 * Compares each peer's reported settings with ours and warns once per peer and pair of
 * fingerprints: retention and holds stay independent per system, but searches on the two
 * systems then give different results, which a technician must know.
 */
export function createPolicyComparer(deps: { logger: Logger; policySettings: () => PolicySettings; diff: PolicySettingsDiff }) {
  const warned = new Set<string>()
  return {
    /** @returns the differences (empty when none), logged once per peer and pair of fingerprints */
    compare(peer: { serial: string; direction: 'inbound' | 'outbound' }, settings: PolicySettings): string[] {
      const local = deps.policySettings()
      let differences: string[]
      try {
        differences = local.fingerprint === settings.fingerprint ? [] : deps.diff(local, settings)
      } catch (error) {
        deps.logger.error('cannot compare retention and hold settings with a peer', { peerSerial: peer.serial, error })
        differences = ['retention or hold settings differ (could not compare them)']
      }
      const key = `${peer.serial} ${settings.fingerprint} ${local.fingerprint}`
      if (differences.length > 0 && !warned.has(key)) {
        if (warned.size >= warningsRememberedMax) warned.clear()
        warned.add(key)
        deps.logger.warn('mirror peer has different retention or hold settings; searches on the two systems can give different results', {
          peerSerial: peer.serial,
          direction: peer.direction,
          peerPolicyFingerprint: settings.fingerprint,
          policyFingerprint: local.fingerprint,
          differences,
        })
      }
      return differences
    },
  }
}
