import { parseNetworks } from '../../common/networks.js'

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

/**
 * Builds the policy from the `smtp` options. A CIDR is `address/prefix` (a bare address
 * means one host); each problem names the option path and the value.
 */
export function createRecipientPolicy(options: { archiveRecipients: readonly string[]; trustedNetworks: readonly string[] }): RecipientPolicyResult {
  const problems: string[] = []
  const parsed = parseNetworks(options.trustedNetworks, 'smtp.trustedNetworks')
  problems.push(...parsed.problems)
  const recipients = new Set<string>()
  options.archiveRecipients.forEach((entry, index) => {
    const address = entry.trim().toLowerCase()
    if (!/^[^\s@<>]+@[^\s@<>]+$/.test(address)) {
      problems.push(`smtp.archiveRecipients[${index}]: not an address local@domain (got ${JSON.stringify(entry)})`)
      return
    }
    recipients.add(address)
  })
  const networks = parsed.networks
  if (problems.length > 0 || !networks) return { policy: null, problems }

  const isTrustedClient = (remoteAddress: string): boolean => networks.contains(remoteAddress)
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
