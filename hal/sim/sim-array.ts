import type { Logger } from '../../firmware/common/logger.js'
import { isBeyondRedundancy } from '../raid-redundancy.js'
import type { RaidArray, RaidMember } from '../types.js'
import type { SimDisk, SimLayout } from './sim-layout.js'

/** The simulated md0 over the disks' member states: see createSimArray. */
export interface SimArray {
  readonly raidLevel: SimLayout['raidLevel']
  /** Roles of the array (the profile's disk count; 0 without RAID). */
  readonly roleCount: number
  /** True once more members failed than the level tolerates: failed for good. */
  lost(): boolean
  /** Marks the array failed for good when it is now beyond redundancy (logged once). */
  checkRedundancy(): void
  /** md0 as mdstat/mdadm would report it now. */
  state(): RaidArray
}

/**
 * md0 of level `raidLevel` over roles 0…roleCount − 1 of `disks` (the array reads the disks'
 * `member` and `rebuildTicksDone`, which the fault knobs change). A role whose disk is absent
 * is `missing`; a disk past the roles is a spare. A disk list shorter than the roles can be
 * lost from the start (a diskCount override far below the profile).
 */
export function createSimArray(deps: { logger: Logger }, disks: readonly SimDisk[], raidLevel: SimLayout['raidLevel'], roleCount: number, rebuildTicks: number): SimArray {
  const rolesInSync = (): boolean[] => Array.from({ length: roleCount }, (_unused, role) => disks[role]?.member === 'active')
  // A diskCount override far enough below the profile leaves an array that was never whole.
  let arrayLost = raidLevel !== 'none' && isBeyondRedundancy(raidLevel, rolesInSync())

  function state(): RaidArray {
    const members: RaidMember[] = []
    for (let role = 0; role < Math.max(roleCount, disks.length); role++) {
      const disk = disks[role]
      if (disk?.member) members.push({ device: disk.device, state: disk.member })
      else if (role < roleCount) members.push({ device: `slot ${role}`, state: 'missing' })
    }
    const rebuilding = disks.filter((disk) => disk.member === 'rebuilding')
    const slowest = Math.min(...rebuilding.map((disk) => disk.rebuildTicksDone))
    let arrayState: RaidArray['state'] = 'clean'
    if (arrayLost) arrayState = 'failed'
    else if (rebuilding.length > 0) arrayState = 'rebuilding'
    else if (rolesInSync().includes(false)) arrayState = 'degraded'
    return {
      name: 'md0',
      level: raidLevel,
      state: arrayState,
      memberCountExpected: roleCount,
      members,
      // Floored to a tenth, as mdstat shows it, so 100 is only ever reached by being clean.
      rebuildPercent: arrayState === 'rebuilding' ? Math.floor((slowest * 1000) / rebuildTicks) / 10 : null,
    }
  }

  return {
    raidLevel,
    roleCount,
    lost: () => arrayLost,
    checkRedundancy(): void {
      if (arrayLost || raidLevel === 'none' || !isBeyondRedundancy(raidLevel, rolesInSync())) return
      arrayLost = true
      deps.logger.warn('sim: md0 lost more members than it tolerates: array failed', { level: raidLevel })
    },
    state,
  }
}
