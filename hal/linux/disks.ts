import type { Systeminformation } from 'systeminformation'
import type { Disk, DiskHealth, RaidArray } from '../types.js'

/**
 * Conversion of systeminformation's disk facts into HAL disks. Pure, tested with hand-made
 * inputs in the shapes systeminformation returns.
 *
 * Which disks: systeminformation's diskLayout() (lsblk + smartctl) is the primary source, with
 * SMART status and temperature. It leaves out whole disks that carry a file system without a
 * partition table (common in VMs: /dev/vda formatted directly), so every other block device
 * of type `disk` is added from blockDevices(), without SMART. Virtual and removable devices
 * (loop, ram, zram, md, dm, optical, nbd, USB sticks) are not disks of the appliance.
 *
 * Health, worst first: a disk with a member that md has marked faulty → `failed` (md stopped
 * using it); SMART overall "failed" (a predicted failure) → `failing`; SMART passed → `ok`;
 * no SMART (VMs, USB bridges) → `unknown`.
 */

export type LayoutDisk = Pick<Systeminformation.DiskLayoutData, 'device' | 'name' | 'vendor' | 'size' | 'serialNum' | 'smartStatus' | 'temperature'>
export type BlockDevice = Pick<Systeminformation.BlockDevicesData, 'name' | 'type' | 'size' | 'model' | 'serial' | 'removable' | 'device'>

const notApplianceDiskPattern = /^(loop|ram|zram|md|dm-|sr|nbd|fd)/

/**
 * The whole-disk name of a partition or disk name: `sda1` → `sda`, `nvme0n1p2` → `nvme0n1`,
 * `mmcblk0p1` → `mmcblk0`, `sdb` → `sdb`. Naming rule of the kernel's sd/vd/xvd/hd and
 * nvme/mmcblk drivers.
 */
export function diskNameOfPartition(name: string): string {
  const base = name.replace(/^\/dev\//, '')
  if (/^(nvme\d+n\d+|mmcblk\d+|nbd\d+|loop\d+)p\d+$/.test(base)) return base.replace(/p\d+$/, '')
  if (/^(nvme\d+n\d+|mmcblk\d+)$/.test(base)) return base
  return base.replace(/\d+$/, '')
}

/** Names of the whole disks (`sdb`) that hold a member md has marked faulty in any array. */
export function faultyDiskNames(arrays: readonly RaidArray[]): Set<string> {
  const names = new Set<string>()
  for (const array of arrays) {
    for (const member of array.members) {
      if (member.state === 'faulty' && member.device.startsWith('/dev/')) names.add(diskNameOfPartition(member.device))
    }
  }
  return names
}

function smartOf(status: string): Disk['smart'] {
  if (status === 'Ok') return 'passed'
  if (status === 'Predicted Failure') return 'failed'
  return 'unavailable'
}

function vendorModelOf(vendor: string | null | undefined, model: string | null | undefined): string | null {
  const vendorText = (vendor ?? '').trim()
  const modelText = (model ?? '').trim()
  // lsblk's model often already starts with the vendor ("WDC WD80EFZZ"): do not repeat it.
  const joined = vendorText && !modelText.toLowerCase().startsWith(vendorText.toLowerCase()) ? `${vendorText} ${modelText}` : modelText || vendorText
  return joined.trim() || null
}

/**
 * Builds the disk list from diskLayout() and blockDevices() results and the names of disks
 * with a faulty md member. Sizes are bytes as the kernel reports them; disks of size 0 (empty
 * card readers) are left out. Sorted by device path.
 */
export function toDisks(layout: readonly LayoutDisk[], blockDevices: readonly BlockDevice[], faultyDisks: ReadonlySet<string>): Disk[] {
  const disks = new Map<string, Disk>()
  const healthOf = (device: string, smart: Disk['smart']): DiskHealth => {
    if (faultyDisks.has(diskNameOfPartition(device))) return 'failed'
    if (smart === 'failed') return 'failing'
    return smart === 'passed' ? 'ok' : 'unknown'
  }
  for (const entry of layout) {
    if (!(entry.size > 0) || !entry.device) continue
    const smart = smartOf(entry.smartStatus)
    disks.set(entry.device, {
      id: entry.serialNum.trim() || entry.device,
      device: entry.device,
      sizeBytes: entry.size,
      vendorModel: vendorModelOf(entry.vendor, entry.name),
      health: healthOf(entry.device, smart),
      smart,
      temperatureCelsius: typeof entry.temperature === 'number' && Number.isFinite(entry.temperature) ? entry.temperature : null,
    })
  }
  for (const entry of blockDevices) {
    const device = entry.device || `/dev/${entry.name}`
    if (entry.type !== 'disk' || !(entry.size > 0) || entry.removable || notApplianceDiskPattern.test(entry.name) || disks.has(device)) continue
    disks.set(device, {
      id: entry.serial?.trim() || device,
      device,
      sizeBytes: entry.size,
      vendorModel: vendorModelOf(null, entry.model),
      health: healthOf(device, 'unavailable'),
      smart: 'unavailable',
      temperatureCelsius: null,
    })
  }
  return [...disks.values()].sort((left, right) => left.device.localeCompare(right.device, 'en', { numeric: true }))
}
