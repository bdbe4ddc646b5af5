import type { MessageMeta } from '../archive/types.js'

/**
 * The scope rule: which archived messages an account may see. It lives here and only here;
 * every route that returns messages, counts, snippets or attachments asks it (through the
 * search's admission check and the message reads). Pure: no I/O.
 *
 * - `admin` and `auditor` see every message (scope `all`).
 * - `user` sees a message when one of their addresses (primary and aliases, from the
 *   account or the directory) is one of its participants: a header sender or recipient
 *   (From, To, Cc, Bcc) or an envelope sender or recipient of any of its deliveries —
 *   envelope BCC recipients of journal reports included. Addresses compare without case
 *   and without surrounding space or angle brackets; nothing else is folded, so
 *   `josé@example.com` is not `jose@example.com`.
 */

/** What one principal may see: everything, or the messages that name one of its addresses. */
export type Scope = { readonly kind: 'all' } | { readonly kind: 'addresses'; readonly addresses: ReadonlySet<string> }

/** The scope of admins and auditors. */
export const everything: Scope = Object.freeze({ kind: 'all' })

/** An address as the rule compares it: trimmed, without angle brackets, lower case. */
export function normalizeAddress(address: string): string {
  return address
    .trim()
    .replace(/^<(.*)>$/, '$1')
    .trim()
    .toLowerCase()
}

/** The scope of a `user` with these addresses (duplicates and case collapse; empty ones are dropped). */
export function addressScope(addresses: Iterable<string>): Scope {
  const set = new Set<string>()
  for (const address of addresses) {
    const normalized = normalizeAddress(address)
    if (normalized !== '') set.add(normalized)
  }
  return { kind: 'addresses', addresses: set }
}

/** The parts of a message's metadata the rule reads. */
export type ScopedMessage = Pick<MessageMeta, 'from' | 'to' | 'cc' | 'bcc' | 'deliveries'>

/** Every address a message names as sender or recipient, header or envelope, normalized. */
export function participantsOf(message: ScopedMessage): Set<string> {
  const participants = new Set<string>()
  const add = (address: string | null): void => {
    if (address === null) return
    const normalized = normalizeAddress(address)
    if (normalized !== '') participants.add(normalized)
  }
  for (const list of [message.from, message.to, message.cc, message.bcc]) for (const address of list) add(address)
  for (const delivery of message.deliveries) {
    add(delivery.envelopeFrom)
    for (const address of delivery.envelopeTo) add(address)
    for (const address of delivery.envelopeBcc) add(address)
  }
  return participants
}

/** Whether `scope` may see `message`. */
export function inScope(scope: Scope, message: ScopedMessage): boolean {
  if (scope.kind === 'all') return true
  if (scope.addresses.size === 0) return false
  for (const participant of participantsOf(message)) if (scope.addresses.has(participant)) return true
  return false
}
