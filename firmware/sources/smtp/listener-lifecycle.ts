import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import type { SMTPServerOptions } from 'smtp-server'
import { SmtpError } from './errors.js'
import { ArchiveSmtpServer } from './immediate-greeting.js'
import type { ListenerState } from './listener-state.js'
import { createRecipientPolicy, type RecipientPolicy } from './recipient-policy.js'
import { validateSmtpOptions, type ResolvedSmtpOptions } from './smtp-options.js'
import type { SmtpTlsMaterial } from './types.js'

/** After stop()'s grace period, how long the closing connections get to go away, in milliseconds. */
export const smtpCloseGraceMs = 2_000
/** Oldest TLS version STARTTLS negotiates; smtp-server's own default is TLS 1.0. */
const tlsVersionMin = 'TLSv1.2'

/** The command handlers the listener gives smtp-server. */
export type SmtpHandlers = Required<Pick<SMTPServerOptions, 'onConnect' | 'onMailFrom' | 'onRcptTo' | 'onData' | 'onClose'>>

/**
 * smtp-server's options for the archive listener: no AUTH, no reverse lookups, the size,
 * line and socket limits, STARTTLS only with `tls`. Pure.
 */
export function smtpServerOptions(options: ResolvedSmtpOptions, tls: SmtpTlsMaterial | undefined, handlers: SmtpHandlers): SMTPServerOptions {
  return {
    name: options.hostname,
    banner: 'mailkeep archive',
    size: options.sizeBytesMax,
    hideENHANCEDSTATUSCODES: false,
    // No AUTH: trust comes from the network or the recipient. XCLIENT/XFORWARD would let
    // a client pose as another address; the sendmail easter eggs add nothing.
    disabledCommands: ['AUTH', 'XCLIENT', 'XFORWARD', 'WIZ', 'SHELL', 'KILL', ...(tls ? [] : ['STARTTLS'])],
    authOptional: true,
    // Names are never used for trust, and a slow resolver would delay every greeting.
    disableReverseLookup: true,
    logger: false,
    socketTimeout: options.socketTimeoutMs,
    // Later than our own deadline in stop(), so our 421 4.3.2 goes out, not the library's 421 4.4.2.
    closeTimeout: options.stopTimeoutMs + smtpCloseGraceMs,
    maxCommandLength: options.commandLineBytesMax,
    ...(tls ? { key: tls.key, cert: tls.cert, minVersion: tlsVersionMin } : {}),
    ...handlers,
  }
}

/** The recipient policy of valid options. @throws SmtpError INVALID_OPTIONS listing every problem */
function acceptOptions(options: ResolvedSmtpOptions): RecipientPolicy {
  const problems = validateSmtpOptions(options)
  const built = createRecipientPolicy(options)
  problems.push(...built.problems)
  if (problems.length > 0 || !built.policy) throw new SmtpError('INVALID_OPTIONS', `invalid smtp options: ${problems.join('; ')}`, { fields: { problems } })
  return built.policy
}

/** Binds the server to `host:port` and records the bound address. @throws SmtpError LISTEN_FAILED */
async function listen(listener: ListenerState, active: ArchiveSmtpServer): Promise<void> {
  const { host, port } = listener.options
  await new Promise<void>((resolve, reject) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      reject(new SmtpError('LISTEN_FAILED', `cannot listen on ${host}:${port}: ${error.code ?? error.message}`, { cause: error, fields: { host, port } }))
    }
    active.server.once('error', onError)
    active.listen(port, host, () => {
      active.server.off('error', onError)
      resolve()
    })
  })
  const address = active.server.address() as AddressInfo
  listener.bound = { host: address.address, port: address.port }
}

/**
 * start() of the listener: validates the options, builds the server and binds it.
 *
 * @throws SmtpError STOPPED after stop(), INVALID_OPTIONS, LISTEN_FAILED
 */
