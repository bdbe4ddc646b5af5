import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import type { SMTPServerAddress, SMTPServerDataStream, SMTPServerEnvelope, SMTPServerSession } from 'smtp-server'
import type { Delivery, IngestResult } from '../../archive/types.js'
import { SmtpError, formatReply, smtpErrorForIngestFailure, toHandlerError } from './errors.js'
import { ArchiveSmtpServer } from './immediate-greeting.js'
import { createRecipientPolicy, type RecipientPolicy } from './recipient-policy.js'
import {
  smtpBufferedBytesMaxDefault,
  smtpCommandLineBytesMaxDefault,
  smtpStopTimeoutMsDefault,
  smtpSubmitTimeoutMsDefault,
  type SmtpConnectionRefusal,
  type SmtpMessageRefusal,
  type SmtpRecipientRefusal,
  type SmtpSource,
  type SmtpSourceDeps,
  type SmtpSourceOptions,
  type SmtpStats,
} from './types.js'

/** After stop()'s grace period, how long the closing connections get to go away, in milliseconds. */
export const smtpCloseGraceMs = 2_000
/** Oldest TLS version STARTTLS negotiates; smtp-server's own default is TLS 1.0. */
const tlsVersionMin = 'TLSv1.2'

type ResolvedOptions = Required<Omit<SmtpSourceOptions, 'enabled'>>

/** Options with every default applied. `bufferedBytesMax` defaults to at least one largest message. */
export function resolveSmtpOptions(options: SmtpSourceOptions): ResolvedOptions {
  return {
    host: options.host,
    port: options.port,
    hostname: options.hostname,
    archiveRecipients: options.archiveRecipients,
    trustedNetworks: options.trustedNetworks,
    sizeBytesMax: options.sizeBytesMax,
    recipientsMax: options.recipientsMax,
    connectionsMax: options.connectionsMax,
    socketTimeoutMs: options.socketTimeoutMs,
    starttls: options.starttls,
    stopTimeoutMs: options.stopTimeoutMs ?? smtpStopTimeoutMsDefault,
    submitTimeoutMs: options.submitTimeoutMs ?? smtpSubmitTimeoutMsDefault,
    commandLineBytesMax: options.commandLineBytesMax ?? smtpCommandLineBytesMaxDefault,
    bufferedBytesMax: options.bufferedBytesMax ?? Math.max(smtpBufferedBytesMaxDefault, options.sizeBytesMax),
    immediateGreeting: options.immediateGreeting ?? true,
  }
}

/** Every problem with the options, each as `smtp.path: reason (got value)`; empty when valid. */
export function validateSmtpOptions(options: ResolvedOptions): string[] {
  const problems: string[] = []
  const positiveIntegers = ['sizeBytesMax', 'recipientsMax', 'connectionsMax', 'socketTimeoutMs', 'stopTimeoutMs', 'submitTimeoutMs', 'commandLineBytesMax', 'bufferedBytesMax'] as const
  for (const key of positiveIntegers) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 1) problems.push(`smtp.${key}: must be a positive integer (got ${JSON.stringify(value)})`)
  }
  if (!Number.isInteger(options.port) || options.port < 0 || options.port > 65_535) problems.push(`smtp.port: must be 0..65535 (got ${JSON.stringify(options.port)})`)
  if (options.host.trim() === '') problems.push(`smtp.host: must not be empty (got ${JSON.stringify(options.host)})`)
  if (!/^[A-Za-z0-9.-]+$/.test(options.hostname)) problems.push(`smtp.hostname: must be a host name (got ${JSON.stringify(options.hostname)})`)
  if (options.bufferedBytesMax < options.sizeBytesMax) {
    problems.push(`smtp.bufferedBytesMax: must hold at least one message of sizeBytesMax ${options.sizeBytesMax} bytes (got ${options.bufferedBytesMax})`)
  }
  return problems
}

function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((key) => [key, 0])) as Record<K, number>
}

const messageRefusals: readonly SmtpMessageRefusal[] = ['MESSAGE_TOO_LARGE', 'STORE_FULL', 'BUFFER_FULL', 'ARCHIVE_UNAVAILABLE', 'MESSAGE_REFUSED']
const recipientRefusals: readonly SmtpRecipientRefusal[] = ['RELAY_DENIED', 'TOO_MANY_RECIPIENTS']
const connectionRefusals: readonly SmtpConnectionRefusal[] = ['TOO_MANY_CONNECTIONS', 'SHUTTING_DOWN']

