import type { Clock } from '../common/clock.js'

/** Longest user name kept, in characters (longer names are cut for the key, the log and the audit). */
export const loginUserCharsMax = 64

/** What the throttle knows of one (address, user) pair. */
export interface Pair {
  /** The address key (addressKey) and the cut user name. */
  address: string
  user: string
  failures: number
  lastFailureMs: number
  /** A correct password since the last failure: the next attempt is checked at once. */
  cleared: boolean
  throttledAtMs: number | null
  /** Attempts that waited while throttled. */
  delayedAttempts: number
  /** Correct passwords while throttled. */
  successes: number
}

/** Why a pair was forgotten. */
export type ForgetReason = 'quiet' | 'evicted' | 'stopped'

/** The key of a client address: IPv4 as is, IPv4-mapped IPv6 as IPv4, other IPv6 as its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (mapped) return mapped[1]!
  if (!address.includes(':')) return address
  const bare = address.split('%')[0]!.toLowerCase()
  const [head = '', tail] = bare.split('::')
  const groups = (text: string) => (text ? text.split(':').flatMap((group) => (group.includes('.') ? ['0', '0'] : [group])) : [])
  const front = groups(head)
  const back = tail === undefined ? [] : groups(tail)
  const all = [...front, ...Array<string>(Math.max(0, 8 - front.length - back.length)).fill('0'), ...back]
  return `${all
    .slice(0, 4)
    .map((group) => (parseInt(group, 16) || 0).toString(16))
    .join(':')}::/64`
}

/** The key of an (address, user) pair. */
export function pairKey(address: string, user: string): string {
  return `${addressKey(address)}\u0000${user.slice(0, loginUserCharsMax)}`
}

/**
 * The table of (address, user) pairs, at most `pairsMax`: pairs not yet throttled and
 * throttled ones, each ordered by last failure, oldest first. A pair quiet for
 * `forgetAfterMs` is forgotten when looked up or swept; beyond `pairsMax` the pair with the
 * oldest failure goes, unthrottled pairs first. `onForget` hears of each forgotten pair.
 */
export function createPairTable(deps: { clock: Clock; onForget: (pair: Pair, reason: ForgetReason) => void }, options: { forgetAfterMs: number; pairsMax: number }) {
  const counting = new Map<string, Pair>()
  const throttled = new Map<string, Pair>()

  function forget(key: string, pair: Pair, reason: ForgetReason): void {
    counting.delete(key)
    throttled.delete(key)
    deps.onForget(pair, reason)
  }

  function lookup(key: string): Pair | undefined {
    const pair = throttled.get(key) ?? counting.get(key)
    if (pair && deps.clock.monotonicMs() - pair.lastFailureMs >= options.forgetAfterMs) {
      forget(key, pair, 'quiet')
      return undefined
    }
    return pair
  }

  return {
    lookup,
    /** The pair of `key`, or a new one with no failures (room made for it; stored by `place`). */
    obtain(key: string, address: string, user: string): Pair {
      const pair = lookup(key)
      if (pair) return pair
      while (counting.size + throttled.size >= options.pairsMax) {
        const from = counting.size > 0 ? counting : throttled
        const [oldestKey, oldest] = from.entries().next().value as [string, Pair]
        forget(oldestKey, oldest, 'evicted')
      }
      return { address: addressKey(address), user: user.slice(0, loginUserCharsMax), failures: 0, lastFailureMs: 0, cleared: false, throttledAtMs: null, delayedAttempts: 0, successes: 0 }
    },
    /** Stores the pair after a failure, last in its order, among the throttled ones or not. */
    place(key: string, pair: Pair, isThrottled: boolean): void {
      counting.delete(key)
      throttled.delete(key)
      ;(isThrottled ? throttled : counting).set(key, pair)
    },
    /** Forgets the pairs quiet for `forgetAfterMs`. */
    sweep(): void {
      const now = deps.clock.monotonicMs()
      for (const map of [counting, throttled]) {
        for (const [key, pair] of map) {
          if (now - pair.lastFailureMs < options.forgetAfterMs) break
          forget(key, pair, 'quiet')
        }
      }
    },
    /** Forgets every pair, the throttled ones with `onForget` ('stopped'). */
    forgetAll(): void {
      for (const [key, pair] of [...throttled]) forget(key, pair, 'stopped')
      counting.clear()
    },
    /** Pairs tracked and pairs throttled now. */
    stats(): { pairs: number; throttled: number } {
      return { pairs: counting.size + throttled.size, throttled: throttled.size }
    },
  }
}

export type PairTable = ReturnType<typeof createPairTable>
