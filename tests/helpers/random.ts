/**
 * A small seeded generator (a linear congruential one) for tests that draw random inputs:
 * the same seed gives the same draws, so a failure printed with its seed replays.
 *
 * @returns `random(below)`: the next draw, an integer in [0, below) (below ≤ 2^31)
 */
export function seededRandom(seed: number): (below: number) => number {
  let state = seed
  return (below) => {
    state = (state * 1103515245 + 12345) % 2147483648
    return state % below
  }
}
