import { isIPv6 } from 'node:net'
import { normalizeClientAddress } from '../../common/networks.js'

/**
 * Who gets a connection slot. Pure: the decision and its bookkeeping, no sockets.
 *
 * - `connectionsMax` bounds every connection, trusted or not.
 * - `trustedConnectionsReserved` of them are kept for clients in `trustedNetworks`: the
 *   clients outside share `connectionsMax - trustedConnectionsReserved`, so however many
 *   slow connections arrive from elsewhere, the mail servers that relay to the archive
 *   still get in.
 * - `untrustedConnectionsPerAddressMax` bounds the connections of one untrusted address
 *   (an IPv4 address, or an IPv6 /64: one host usually holds a whole /64).
 */

/** The limits admission uses (the `smtp` config section). */
export interface AdmissionLimits {
  connectionsMax: number
  trustedConnectionsReserved: number
  untrustedConnectionsPerAddressMax: number
}

/** What admission knows about a new connection, counts without the new one. */
export interface AdmissionRequest {
  trusted: boolean
  /** Connections open now, trusted or not. */
  connectionsOpen: number
  /** Connections from untrusted clients open now. */
  untrustedOpen: number
  /** Connections open now from the same untrusted address (or IPv6 /64). */
  untrustedOpenFromAddress: number
}

/** Which limit refused a connection. */
export type AdmissionLimit = 'connectionsMax' | 'untrustedConnectionsMax' | 'untrustedConnectionsPerAddressMax'

/** The decision: admitted, or refused by one limit (`limitValue` is that limit's value). */
export type AdmissionVerdict = { admitted: true } | { admitted: false; code: 'TOO_MANY_CONNECTIONS' | 'TOO_MANY_CONNECTIONS_FROM_ADDRESS'; limit: AdmissionLimit; limitValue: number }

/** Slots that clients outside the trusted networks may hold together. */
export function untrustedConnectionsMax(limits: AdmissionLimits): number {
  return Math.max(0, limits.connectionsMax - limits.trustedConnectionsReserved)
}

/**
 * Admits or refuses a new connection: over `connectionsMax` nobody; an untrusted client
 * over its address's share first (the most specific reason), then over the untrusted share.
 */
export function decideAdmission(request: AdmissionRequest, limits: AdmissionLimits): AdmissionVerdict {
  if (request.connectionsOpen >= limits.connectionsMax) {
    return { admitted: false, code: 'TOO_MANY_CONNECTIONS', limit: 'connectionsMax', limitValue: limits.connectionsMax }
  }
  if (request.trusted) return { admitted: true }
  if (request.untrustedOpenFromAddress >= limits.untrustedConnectionsPerAddressMax) {
    return { admitted: false, code: 'TOO_MANY_CONNECTIONS_FROM_ADDRESS', limit: 'untrustedConnectionsPerAddressMax', limitValue: limits.untrustedConnectionsPerAddressMax }
  }
  const shared = untrustedConnectionsMax(limits)
  if (request.untrustedOpen >= shared) return { admitted: false, code: 'TOO_MANY_CONNECTIONS', limit: 'untrustedConnectionsMax', limitValue: shared }
  return { admitted: true }
}

/** The eight 16-bit groups of an IPv6 address (without zone), or null when it has no such form. */
function ipv6Groups(address: string): number[] | null {
  const [head = '', tail, ...rest] = address.split('%')[0]!.split('::')
  if (rest.length > 0) return null
  const parse = (part: string | undefined): string[] => (part ? part.split(':') : [])
  const front = parse(head)
  const back = parse(tail)
  const missing = 8 - front.length - back.length
  if (tail === undefined ? missing !== 0 : missing < 0) return null
  const groups = [...front, ...Array<string>(missing).fill('0'), ...back]
  return groups.every((group) => /^[0-9a-f]{1,4}$/i.test(group)) ? groups.map((group) => Number.parseInt(group, 16)) : null
}

/**
 * The key one client's connections are counted under: its IPv4 address (IPv4-mapped IPv6
 * clients included), or its IPv6 /64 as `xxxx:xxxx:xxxx:xxxx::/64`.
 */
export function clientAddressKey(remoteAddress: string): string {
  const address = normalizeClientAddress(remoteAddress).toLowerCase()
  if (!isIPv6(address)) return address
  const groups = ipv6Groups(address)
  return groups
    ? `${groups
        .slice(0, 4)
        .map((group) => group.toString(16))
        .join(':')}::/64`
    : address
}

/** Connections of untrusted clients open now, in total and per address key. Pure bookkeeping. */
export class UntrustedConnections {
  readonly #byAddress = new Map<string, number>()
  #total = 0

  /** Untrusted connections open now. */
  get total(): number {
    return this.#total
  }

  /** Connections open now under `key`. */
  from(key: string): number {
    return this.#byAddress.get(key) ?? 0
  }

  /** Addresses (keys) with a connection open now. */
  get addresses(): number {
    return this.#byAddress.size
  }

  add(key: string): void {
    this.#byAddress.set(key, this.from(key) + 1)
    this.#total++
  }

  /** Forgets one connection of `key`; the caller removes only what it added. */
  remove(key: string): void {
    const count = this.from(key)
    if (count <= 0) return
    if (count === 1) this.#byAddress.delete(key)
    else this.#byAddress.set(key, count - 1)
    this.#total--
  }
}
