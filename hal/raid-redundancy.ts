import assert from 'node:assert/strict'

/**
 * Whether an md array has lost more members than its RAID level tolerates, i.e. whether it
 * still holds all its data. One rule for hal/linux (deciding `failed` from /proc/mdstat's
 * `[UU_]` string) and hal/sim (deciding `failed` after simulated disk failures), so both
 * report the same state for the same situation.
 *
 * The rule, per level (`rolesInSync[i]` is whether role i holds current data):
 * - raid1: tolerates all but one member out of sync;
 * - raid4, raid5: tolerate one;
 * - raid6: tolerates two;
 * - raid10: roles form consecutive groups of `copies` (md's default "near" layout, 2 copies),
 *   and each group needs one member in sync. This is exact for near layouts with a role count
 *   divisible by the copy count (every appliance model); for far/offset layouts and odd counts
 *   it is an approximation;
 * - raid0, linear and any level not listed: tolerate none.
 *
 * @param level md level name as the kernel prints it (raid1, raid5, raid6, raid10, …)
 * @param copies raid10 copies per chunk (mdstat's "2 near-copies"); ignored for other levels
 */
export function isBeyondRedundancy(level: string, rolesInSync: readonly boolean[], copies = 2): boolean {
  assert.ok(Number.isInteger(copies) && copies >= 1, `copies must be a positive integer, got ${copies}`)
  const outOfSync = rolesInSync.filter((inSync) => !inSync).length
  switch (level) {
    case 'raid1':
      return rolesInSync.length > 0 && outOfSync >= rolesInSync.length
    case 'raid4':
    case 'raid5':
      return outOfSync > 1
    case 'raid6':
      return outOfSync > 2
    case 'raid10':
      for (let start = 0; start < rolesInSync.length; start += copies) {
        if (!rolesInSync.slice(start, start + copies).some(Boolean)) return true
      }
      return false
    default:
      return outOfSync > 0
  }
}
