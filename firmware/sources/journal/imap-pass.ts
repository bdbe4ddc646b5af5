import { ImapFlow, type ImapFlowError } from 'imapflow'
import { JournalError, redactSecret, type JournalErrorCode } from './errors.js'
import { isTlsError, toJournalNetworkError } from './network-errors.js'
import { archiveMessage, heldMessagesMax, holdIfTooLarge, type PassContext } from './pass.js'

/**
 * One IMAP pass: connect, SELECT the mailbox, list a bounded batch of UIDs, and for each
 * message fetch its raw source, archive it durably, and only then acknowledge it at the
 * server ('delete': \Deleted + UID EXPUNGE; 'flag': the `$MailkeepArchived` keyword, which
 * later passes skip with SEARCH UNKEYWORD).
 */

/** The keyword 'flag' mode sets on archived messages. */
export const archivedKeyword = '$MailkeepArchived'
/** Longest IMAP response line we accept, in bytes (a SEARCH answer of ~2 million UIDs). */
export const imapResponseLineBytesMax = 16 * 1024 * 1024
/** Room for framing around the largest literal in one response, in bytes. */
export const imapResponseOverheadBytes = 1024 * 1024
/** Smallest literal we accept whatever `messageBytesMax` is, in bytes, so a tiny message limit cannot break ordinary replies. */
export const imapLiteralBytesMin = 64 * 1024

/** Compresses sorted UIDs into an IMAP sequence set (`1:5,9,12:14`) to keep command lines short. */
export function toSequenceSet(sortedUids: readonly number[]): string {
  const ranges: string[] = []
  let start = -1
  let previous = -1
  for (const uid of sortedUids) {
    if (uid === previous + 1 && start >= 0) {
      previous = uid
      continue
    }
    if (start >= 0) ranges.push(start === previous ? `${start}` : `${start}:${previous}`)
    start = uid
    previous = uid
  }
  if (start >= 0) ranges.push(start === previous ? `${start}` : `${start}:${previous}`)
  return ranges.join(',')
}

const timeoutCodes = new Set(['CONNECT_TIMEOUT', 'GREETING_TIMEOUT', 'UPGRADE_TIMEOUT', 'ETIMEOUT', 'ETIMEDOUT'])
const closedCodes = new Set(['NoConnection', 'EConnectionClosed', 'ClosedAfterConnectText', 'StateLogout'])
const limitCodes = new Set(['LineTooLarge', 'LiteralTooLarge', 'ResponseTooLarge', 'TooManyTokens', 'TooManyResponses', 'MAX_IMAP_NESTING_REACHED'])

/** Maps an imapflow error to a JournalError; texts are redacted of the password. */
export function toImapError(error: unknown, what: string, password: string): JournalError {
  if (error instanceof JournalError) return error
  const imapError = (error ?? {}) as ImapFlowError
  const code = String(imapError.code ?? '')
  const serverText = typeof imapError.responseText === 'string' ? imapError.responseText : ''
  const text = redactSecret([error instanceof Error ? error.message : String(error), serverText].filter(Boolean).join(': '), password)
  const fields: Record<string, unknown> = { detail: text }
  if (code) fields.imapCode = code
  if (imapError.serverResponseCode) fields.serverResponseCode = imapError.serverResponseCode
  const typed = (journalCode: JournalErrorCode, message: string): JournalError => new JournalError(journalCode, message, { fields })
  if (imapError.authenticationFailed || imapError.serverResponseCode === 'AUTHENTICATIONFAILED') return typed('AUTH_FAILED', `the IMAP server refused the login while ${what}: ${text}`)
  if (imapError.serverResponseCode === 'UNAVAILABLE') return typed('SERVER_UNAVAILABLE', `the IMAP server is unavailable while ${what}: ${text}`)
  if (imapError.tlsFailed || code === 'ClosedAfterConnectTLS' || code === 'STARTTLS_INJECTION' || isTlsError(error)) return typed('TLS_FAILED', `TLS failed while ${what}: ${text}`)
  if (imapError.mailboxMissing || imapError.serverResponseCode === 'NONEXISTENT') return typed('MAILBOX_NOT_FOUND', `the mailbox does not exist (${what}): ${text}`)
  if (timeoutCodes.has(code)) return typed('TIMEOUT', `timed out while ${what}: ${text}`)
  if (limitCodes.has(code)) return typed('LIMIT_EXCEEDED', `a reply broke a size limit while ${what}: ${text}`)
  if (closedCodes.has(code)) return typed('CONNECT_FAILED', `the connection was lost while ${what}: ${text}`)
  const network = toJournalNetworkError(error, what, password)
  return network.code === 'PROTOCOL_ERROR' ? typed('PROTOCOL_ERROR', `IMAP failed while ${what}: ${text}`) : network
}

