import type { SMTPServerAddress, SMTPServerSession } from 'smtp-server'
import { SmtpError, toHandlerError } from './errors.js'
import type { ListenerState, SessionState } from './listener-state.js'

/** The callback smtp-server hands every command handler but DATA's. */
type CommandCallback = (error?: Error | null) => void

/** What the connection and session handlers use of the listener. */
export type SessionHandlerContext = Pick<ListenerState, 'logger' | 'options' | 'counters' | 'sessions' | 'phase' | 'server' | 'policy'>

/**
 * The session's state for its current envelope: smtp-server gives a session a new envelope
 * object on RSET, EHLO, STARTTLS and after DATA, and the recipients seen start over with it.
 */
export function currentSessionState(sessions: Map<string, SessionState>, session: SMTPServerSession): SessionState {
  let known = sessions.get(session.id)
  if (!known) {
    // onConnect always runs first; this only guards against a library change.
    known = { trusted: false, envelope: null, recipients: new Set() }
    sessions.set(session.id, known)
  }
  if (known.envelope !== session.envelope) {
    known.envelope = session.envelope
    known.recipients = new Set()
  }
  return known
}

/**
 * smtp-server's onConnect: refuses with 421 4.3.2 unless listening and with 421 4.7.0 over
 * `connectionsMax`; otherwise opens the session, trusted when the client is in a trusted network.
 */
export function createConnectHandler(context: SessionHandlerContext) {
  const { logger, options, counters, sessions } = context
  return (session: SMTPServerSession, callback: CommandCallback): void => {
    const active = context.server
    if (context.phase !== 'listening' || !active) {
      counters.sessionsRefused.SHUTTING_DOWN++
      callback(toHandlerError(new SmtpError('SHUTTING_DOWN', 'listener is stopping', { replyText: 'Service shutting down, try again later' })))
      return
    }
    // The connection being set up is already in the set, hence `>`.
    if (active.connections.size > options.connectionsMax) {
      counters.sessionsRefused.TOO_MANY_CONNECTIONS++
      logger.warn('connection refused: connection limit reached', { remoteAddress: session.remoteAddress, connectionsMax: options.connectionsMax })
      callback(toHandlerError(new SmtpError('TOO_MANY_CONNECTIONS', 'connection limit reached', { replyText: 'Too many connections, try again later' })))
      return
    }
    const trusted = context.policy?.isTrustedClient(session.remoteAddress) ?? false
    sessions.set(session.id, { trusted, envelope: null, recipients: new Set() })
    counters.sessionsTotal++
    logger.debug('session opened', { session: session.id, remoteAddress: session.remoteAddress, trusted })
    callback()
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

/** smtp-server's onClose: forgets the session. */
export function createCloseHandler(context: Pick<ListenerState, 'sessions'>) {
  return (session: SMTPServerSession): void => {
    context.sessions.delete(session.id)
  }
}
