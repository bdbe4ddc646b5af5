/**
 * Runs work one piece at a time, in the order given: policy and hold changes and purge
 * batches never interleave, so a hold placed while a purge runs protects every message the
 * following batches reach.
 */
export interface ExclusiveLock {
  /** Runs `work` after every earlier piece has settled (fulfilled or rejected); its result is the caller's. */
  run<T>(work: () => Promise<T>): Promise<T>
  /** Settles when the work given so far has settled; never rejects. */
  idle(): Promise<unknown>
}

/** A lock with nothing queued. */
export function createExclusiveLock(): ExclusiveLock {
  let lock: Promise<unknown> = Promise.resolve()
  return {
    run<T>(work: () => Promise<T>): Promise<T> {
      const result = lock.then(work, work)
      lock = result.catch(() => undefined)
      return result
    },
    idle: () => lock,
  }
}
