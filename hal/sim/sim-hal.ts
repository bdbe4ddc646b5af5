import assert from 'node:assert/strict'
import { modelProfile, type ModelProfile } from '../../config/models.js'
import { createRandom, type Random } from '../../firmware/common/clock.js'
import type { Logger } from '../../firmware/common/logger.js'
import { HalError } from '../errors.js'
import { isBeyondRedundancy } from '../raid-redundancy.js'
import type { Disk, Identity, Nic, RaidArray, RaidMember, RaidStatus, SimFaults, SimHal, VolumeUsage } from '../types.js'
import { statfsVolume } from '../volume.js'

export interface SimHalDeps {
  logger: Logger
  /** Source of the layout's serials, MACs and temperatures; defaults to createRandom(seed). */
  random?: Random
}

export interface SimHalOptions {
  firmwareVersion: string
  /** Model to simulate; one absent from config/models.json gets the minimal layout. */
  model: number
  /** `identity.serial` override; null: derived from the seed (see createSimHal). */
  serial: string | null
  /** Seed of the layout (disk serials, MACs, addresses); same seed, same appliance. */
  seed: number
  /** Period of the background clock started by start(), in milliseconds. */
  tickMs: number
  /** Ticks a disk rebuild takes from replaceDisk() to clean. */
  rebuildTicks: number
  /** Volume statfs'ed when volume(path) is given a path that does not exist. */
  dataDir?: string
  /** Disks actually present, overriding the profile (a wrong-count fault at boot). */
  diskCount?: number
  /** NICs actually present, overriding the profile. */
  nicCount?: number
}

/** Layout of a model this firmware does not know: enough to boot and report "unknown model". */
const unknownModelLayout = { diskCount: 1, raidLevel: 'none', nicCount: 1, diskBytes: 2_000_000_000_000 } as const
/** Bound on the statfs behind volume(). */
const volumeTimeoutMs = 5_000
/** Locally administered OUI-like prefix of simulated MACs (0x02 bit set: never a vendor's). */
const macPrefix = [0x02, 0x6d, 0x6b]
const serialAlphabet = '0123456789ABCDEFGHJKLMNPRSTUVWXYZ'

type SimMemberState = 'active' | 'faulty' | 'rebuilding' | 'spare'

interface SimDisk {
  device: string
  serial: string
  sizeBytes: number
  temperatureCelsius: number
  failed: boolean
  /** State in the array; null when the model has no RAID. */
  member: SimMemberState | null
  rebuildTicksDone: number
}

