/**
 * An in-memory MirrorChannel pair for the simulation: what the TLS listener and connectToPeer
 * hand the copy layer, without sockets. Within one connection each direction is ordered (it
 * is TCP); a connection carries the faults its plan says: latency, a stall of one direction
 * (frames held back, which makes acknowledgements time out), and a reset at a chosen frame
 * (that frame and everything in flight is lost; what already arrived can still be read).
 * Close follows the real channel: a CLOSE marker behind the queued frames, the peer answers
 * with its own, and a side that is not answered within the linger time tears the connection
 * down. Frames of an old connection may still arrive after a new one is up (reordering across
 * connections); a crashed node's connections are reset.
 */
import assert from 'node:assert/strict'
import { MirrorError } from '../../firmware/mirror/errors.js'
import type { MirrorChannel, MirrorPeer } from '../../firmware/mirror/channel.js'
import type { MirrorFrame } from '../../firmware/mirror/protocol.js'
import type { VirtualTime } from './virtual-time.js'

/** Application frame types start here (the channel layer uses the ones below). */
const applicationFrameTypeMin = 16

/** What goes wrong on one connection; chosen by the engine from the seed. */
export interface ConnectionPlan {
  /** One-way delay of every frame, in virtual milliseconds. */
  latencyMs: number
  /** Reset the connection when this many data frames have been sent (both directions counted); undefined: never. */
  resetAtFrame?: number
  /** Hold one direction back for `durationMs` from the `atFrame`-th data frame on. */
  stall?: { atFrame: number; direction: 'outbound' | 'inbound'; durationMs: number }
  /** Reset the connection when this returns true for a data frame about to be sent (scripted tests). */
  resetOn?: (type: number, direction: 'outbound' | 'inbound') => boolean
  /** A side that closed and is not answered tears the connection down after this long, in virtual milliseconds. */
  lingerMs: number
}

type Item = { kind: 'frame'; frame: MirrorFrame } | { kind: 'close' } | { kind: 'refuse'; error: MirrorError }

/** One side's view of the connection; implements MirrorChannel. */
class SimEndpoint implements MirrorChannel {
  readonly closed: Promise<MirrorError | null>
  /** Set when this side starts closing (its own close, or the peer's CLOSE/REFUSE, or a reset). */
  failure: MirrorError | undefined
  /** This side closed cleanly or answered the peer's CLOSE: a later teardown reads as a clean end. */
  closingCleanly = false
  readonly inbox: Item[] = []
  /** After teardown: why receive() ends once the inbox is empty. */
  terminal: MirrorError | null | undefined
  /** Blocks this direction's deliveries until this virtual time (a stall). */
  heldUntilMs = 0
  /** Arrival time of the last frame sent from the other side to this one (keeps order). */
  lastArrivalMs = 0
  private waiter: (() => void) | undefined
  private resolveClosed!: (value: MirrorError | null) => void

  constructor(
    readonly connection: SimConnection,
    readonly direction: 'inbound' | 'outbound',
    readonly peer: MirrorPeer,
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve))
  }

  get isOpen(): boolean {
    return this.failure === undefined
  }

  get other(): SimEndpoint {
    return this.direction === 'outbound' ? this.connection.inbound : this.connection.outbound
  }

  wake(): void {
    const waiter = this.waiter
    this.waiter = undefined
    waiter?.()
  }

  finish(reason: MirrorError | null): void {
    if (this.terminal !== undefined) return
    this.terminal = reason
    this.failure ??= reason ?? new MirrorError('CLOSED', 'the channel was closed')
    this.resolveClosed(this.closingCleanly ? null : reason)
    this.wake()
  }

  send(type: number, payload: Uint8Array): Promise<void> {
    assert.ok(Number.isInteger(type) && type >= applicationFrameTypeMin && type <= 255, 'application frame types are 16–255')
    if (this.failure) return Promise.reject(new MirrorError('CLOSED', 'the channel is closed'))
    this.connection.transmit(this, { kind: 'frame', frame: { type, payload: Buffer.from(payload) } as MirrorFrame })
    return Promise.resolve()
  }

  sendJson(type: number, value: unknown): Promise<void> {
    return this.send(type, Buffer.from(JSON.stringify(value), 'utf8'))
  }

  async receive(): Promise<MirrorFrame | null> {
    for (;;) {
      const item = this.inbox.shift()
      if (item?.kind === 'frame') return item.frame
      if (item?.kind === 'close') {
        this.closingCleanly = true
        if (this.failure === undefined) {
          this.failure = new MirrorError('CLOSED', 'the peer closed the channel')
          this.connection.transmit(this, { kind: 'close' })
        }
        return null
      }
      if (item?.kind === 'refuse') {
        this.failure ??= item.error
        this.connection.teardown(item.error)
        throw item.error
      }
      if (this.terminal !== undefined) {
        if (this.terminal === null || this.closingCleanly) return null
        throw this.terminal
      }
      await new Promise<void>((resolve) => (this.waiter = resolve))
    }
  }

  async *[Symbol.asyncIterator](): AsyncIterator<MirrorFrame> {
    for (;;) {
      const frame = await this.receive()
      if (frame === null) return
      yield frame
    }
  }

  async close(error?: MirrorError): Promise<void> {
    if (this.failure === undefined) {
      if (error) {
        this.failure = error
        this.connection.transmit(this, { kind: 'refuse', error: new MirrorError(error.code, error.message, { expected: error.expected, actual: error.actual, origin: 'peer' }) })
      } else {
        this.closingCleanly = true
        this.failure = new MirrorError('CLOSED', 'the channel was closed')
        this.connection.transmit(this, { kind: 'close' })
      }
      this.connection.lingerFrom(this)
    }
    await this.closed
  }
}