/** Throws PROTOCOL_ERROR when imapflow reported a refused command by returning false. */
function expectDone(done: boolean | undefined, what: string): void {
  if (!done) throw new JournalError('PROTOCOL_ERROR', `the IMAP server refused ${what}`)
}

/**
 * What an IMAP source remembers between passes. Without UIDPLUS, messages archived and
 * flagged \Deleted may wait for a later EXPUNGE (see `expungeCarefully`); they are durable
 * in the archive, so later passes skip them instead of fetching them again.
 */
export class ImapSourceState {
  /** UIDs archived and flagged \Deleted but not expunged yet, for one UIDVALIDITY. */
  awaitingExpunge = new Set<number>()
  uidValidity: string | null = null

  /** Forgets what belonged to an older UIDVALIDITY (the UIDs mean other messages now). */
  useUidValidity(uidValidity: string): void {
    if (this.uidValidity === uidValidity) return
    this.uidValidity = uidValidity
    this.awaitingExpunge.clear()
  }
}

/**
 * Runs one IMAP pass, filling `context.report`. Errors that end the pass are put on the
 * report (not thrown), with everything acknowledged so far counted.
 */
export async function runImapPass(context: PassContext, state: ImapSourceState): Promise<void> {
  const { options, report, control } = context
  const password = options.password
  let step = `connecting to ${options.host}:${options.port}`
  let lastClientError: unknown = null
  const client = new ImapFlow({
    host: options.host,
    port: options.port,
    secure: options.tls === 'implicit',
    // 'starttls' must upgrade or fail; 'none' must not upgrade (explicit operator choice).
    doSTARTTLS: options.tls === 'starttls' ? true : options.tls === 'none' ? false : undefined,
    tls: { rejectUnauthorized: options.tlsRejectUnauthorized },
    auth: { user: options.user, pass: password },
    // imapflow's own logger would see protocol traffic: ours gets only typed, redacted errors.
    logger: false,
    emitLogs: false,
    disableAutoIdle: true,
    // BINARY fetches may decode transfer encodings; the archive needs the bytes as stored.
    disableBinary: true,
    connectionTimeout: options.connectTimeoutMs,
    greetingTimeout: options.connectTimeoutMs,
    socketTimeout: options.commandTimeoutMs,
    // A server that understated RFC822.SIZE cannot make us buffer more than this.
    maxLiteralSize: Math.max(options.messageBytesMax, imapLiteralBytesMin),
    maxLineLength: imapResponseLineBytesMax,
    maxResponseSize: Math.max(options.messageBytesMax, imapResponseLineBytesMax) + imapResponseOverheadBytes,
    clientInfo: { name: 'mailkeep' },
  })
  // imapflow emits 'error' for connection failures; without a listener they would crash the process.
  client.on('error', (error: unknown) => {
    lastClientError = error
  })
  const unregister = control.onAbandon(() => client.close())
  try {
    await client.connect()
    step = `selecting ${options.mailbox}`
    const mailbox = await client.mailboxOpen(options.mailbox)
    const uidValidity = mailbox.uidValidity.toString()
    state.useUidValidity(uidValidity)
    const keyPrefix = `imap:${options.host}:${options.mailbox}:`
    const keyOf = (uid: number): string => `${keyPrefix}${uidValidity}:${uid}`
    const deleteMode = options.afterArchive === 'delete'
    const canExpungeByUid = client.capabilities.has('UIDPLUS')
    if (!deleteMode) {
      const permanent = mailbox.permanentFlags
      if (permanent && !permanent.has('\\*') && !permanent.has(archivedKeyword)) {
        throw new JournalError('KEYWORD_NOT_PERMITTED', `the mailbox ${options.mailbox} does not accept the keyword ${archivedKeyword} that 'flag' mode sets`)
      }
    }
    if (deleteMode && !canExpungeByUid && state.awaitingExpunge.size >= heldMessagesMax) {
      throw new JournalError('LIMIT_EXCEEDED', `more than ${heldMessagesMax} archived messages wait for EXPUNGE (other clients keep messages flagged \\Deleted)`)
    }

    step = 'listing messages'
    let listed: number[] = []
    if (!deleteMode) {
      // Archived messages stay in the mailbox: only the ones without our keyword are candidates.
      listed = (await client.search({ unKeyword: archivedKeyword }, { uid: true })) || []
    } else if (mailbox.exists > 0) {
      // Archived messages leave the mailbox, so the oldest ones are the candidates: list a
      // window by sequence number just large enough for a batch next to the messages that
      // stay at the front (held, or archived and waiting for EXPUNGE).
      const window = Math.min(mailbox.exists, options.batchMessagesMax + context.held.size + state.awaitingExpunge.size)
      listed = (await client.search({ seq: `1:${window}` }, { uid: true })) || []
    }
    report.serverMessages = mailbox.exists
    listed.sort((first, second) => first - second)
    context.held.prune(keyPrefix, new Set(listed.map(keyOf)))
    const candidates = listed.filter((uid) => !context.held.has(keyOf(uid)) && !state.awaitingExpunge.has(uid))
    const batch = candidates.slice(0, options.batchMessagesMax)
    report.remaining = deleteMode ? mailbox.exists - (listed.length - candidates.length) : candidates.length

    const sizes = new Map<number, number>()
    if (batch.length > 0) {
      step = 'reading message sizes'
      for (const message of await client.fetchAll(toSequenceSet(batch), { uid: true, size: true }, { uid: true })) {
        if (typeof message.size === 'number') sizes.set(message.uid, message.size)
      }
    }

    try {
      for (const uid of batch) {
        if (control.stopping) {
          report.stopped = true
          break
        }
        const key = keyOf(uid)
        const sizeBytes = sizes.get(uid)
        // Expunged by someone else since the listing: nothing to do.
        if (sizeBytes === undefined) {
          report.remaining--
          continue
        }
        if (holdIfTooLarge(context, key, sizeBytes)) {
          report.remaining--
          continue
        }
        step = `fetching UID ${uid}`
        const message = await client.fetchOne(String(uid), { uid: true, source: true }, { uid: true })
        if (!message || !message.source) {
          report.remaining--
          continue
        }
        const outcome = await archiveMessage(context, message.source, key)
        if (outcome === 'stop') break
        if (outcome === 'next') continue
        // The archive is durable from here on.
        if (!deleteMode) {
          step = `flagging UID ${uid}`
          expectDone(await client.messageFlagsAdd(String(uid), [archivedKeyword], { uid: true, silent: true }), `STORE ${archivedKeyword} on UID ${uid}`)
          report.acknowledged++
        } else if (canExpungeByUid) {
          step = `deleting UID ${uid}`
          // \Deleted, then UID EXPUNGE of this UID only (UIDPLUS).
          expectDone(await client.messageDelete(String(uid), { uid: true }), `the deletion of UID ${uid}`)
          report.acknowledged++
        } else {
          step = `marking UID ${uid} deleted`
          expectDone(await client.messageFlagsAdd(String(uid), ['\\Deleted'], { uid: true, silent: true }), `STORE \\Deleted on UID ${uid}`)
          state.awaitingExpunge.add(uid)
        }
      }
    } finally {
      // Also after a failed message: what was archived before it is durable and may go.
      if (state.awaitingExpunge.size > 0 && !control.abandoned && client.usable) {
        step = 'expunging'
        report.acknowledged += await expungeCarefully(context, client, state)
      }
    }
    if (!control.abandoned && client.usable) await client.logout().catch(() => undefined)
  } catch (error) {
    if (report.error === null) report.error = control.abandoned ? new JournalError('STOPPED', 'the pass was abandoned by stop()') : toImapError(error ?? lastClientError, step, password)
  } finally {
    unregister()
    client.close()
  }
}

