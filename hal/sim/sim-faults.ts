import type { Random } from '../../firmware/common/clock.js'
import type { Logger } from '../../firmware/common/logger.js'
import { HalError } from '../errors.js'
import type { SimFaults } from '../types.js'
import type { SimArray } from './sim-array.js'
import { newDiskSerial, type SimDisk, type SimNic } from './sim-layout.js'

/** The mutable state of one simulated appliance, shared by its fault knobs and its views. */
export interface SimMachine {
  readonly disks: SimDisk[]
  /** Replaced (not mutated) when a NIC is removed. */
  nics: SimNic[]
  /** setVolumeFreeBytes(): free bytes volume() reports instead of the real ones; null: real. */
  freeBytesOverride: number | null
}

function diskAt(disks: readonly SimDisk[], index: number): SimDisk {
  const disk = Number.isInteger(index) ? disks[index] : undefined
  if (!disk) {
    const present = disks.length === 0 ? 'no disks' : `disks 0 to ${disks.length - 1}`
    throw new HalError('SIM_NO_SUCH_DISK', `no disk ${index}: this appliance has ${present}`, { fields: { index, diskCount: disks.length } })
  }
  return disk
}

function nicNamed(nics: readonly SimNic[], name: string): SimNic {
  const nic = nics.find((candidate) => candidate.name === name)
  if (!nic) throw new HalError('SIM_NO_SUCH_NIC', `no NIC ${name}`, { fields: { name, nics: nics.map((candidate) => candidate.name) } })
  return nic
}

/**
 * The fault knobs of a simulated appliance over `machine` and its `array` (the RAID rules are
 * in createSimHal's doc). `random` draws the serials of replaced disks; `rebuildTicks` is how
 * many tick() calls a rebuild takes.
 *
 * @throws HalError SIM_NO_SUCH_DISK, SIM_NO_SUCH_NIC, SIM_BAD_VALUE for indexes, names or
 *   values that do not exist (they come from technicians through the control socket)
 */
export function createSimFaults(deps: { logger: Logger; random: Random }, machine: SimMachine, array: SimArray, rebuildTicks: number): SimFaults {
  const { logger } = deps
  return {
    failDisk(index) {
      const disk = diskAt(machine.disks, index)
      if (disk.failed) return
      disk.failed = true
      if (disk.member !== null) disk.member = 'faulty'
      logger.info('sim: disk failed', { index, device: disk.device, serial: disk.serial })
      array.checkRedundancy()
    },
    replaceDisk(index) {
      const disk = diskAt(machine.disks, index)
      const oldSerial = disk.serial
      disk.serial = newDiskSerial(deps.random)
      disk.failed = false
      disk.rebuildTicksDone = 0
      if (disk.member !== null) disk.member = index < array.roleCount && !array.lost() ? 'rebuilding' : 'spare'
      logger.info('sim: disk replaced', { index, device: disk.device, oldSerial, serial: disk.serial, member: disk.member })
      array.checkRedundancy()
    },
    setLink(name, up) {
      nicNamed(machine.nics, name).up = up
      logger.info('sim: link changed', { name, link: up ? 'up' : 'down' })
    },
    removeNic(name) {
      nicNamed(machine.nics, name)
      machine.nics = machine.nics.filter((nic) => nic.name !== name)
      logger.info('sim: NIC removed', { name })
    },
    setVolumeFreeBytes(bytes) {
      if (bytes !== null && !(Number.isSafeInteger(bytes) && bytes >= 0)) {
        throw new HalError('SIM_BAD_VALUE', `free bytes must be a non-negative integer or null, got ${bytes}`, { fields: { bytes } })
      }
      machine.freeBytesOverride = bytes
      logger.info('sim: volume free bytes set', { freeBytes: bytes })
    },
    tick() {
      for (const disk of machine.disks) {
        if (disk.member !== 'rebuilding') continue
        disk.rebuildTicksDone++
        if (disk.rebuildTicksDone < rebuildTicks) continue
        disk.member = 'active'
        logger.info('sim: rebuild complete', { device: disk.device, serial: disk.serial })
      }
    },
  }
}
