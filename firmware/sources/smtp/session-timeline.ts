import type { Config } from '../../../config/types.js'

/**
 * The deadlines of one SMTP session, as pure data and one pure decision (STYLE 7): the
 * listener records what happened and when (session-deadlines.ts does the timers), and
 * checkDeadlines says whether a deadline has passed and, if not, when to look again.
 *
 * Every deadline is absolute: it runs from a protocol event (the greeting, a reply, the
 * DATA command, the connection) and no byte the client sends extends it. smtp-server's own
 * idle timeout restarts on every byte, so a client trickling one byte every few seconds
 * would otherwise hold its connection for ever.
 */

/** Where a session is, as far as its deadlines go. */
export type SessionPhase =
  /** The client owes MAIL FROM: after the greeting, or after the reply that ended a transaction. */
  | 'mail'
  /** MAIL FROM was accepted; the client sends RCPT TO and DATA. */
  | 'envelope'
  /** Between DATA's 354 and the final dot: the client sends the message. */
  | 'data'
  /** The message is in and the server owes the reply (the archive write): no deadline runs. */
  | 'archiving'

/** Which deadline closed a session. Each is a 421 4.4.2 (errors.ts). */
export type SmtpDeadlineCode = 'MAIL_FROM_TIMEOUT' | 'COMMAND_TIMEOUT' | 'DATA_TIMEOUT' | 'DATA_TOO_SLOW' | 'SESSION_TIMEOUT'

/**
 * The deadline limits, in the units their names end with (the `smtp` config section).
 * `dataBytesPerSecondMin` is the average since DATA, checked once `dataRateGraceMs` has
 * passed; 0 = no minimum.
 */
export type SessionDeadlineLimits = Pick<Config['smtp'], 'mailFromTimeoutMs' | 'commandTimeoutMs' | 'dataTimeoutMs' | 'dataBytesPerSecondMin' | 'dataRateGraceMs' | 'sessionTimeoutMs'>

/** What happened in one session and when, in monotonic milliseconds. Changed only by the note* functions. */
export interface SessionTimeline {
  openedAtMs: number
  phase: SessionPhase
  /** Since when the client owes MAIL FROM (meaningful in phase `mail`). */
  mailAwaitedSinceMs: number
  /** Since when the client owes its next command line: the last reply sent. */
  commandAwaitedSinceMs: number
  /** When DATA began (meaningful in phase `data`). */
  dataStartedAtMs: number
  /** Message bytes received since DATA began. */
  dataBytes: number
}

/** The result of checkDeadlines. */
export type DeadlineVerdict =
  /** Nothing has passed; look again at `checkAtMs`, or after the next event when null (phase `archiving`). */
  | { expired: null; checkAtMs: number | null }
  /** `code` passed at `deadlineAtMs`. */
  | { expired: SmtpDeadlineCode; deadlineAtMs: number }

/** A session opened at `nowMs`; its greeting goes out at once, so the client owes MAIL FROM and a command from now. */
export function openTimeline(nowMs: number): SessionTimeline {
  return { openedAtMs: nowMs, phase: 'mail', mailAwaitedSinceMs: nowMs, commandAwaitedSinceMs: nowMs, dataStartedAtMs: 0, dataBytes: 0 }
}

/** A reply went out: the client owes the next command from now; the reply to a message ends its transaction. */
export function noteReply(timeline: SessionTimeline, nowMs: number): void {
  timeline.commandAwaitedSinceMs = nowMs
  if (timeline.phase === 'archiving') {
    timeline.phase = 'mail'
    timeline.mailAwaitedSinceMs = nowMs
  }
}

/** MAIL FROM was accepted. */
export function noteMailFrom(timeline: SessionTimeline): void {
  if (timeline.phase === 'mail') timeline.phase = 'envelope'
}

/** DATA began (the 354 follows at once). */
export function noteDataStart(timeline: SessionTimeline, nowMs: number): void {
  timeline.phase = 'data'
  timeline.dataStartedAtMs = nowMs
  timeline.dataBytes = 0
}

/** The final dot arrived: the server owes the reply, and no deadline runs until it is sent. */
export function noteDataEnd(timeline: SessionTimeline): void {
  if (timeline.phase === 'data') timeline.phase = 'archiving'
}

/**
 * When the average DATA rate falls below `dataBytesPerSecondMin` if no more bytes come:
 * never before the grace period ends, and later the more bytes have arrived. Infinity when
 * there is no minimum.
 */
export function dataRateDeadlineMs(timeline: SessionTimeline, limits: SessionDeadlineLimits): number {
  if (limits.dataBytesPerSecondMin <= 0) return Number.POSITIVE_INFINITY
  const earnedMs = (timeline.dataBytes * 1000) / limits.dataBytesPerSecondMin
  return timeline.dataStartedAtMs + Math.max(limits.dataRateGraceMs, earnedMs)
}

/** Every deadline that runs in the session's phase, the most specific first (it wins a tie). */
function runningDeadlines(timeline: SessionTimeline, limits: SessionDeadlineLimits): [SmtpDeadlineCode, number][] {
  const session: [SmtpDeadlineCode, number] = ['SESSION_TIMEOUT', timeline.openedAtMs + limits.sessionTimeoutMs]
  const command: [SmtpDeadlineCode, number] = ['COMMAND_TIMEOUT', timeline.commandAwaitedSinceMs + limits.commandTimeoutMs]
  switch (timeline.phase) {
    case 'mail':
      return [['MAIL_FROM_TIMEOUT', timeline.mailAwaitedSinceMs + limits.mailFromTimeoutMs], command, session]
    case 'envelope':
      return [command, session]
    case 'data':
      return [['DATA_TOO_SLOW', dataRateDeadlineMs(timeline, limits)], ['DATA_TIMEOUT', timeline.dataStartedAtMs + limits.dataTimeoutMs], session]
    case 'archiving':
      // The message is complete; cutting the session now could only lose its reply.
      return []
  }
}

/**
 * Whether a deadline of the session has passed at `nowMs` (a deadline passes when `nowMs`
 * reaches it), and if not, when the earliest one will. Pure.
 */
export function checkDeadlines(timeline: SessionTimeline, nowMs: number, limits: SessionDeadlineLimits): DeadlineVerdict {
  let earliest: [SmtpDeadlineCode, number] | null = null
  for (const entry of runningDeadlines(timeline, limits)) {
    if (!earliest || entry[1] < earliest[1]) earliest = entry
  }
  if (!earliest) return { expired: null, checkAtMs: null }
  if (nowMs >= earliest[1]) return { expired: earliest[0], deadlineAtMs: earliest[1] }
  return { expired: null, checkAtMs: earliest[1] }
}
