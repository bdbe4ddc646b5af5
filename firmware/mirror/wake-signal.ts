/**
 * A level-triggered wake-up for background loops: notify() wakes every waiter, and a notify()
 * that comes while nobody waits is remembered, so the next wait() returns at once (no lost
 * wake-ups between a loop's check and its wait). Timers are unref'ed.
 */
export function createWakeSignal() {
  let pending = false
  let waiters: Array<() => void> = []

  return {
    /** Wakes the waiters now, or the next wait() if there is none. */
    notify(): void {
      pending = true
      const woken = waiters
      waiters = []
      for (const wake of woken) wake()
    },

    /** Resolves on the next notify() (or at once if one is pending), or after `timeoutMs` milliseconds. */
    wait(timeoutMs: number): Promise<void> {
      if (pending) {
        pending = false
        return Promise.resolve()
      }
      return new Promise((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          waiters = waiters.filter((waiter) => waiter !== done)
          pending = false
          resolve()
        }
        const timer = setTimeout(done, Math.max(0, timeoutMs)).unref()
        waiters.push(done)
      })
    },
  }
}

/** A signal as createWakeSignal makes it. */
export type WakeSignal = ReturnType<typeof createWakeSignal>
