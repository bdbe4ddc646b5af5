import { BlockList, isIP } from 'node:net'

/**
 * Who may send what to the listener. Two deployments share one rule:
 * - a designated archive recipient (`archiveRecipients`, compared case-insensitively)
 *   is accepted from any client — the mail server BCCs or journals to it;
 * - a client inside `trustedNetworks` may use any recipient — the mail server relays
 *   copies of all mail to the appliance.
 * Everything else is relay and is refused. Pure: no I/O.
 */
export interface RecipientPolicy {
  /** Whether `remoteAddress` (IPv4, IPv6 or IPv4-mapped IPv6) is inside a trusted network. */
  isTrustedClient(remoteAddress: string): boolean
  /** Whether `address` (an RCPT TO address) is an archive recipient. */
  isArchiveRecipient(address: string): boolean
  /** Whether a client that is (or is not) trusted may send to `address`. */
  mayReceive(address: string, clientTrusted: boolean): boolean
}

/** The result of parsing the policy options: the policy, or every problem found. */
export type RecipientPolicyResult = { policy: RecipientPolicy; problems: [] } | { policy: null; problems: string[] }

const ipv4MappedPrefix = /^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i

/** `::ffff:10.0.0.1` → `10.0.0.1`, so IPv4 networks match clients of a dual-stack listener. */
export function normalizeClientAddress(remoteAddress: string): string {
  return remoteAddress.trim().replace(ipv4MappedPrefix, '')
}

/**
 * Builds the policy from the `smtp` options. A CIDR is `address/prefix` (a bare address
 * means one host); each problem names the option path and the value.
 */
export function createRecipientPolicy(options: { archiveRecipients: readonly string[]; trustedNetworks: readonly string[] }): RecipientPolicyResult {
  const problems: string[] = []
  const networks = new BlockList()
  options.trustedNetworks.forEach((entry, index) => {
    const [network = '', prefixText, ...rest] = entry.trim().split('/')
    const family = isIP(network)
    const prefixMax = family === 6 ? 128 : 32
    const prefix = prefixText === undefined ? prefixMax : Number(prefixText)
    if (family === 0 || rest.length > 0 || !Number.isInteger(prefix) || prefix < 0 || prefix > prefixMax || prefixText === '') {
      problems.push(`smtp.trustedNetworks[${index}]: not a CIDR network (got ${JSON.stringify(entry)})`)
      return
    }
    networks.addSubnet(network, prefix, family === 6 ? 'ipv6' : 'ipv4')
  })
  const recipients = new Set<string>()
  options.archiveRecipients.forEach((entry, index) => {
    const address = entry.trim().toLowerCase()
    if (!/^[^\s@<>]+@[^\s@<>]+$/.test(address)) {
      problems.push(`smtp.archiveRecipients[${index}]: not an address local@domain (got ${JSON.stringify(entry)})`)
      return
    }
    recipients.add(address)
  })
  if (problems.length > 0) return { policy: null, problems }

  const isTrustedClient = (remoteAddress: string): boolean => {
    const address = normalizeClientAddress(remoteAddress)
    const family = isIP(address)
    if (family === 0) return false
    return networks.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }
  const isArchiveRecipient = (address: string): boolean => recipients.has(address.trim().toLowerCase())
  return {
    policy: {
      isTrustedClient,
      isArchiveRecipient,
      mayReceive: (address, clientTrusted) => clientTrusted || isArchiveRecipient(address),
    },
    problems: [],
  }
}
