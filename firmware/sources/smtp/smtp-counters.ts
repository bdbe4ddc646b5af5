import type { SmtpDeadlineCode } from './session-timeline.js'
import type { SmtpConnectionRefusal, SmtpMessageRefusal, SmtpRecipientRefusal, SmtpStats } from './types.js'

const messageRefusals: readonly SmtpMessageRefusal[] = ['MESSAGE_TOO_LARGE', 'STORE_FULL', 'BUFFER_FULL', 'ARCHIVE_UNAVAILABLE', 'MESSAGE_REFUSED']
const recipientRefusals: readonly SmtpRecipientRefusal[] = ['RELAY_DENIED', 'TOO_MANY_RECIPIENTS']
const connectionRefusals: readonly SmtpConnectionRefusal[] = ['TOO_MANY_CONNECTIONS', 'TOO_MANY_CONNECTIONS_FROM_ADDRESS', 'SHUTTING_DOWN']
const deadlines: readonly SmtpDeadlineCode[] = ['MAIL_FROM_TIMEOUT', 'COMMAND_TIMEOUT', 'DATA_TIMEOUT', 'DATA_TOO_SLOW', 'SESSION_TIMEOUT']

/** The counters of SmtpStats that the handlers add to; the rest of the stats is read live. */
export type SmtpCounters = Omit<SmtpStats, 'sessionsActive' | 'sessionsUntrusted' | 'messagesInFlight' | 'bufferedBytes'>

/** What SmtpStats reads from the listener at the moment it is taken. */
export interface SmtpLiveFigures {
  sessionsActive: number
  sessionsUntrusted: number
  messagesInFlight: number
  bufferedBytes: number
}

function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>
}

/** Every counter at zero, every refusal reason present. */
export function createSmtpCounters(): SmtpCounters {
  return {
    sessionsTotal: 0,
    sessionsRefused: zeroCounts(connectionRefusals),
    sessionsClosedByDeadline: zeroCounts(deadlines),
    messagesAccepted: 0,
    messagesDuplicate: 0,
    bytesAccepted: 0,
    messagesRefused: zeroCounts(messageRefusals),
    messagesAborted: 0,
    recipientsRefused: zeroCounts(recipientRefusals),
  }
}

/** A snapshot of the counters and the live figures; shares no object with the counters. */
export function smtpStatsOf(counters: SmtpCounters, live: SmtpLiveFigures): SmtpStats {
  return {
    sessionsTotal: counters.sessionsTotal,
    sessionsActive: live.sessionsActive,
    sessionsUntrusted: live.sessionsUntrusted,
    sessionsRefused: { ...counters.sessionsRefused },
    sessionsClosedByDeadline: { ...counters.sessionsClosedByDeadline },
    messagesAccepted: counters.messagesAccepted,
    messagesDuplicate: counters.messagesDuplicate,
    bytesAccepted: counters.bytesAccepted,
    messagesRefused: { ...counters.messagesRefused },
    messagesAborted: counters.messagesAborted,
    recipientsRefused: { ...counters.recipientsRefused },
    messagesInFlight: live.messagesInFlight,
    bufferedBytes: live.bufferedBytes,
  }
}
