import { canonicalJson, sha256Hex } from '../common/canonical.js'
import type { Hold, Policy, PolicySettingsDescription } from './types.js'

/**
 * What mirror peers exchange about retention: a fingerprint (SHA-256 hex of the canonical
 * policies and holds) and the settings behind it, so each side can say how they differ.
 * Retention and holds stay independent per system (ARCHITECTURE); a difference is
 * reported, never copied. Creation times and who made a change are left out: two systems
 * configured alike give the same fingerprint. Hold reasons are left out too (they may name
 * a case); a hold is compared by name and whether it is active.
 */
export function describePolicySettings(policies: readonly Policy[], holds: readonly Hold[]): PolicySettingsDescription {
  const policyList = [...policies]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((policy) => ({ name: policy.name, retentionDays: policy.retentionDays, criteria: JSON.parse(JSON.stringify(policy.criteria)) as Policy['criteria'] }))
  const holdList = [...holds].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)).map((hold) => ({ name: hold.name, active: hold.active }))
  return { fingerprint: sha256Hex(canonicalJson({ policies: policyList, holds: holdList })), policies: policyList, holds: holdList }
}

/**
 * Human-readable differences between two systems' settings, `a` being this system and `b`
 * the peer; empty when the fingerprints agree.
 */
export function diffPolicySettings(a: PolicySettingsDescription, b: PolicySettingsDescription): string[] {
  if (a.fingerprint === b.fingerprint) return []
  const lines: string[] = []
  const policiesA = new Map(a.policies.map((policy) => [policy.name, policy]))
  const policiesB = new Map(b.policies.map((policy) => [policy.name, policy]))
  const days = (value: number | null) => (value === null ? 'forever' : `${value} days`)
  for (const [name, policy] of policiesA) {
    const other = policiesB.get(name)
    if (!other) lines.push(`policy ${name} (${days(policy.retentionDays)}) only here`)
    else {
      if (other.retentionDays !== policy.retentionDays) lines.push(`policy ${name}: retention ${days(policy.retentionDays)} here, ${days(other.retentionDays)} on the peer`)
      if (canonicalJson(other.criteria) !== canonicalJson(policy.criteria))
        lines.push(`policy ${name}: criteria ${canonicalJson(policy.criteria)} here, ${canonicalJson(other.criteria)} on the peer`)
    }
  }
  for (const [name, policy] of policiesB) if (!policiesA.has(name)) lines.push(`policy ${name} (${days(policy.retentionDays)}) only on the peer`)
  const holdsA = new Map(a.holds.map((hold) => [hold.name, hold.active]))
  const holdsB = new Map(b.holds.map((hold) => [hold.name, hold.active]))
  const state = (active: boolean) => (active ? 'active' : 'released')
  for (const [name, active] of holdsA) {
    const other = holdsB.get(name)
    if (other === undefined) lines.push(`hold ${name} (${state(active)}) only here`)
    else if (other !== active) lines.push(`hold ${name}: ${state(active)} here, ${state(other)} on the peer`)
  }
  for (const [name, active] of holdsB) if (!holdsA.has(name)) lines.push(`hold ${name} (${state(active)}) only on the peer`)
  // Same names and values but another fingerprint: a peer with another canonical form (another firmware).
  if (lines.length === 0) lines.push(`fingerprints differ (${a.fingerprint.slice(0, 12)} here, ${b.fingerprint.slice(0, 12)} on the peer) with the same settings listed`)
  return lines
}