/** What the listener remembers per session (keyed by smtp-server's session id). */
interface SessionState {
  trusted: boolean
  /** The envelope object the `recipients` set belongs to; smtp-server replaces it on RSET, EHLO, STARTTLS and after DATA. */
  envelope: SMTPServerEnvelope | null
  /** Lower-cased recipients accepted in the current transaction. */
  recipients: Set<string>
}

/** The envelope as it was when DATA began (smtp-server resets the session's copy after the reply). */
interface EnvelopeSnapshot {
  from: string | null
  to: string[]
  remoteAddress: string
}

function snapshotEnvelope(session: SMTPServerSession): EnvelopeSnapshot {
  const mailFrom = session.envelope.mailFrom
  const to = [...new Set(session.envelope.rcptTo.map((recipient) => recipient.address.toLowerCase()))]
  return { from: mailFrom && mailFrom.address !== '' ? mailFrom.address : null, to, remoteAddress: session.remoteAddress }
}

class SubmitTimeout extends Error {}

/**
 * Creates the SMTP listener: the push source of the appliance. Pure: opens nothing until
 * start().
 *
 * Each message's envelope (MAIL FROM and every RCPT TO, BCC recipients included) becomes
 * the Delivery, and the DATA bytes, as received with only the transparency dots removed,
 * go to `pipeline.submit`. `250 2.0.0 Ok: archived <id>` is sent only after submit
 * resolved, i.e. after the message is durable (STYLE 8); every failure is answered with
 * an explicit 4xx/5xx and enhanced code (errors.ts), never with silence. No AUTH: trust
 * comes from the recipient (archive recipients) or the client network (trustedNetworks).
 */
