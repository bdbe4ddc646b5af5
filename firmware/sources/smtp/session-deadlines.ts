import { SmtpError, formatReply } from './errors.js'
import type { ListenerState } from './listener-state.js'
import {
  checkDeadlines,
  noteDataEnd,
  noteDataStart,
  noteMailFrom,
  noteReply,
  openTimeline,
  type SessionDeadlineLimits,
  type SessionTimeline,
  type SmtpDeadlineCode,
} from './session-timeline.js'

/** Where a deadline's 421 goes: smtp-server's connection (`send` with context false sends the text as given; a 421 closes it). */
export interface ReplyTarget {
  readonly id: string
  send(code: number, data: string, context: false): void
}

/** A message in DATA that a deadline cuts off: it is answered, counted as aborted, and never submitted. */
export interface CutOffReception {
  cutOff(error: SmtpError): void
}

/** What the deadlines use of the listener. */
export type SessionDeadlinesContext = Pick<ListenerState, 'clock' | 'logger' | 'options' | 'counters'>

interface DeadlineEntry {
  readonly sessionId: string
  readonly remoteAddress: string
  readonly trusted: boolean
  readonly timeline: SessionTimeline
  /** Known from the greeting on: the deadlines run from then. */
  connection: ReplyTarget | null
  reception: CutOffReception | null
  timer: NodeJS.Timeout | null
  /** When the armed timer fires, monotonic milliseconds; Infinity when none is armed. */
  timerAtMs: number
  expired: boolean
}

/** Seconds for a reply text: `30`, `1.5`. */
const seconds = (ms: number): string => String(Math.round(ms) / 1000)

/**
 * The 421 4.4.2 of a deadline: one sentence naming the limit; a message cut off in DATA
 * says that nothing was archived, so the sender knows to send it again.
 */
export function smtpErrorForDeadline(code: SmtpDeadlineCode, limits: SessionDeadlineLimits, midData: boolean): SmtpError {
  const notArchived = midData ? '; the message was not archived' : ''
  const texts: Record<SmtpDeadlineCode, string> = {
    MAIL_FROM_TIMEOUT: `No MAIL FROM within ${seconds(limits.mailFromTimeoutMs)} s, closing connection`,
    COMMAND_TIMEOUT: `No complete command within ${seconds(limits.commandTimeoutMs)} s, closing connection`,
    DATA_TIMEOUT: `Message not complete within ${seconds(limits.dataTimeoutMs)} s, closing connection${notArchived}`,
    DATA_TOO_SLOW: `Message data slower than ${limits.dataBytesPerSecondMin} bytes/s, closing connection${notArchived}`,
    SESSION_TIMEOUT: `Session longer than ${seconds(limits.sessionTimeoutMs)} s, closing connection${notArchived}`,
  }
  return new SmtpError(code, `deadline ${code} passed`, { replyText: texts[code] })
}

/**
 * The absolute deadlines of every open session (session-timeline.ts decides; this keeps one
 * unref'd timer per session, armed at the earliest deadline). The command handlers report
 * the protocol events; when a deadline passes, a message in DATA is cut off (nothing is
 * submitted) and the client gets 421 4.4.2 and is disconnected. While a complete message
 * is being archived no deadline runs: its reply always goes out first.
 */
export class SessionDeadlines {
  readonly #context: SessionDeadlinesContext
  readonly #entries = new Map<string, DeadlineEntry>()

  constructor(context: SessionDeadlinesContext) {
    this.#context = context
  }

  /** Sessions tracked now. */
  get size(): number {
    return this.#entries.size
  }

