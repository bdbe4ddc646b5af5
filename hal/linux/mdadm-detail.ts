import { HalError } from '../errors.js'
import type { RaidArray, RaidMember, RaidState } from '../types.js'

/**
 * Parser of `mdadm --detail /dev/mdX` output. Pure, tested on real-format fixtures.
 *
 * mdadm knows what /proc/mdstat cannot say: which role each member holds, which member is
 * the one being rebuilt (`spare rebuilding`) and which roles are empty (`removed`). Mapping:
 * - array `State :` containing FAILED, inactive or "Not Started" → `failed`; recovering,
 *   resyncing or reshaping → `rebuilding` (percent from `Rebuild/Resync/Reshape Status :`,
 *   0 while DELAYED/PENDING); degraded → `degraded`; otherwise (clean, active, checking) →
 *   `clean`. A `clean` state with fewer in-sync members than Raid Devices is reported
 *   `degraded`, so the state never contradicts the members.
 * - member words: faulty → `faulty`; removed → `missing` (named `slot N` after its
 *   RaidDevice); rebuilding → `rebuilding`; spare → `spare`; active/sync → `active`. Journal
 *   devices hold no copy of the data and are left out.
 */

const keyValuePattern = /^\s*([A-Za-z][A-Za-z ]*?)\s+:\s?(.*)$/
const tableHeaderPattern = /^\s*Number\s+Major\s+Minor\s+RaidDevice\s+State/
const statusKeys = ['Rebuild Status', 'Resync Status', 'Reshape Status']

/**
 * Parses one array's `mdadm --detail` text. The array's name is taken from the first line
 * (`/dev/md0:` → `md0`).
 *
 * @throws HalError HAL_PROBE_FAILED when the text is not mdadm --detail output (no device
 *   line, no Raid Level or no Raid Devices)
 */
export function parseMdadmDetail(text: string): RaidArray {
  const lines = text.split('\n')
  const firstLine = lines.find((line) => line.trim() !== '')?.trim() ?? ''
  const deviceMatch = /^(\/dev\/\S+):$/.exec(firstLine)
  const fields = new Map<string, string>()
  const members: RaidMember[] = []
  let inTable = false
  for (const line of lines) {
    if (tableHeaderPattern.test(line)) {
      inTable = true
      continue
    }
    if (inTable) {
      const member = parseMemberLine(line)
      if (member) members.push(member)
      continue
    }
    const pair = keyValuePattern.exec(line)
    if (pair) fields.set(pair[1] ?? '', (pair[2] ?? '').trim())
  }
  const level = fields.get('Raid Level')
  const raidDevices = Number(fields.get('Raid Devices'))
  if (!deviceMatch || level === undefined || !Number.isInteger(raidDevices)) {
    throw new HalError('HAL_PROBE_FAILED', 'mdadm --detail printed something that is not an array description', {
      retryable: true,
      fields: { firstLine: firstLine.slice(0, 80) },
    })
  }
  const name = (deviceMatch[1] ?? '').replace(/^\/dev\/(md\/)?/, '')

  const flags = (fields.get('State') ?? '').toLowerCase()
  const statusKey = statusKeys.find((key) => fields.has(key))
  const statusPercent = statusKey === undefined ? null : Number(/([\d.]+)%/.exec(fields.get(statusKey) ?? '')?.[1] ?? 0)
  const activeCount = members.filter((member) => member.state === 'active').length

  let state: RaidState
  if (/failed|inactive|not started/.test(flags)) state = 'failed'
  else if (/recovering|resyncing|reshaping/.test(flags)) state = 'rebuilding'
  else if (/degraded/.test(flags) || activeCount < raidDevices) state = 'degraded'
  else state = 'clean'

  return {
    name,
    level,
    state,
    memberCountExpected: raidDevices,
    members,
    rebuildPercent: state === 'rebuilding' ? (statusPercent ?? 0) : null,
  }
}

/** One row of the device table: `Number Major Minor RaidDevice State… [device]`. */
function parseMemberLine(line: string): RaidMember | null {
  const tokens = line.trim().split(/\s+/)
  if (tokens.length < 5) return null
  const raidDevice = tokens[3] ?? '-'
  const last = tokens[tokens.length - 1] ?? ''
  const device = last.startsWith('/') ? last : null
  const words = new Set(tokens.slice(4, device === null ? undefined : -1))
  if (words.has('journal')) return null
  if (words.has('faulty')) return { device: device ?? `slot ${raidDevice}`, state: 'faulty' }
  if (words.has('removed')) return { device: device ?? `slot ${raidDevice}`, state: 'missing' }
  if (device === null) return null
  if (words.has('rebuilding')) return { device, state: 'rebuilding' }
  if (words.has('spare')) return { device, state: 'spare' }
  if (words.has('active') || words.has('sync')) return { device, state: 'active' }
  return null
}