export function createSmtpSource(deps: SmtpSourceDeps, options: SmtpSourceOptions): SmtpSource {
  const logger = deps.logger.child('smtp')
  const resolved = resolveSmtpOptions(options)

  let state: 'created' | 'starting' | 'listening' | 'stopping' | 'stopped' = 'created'
  let server: ArchiveSmtpServer | null = null
  let policy: RecipientPolicy | null = null
  let bound: { host: string; port: number } | null = null
  let starting: Promise<void> | null = null
  let stopping: Promise<void> | null = null
  let lastArchiveFailure: { code: string; atMs: number } | null = null

  const sessions = new Map<string, SessionState>()
  /** Session ids between the DATA command and its reply, with what settles them. */
  const inFlight = new Map<string, () => void>()
  let inFlightDrained: (() => void) | null = null
  let bufferedBytes = 0

  const counters = {
    sessionsTotal: 0,
    sessionsRefused: zeroCounts(connectionRefusals),
    messagesAccepted: 0,
    messagesDuplicate: 0,
    bytesAccepted: 0,
    messagesRefused: zeroCounts(messageRefusals),
    messagesAborted: 0,
    recipientsRefused: zeroCounts(recipientRefusals),
  }

  const sessionState = (session: SMTPServerSession): SessionState => {
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

  const finishInFlight = (sessionId: string): void => {
    inFlight.delete(sessionId)
    if (inFlight.size === 0 && inFlightDrained) inFlightDrained()
  }

  const onConnect = (session: SMTPServerSession, callback: (error?: Error | null) => void): void => {
    const active = server
    if (state !== 'listening' || !active) {
      counters.sessionsRefused.SHUTTING_DOWN++
      callback(toHandlerError(new SmtpError('SHUTTING_DOWN', 'listener is stopping', { replyText: 'Service shutting down, try again later' })))
      return
    }
    // The connection being set up is already in the set, hence `>`.
    if (active.connections.size > resolved.connectionsMax) {
      counters.sessionsRefused.TOO_MANY_CONNECTIONS++
      logger.warn('connection refused: connection limit reached', { remoteAddress: session.remoteAddress, connectionsMax: resolved.connectionsMax })
      callback(toHandlerError(new SmtpError('TOO_MANY_CONNECTIONS', 'connection limit reached', { replyText: 'Too many connections, try again later' })))
      return
    }
    const trusted = policy?.isTrustedClient(session.remoteAddress) ?? false
    sessions.set(session.id, { trusted, envelope: null, recipients: new Set() })
    counters.sessionsTotal++
    logger.debug('session opened', { session: session.id, remoteAddress: session.remoteAddress, trusted })
    callback()
  }

  const onClose = (session: SMTPServerSession): void => {
    sessions.delete(session.id)
  }

  const onRcptTo = (address: SMTPServerAddress, session: SMTPServerSession, callback: (error?: Error | null) => void): void => {
    const known = sessionState(session)
    const recipient = address.address.toLowerCase()
    if (!known.recipients.has(recipient) && session.envelope.rcptTo.length >= resolved.recipientsMax) {
      counters.recipientsRefused.TOO_MANY_RECIPIENTS++
      callback(toHandlerError(new SmtpError('TOO_MANY_RECIPIENTS', `more than ${resolved.recipientsMax} recipients`, { replyText: 'Too many recipients' })))
      return
    }
    if (!policy || !policy.mayReceive(recipient, known.trusted)) {
      counters.recipientsRefused.RELAY_DENIED++
      logger.info('recipient refused: relay denied', { session: session.id, remoteAddress: session.remoteAddress })
      callback(toHandlerError(new SmtpError('RELAY_DENIED', 'relay denied', { replyText: 'Relay access denied: not an archive recipient and client not in a trusted network' })))
      return
    }
    known.recipients.add(recipient)
    callback()
  }

  const submitWithTimeout = (raw: Uint8Array, delivery: Delivery): Promise<IngestResult> => {
    // A pipeline that throws instead of rejecting must not throw inside smtp-server's stream events.
    const submitted = new Promise<IngestResult>((resolve) => resolve(deps.pipeline.submit(raw, delivery)))
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        reject(new SubmitTimeout())
        submitted.then(
          (result) => logger.info('message archived after the submit timeout; the sender retries and dedup absorbs the copy', { id: result.id }),
          () => undefined,
        )
      }, resolved.submitTimeoutMs)
      timer.unref()
    })
    return Promise.race([submitted, timeout]).finally(() => clearTimeout(timer))
  }

  const onData = (stream: SMTPServerDataStream, session: SMTPServerSession, callback: (error?: Error | null, message?: string) => void): void => {
    // Copied now: smtp-server resets session.envelope once the reply has been sent.
    const envelope = snapshotEnvelope(session)
    const sessionId = session.id
    const startedAtMs = deps.clock.monotonicMs()
    const chunks: Buffer[] = []
    let heldBytes = 0
    let refusal: SmtpError | null = null
    let ended = false
    let replied = false

    const release = (): void => {
      bufferedBytes -= heldBytes
      heldBytes = 0
      chunks.length = 0
    }
    const reply = (error: SmtpError | null, text?: string): void => {
      if (replied) return
      replied = true
      release()
      finishInFlight(sessionId)
      if (error) callback(toHandlerError(error))
      else callback(null, text)
    }
    const refuse = (error: SmtpError): void => {
      counters.messagesRefused[error.code as SmtpMessageRefusal]++
      if (error.code === 'STORE_FULL' || error.code === 'ARCHIVE_UNAVAILABLE' || error.code === 'MESSAGE_REFUSED') {
        lastArchiveFailure = { code: error.code, atMs: deps.clock.now() }
        logger.warn('message not archived', { session: sessionId, reply: error.reply && formatReply(error.reply), error })
      } else {
        logger.info('message refused', { session: sessionId, reply: error.reply && formatReply(error.reply), sizeBytes: stream.byteLength })
      }
      reply(error)
    }

    inFlight.set(sessionId, () => reply(new SmtpError('SHUTTING_DOWN', 'listener stopped before the message was archived')))

    stream.on('data', (chunk: Buffer) => {
      if (refusal || replied) return
      if (stream.sizeExceeded) {
        // Keep reading (smtp-server needs the stream drained) but hold nothing more.
        refusal = new SmtpError('MESSAGE_TOO_LARGE', `message over ${resolved.sizeBytesMax} bytes`, { replyText: `Message exceeds the size limit of ${resolved.sizeBytesMax} bytes` })
        release()
        return
      }
      if (bufferedBytes + chunk.length > resolved.bufferedBytesMax) {
        refusal = new SmtpError('BUFFER_FULL', `message buffers over ${resolved.bufferedBytesMax} bytes`, { replyText: 'Insufficient system resources, try again later' })
        release()
        return
      }
      chunks.push(chunk)
      heldBytes += chunk.length
      bufferedBytes += chunk.length
    })
    // An 'error' listener makes smtp-server destroy the stream with an error, not silently,
    // when the client goes away mid-DATA; 'close' below handles both.
    stream.on('error', () => undefined)
    stream.on('close', () => {
      if (ended || replied) return
      counters.messagesAborted++
      logger.info('message aborted: client went away during DATA', { session: sessionId, remoteAddress: envelope.remoteAddress, receivedBytes: stream.byteLength })
      reply(new SmtpError('ARCHIVE_UNAVAILABLE', 'client went away during DATA', { replyText: 'Message incomplete' }))
    })
    stream.on('end', () => {
      ended = true
      if (replied) return
      if (!refusal && stream.sizeExceeded) {
        refusal = new SmtpError('MESSAGE_TOO_LARGE', `message over ${resolved.sizeBytesMax} bytes`, { replyText: `Message exceeds the size limit of ${resolved.sizeBytesMax} bytes` })
      }
      if (refusal) {
        refuse(refusal)
        return
      }
      const raw = chunks.length === 1 && chunks[0] ? chunks[0] : Buffer.concat(chunks, heldBytes)
      const delivery: Delivery = {
        source: 'smtp',
        sourceName: bound ? `${bound.host}:${bound.port}` : null,
        receivedAtMs: deps.clock.now(),
        envelopeFrom: envelope.from,
        envelopeTo: envelope.to,
        // SMTP cannot tell BCC from To/Cc recipients: every RCPT TO is in envelopeTo.
        envelopeBcc: [],
        remoteAddress: envelope.remoteAddress,
        journalEnvelopeText: null,
        deliveryKey: null,
      }
      submitWithTimeout(raw, delivery).then(
        (result) => {
          if (replied) {
            // stop() gave up on this session; the sender retries and dedup absorbs the copy.
            logger.info('message archived after its session was closed', { session: sessionId, id: result.id })
            return
          }
          counters.messagesAccepted++
          if (result.duplicate) counters.messagesDuplicate++
          counters.bytesAccepted += raw.byteLength
          logger.info('message archived', {
            session: sessionId,
            id: result.id,
            duplicate: result.duplicate,
            sizeBytes: raw.byteLength,
            recipients: envelope.to.length,
            remoteAddress: envelope.remoteAddress,
            durationMs: Math.round(deps.clock.monotonicMs() - startedAtMs),
          })
          reply(null, `2.0.0 Ok: archived ${result.id}`)
        },
        (error: unknown) => {
          if (replied) return // stop() already answered this session.
          if (error instanceof SubmitTimeout) {
            refuse(new SmtpError('ARCHIVE_UNAVAILABLE', `archive did not answer within ${resolved.submitTimeoutMs} ms`, { replyText: 'Archive did not answer in time, try again later' }))
            return
          }
          refuse(smtpErrorForIngestFailure(error))
        },
      )
    })
  }

  const listen = async (active: ArchiveSmtpServer): Promise<void> => {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: NodeJS.ErrnoException): void => {
        reject(new SmtpError('LISTEN_FAILED', `cannot listen on ${resolved.host}:${resolved.port}: ${error.code ?? error.message}`, { cause: error, fields: { host: resolved.host, port: resolved.port } }))
      }
      active.server.once('error', onError)
      active.listen(resolved.port, resolved.host, () => {
        active.server.off('error', onError)
        resolve()
      })
    })
    const address = active.server.address() as AddressInfo
    bound = { host: address.address, port: address.port }
  }

  const start = async (): Promise<void> => {
    if (state === 'stopping' || state === 'stopped') throw new SmtpError('STOPPED', 'the SMTP listener was stopped')
    assert.equal(state, 'created', 'start() called twice')
    state = 'starting'
    const problems = validateSmtpOptions(resolved)
    const built = createRecipientPolicy(resolved)
    problems.push(...built.problems)
    if (problems.length > 0 || !built.policy) {
      state = 'created'
      throw new SmtpError('INVALID_OPTIONS', `invalid smtp options: ${problems.join('; ')}`, { fields: { problems } })
    }
    policy = built.policy
    const tls = resolved.starttls ? deps.tls : undefined
    if (resolved.starttls && !deps.tls) logger.warn('STARTTLS is configured but no certificate was given: not offered')
    const active = new ArchiveSmtpServer(
      {
        name: resolved.hostname,
        banner: 'mailkeep archive',
        size: resolved.sizeBytesMax,
        hideENHANCEDSTATUSCODES: false,
        // No AUTH: trust comes from the network or the recipient. XCLIENT/XFORWARD would let
        // a client pose as another address; the sendmail easter eggs add nothing.
        disabledCommands: ['AUTH', 'XCLIENT', 'XFORWARD', 'WIZ', 'SHELL', 'KILL', ...(tls ? [] : ['STARTTLS'])],
        authOptional: true,
        // Names are never used for trust, and a slow resolver would delay every greeting.
        disableReverseLookup: true,
        logger: false,
        socketTimeout: resolved.socketTimeoutMs,
        // Later than our own deadline in stop(), so our 421 4.3.2 goes out, not the library's 421 4.4.2.
        closeTimeout: resolved.stopTimeoutMs + smtpCloseGraceMs,
        maxCommandLength: resolved.commandLineBytesMax,
        ...(tls ? { key: tls.key, cert: tls.cert, minVersion: tlsVersionMin } : {}),
        onConnect,
        onRcptTo,
        onData,
        onClose,
      },
      resolved.immediateGreeting,
    )
    // Without a listener an 'error' event would throw: client resets and failed TLS
    // handshakes arrive here and must never take the service down.
    active.on('error', (error: NodeJS.ErrnoException & { remoteAddress?: string }) => {
      logger.info('connection error', { code: error.code ?? null, message: error.message, remoteAddress: error.remoteAddress ?? null })
    })
    server = active
    starting = listen(active)
    try {
      await starting
    } catch (error) {
      server = null
      state = 'created'
      throw error
    }
    if (state !== 'starting') return // stop() ran while binding; it closes the server.
    state = 'listening'
    logger.info('listening', {
      host: bound?.host,
      port: bound?.port,
      starttls: tls !== undefined,
      immediateGreeting: resolved.immediateGreeting,
      archiveRecipients: resolved.archiveRecipients.length,
      trustedNetworks: resolved.trustedNetworks,
      sizeBytesMax: resolved.sizeBytesMax,
    })
  }

  const waitMs = (ms: number): Promise<'timeout'> =>
    new Promise((resolve) => {
      setTimeout(() => resolve('timeout'), ms).unref()
    })

  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (starting) await starting.catch(() => undefined)
      const active = server
      state = 'stopping'
      if (!active) {
        state = 'stopped'
        return
      }
      const closed = new Promise<void>((resolve) => active.close(() => resolve()))
      const shuttingDown = new SmtpError('SHUTTING_DOWN', 'listener stopping', { replyText: 'Service shutting down, try again later' })
      const line = `${shuttingDown.reply?.enhancedCode} ${shuttingDown.reply?.text}`
      // Idle sessions and sessions between commands are told now; a reply of 421 closes the connection.
      for (const connection of active.connections) {
        if (!inFlight.has(connection.id)) connection.send(421, line, false)
      }
      if (inFlight.size > 0) {
        const drained = new Promise<'drained'>((resolve) => {
          inFlightDrained = () => resolve('drained')
        })
        logger.info('stopping: waiting for messages in DATA', { messages: inFlight.size, stopTimeoutMs: resolved.stopTimeoutMs })
        if ((await Promise.race([drained, waitMs(resolved.stopTimeoutMs)])) === 'timeout') {
          logger.warn('stopping: messages still in DATA after the stop timeout; closing their connections', { messages: inFlight.size })
          for (const settle of [...inFlight.values()]) settle()
        }
        // The sessions that just got their reply (and any still cut off) are closed too,
        // rather than left open until their client's next command.
        for (const connection of active.connections) connection.send(421, line, false)
      }
      await Promise.race([closed, waitMs(smtpCloseGraceMs)])
      state = 'stopped'
      logger.info('stopped', { messagesAccepted: counters.messagesAccepted })
    })()
    return stopping
  }

  return {
    name: 'smtp',
    start: async () => {
      await start()
    },
    stop,
    address() {
      assert.ok(bound, 'address() called before start() resolved')
      return { ...bound }
    },
    listeners(): Record<string, string> {
      return state === 'listening' && bound ? { smtp: `${bound.host}:${bound.port}` } : {}
    },
    healthcheck() {
      if (state !== 'listening' || !bound) return { ok: false, detail: state === 'created' || state === 'starting' ? 'not started' : 'stopped' }
      const failure = lastArchiveFailure ? `; last archive failure ${lastArchiveFailure.code} at ${new Date(lastArchiveFailure.atMs).toISOString()}` : ''
      return {
        ok: true,
        detail: `listening on ${bound.host}:${bound.port}; ${sessions.size} sessions, ${inFlight.size} in DATA, ${counters.messagesAccepted} accepted${failure}`,
      }
    },
    stats(): SmtpStats {
      return {
        sessionsTotal: counters.sessionsTotal,
        sessionsActive: sessions.size,
        sessionsRefused: { ...counters.sessionsRefused },
        messagesAccepted: counters.messagesAccepted,
        messagesDuplicate: counters.messagesDuplicate,
        bytesAccepted: counters.bytesAccepted,
        messagesRefused: { ...counters.messagesRefused },
        messagesAborted: counters.messagesAborted,
        recipientsRefused: { ...counters.recipientsRefused },
        messagesInFlight: inFlight.size,
        bufferedBytes,
      }
    },
  }
}
