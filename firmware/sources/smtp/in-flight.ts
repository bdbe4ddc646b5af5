/**
 * The sessions between their DATA command and its reply, each with what settles it (sends
 * its reply) when stop() stops waiting. stop() waits for the set to drain before closing
 * the connections. Pure bookkeeping: no I/O, no timers.
 */
export class InFlightMessages {
  readonly #settlers = new Map<string, () => void>()
  #drained: (() => void) | null = null

  /** Messages in flight now. */
  get size(): number {
    return this.#settlers.size
  }

  /** Whether the session has a message between DATA and its reply. */
  has(sessionId: string): boolean {
    return this.#settlers.has(sessionId)
  }

  /** Registers the session's message; `settle` answers it when stop() gives up waiting. */
  add(sessionId: string, settle: () => void): void {
    this.#settlers.set(sessionId, settle)
  }

  /** The session's message was answered; the last one to go resolves `drained()`. */
  finish(sessionId: string): void {
    this.#settlers.delete(sessionId)
    if (this.#settlers.size === 0 && this.#drained) this.#drained()
  }

  /** Resolves when the last message in flight now has been answered; call only while `size > 0`. */
  drained(): Promise<'drained'> {
    return new Promise((resolve) => {
      this.#drained = () => resolve('drained')
    })
  }

  /** Answers every message still in flight (each settle calls `finish`). */
  settleAll(): void {
    for (const settle of [...this.#settlers.values()]) settle()
  }
}
