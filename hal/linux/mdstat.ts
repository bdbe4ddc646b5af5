import { isBeyondRedundancy } from '../raid-redundancy.js'
import type { RaidArray, RaidMember, RaidState } from '../types.js'

/**
 * Parser of /proc/mdstat, the kernel's summary of md software RAID. Pure (text in, arrays
 * out) so it is tested on real-format fixtures without a RAID machine.
 *
 * What /proc/mdstat can and cannot say, and how this parser fills the gap:
 * - The number in `sda1[0]` is the member's descriptor number, not its role (slot) in the
 *   array, and `[UU_]` is indexed by role. So when more unflagged members are listed than
 *   there are `U`s, the extra ones are being (or waiting to be) rebuilt; they are taken to be
 *   the ones with the highest descriptor numbers, because a newly added disk gets the next
 *   free number. `mdadm --detail` (parseMdadmDetail) gives the exact mapping and is preferred
 *   by hal/linux when it is available.
 * - Roles that are out of sync and not explained by a faulty or rebuilding member are
 *   reported as members in state `missing`, named `slot N` after the `_` positions.
 * - An inactive array (not started: too few members assembled) has no level and no role
 *   string: it is reported `failed`, level `unknown`, its members as listed.
 * - `check` and `repair` are scrubs of a healthy array, not rebuilds: they leave it `clean`.
 *   `recovery`, `resync` and `reshape` (including `resync=DELAYED`/`PENDING`, at 0%) are
 *   reported as `rebuilding`.
 */

interface MdstatDevice {
  name: string
  /** The kernel's descriptor number, the `[n]` after the name. */
  descriptor: number
  /** Flag letters from `(F)`, `(S)`, `(R)`, `(W)`, `(J)`. */
  flags: string
}

const arrayHeaderPattern = /^(md[\w.-]*)\s*:\s*(\S.*)$/
const devicePattern = /^([^\s[\]()]+)\[(\d+)\]((?:\([A-Z]\))*)$/
const rolesPattern = /\[(\d+)\/(\d+)\]\s*\[([U_]+)\]/
const copiesPattern = /(\d+)\s+(?:near|far|offset)-copies/
const progressPattern = /\b(recovery|resync|reshape|check|repair)\s*=\s*(?:([\d.]+)%|(DELAYED|PENDING))/
const rebuildKinds = new Set(['recovery', 'resync', 'reshape'])

/**
 * Parses the text of /proc/mdstat into arrays, in the order the kernel lists them.
 * A file without arrays (only `Personalities :` and `unused devices`) gives `[]`.
 * Never throws: lines it does not recognise (bitmap, read_ahead) are skipped.
 */
export function parseMdstat(text: string): RaidArray[] {
  const arrays: RaidArray[] = []
  const lines = text.split('\n')
  for (let index = 0; index < lines.length; index++) {
    const header = arrayHeaderPattern.exec(lines[index] ?? '')
    if (!header) continue
    // An array's detail lines are indented; a blank (or whitespace-only) line ends them.
    const body: string[] = []
    while (index + 1 < lines.length && /^\s+\S/.test(lines[index + 1] ?? '')) body.push(lines[++index] ?? '')
    arrays.push(parseArray(header[1] ?? '', header[2] ?? '', body.join('\n')))
  }
  return arrays
}

function parseDevice(token: string): MdstatDevice | null {
  const match = devicePattern.exec(token)
  if (!match) return null
  return { name: match[1] ?? '', descriptor: Number(match[2]), flags: match[3] ?? '' }
}

function parseArray(name: string, headerRest: string, body: string): RaidArray {
  const tokens = headerRest.trim().split(/\s+/)
  const active = tokens[0] === 'active'
  let position = 1
  // `(auto-read-only)` and `(read-only)` sit between the state and the level.
  while (tokens[position]?.startsWith('(')) position++
  let level = 'unknown'
  const levelToken = tokens[position]
  if (active && levelToken !== undefined && parseDevice(levelToken) === null) {
    level = levelToken
    position++
  }
  const devices = tokens
    .slice(position)
    .map(parseDevice)
    .filter((device): device is MdstatDevice => device !== null)
    // A journal device holds no copy of the data: it is not a member in the RAID sense.
    .filter((device) => !device.flags.includes('(J)'))
    .sort((left, right) => left.descriptor - right.descriptor)
  const member = (device: MdstatDevice, state: RaidMember['state']): RaidMember => ({ device: `/dev/${device.name}`, state })
  const faulty = devices.filter((device) => device.flags.includes('(F)'))
  const listed = devices.filter((device) => !device.flags.includes('(F)'))

  if (!active) {
    return {
      name,
      level,
      state: 'failed',
      memberCountExpected: devices.length,
      members: [...faulty.map((device) => member(device, 'faulty')), ...listed.map((device) => member(device, 'spare'))].sort(byDevice),
      rebuildPercent: null,
    }
  }

  const spares = listed.filter((device) => device.flags.includes('(S)'))
  const replacements = listed.filter((device) => device.flags.includes('(R)') && !device.flags.includes('(S)'))
  const others = listed.filter((device) => !device.flags.includes('(S)') && !device.flags.includes('(R)'))

  const roles = rolesPattern.exec(body)
  // raid0 and linear print no role string: every listed member holds a role, in sync unless faulty.
  const rolesInSync = roles ? [...(roles[3] ?? '')].map((character) => character === 'U') : [...others.map(() => true), ...faulty.map(() => false)]
  const memberCountExpected = roles ? Number(roles[1]) : rolesInSync.length
  const inSyncCount = rolesInSync.filter(Boolean).length
  const rebuildingCount = Math.max(0, others.length - inSyncCount)
  const rebuilding = others.slice(others.length - rebuildingCount)
  const activeMembers = others.slice(0, others.length - rebuildingCount)
  const missingCount = Math.max(0, memberCountExpected - inSyncCount - rebuildingCount - faulty.length)
  const outOfSyncRoles = rolesInSync.flatMap((inSync, role) => (inSync ? [] : [role]))
  const missing = outOfSyncRoles.slice(outOfSyncRoles.length - missingCount).map((role): RaidMember => ({ device: `slot ${role}`, state: 'missing' }))

  const members: RaidMember[] = [
    ...activeMembers.map((device) => member(device, 'active')),
    ...rebuilding.map((device) => member(device, 'rebuilding')),
    ...replacements.map((device) => member(device, 'rebuilding')),
    ...spares.map((device) => member(device, 'spare')),
    ...faulty.map((device) => member(device, 'faulty')),
  ].sort(byDevice)
  members.push(...missing)

  const copies = Number(copiesPattern.exec(body)?.[1] ?? 2)
  const progress = progressPattern.exec(body)
  const rebuildPercent = progress && rebuildKinds.has(progress[1] ?? '') ? (progress[2] === undefined ? 0 : Number(progress[2])) : null
  let state: RaidState
  if (isBeyondRedundancy(level, rolesInSync, copies)) state = 'failed'
  else if (rebuildPercent !== null) state = 'rebuilding'
  else if (activeMembers.length < memberCountExpected || inSyncCount < memberCountExpected) state = 'degraded'
  else state = 'clean'

  return { name, level, state, memberCountExpected, members, rebuildPercent: state === 'rebuilding' ? rebuildPercent : null }
}

function byDevice(left: RaidMember, right: RaidMember): number {
  return left.device.localeCompare(right.device, 'en', { numeric: true })
}
