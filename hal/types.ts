/**
 * The hardware abstraction layer's interfaces. Nothing above hal/ touches the OS for
 * hardware facts (STYLE 4): firmware and boot see only these types. Two implementations
 * exist, hal/linux (systeminformation, /proc/mdstat, mdadm) and hal/sim (a seeded simulated
 * appliance with fault knobs); both are checked with `satisfies Hal` and pass one contract
 * suite (tests/hal/contract.ts).
 */

export interface Identity {
  /** Model number, e.g. 650. A model absent from config/models.json is reported as is. */
  model: number
  serial: string
  /** Firmware version, from package.json (stamped into the image at build time). */
  firmwareVersion: string
  provider: 'sim' | 'linux'
}

export type DiskHealth = 'ok' | 'failing' | 'failed' | 'unknown'

export interface Disk {
  /** Stable identifier (serial number or device path). */
  id: string
  /** Device path, e.g. /dev/sda. */
  device: string
  sizeBytes: number
  vendorModel: string | null
  health: DiskHealth
  /** SMART overall status; 'unavailable' where the disk or the platform gives none (VMs). */
  smart: 'passed' | 'failed' | 'unavailable'
  temperatureCelsius: number | null
}

export type RaidState = 'clean' | 'degraded' | 'rebuilding' | 'failed'
export type RaidMemberState = 'active' | 'faulty' | 'spare' | 'rebuilding' | 'missing'

export interface RaidMember {
  device: string
  state: RaidMemberState
}

export interface RaidArray {
  /** e.g. md0 */
  name: string
  /** e.g. raid1, raid5, raid6, raid10 */
  level: string
  state: RaidState
  /** Members the array is built for. */
  memberCountExpected: number
  members: RaidMember[]
  /** 0–100 while rebuilding (recovery or resync), otherwise null. */
  rebuildPercent: number | null
}

export interface RaidStatus {
  /** False when the machine has no software RAID at all (not an error: reported as such). */
  present: boolean
  arrays: RaidArray[]
}

export interface Nic {
  name: string
  /** aa:bb:cc:dd:ee:ff, lower case */
  mac: string
  link: 'up' | 'down'
  /** Negotiated speed; null when unknown or link down. */
  speedMbps: number | null
  addresses: string[]
}

export interface VolumeUsage {
  totalBytes: number
  freeBytes: number
}

/** The HAL as the firmware sees it. All calls are reads except start/stop. */
export interface Hal {
  readonly provider: 'sim' | 'linux'
  /** Starts background work (the simulator's clock); idempotent. */
  start(): Promise<void>
  /** Stops background work; idempotent. */
  stop(): Promise<void>
  identity(): Promise<Identity>
  disks(): Promise<Disk[]>
  raid(): Promise<RaidStatus>
  nics(): Promise<Nic[]>
  /** Capacity and free space of the volume that holds `path` (the data dir). */
  volume(path: string): Promise<VolumeUsage>
}

/** Fault knobs of hal/sim, reachable from tests, the control socket (`sim …`) and factory tests. */
export interface SimFaults {
  /** Marks disk `index` (0-based) failed: its array degrades (or fails beyond redundancy). */
  failDisk(index: number): void
  /** Replaces a failed disk with a new one: its array starts rebuilding. */
  replaceDisk(index: number): void
  /** Sets a NIC's link up or down. */
  setLink(name: string, up: boolean): void
  /** Removes a NIC as if absent. */
  removeNic(name: string): void
  /** Makes the data volume report this many free bytes (null: real free space). */
  setVolumeFreeBytes(bytes: number | null): void
  /** Advances simulated time one step (rebuild progress). */
  tick(): void
}

export interface SimHal extends Hal {
  readonly provider: 'sim'
  readonly faults: SimFaults
}
