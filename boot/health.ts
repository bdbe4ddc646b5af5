import type { Identity, Disk, RaidStatus, Nic, VolumeUsage } from '../hal/types.js'
import type { ModelProfile } from '../config/models.js'
import { formatBytes } from '../firmware/control/command-table.js'

/** The hardware facts one health evaluation looks at. */
export interface HardwareFacts {
  identity: Identity
  profile: ModelProfile | undefined
  disks: Disk[]
  raid: RaidStatus
  nics: Nic[]
  volume: VolumeUsage
  /** Free bytes below which the store refuses new mail. */
  freeBytesMin: number
  /** Whether this is real hardware: a VM's disk/NIC counts are not held against the model profile. */
  enforceProfile: boolean
}

export interface ServiceHealth {
  ok: boolean
  detail: string
}

export interface SystemHealth {
  state: 'ok' | 'degraded'
  /** Why the system is degraded, one short sentence each; empty when ok. */
  reasons: string[]
}

/**
 * Decides whether the appliance is healthy. Pure: a function of the facts, so the boot
 * stage, `show status` and tests agree. Non-fatal problems (a degraded array, a link down,
 * an unknown model, low space, an unhealthy service) make the system degraded with a
 * reason each; fatal problems are decided at boot, not here.
 */
export function evaluateHealth(facts: HardwareFacts, services: Record<string, ServiceHealth> = {}): SystemHealth {
  const reasons: string[] = []
  const { identity, profile } = facts
  if (!profile) reasons.push(`unknown model ${identity.model}`)
  for (const disk of facts.disks) {
    if (disk.health === 'failed' || disk.health === 'failing') reasons.push(`disk ${disk.device} ${disk.health}`)
  }
  for (const array of facts.raid.arrays) {
    if (array.state === 'clean') continue
    const bad = array.members.filter((member) => member.state !== 'active' && member.state !== 'spare').map((member) => `${member.device} ${member.state}`)
    const progress = array.rebuildPercent === null ? '' : ` ${array.rebuildPercent}%`
    reasons.push(`raid ${array.name} ${array.state}${progress}${bad.length ? ` (${bad.join(', ')})` : ''}`)
  }
  for (const nic of facts.nics) {
    if (nic.link === 'down') reasons.push(`nic ${nic.name} link down`)
  }
  if (profile && facts.enforceProfile) {
    if (facts.nics.length < profile.nicCount) reasons.push(`${facts.nics.length} NIC(s), model ${profile.model} has ${profile.nicCount}`)
    if (facts.disks.length !== profile.diskCount) reasons.push(`${facts.disks.length} disk(s), model ${profile.model} has ${profile.diskCount}`)
    if (profile.raidLevel !== 'none' && !facts.raid.present) reasons.push(`no RAID array, model ${profile.model} uses ${profile.raidLevel}`)
  }
  if (facts.volume.freeBytes < facts.freeBytesMin) {
    reasons.push(`data volume free ${formatBytes(facts.volume.freeBytes)} below ${formatBytes(facts.freeBytesMin)}: new mail is refused`)
  }
  for (const [name, health] of Object.entries(services)) {
    if (!health.ok) reasons.push(`service ${name}: ${health.detail}`)
  }
  return { state: reasons.length === 0 ? 'ok' : 'degraded', reasons }
}