interface SimNic {
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

/**
 * A seeded, stateful simulated appliance (STYLE 5), built from the model's profile in
 * config/models.json: `diskCount` disks (`/dev/sda`…, serials and temperatures drawn from
 * the seed, size `diskBytes`), one md array `md0` of the profile's RAID level over all of
 * them (none for level `none`), and NICs `eth0`… with MACs `02:6d:6b:xx:xx:<index>` (xx from
 * the seed), links up at 1000 Mbps, addresses `10.<index>.x.x` plus the EUI-64 link-local.
 * Pure at creation: start() starts the clock, nothing else does I/O except volume().
 *
 * Identity: the model as given, even when unknown (the minimal layout then applies: 1 disk,
 * 1 NIC, no RAID); serial = the override, else `MK<model>-<seed>` with the seed zero-padded
 * to at least 6 digits (seed 1, model 650 → `MK650-000001`).
 *
 * RAID rules (hal/raid-redundancy.ts): raid1 survives all but one member failing, raid5 one,
 * raid6 two, raid10 one per mirror pair. Beyond that the array is `failed` for good, as a real
 * one would be: disks replaced afterwards join as spares and nothing rebuilds. Within it, a
 * failed disk makes the array `degraded`; replacing a disk (failed or not) gives a new disk
 * with a new serial that rebuilds over `rebuildTicks` ticks, the array `rebuilding` meanwhile
 * with the least advanced member's percent. A `diskCount` override below the profile leaves
 * roles `missing` (degraded or failed); above it, the extra disks are spares. Spares do not
 * take over failed roles by themselves.
 *
 * volume(path): the real statfs of `path` (or of `dataDir` when `path` does not exist); a
 * setVolumeFreeBytes() override replaces the free bytes, capped at the real total.
 *
 * Fault knobs throw HalError SIM_NO_SUCH_DISK, SIM_NO_SUCH_NIC or SIM_BAD_VALUE for indexes,
 * names or values that do not exist (they come from technicians through the control socket).
 */
export function createSimHal(deps: SimHalDeps, options: SimHalOptions): SimHal {
  assert.ok(Number.isInteger(options.seed) && options.seed >= 0, `seed must be a non-negative integer, got ${options.seed}`)
  assert.ok(Number.isInteger(options.tickMs) && options.tickMs > 0, `tickMs must be a positive integer, got ${options.tickMs}`)
  assert.ok(Number.isInteger(options.rebuildTicks) && options.rebuildTicks >= 1, `rebuildTicks must be >= 1, got ${options.rebuildTicks}`)
  for (const key of ['diskCount', 'nicCount'] as const) {
    const value = options[key]
    assert.ok(value === undefined || (Number.isInteger(value) && value >= 0), `${key} must be a non-negative integer, got ${value}`)
  }
  const logger = deps.logger
  const random = deps.random ?? createRandom(options.seed)
  const profile: ModelProfile | undefined = modelProfile(options.model)
  const layout = profile ?? unknownModelLayout
  const raidLevel = layout.raidLevel
  const roleCount = raidLevel === 'none' ? 0 : layout.diskCount

  const newSerial = (): string => {
    let serial = 'MKD'
    for (let index = 0; index < 8; index++) serial += serialAlphabet[random.int(serialAlphabet.length)]
    return serial
  }
  const disks: SimDisk[] = Array.from({ length: options.diskCount ?? layout.diskCount }, (_unused, index) => ({
    device: diskDevice(index),
    serial: newSerial(),
    sizeBytes: layout.diskBytes,
    temperatureCelsius: 30 + random.int(9),
    failed: false,
    member: raidLevel === 'none' ? null : index < roleCount ? 'active' : 'spare',
    rebuildTicksDone: 0,
  }))
  let nics: SimNic[] = Array.from({ length: options.nicCount ?? layout.nicCount }, (_unused, index) => {
    const mac = [...macPrefix, random.int(256), random.int(256), index % 256]
    return {
      name: `eth${index}`,
      mac: mac.map(hexByte).join(':'),
      up: true,
      addresses: [`10.${index % 256}.${random.int(256)}.${1 + random.int(254)}`, linkLocalAddress(mac)],
    }
  })
  const identity: Identity = Object.freeze({
    model: options.model,
    serial: options.serial ?? `MK${options.model}-${String(options.seed).padStart(6, '0')}`,
    firmwareVersion: options.firmwareVersion,
    provider: 'sim' as const,
  })
  let freeBytesOverride: number | null = null
  let timer: NodeJS.Timeout | undefined

  const diskAt = (index: number): SimDisk => {
    const disk = Number.isInteger(index) ? disks[index] : undefined
    if (!disk) {
      const present = disks.length === 0 ? 'no disks' : `disks 0 to ${disks.length - 1}`
      throw new HalError('SIM_NO_SUCH_DISK', `no disk ${index}: this appliance has ${present}`, { fields: { index, diskCount: disks.length } })
    }
    return disk
  }
  const nicNamed = (name: string): SimNic => {
    const nic = nics.find((candidate) => candidate.name === name)
    if (!nic) throw new HalError('SIM_NO_SUCH_NIC', `no NIC ${name}`, { fields: { name, nics: nics.map((candidate) => candidate.name) } })
    return nic
  }
  const rolesInSync = (): boolean[] => Array.from({ length: roleCount }, (_unused, role) => disks[role]?.member === 'active')
  // A diskCount override far enough below the profile leaves an array that was never whole.
  let arrayLost = raidLevel !== 'none' && isBeyondRedundancy(raidLevel, rolesInSync())
  const checkRedundancy = (): void => {
    if (arrayLost || raidLevel === 'none' || !isBeyondRedundancy(raidLevel, rolesInSync())) return
    arrayLost = true
    logger.warn('sim: md0 lost more members than it tolerates: array failed', { level: raidLevel })
  }

  function arrayState(): RaidArray {
    const members: RaidMember[] = []
    for (let role = 0; role < Math.max(roleCount, disks.length); role++) {
      const disk = disks[role]
      if (disk?.member) members.push({ device: disk.device, state: disk.member })
      else if (role < roleCount) members.push({ device: `slot ${role}`, state: 'missing' })
    }
    const rebuilding = disks.filter((disk) => disk.member === 'rebuilding')
    const slowest = Math.min(...rebuilding.map((disk) => disk.rebuildTicksDone))
    let state: RaidArray['state'] = 'clean'
    if (arrayLost) state = 'failed'
    else if (rebuilding.length > 0) state = 'rebuilding'
    else if (rolesInSync().includes(false)) state = 'degraded'
    return {
      name: 'md0',
      level: raidLevel,
      state,
      memberCountExpected: roleCount,
      members,
      // Floored to a tenth, as mdstat shows it, so 100 is only ever reached by being clean.
      rebuildPercent: state === 'rebuilding' ? Math.floor((slowest * 1000) / options.rebuildTicks) / 10 : null,
    }
  }

  const faults: SimFaults = {
    failDisk(index) {
      const disk = diskAt(index)
      if (disk.failed) return
      disk.failed = true
      if (disk.member !== null) disk.member = 'faulty'
      logger.info('sim: disk failed', { index, device: disk.device, serial: disk.serial })
      checkRedundancy()
    },
    replaceDisk(index) {
      const disk = diskAt(index)
      const oldSerial = disk.serial
      disk.serial = newSerial()
      disk.failed = false
      disk.rebuildTicksDone = 0
      if (disk.member !== null) disk.member = index < roleCount && !arrayLost ? 'rebuilding' : 'spare'
      logger.info('sim: disk replaced', { index, device: disk.device, oldSerial, serial: disk.serial, member: disk.member })
      checkRedundancy()
    },
    setLink(name, up) {
      nicNamed(name).up = up
      logger.info('sim: link changed', { name, link: up ? 'up' : 'down' })
    },
    removeNic(name) {
      nicNamed(name)
      nics = nics.filter((nic) => nic.name !== name)
      logger.info('sim: NIC removed', { name })
    },
    setVolumeFreeBytes(bytes) {
      if (bytes !== null && !(Number.isSafeInteger(bytes) && bytes >= 0)) {
        throw new HalError('SIM_BAD_VALUE', `free bytes must be a non-negative integer or null, got ${bytes}`, { fields: { bytes } })
      }
      freeBytesOverride = bytes
      logger.info('sim: volume free bytes set', { freeBytes: bytes })
    },
    tick() {
      for (const disk of disks) {
        if (disk.member !== 'rebuilding') continue
        disk.rebuildTicksDone++
        if (disk.rebuildTicksDone < options.rebuildTicks) continue
        disk.member = 'active'
        logger.info('sim: rebuild complete', { device: disk.device, serial: disk.serial })
      }
    },
  }

  return {
    provider: 'sim',
    faults,

    async start() {
      if (timer) return
      if (!profile) logger.warn('sim: unknown model, simulating the minimal layout', { model: options.model, ...unknownModelLayout })
      if (arrayLost) logger.warn('sim: md0 has lost more members than it tolerates: array failed', { level: raidLevel })
      timer = setInterval(() => faults.tick(), options.tickMs)
      // The simulated clock must never keep the process alive on its own.
      timer.unref()
      logger.info('sim hal started', { model: options.model, seed: options.seed, disks: disks.length, nics: nics.length, raidLevel, tickMs: options.tickMs })
    },

    async stop() {
      clearInterval(timer)
      timer = undefined
    },

    async identity() {
      return identity
    },

    async disks(): Promise<Disk[]> {
      return disks.map((disk) => ({
        id: disk.serial,
        device: disk.device,
        sizeBytes: disk.sizeBytes,
        vendorModel: `MKSIM HDD ${Math.round(disk.sizeBytes / 1e12)}TB`,
        health: disk.failed ? 'failed' : 'ok',
        smart: disk.failed ? 'failed' : 'passed',
        temperatureCelsius: disk.temperatureCelsius,
      }))
    },

    async raid(): Promise<RaidStatus> {
      return raidLevel === 'none' ? { present: false, arrays: [] } : { present: true, arrays: [arrayState()] }
    },

    async nics(): Promise<Nic[]> {
      return nics.map((nic) => ({ name: nic.name, mac: nic.mac, link: nic.up ? 'up' : 'down', speedMbps: nic.up ? 1000 : null, addresses: [...nic.addresses] }))
    },

    async volume(path: string): Promise<VolumeUsage> {
      let real: VolumeUsage
      try {
        real = await statfsVolume(path, volumeTimeoutMs)
      } catch (error) {
        if (options.dataDir === undefined || options.dataDir === path || !(error instanceof HalError) || error.code !== 'HAL_VOLUME_UNAVAILABLE') throw error
        real = await statfsVolume(options.dataDir, volumeTimeoutMs)
      }
      return freeBytesOverride === null ? real : { totalBytes: real.totalBytes, freeBytes: Math.min(freeBytesOverride, real.totalBytes) }
    },
  } satisfies SimHal
}
