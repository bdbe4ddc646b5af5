import { BlockList, isIP } from 'node:net'

/** A set of IP networks, asked whether a client address is inside one of them. */
export interface NetworkSet {
  /** Whether `address` (IPv4, IPv6 or IPv4-mapped IPv6) is inside one of the networks. */
  contains(address: string): boolean
}

/** The networks, or every entry that is not a CIDR network. */
export type NetworkSetResult = { networks: NetworkSet; problems: [] } | { networks: null; problems: string[] }

const ipv4MappedPrefix = /^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i

/** `::ffff:10.0.0.1` → `10.0.0.1`, so IPv4 networks match clients of a dual-stack listener. */
export function normalizeClientAddress(remoteAddress: string): string {
  return remoteAddress.trim().replace(ipv4MappedPrefix, '')
}

/**
 * Parses CIDR networks (`address/prefix`; a bare address means one host). Each problem
 * names `path[index]` and the value, e.g. `smtp.trustedNetworks[2]: not a CIDR network`.
 */
export function parseNetworks(entries: readonly string[], path: string): NetworkSetResult {
  const problems: string[] = []
  const list = new BlockList()
  entries.forEach((entry, index) => {
    const [network = '', prefixText, ...rest] = entry.trim().split('/')
    const family = isIP(network)
    const prefixMax = family === 6 ? 128 : 32
    const prefix = prefixText === undefined ? prefixMax : Number(prefixText)
    if (family === 0 || rest.length > 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > prefixMax || prefixText === '') {
      problems.push(`${path}[${index}]: not a CIDR network (got ${JSON.stringify(entry)})`)
      return
    }
    list.addSubnet(network, prefix, family === 6 ? 'ipv6' : 'ipv4')
  })
  if (problems.length > 0) return { networks: null, problems }
  return {
    networks: {
      contains(remoteAddress) {
        const address = normalizeClientAddress(remoteAddress)
        const family = isIP(address)
        if (family === 0) return false
        return list.check(address, family === 6 ? 'ipv6' : 'ipv4')
      },
    },
    problems: [],
  }
}
