/**
 * The public face of hal/: the interfaces and the two factories, named exports only.
 * Importing this module does no work (no files, sockets or timers; systeminformation is
 * loaded by hal/linux on first use). boot/ is the one place that picks an implementation.
 */
export type { Disk, DiskHealth, Hal, Identity, Nic, RaidArray, RaidMember, RaidMemberState, RaidState, RaidStatus, SimFaults, SimHal, VolumeUsage } from './types.js'
export { HalError, type HalErrorCode } from './errors.js'
export { createLinuxHal, type LinuxHalDeps, type LinuxHalOptions } from './linux/linux-hal.js'
export { createSimHal, type SimHalDeps, type SimHalOptions } from './sim/sim-hal.js'