/**
 * Without UIDPLUS, EXPUNGE removes every message flagged \Deleted, also ones we did not
 * archive (flagged by another client). Expunge only when every \Deleted message in the
 * mailbox is one we archived; otherwise leave ours flagged and waiting: later passes skip
 * them, archive the others (the listing window grows past the waiting ones), and expunge
 * then. A message another client flags between our SEARCH and EXPUNGE is the remaining
 * window of risk; servers without UIDPLUS leave no way to close it. Returns how many
 * messages were removed.
 */
async function expungeCarefully(context: PassContext, client: ImapFlow, state: ImapSourceState): Promise<number> {
  const deleted = new Set((await client.search({ deleted: true }, { uid: true })) || [])
  // Ours that lost their \Deleted flag (another client) are archived but will not be
  // expunged: forget them, so a later pass flags them again (dedup absorbs the re-fetch).
  for (const uid of state.awaitingExpunge) if (!deleted.has(uid)) state.awaitingExpunge.delete(uid)
  const foreign = [...deleted].filter((uid) => !state.awaitingExpunge.has(uid))
  if (foreign.length > 0) {
    context.logger.warn('not expunging yet: other messages are flagged \\Deleted and not archived', { foreignMessages: foreign.length, waitingMessages: state.awaitingExpunge.size })
    return 0
  }
  const ours = [...state.awaitingExpunge].sort((first, second) => first - second)
  if (ours.length === 0) return 0
  expectDone(await client.messageDelete(toSequenceSet(ours), { uid: true }), 'EXPUNGE')
  state.awaitingExpunge.clear()
  return ours.length
}
