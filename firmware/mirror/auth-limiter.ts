import type { Clock } from '../common/clock.js'

/**
 * Failed proofs tolerated per source address and certificate within authFailureWindowMs before
 * RATE_LIMITED. Keyed by the certificate too, so an appliance that fails on an address never
 * delays another one (a real peer) on the same address: the TLS handshake proves possession of
 * the certificate's key, so nobody can fail under a peer's certificate.
 */
export const authFailuresMax = 5
/**
 * Failed proofs tolerated per source address within authFailureWindowMs from certificates that
 * are not pinned for any peer, before every unpinned certificate from that address is
 * RATE_LIMITED (a guesser making a new certificate per try). Pinned peers never count here.
 */
export const unpinnedAuthFailuresPerAddressMax = 30
/** The sliding window for authFailuresMax, in milliseconds. */
export const authFailureWindowMs = 60_000
/** Keys (address and certificate, or address) whose failures are remembered; the oldest is forgotten beyond this. */
export const authFailureAddressesMax = 4096

/** Counts failed proofs per key (an address, or address and certificate) in a sliding window (pure apart from the clock). */
export function createAuthFailureLimiter(clock: Clock, limits = { failuresMax: authFailuresMax, windowMs: authFailureWindowMs }) {
  const failures = new Map<string, number[]>()

  function recent(address: string): number[] {
    const now = clock.monotonicMs()
    const times = (failures.get(address) ?? []).filter((time) => now - time < limits.windowMs)
    if (times.length === 0) failures.delete(address)
    else failures.set(address, times)
    return times
  }

  return {
    /** Failed proofs from `address` within the window. */
    count: (address: string): number => recent(address).length,
    /** True when `address` has used up its failures for now. */
    isLimited: (address: string): boolean => recent(address).length >= limits.failuresMax,
    record(address: string): void {
      const times = recent(address)
      times.push(clock.monotonicMs())
      // Re-insert so Map order is least recently failed first, then forget the oldest if full.
      failures.delete(address)
      failures.set(address, times)
      if (failures.size > authFailureAddressesMax) failures.delete(failures.keys().next().value!)
    },
    forget: (address: string): void => void failures.delete(address),
    /** Addresses currently limited. */
    limitedCount: (): number => [...failures.keys()].filter((address) => recent(address).length >= limits.failuresMax).length,
  }
}