  /** An admitted session; its deadlines start with its greeting (the first reply). */
  opened(sessionId: string, client: { remoteAddress: string; trusted: boolean }): void {
    const timeline = openTimeline(this.#context.clock.monotonicMs())
    this.#entries.set(sessionId, { sessionId, ...client, timeline, connection: null, reception: null, timer: null, timerAtMs: Number.POSITIVE_INFINITY, expired: false })
  }

  /** A reply went out on `connection` (the greeting included): the client owes its next command from now. */
  replied(connection: ReplyTarget): void {
    const entry = this.#entries.get(connection.id)
    if (!entry || entry.expired) return
    entry.connection ??= connection
    noteReply(entry.timeline, this.#context.clock.monotonicMs())
    this.#schedule(entry)
  }

  /** MAIL FROM was accepted. */
  mailAccepted(sessionId: string): void {
    const entry = this.#entries.get(sessionId)
    if (entry) noteMailFrom(entry.timeline)
  }

  /** DATA began; `reception` is cut off if a deadline passes before the final dot. */
  dataStarted(sessionId: string, reception: CutOffReception): void {
    const entry = this.#entries.get(sessionId)
    if (!entry || entry.expired) return
    entry.reception = reception
    noteDataStart(entry.timeline, this.#context.clock.monotonicMs())
    this.#schedule(entry)
  }

  /** Message bytes arrived. Only moves deadlines later, so no timer is touched. */
  dataReceived(sessionId: string, bytes: number): void {
    const entry = this.#entries.get(sessionId)
    if (entry) entry.timeline.dataBytes += bytes
  }

  /** The final dot arrived: no deadline runs until the reply is sent. */
  dataEnded(sessionId: string): void {
    const entry = this.#entries.get(sessionId)
    if (!entry) return
    entry.reception = null
    noteDataEnd(entry.timeline)
  }

  /** The session is gone: its timer is cleared. */
  closed(sessionId: string): void {
    const entry = this.#entries.get(sessionId)
    if (!entry) return
    if (entry.timer) clearTimeout(entry.timer)
    this.#entries.delete(sessionId)
  }

  /** Expires the session if a deadline passed, else arms the timer at the earliest deadline if that is sooner than the armed one. */
  #schedule(entry: DeadlineEntry): void {
    if (!entry.connection || entry.expired) return
    const nowMs = this.#context.clock.monotonicMs()
    const verdict = checkDeadlines(entry.timeline, nowMs, this.#context.options)
    if (verdict.expired) {
      this.#expire(entry, verdict.expired, nowMs)
      return
    }
    if (verdict.checkAtMs === null || verdict.checkAtMs >= entry.timerAtMs) return
    if (entry.timer) clearTimeout(entry.timer)
    entry.timerAtMs = verdict.checkAtMs
    // +1: a timer may fire a fraction of a millisecond before the monotonic clock reaches it.
    entry.timer = setTimeout(() => this.#fire(entry), Math.ceil(verdict.checkAtMs - nowMs) + 1)
    entry.timer.unref()
  }

  #fire(entry: DeadlineEntry): void {
    entry.timer = null
    entry.timerAtMs = Number.POSITIVE_INFINITY
    // Timers run before the event loop polls sockets: after a stall (a long search, a GC
    // pause) a command already waiting in the socket would lose to its own deadline. The
    // check runs after this turn's I/O instead, so what arrived in time is read first.
    setImmediate(() => {
      if (this.#entries.get(entry.sessionId) === entry) this.#schedule(entry)
    })
  }

  /** Counts and logs the deadline, cuts off a message in DATA, sends the 421 (which closes the connection). */
  #expire(entry: DeadlineEntry, code: SmtpDeadlineCode, nowMs: number): void {
    const { counters, logger, options } = this.#context
    entry.expired = true
    if (entry.timer) clearTimeout(entry.timer)
    entry.timer = null
    const { timeline } = entry
    const midData = timeline.phase === 'data'
    const error = smtpErrorForDeadline(code, options, midData)
    const reply = error.reply!
    counters.sessionsClosedByDeadline[code]++
    // A trusted relay cut off is worth an operator's attention; untrusted tricklers are routine.
    const log = entry.trusted ? logger.warn : logger.info
    log.call(logger, 'session closed: deadline passed', {
      session: entry.sessionId,
      remoteAddress: entry.remoteAddress,
      trusted: entry.trusted,
      deadline: code,
      phase: timeline.phase,
      sessionMs: Math.round(nowMs - timeline.openedAtMs),
      ...(midData ? { dataBytes: timeline.dataBytes, dataMs: Math.round(nowMs - timeline.dataStartedAtMs) } : {}),
      reply: formatReply(reply),
    })
    if (midData) entry.reception?.cutOff(error)
    entry.reception = null
    entry.connection?.send(reply.code, `${reply.enhancedCode} ${reply.text}`, false)
  }
}
