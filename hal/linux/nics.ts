import type { NetworkInterfaceInfo } from 'node:os'
import type { Systeminformation } from 'systeminformation'
import type { Nic } from '../types.js'

/**
 * Conversion of systeminformation's interfaces into HAL NICs. Pure, tested with hand-made
 * inputs.
 *
 * Which interfaces: the machine's network ports, i.e. not loopback (`internal`), not virtual
 * (bridges, veth, tunnels, bonds as systeminformation classifies them), and only those with
 * an Ethernet-style MAC address (a point-to-point tunnel has none and is no port).
 * Link: `up` only when the kernel's operstate is `up`. Speed: systeminformation's Mbps, kept
 * only while the link is up and the driver reports a positive value (virtio reports -1).
 * Addresses: every address the OS has on the interface (systeminformation gives only the
 * first IPv4 and IPv6), falling back to systeminformation's when the OS lists none.
 */

export type SiInterface = Pick<Systeminformation.NetworkInterfacesData, 'iface' | 'mac' | 'internal' | 'virtual' | 'operstate' | 'speed' | 'ip4' | 'ip6'>

const macPattern = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/

/** Builds the NIC list, sorted by name. */
export function toNics(interfaces: readonly SiInterface[], osAddresses: Readonly<Record<string, NetworkInterfaceInfo[] | undefined>>): Nic[] {
  const nics: Nic[] = []
  for (const entry of interfaces) {
    const mac = (entry.mac ?? '').trim().toLowerCase()
    if (entry.internal || entry.virtual || !macPattern.test(mac) || mac === '00:00:00:00:00:00') continue
    const link = entry.operstate === 'up' ? 'up' : 'down'
    const speedMbps = link === 'up' && typeof entry.speed === 'number' && entry.speed > 0 ? entry.speed : null
    const fromOs = (osAddresses[entry.iface] ?? []).map((info) => info.address)
    const addresses = fromOs.length > 0 ? fromOs : [entry.ip4, entry.ip6].filter((address) => Boolean(address))
    nics.push({ name: entry.iface, mac, link, speedMbps, addresses })
  }
  return nics.sort((left, right) => left.name.localeCompare(right.name, 'en', { numeric: true }))
}
