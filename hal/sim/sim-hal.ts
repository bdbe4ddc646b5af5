import assert from 'node:assert/strict'
import { modelProfile, type ModelProfile } from '../../config/models.js'
import { createRandom, type Random } from '../../firmware/common/clock.js'
import type { Logger } from '../../firmware/common/logger.js'
import { HalError } from '../errors.js'
import type { Disk, Identity, Nic, RaidStatus, SimHal, VolumeUsage } from '../types.js'
import { statfsVolume } from '../volume.js'
import { createSimArray } from './sim-array.js'
import { createSimFaults, type SimMachine } from './sim-faults.js'
import { createSimDisks, createSimNics, unknownModelLayout, type SimDisk, type SimNic } from './sim-layout.js'

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

/** Bound on the statfs behind volume(). */
const volumeTimeoutMs = 5_000

function checkSimOptions(options: SimHalOptions): void {
  assert.ok(Number.isInteger(options.seed) && options.seed >= 0, `seed must be a non-negative integer, got ${options.seed}`)
  assert.ok(Number.isInteger(options.tickMs) && options.tickMs > 0, `tickMs must be a positive integer, got ${options.tickMs}`)
  assert.ok(Number.isInteger(options.rebuildTicks) && options.rebuildTicks >= 1, `rebuildTicks must be >= 1, got ${options.rebuildTicks}`)
  for (const key of ['diskCount', 'nicCount'] as const) {
    const value = options[key]
    assert.ok(value === undefined || (Number.isInteger(value) && value >= 0), `${key} must be a non-negative integer, got ${value}`)
  }
}

/** A simulated disk as the HAL reports it. */
function diskView(disk: SimDisk): Disk {
  return {
    id: disk.serial,
    device: disk.device,
    sizeBytes: disk.sizeBytes,
    vendorModel: `MKSIM HDD ${Math.round(disk.sizeBytes / 1e12)}TB`,
    health: disk.failed ? 'failed' : 'ok',
    smart: disk.failed ? 'failed' : 'passed',
    temperatureCelsius: disk.temperatureCelsius,
  }
}

/** A simulated NIC as the HAL reports it (a link down has no speed). */
function nicView(nic: SimNic): Nic {
  return { name: nic.name, mac: nic.mac, link: nic.up ? 'up' : 'down', speedMbps: nic.up ? 1000 : null, addresses: [...nic.addresses] }
}

/**
 * The real statfs of `path`, or of `dataDir` when `path` is unavailable; free bytes replaced
 * by `freeBytesOverride` (capped at the real total) when set.
 * @throws HalError HAL_VOLUME_UNAVAILABLE, HAL_TIMEOUT
 */
async function simVolume(path: string, dataDir: string | undefined, freeBytesOverride: number | null): Promise<VolumeUsage> {
  let real: VolumeUsage
  try {
    real = await statfsVolume(path, volumeTimeoutMs)
  } catch (error) {
    if (dataDir === undefined || dataDir === path || !(error instanceof HalError) || error.code !== 'HAL_VOLUME_UNAVAILABLE') throw error
    real = await statfsVolume(dataDir, volumeTimeoutMs)
  }
  return freeBytesOverride === null ? real : { totalBytes: real.totalBytes, freeBytes: Math.min(freeBytesOverride, real.totalBytes) }
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
  checkSimOptions(options)
  const logger = deps.logger
  const random = deps.random ?? createRandom(options.seed)
  const profile: ModelProfile | undefined = modelProfile(options.model)
  const layout = profile ?? unknownModelLayout
  const raidLevel = layout.raidLevel
  const roleCount = raidLevel === 'none' ? 0 : layout.diskCount
  // Disks before NICs: the order of the draws is part of "same seed, same appliance".
  const disks = createSimDisks(random, layout, options.diskCount ?? layout.diskCount, roleCount)
  const machine: SimMachine = { disks, nics: createSimNics(random, options.nicCount ?? layout.nicCount), freeBytesOverride: null }
  const identity: Identity = Object.freeze({
    model: options.model,
    serial: options.serial ?? `MK${options.model}-${String(options.seed).padStart(6, '0')}`,
    firmwareVersion: options.firmwareVersion,
    provider: 'sim' as const,
  })
  const array = createSimArray({ logger }, disks, raidLevel, roleCount, options.rebuildTicks)
  const faults = createSimFaults({ logger, random }, machine, array, options.rebuildTicks)
  let timer: NodeJS.Timeout | undefined

  return {
    provider: 'sim',
    faults,

    async start() {
      if (timer) return
      if (!profile) logger.warn('sim: unknown model, simulating the minimal layout', { model: options.model, ...unknownModelLayout })
      if (array.lost()) logger.warn('sim: md0 has lost more members than it tolerates: array failed', { level: raidLevel })
      timer = setInterval(() => faults.tick(), options.tickMs)
      // The simulated clock must never keep the process alive on its own.
      timer.unref()
      logger.info('sim hal started', { model: options.model, seed: options.seed, disks: disks.length, nics: machine.nics.length, raidLevel, tickMs: options.tickMs })
    },

    async stop() {
      clearInterval(timer)
      timer = undefined
    },

    async identity() {
      return identity
    },

    async disks(): Promise<Disk[]> {
      return disks.map(diskView)
    },

    async raid(): Promise<RaidStatus> {
      return raidLevel === 'none' ? { present: false, arrays: [] } : { present: true, arrays: [array.state()] }
    },

    async nics(): Promise<Nic[]> {
      return machine.nics.map(nicView)
    },

    volume(path: string): Promise<VolumeUsage> {
      return simVolume(path, options.dataDir, machine.freeBytesOverride)
    },
  } satisfies SimHal
}
