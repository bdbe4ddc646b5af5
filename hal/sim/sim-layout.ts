import type { Random } from '../../firmware/common/clock.js'
import type { ModelProfile } from '../../config/models.js'

/** The parts of a model profile the simulated layout is drawn from. */
export type SimLayout = Pick<ModelProfile, 'diskCount' | 'raidLevel' | 'nicCount' | 'diskBytes'>

/** Layout of a model this firmware does not know: enough to boot and report "unknown model". */
export const unknownModelLayout = { diskCount: 1, raidLevel: 'none', nicCount: 1, diskBytes: 2_000_000_000_000 } as const
/** Locally administered OUI-like prefix of simulated MACs (0x02 bit set: never a vendor's). */
const macPrefix = [0x02, 0x6d, 0x6b]
const serialAlphabet = '0123456789ABCDEFGHJKLMNPRSTUVWXYZ'

export type SimMemberState = 'active' | 'faulty' | 'rebuilding' | 'spare'

/** One simulated disk, mutated by the fault knobs. */
export interface SimDisk {
  device: string
  serial: string
  sizeBytes: number
  temperatureCelsius: number
  failed: boolean
  /** State in the array; null when the model has no RAID. */
  member: SimMemberState | null
  rebuildTicksDone: number
}

/** One simulated NIC, mutated by the fault knobs. */
export interface SimNic {
  name: string
  mac: string
  up: boolean
  addresses: string[]
}

/** `/dev/sda` … `/dev/sdz`, `/dev/sdaa` …: the kernel's sd naming for disk `index`. */
function diskDevice(index: number): string {
  let name = ''
  for (let rest = index + 1; rest > 0; rest = Math.floor((rest - 1) / 26)) name = String.fromCharCode(97 + ((rest - 1) % 26)) + name
  return `/dev/sd${name}`
}

function hexByte(value: number): string {
  return value.toString(16).padStart(2, '0')
}

/** The IPv6 link-local address (EUI-64) of a MAC, as the kernel would configure it. */
function linkLocalAddress(mac: number[]): string {
  const [b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0] = mac
  const group = (high: number, low: number): string => ((high << 8) | low).toString(16)
  return `fe80::${group(b0 ^ 0x02, b1)}:${group(b2, 0xff)}:${group(0xfe, b3)}:${group(b4, b5)}`
}

/** A new disk serial, `MKD` and eight characters drawn from `random` (eight draws). */
export function newDiskSerial(random: Random): string {
  let serial = 'MKD'
  for (let index = 0; index < 8; index++) serial += serialAlphabet[random.int(serialAlphabet.length)]
  return serial
}

/**
 * `count` disks of `layout.diskBytes`, the first `roleCount` active members of the array and
 * the rest spares (no member state without RAID). Draws per disk, in order: the serial, then
 * the temperature; the order is part of "same seed, same appliance".
 */
export function createSimDisks(random: Random, layout: SimLayout, count: number, roleCount: number): SimDisk[] {
  return Array.from({ length: count }, (_unused, index) => ({
    device: diskDevice(index),
    serial: newDiskSerial(random),
    sizeBytes: layout.diskBytes,
    temperatureCelsius: 30 + random.int(9),
    failed: false,
    member: layout.raidLevel === 'none' ? null : index < roleCount ? 'active' : 'spare',
    rebuildTicksDone: 0,
  }))
}

/**
 * `count` NICs `eth0`…, links up, MACs `02:6d:6b:xx:xx:<index>` and addresses `10.<index>.x.x`
 * plus the EUI-64 link-local. Draws per NIC, in order: two MAC bytes, then two address bytes.
 */
export function createSimNics(random: Random, count: number): SimNic[] {
  return Array.from({ length: count }, (_unused, index) => {
    const mac = [...macPrefix, random.int(256), random.int(256), index % 256]
    return {
      name: `eth${index}`,
      mac: mac.map(hexByte).join(':'),
      up: true,
      addresses: [`10.${index % 256}.${random.int(256)}.${1 + random.int(254)}`, linkLocalAddress(mac)],
    }
  })
}