export async function startListener(listener: ListenerState, tlsMaterial: SmtpTlsMaterial | undefined, handlers: SmtpHandlers): Promise<void> {
  const { options, logger } = listener
  if (listener.phase === 'stopping' || listener.phase === 'stopped') throw new SmtpError('STOPPED', 'the SMTP listener was stopped')
  assert.equal(listener.phase, 'created', 'start() called twice')
  listener.phase = 'starting'
  try {
    listener.policy = acceptOptions(options)
  } catch (error) {
    listener.phase = 'created'
    throw error
  }
  const tls = options.starttls ? tlsMaterial : undefined
  if (options.starttls && !tlsMaterial) logger.warn('STARTTLS is configured but no certificate was given: not offered')
  const active = new ArchiveSmtpServer(smtpServerOptions(options, tls, handlers), {
    immediateGreeting: options.immediateGreeting,
    onReply: (connection) => listener.deadlines.replied(connection),
  })
  // Without a listener an 'error' event would throw: client resets and failed TLS
  // handshakes arrive here and must never take the service down.
  active.on('error', (error: NodeJS.ErrnoException & { remoteAddress?: string }) => {
    logger.info('connection error', { code: error.code ?? null, message: error.message, remoteAddress: error.remoteAddress ?? null })
  })
  listener.server = active
  listener.starting = listen(listener, active)
  try {
    await listener.starting
  } catch (error) {
    listener.server = null
    listener.phase = 'created'
    throw error
  }
  if ((listener.phase as string) !== 'starting') return // stop() ran while binding; it closes the server.
  listener.phase = 'listening'
  logger.info('listening', {
    host: listener.bound?.host,
    port: listener.bound?.port,
    starttls: tls !== undefined,
    immediateGreeting: options.immediateGreeting,
    archiveRecipients: options.archiveRecipients.length,
    trustedNetworks: options.trustedNetworks,
    sizeBytesMax: options.sizeBytesMax,
    connectionsMax: options.connectionsMax,
    trustedConnectionsReserved: options.trustedConnectionsReserved,
    untrustedConnectionsPerAddressMax: options.untrustedConnectionsPerAddressMax,
    mailFromTimeoutMs: options.mailFromTimeoutMs,
    commandTimeoutMs: options.commandTimeoutMs,
    dataTimeoutMs: options.dataTimeoutMs,
    dataBytesPerSecondMin: options.dataBytesPerSecondMin,
    sessionTimeoutMs: options.sessionTimeoutMs,
  })
}

function waitMs(ms: number): Promise<'timeout'> {
  return new Promise((resolve) => {
    setTimeout(() => resolve('timeout'), ms).unref()
  })
}

/**
 * stop() of the listener, run once however often it is called: 421 4.3.2 to idle sessions,
 * up to `stopTimeoutMs` for messages in DATA, then 421 to every connection left and up to
 * smtpCloseGraceMs for them to close. Never throws.
 */
export function stopListener(listener: ListenerState): Promise<void> {
  listener.stopping ??= shutDown(listener)
  return listener.stopping
}

async function shutDown(listener: ListenerState): Promise<void> {
  const { logger, inFlight, options } = listener
  if (listener.starting) await listener.starting.catch(() => undefined)
  const active = listener.server
  listener.phase = 'stopping'
  if (!active) {
    listener.phase = 'stopped'
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
    const drained = inFlight.drained()
    logger.info('stopping: waiting for messages in DATA', { messages: inFlight.size, stopTimeoutMs: options.stopTimeoutMs })
    if ((await Promise.race([drained, waitMs(options.stopTimeoutMs)])) === 'timeout') {
      logger.warn('stopping: messages still in DATA after the stop timeout; closing their connections', { messages: inFlight.size })
      inFlight.settleAll()
    }
    // The sessions that just got their reply (and any still cut off) are closed too,
    // rather than left open until their client's next command.
    for (const connection of active.connections) connection.send(421, line, false)
  }
  await Promise.race([closed, waitMs(smtpCloseGraceMs)])
  listener.phase = 'stopped'
  logger.info('stopped', { messagesAccepted: listener.counters.messagesAccepted })
}
