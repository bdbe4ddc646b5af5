/**
 * Virtual time for the mirror simulation. The sender and receiver read time from their
 * injected Clock but wait with the global setTimeout/setInterval (ack timers, status ticks,
 * wake signals, retry backoff). While a simulation runs, those globals are replaced by timers
 * on a virtual queue, and the engine advances time itself: it lets every pending promise
 * settle (one real setImmediate turn: the microtask queue is empty by then, and nothing in the
 * simulation does real I/O), then fires the earliest timer, and so on. The order of events is
 * therefore a function of the seed alone, and a run of minutes of virtual time takes
 * milliseconds.
 *
 * node:test's mock timers were not used: on Node 20 they do not give the timer objects
 * `unref()`/`refresh()` everywhere the firmware calls them, and they tick a global clock that
 * a tap process shares with tap itself.
 */
import type { Clock } from '../../firmware/common/clock.js'

const realSetImmediate = globalThis.setImmediate
const realGlobals = {
  setTimeout: globalThis.setTimeout,
  clearTimeout: globalThis.clearTimeout,
  setInterval: globalThis.setInterval,
  clearInterval: globalThis.clearInterval,
}

/** Wall-clock time of virtual 0 (the simulation's epoch), milliseconds since the Unix epoch. */
export const virtualEpochMs = 1_800_000_000_000

/** One timer on the virtual queue; shaped like Node's Timeout where the firmware uses it. */
class VirtualTimer {
  at = 0
  /** Bumped on every (re)schedule and on clear: a queue entry with an older generation is stale. */
  generation = 0
  cleared = false
  referenced = true

  constructor(
    readonly id: number,
    private readonly owner: VirtualTime,
    readonly callback: (...args: unknown[]) => void,
    readonly delayMs: number,
    readonly args: unknown[],
    readonly repeat: boolean,
  ) {}

  unref(): this {
    this.referenced = false
    return this
  }
  ref(): this {
    this.referenced = true
    return this
  }
  hasRef(): boolean {
    return this.referenced
  }
  refresh(): this {
    if (!this.cleared) this.owner.enqueue(this)
    return this
  }
  close(): this {
    this.owner.clear(this)
    return this
  }
  [Symbol.toPrimitive](): number {
    return this.id
  }
}

interface QueueEntry {
  at: number
  order: number
  timer: VirtualTimer
  generation: number
}

/** A min-heap of timer entries by (time, order of scheduling). */
class TimerHeap {
  private items: QueueEntry[] = []

  get size(): number {
    return this.items.length
  }

  push(entry: QueueEntry): void {
    const items = this.items
    items.push(entry)
    let index = items.length - 1
    while (index > 0) {
      const parent = (index - 1) >> 1
      if (!before(items[index]!, items[parent]!)) break
      ;[items[index], items[parent]] = [items[parent]!, items[index]!]
      index = parent
    }
  }

  peek(): QueueEntry | undefined {
    return this.items[0]
  }

  pop(): QueueEntry | undefined {
    const items = this.items
    const top = items[0]
    const last = items.pop()
    if (items.length > 0 && last) {
      items[0] = last
      let index = 0
      for (;;) {
        const left = index * 2 + 1
        const right = left + 1
        let smallest = index
        if (left < items.length && before(items[left]!, items[smallest]!)) smallest = left
        if (right < items.length && before(items[right]!, items[smallest]!)) smallest = right
        if (smallest === index) break
        ;[items[index], items[smallest]] = [items[smallest]!, items[index]!]
        index = smallest
      }
    }
    return top
  }
}

function before(a: QueueEntry, b: QueueEntry): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order)
}

/** Lets every pending promise settle: a real setImmediate runs only once the microtask queue is empty. */
export function settle(): Promise<void> {
  return new Promise((resolve) => realSetImmediate(resolve))
}

/** The virtual clock and timer queue of one simulation run. */
export class VirtualTime {
  private nowMs = 0
  private order = 0
  private nextId = 1
  private readonly heap = new TimerHeap()
  /** Timers fired so far (a measure of the work a run did). */
  fired = 0

  /** The Clock handed to the firmware: wall clock from virtualEpochMs, monotonic from 0. */
  readonly clock: Clock = {
    now: () => virtualEpochMs + this.nowMs,
    monotonicMs: () => this.nowMs,
  }

  /** Virtual milliseconds since the start of the run. */
  get now(): number {
    return this.nowMs
  }

  /** Schedules `callback` after `delayMs` virtual milliseconds (at least 1, as Node does). */
  setTimeout(callback: (...args: unknown[]) => void, delayMs?: number, ...args: unknown[]): VirtualTimer {
    const timer = new VirtualTimer(this.nextId++, this, callback, clampDelay(delayMs), args, false)
    this.enqueue(timer)
    return timer
  }

  setInterval(callback: (...args: unknown[]) => void, delayMs?: number, ...args: unknown[]): VirtualTimer {
    const timer = new VirtualTimer(this.nextId++, this, callback, clampDelay(delayMs), args, true)
    this.enqueue(timer)
    return timer
  }

  /** Resolves after `delayMs` virtual milliseconds. */
  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(() => resolve(), delayMs))
  }

  clear(timer: unknown): void {
    if (timer instanceof VirtualTimer) {
      timer.cleared = true
      timer.generation++
    }
  }

  enqueue(timer: VirtualTimer): void {
    timer.generation++
    timer.at = this.nowMs + timer.delayMs
    this.heap.push({ at: timer.at, order: this.order++, timer, generation: timer.generation })
  }

  /** Replaces the global timer functions with this queue's until uninstall(). */
  install(): void {
    const globals = globalThis as unknown as Record<string, unknown>
    globals.setTimeout = this.setTimeout.bind(this)
    globals.setInterval = this.setInterval.bind(this)
    globals.clearTimeout = (timer: unknown) => this.clear(timer)
    globals.clearInterval = (timer: unknown) => this.clear(timer)
  }

  /** Puts Node's own timer functions back. */
  static uninstall(): void {
    Object.assign(globalThis, realGlobals)
  }

  /**
   * Settles pending promises, then fires the earliest live timer (advancing the clock to it)
   * and settles again. Returns false when no live timer is left at or before `untilMs`.
   */
  async step(untilMs: number): Promise<boolean> {
    await settle()
    for (;;) {
      const entry = this.heap.peek()
      if (!entry || entry.at > untilMs) return false
      this.heap.pop()
      const timer = entry.timer
      if (timer.cleared || entry.generation !== timer.generation) continue
      this.nowMs = entry.at
      this.fired++
      if (timer.repeat) this.enqueue(timer)
      else timer.cleared = true
      timer.callback(...timer.args)
      await settle()
      return true
    }
  }

  /** Runs events until virtual time `untilMs` (the clock ends there). */
  async runUntil(untilMs: number): Promise<void> {
    while (await this.step(untilMs));
    this.nowMs = Math.max(this.nowMs, untilMs)
  }

  /**
   * Runs events until `done()` is true (checked after each event) or virtual time reaches
   * `limitMs`. @returns whether done() became true
   */
  async runUntilTrue(done: () => boolean, limitMs: number): Promise<boolean> {
    for (;;) {
      if (done()) return true
      if (!(await this.step(limitMs))) {
        this.nowMs = Math.max(this.nowMs, limitMs)
        return done()
      }
    }
  }
}

function clampDelay(delayMs: number | undefined): number {
  const value = Number(delayMs)
  return Number.isFinite(value) && value >= 1 ? Math.floor(value) : 1
}