/** One connection between a sender (outbound) and a receiver (inbound). */
export class SimConnection {
  readonly outbound: SimEndpoint
  readonly inbound: SimEndpoint
  private dataFrames = 0
  private tornDown = false
  private lingering = false

  constructor(
    readonly id: number,
    private readonly time: VirtualTime,
    private readonly plan: ConnectionPlan,
    peers: { ofOutbound: MirrorPeer; ofInbound: MirrorPeer },
    private readonly trace: (event: string) => void,
    private readonly detail?: (event: string) => void,
  ) {
    this.outbound = new SimEndpoint(this, 'outbound', peers.ofOutbound)
    this.inbound = new SimEndpoint(this, 'inbound', peers.ofInbound)
  }

  get isDown(): boolean {
    return this.tornDown
  }

  /** Puts one item on the wire from `from` to the other side, in order, with the plan's faults. */
  transmit(from: SimEndpoint, item: Item): void {
    if (this.tornDown) return
    const to = from.other
    if (item.kind === 'frame') {
      this.dataFrames++
      const stall = this.plan.stall
      if (stall && this.dataFrames === stall.atFrame) {
        const held = stall.direction === 'outbound' ? this.inbound : this.outbound
        held.heldUntilMs = this.time.now + stall.durationMs
        this.trace(`conn ${this.id}: ${stall.direction} stalled for ${stall.durationMs} ms at frame ${this.dataFrames}`)
      }
      if ((this.plan.resetAtFrame !== undefined && this.dataFrames >= this.plan.resetAtFrame) || this.plan.resetOn?.(item.frame.type, from.direction)) {
        this.trace(`conn ${this.id}: reset at frame ${this.dataFrames} (type ${item.frame.type} ${from.direction})`)
        this.teardown(new MirrorError('CONNECTION_CLOSED', 'the connection was reset (simulated)'))
        return
      }
    }
    this.detail?.(`conn ${this.id}: ${from.direction === 'outbound' ? '→' : '←'} ${describeItem(item)}`)
    const arrival = Math.max(this.time.now + this.plan.latencyMs, to.heldUntilMs, to.lastArrivalMs)
    to.lastArrivalMs = arrival
    this.time.setTimeout(() => this.arrive(to, item), arrival - this.time.now)
  }

  private arrive(to: SimEndpoint, item: Item): void {
    if (this.tornDown) return this.detail?.(`conn ${this.id}: lost ${describeItem(item)}`)
    to.inbox.push(item)
    to.wake()
    // Both sides have said CLOSE: the connection is gone.
    if (item.kind === 'close' && to.closingCleanly && to.failure !== undefined) this.teardown(null)
  }

  /** A side closed: if the other never answers, the connection goes after the linger time. */
  lingerFrom(_side: SimEndpoint): void {
    if (this.lingering) return
    this.lingering = true
    this.time.setTimeout(() => {
      if (!this.tornDown) this.teardown(new MirrorError('CONNECTION_CLOSED', 'the connection was closed after the linger time (simulated)'))
    }, this.plan.lingerMs)
  }

  /** Ends the connection at once: frames in flight are lost; each side reads what already arrived, then the end. */
  teardown(reason: MirrorError | null): void {
    if (this.tornDown) return
    this.tornDown = true
    this.outbound.finish(reason)
    this.inbound.finish(reason)
  }
}

/** A frame in one line, for --verbose. */
function describeItem(item: Item): string {
  if (item.kind !== 'frame') return item.kind === 'close' ? 'CLOSE' : `REFUSE ${item.error.code}`
  const { type, payload } = item.frame
  if (type === 17) {
    const header = JSON.parse(payload.subarray(4, 4 + payload.readUInt32BE(0)).toString('utf8')) as { sequence: number; id: string; deliveries: unknown[] }
    return `MESSAGE ${header.id.slice(0, 8)} sequence ${header.sequence} (${header.deliveries.length} deliveries)`
  }
  const names: Record<number, string> = { 16: 'POLICY', 18: 'MESSAGE_PART', 19: 'BATCH_END', 20: 'ACK', 21: 'BATCH_FAILED', 22: 'QUEUE_STATUS' }
  return type === 16 || type === 18 ? names[type]! : `${names[type] ?? `type ${type}`} ${payload.toString('utf8')}`
}
