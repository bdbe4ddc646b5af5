import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server'
import { clientAddressKey, decideAdmission, type AdmissionVerdict } from './connection-admission.js'
import { SmtpError, toHandlerError } from './errors.js'
import type { ListenerState, SessionState } from './listener-state.js'

/** The callback smtp-server hands every command handler but DATA's. */
type CommandCallback = (error?: Error | null) => void

/** What the connection and session handlers use of the listener. */
export type SessionHandlerContext = Pick<ListenerState, 'logger' | 'options' | 'counters' | 'sessions' | 'untrusted' | 'deadlines' | 'phase' | 'server' | 'policy'>

/**
 * The session's state for its current envelope: smtp-server gives a session a new envelope
 * object on RSET, EHLO, STARTTLS and after DATA, and the recipients seen start over with it.
 */
export function currentSessionState(sessions: Map<string, SessionState>, session: SMTPServerSession): SessionState {
  let known = sessions.get(session.id)
  if (!known) {
    // onConnect always runs first; this only guards against a library change.
    known = { trusted: false, addressKey: clientAddressKey(session.remoteAddress), envelope: null, recipients: new Set() }
    sessions.set(session.id, known)
  }
  if (known.envelope !== session.envelope) {
    known.envelope = session.envelope
    known.recipients = new Set()
  }
  return known
}

/** The 421 4.7.0 of a refused admission, one sentence naming the limit. */
function admissionError(verdict: Extract<AdmissionVerdict, { admitted: false }>): SmtpError {
  if (verdict.code === 'TOO_MANY_CONNECTIONS_FROM_ADDRESS') {
    return new SmtpError(verdict.code, 'per-address connection limit reached', { replyText: `Too many connections from your address (at most ${verdict.limitValue}), try again later` })
  }
  if (verdict.limit === 'untrustedConnectionsMax') {
    return new SmtpError(verdict.code, 'untrusted connection slots full', { replyText: 'Too many connections from outside the trusted networks, try again later' })
  }
  return new SmtpError(verdict.code, 'connection limit reached', { replyText: 'Too many connections, try again later' })
}

/**
 * smtp-server's onConnect: refuses with 421 4.3.2 unless listening, and with 421 4.7.0 when
 * admission (connection-admission.ts) says a limit is reached: `connectionsMax`, the
 * untrusted share of it, or `untrustedConnectionsPerAddressMax`. Otherwise opens the session
 * (trusted when the client is in a trusted network) and its deadlines.
 */
export function createConnectHandler(context: SessionHandlerContext) {
  const { logger, options, counters, sessions, untrusted, deadlines } = context
  return (session: SMTPServerSession, callback: CommandCallback): void => {
    const active = context.server
    if (context.phase !== 'listening' || !active) {
      counters.sessionsRefused.SHUTTING_DOWN++
      callback(toHandlerError(new SmtpError('SHUTTING_DOWN', 'listener is stopping', { replyText: 'Service shutting down, try again later' })))
      return
    }
    const trusted = context.policy?.isTrustedClient(session.remoteAddress) ?? false
    const addressKey = clientAddressKey(session.remoteAddress)
    const verdict = decideAdmission(
      // The connection being set up is already in the server's set; the counts leave it out.
      { trusted, connectionsOpen: active.connections.size - 1, untrustedOpen: untrusted.total, untrustedOpenFromAddress: untrusted.from(addressKey) },
      options,
    )
    if (!verdict.admitted) {
      counters.sessionsRefused[verdict.code]++
      // A whole slot pool full deserves a warning; one address over its share is routine.
      const log = verdict.limit === 'untrustedConnectionsPerAddressMax' ? logger.info : logger.warn
      log.call(logger, 'connection refused: connection limit reached', { remoteAddress: session.remoteAddress, trusted, limit: verdict.limit, limitValue: verdict.limitValue })
      callback(toHandlerError(admissionError(verdict)))
      return
    }
    if (!trusted) untrusted.add(addressKey)
    sessions.set(session.id, { trusted, addressKey, envelope: null, recipients: new Set() })
    deadlines.opened(session.id, { remoteAddress: session.remoteAddress, trusted })
    counters.sessionsTotal++
    logger.debug('session opened', { session: session.id, remoteAddress: session.remoteAddress, trusted })
    callback()
  }
}

/**
 * smtp-server's onMailFrom: every sender is accepted, and the session leaves its MAIL FROM
 * deadline, unless the archive is read-only (its volume is full): then 452 4.3.1, before the
 * sender spends its bandwidth on a message the archive would refuse.
 */
export function createMailFromHandler(context: Pick<ListenerState, 'deadlines' | 'archiveReadOnly' | 'counters' | 'logger'>) {
  const accept = (session: SMTPServerSession, callback: CommandCallback): void => {
    context.deadlines.mailAccepted(session.id)
    callback()
  }
  return (_address: SMTPServerAddress, session: SMTPServerSession, callback: CommandCallback): void => {
    if (!context.archiveReadOnly) return accept(session, callback)
    context.archiveReadOnly().then(
      (readOnly) => {
        if (!readOnly) return accept(session, callback)
        context.counters.messagesRefused.STORE_FULL++
        // Debug: a sender retrying against a full archive would otherwise flood the log.
        context.logger.debug('MAIL FROM refused: the archive is read-only', { session: session.id, reason: readOnly.reason })
        callback(toHandlerError(new SmtpError('STORE_FULL', `archive read-only: ${readOnly.reason}`, { replyText: 'Insufficient system storage, try again later' })))
      },
      // Cannot tell: take the message, and let the archive answer at the end of DATA.
      () => accept(session, callback),
    )
  }
}

/**
 * smtp-server's onRcptTo: 452 4.5.3 past `recipientsMax` distinct recipients in one
 * transaction, 550 5.7.1 for a recipient the policy does not let this client reach.
 */
export function createRcptHandler(context: SessionHandlerContext) {
  const { logger, options, counters, sessions } = context
  return (address: SMTPServerAddress, session: SMTPServerSession, callback: CommandCallback): void => {
    const known = currentSessionState(sessions, session)
    const recipient = address.address.toLowerCase()
    if (!known.recipients.has(recipient) && session.envelope.rcptTo.length >= options.recipientsMax) {
      counters.recipientsRefused.TOO_MANY_RECIPIENTS++
      callback(toHandlerError(new SmtpError('TOO_MANY_RECIPIENTS', `more than ${options.recipientsMax} recipients`, { replyText: 'Too many recipients' })))
      return
    }
    const policy = context.policy
    if (!policy || !policy.mayReceive(recipient, known.trusted)) {
      counters.recipientsRefused.RELAY_DENIED++
      logger.info('recipient refused: relay denied', { session: session.id, remoteAddress: session.remoteAddress })
      callback(toHandlerError(new SmtpError('RELAY_DENIED', 'relay denied', { replyText: 'Relay access denied: not an archive recipient and client not in a trusted network' })))
      return
    }
    known.recipients.add(recipient)
    callback()
  }
}

/** smtp-server's onClose: forgets the session, its slot and its deadlines. */
export function createCloseHandler(context: Pick<ListenerState, 'sessions' | 'untrusted' | 'deadlines'>) {
  return (session: SMTPServerSession): void => {
    const known = context.sessions.get(session.id)
    // Refused connections were never counted: only a session that was opened frees a slot.
    if (known && !known.trusted) context.untrusted.remove(known.addressKey)
    context.sessions.delete(session.id)
    context.deadlines.closed(session.id)
  }
}
