/**
 * Writes the latest of a stream of values without queueing every one: at most one write runs,
 * and a value scheduled meanwhile replaces any other waiting value. Cursor updates arrive per
 * acknowledged batch; fsyncing each would put the disk in the ack path, while a lagging
 * persisted cursor only means a few batches are sent again after a crash (deduplicated).
 * Every write of one file goes through one writer, so an older value never lands last.
 */
export function createCoalescingWriter<T>(write: (value: T) => Promise<void>, onError: (error: unknown) => void) {
  type Waiter = { resolve(): void; reject(error: unknown): void }
  let pending: { value: T; waiters: Waiter[] } | undefined
  let running: Promise<void> | undefined

  function run(): Promise<void> {
    running ??= (async () => {
      while (pending) {
        const current = pending
        pending = undefined
        try {
          await write(current.value)
          for (const waiter of current.waiters) waiter.resolve()
        } catch (error) {
          if (current.waiters.length === 0) onError(error)
          for (const waiter of current.waiters) waiter.reject(error)
        }
      }
      running = undefined
    })()
    return running
  }

  return {
    /** Saves `value` soon, after any write under way; a failure goes to onError. */
    schedule(value: T): void {
      pending = { value, waiters: pending?.waiters ?? [] }
      void run()
    },
    /**
     * Saves `value` (or a later value scheduled before it is written) and resolves once it is
     * written. @throws whatever the write throws
     */
    save(value: T): Promise<void> {
      return new Promise<void>((resolve, reject) => {
        pending = { value, waiters: [...(pending?.waiters ?? []), { resolve, reject }] }
        void run()
      })
    },
    /** Resolves when every scheduled value has been written (or failed and been reported). */
    flush(): Promise<void> {
      // The loop in run() takes values scheduled while it writes, so one wait covers them.
      return pending || running ? run() : Promise.resolve()
    },
  }
}
