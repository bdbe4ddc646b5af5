/**
 * Clock and randomness are injected into firmware services (STYLE 6) so tests can drive
 * time and reproduce randomized behaviour from a printed seed.
 */
export interface Clock {
  /** Milliseconds since the Unix epoch. */
  now(): number
  /** Monotonic milliseconds, for durations. */
  monotonicMs(): number
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonicMs: () => performance.now(),
}

/** A deterministic pseudo-random source (mulberry32); `next()` is in [0, 1). */
export interface Random {
  readonly seed: number
  next(): number
  /** An integer in [0, maxExclusive). */
  int(maxExclusive: number): number
}

export function createRandom(seed: number): Random {
  let state = seed >>> 0
  const next = (): number => {
    state = (state + 0x6d2b79f5) >>> 0
    let mixed = state
    mixed = Math.imul(mixed ^ (mixed >>> 15), mixed | 1)
    mixed ^= mixed + Math.imul(mixed ^ (mixed >>> 7), mixed | 61)
    return ((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296
  }
  return { seed, next, int: (maxExclusive) => Math.floor(next() * maxExclusive) }
}

/** A manually advanced clock for tests. */
export function createManualClock(startMs = 1_700_000_000_000): Clock & { advance(ms: number): void } {
  let current = startMs
  return {
    now: () => current,
    monotonicMs: () => current,
    advance: (ms) => {
      current += ms
    },
  }
}
