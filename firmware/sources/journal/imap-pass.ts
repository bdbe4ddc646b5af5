import type { ImapFlow, MailboxObject } from 'imapflow'
import { JournalError } from './errors.js'
import { createImapClient, expectDone, toImapError, toSequenceSet } from './imap-client.js'
import { archiveMessage, heldMessagesMax, holdIfTooLarge, type PassContext } from './pass.js'

export { imapLiteralBytesMin, imapResponseLineBytesMax, imapResponseOverheadBytes, toImapError, toSequenceSet } from './imap-client.js'

/**
 * One IMAP pass: connect, SELECT the mailbox, list a bounded batch of UIDs, and for each
 * message fetch its raw source, archive it durably, and only then acknowledge it at the
 * server ('delete': \Deleted + UID EXPUNGE; 'flag': the `$MailkeepArchived` keyword, which
 * later passes skip with SEARCH UNKEYWORD).
 */

/** The keyword 'flag' mode sets on archived messages. */
export const archivedKeyword = '$MailkeepArchived'

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

/** One IMAP pass in progress: what its steps share. */
interface ImapRun {
  context: PassContext
  client: ImapFlow
  state: ImapSourceState
  /** What the pass is doing now, for the error that ends it. */
  step: string
}

/** The selected mailbox as the pass sees it. */
interface SelectedMailbox {
  /** Messages in the mailbox at SELECT. */
  exists: number
  /** Delivery keys of this mailbox: `imap:host:mailbox:` (held messages are pruned under it). */
  keyPrefix: string
  uidValidity: string
  /** 'delete' mode: archived messages leave the mailbox. */
  deleteMode: boolean
  /** UIDPLUS: UID EXPUNGE removes our messages only. */
  canExpungeByUid: boolean
}

/** The delivery key of a UID: `imap:host:mailbox:uidvalidity:uid`. */
function keyOf(mailbox: SelectedMailbox, uid: number): string {
  return `${mailbox.keyPrefix}${mailbox.uidValidity}:${uid}`
}

/**
 * SELECTs the mailbox and checks that the mode can work there.
 * @throws JournalError KEYWORD_NOT_PERMITTED ('flag' mode), LIMIT_EXCEEDED (too many wait for EXPUNGE)
 */
async function selectMailbox(run: ImapRun): Promise<SelectedMailbox> {
  const { context, client, state } = run
  const options = context.options
  run.step = `selecting ${options.mailbox}`
  const opened: MailboxObject = await client.mailboxOpen(options.mailbox)
  const uidValidity = opened.uidValidity.toString()
  state.useUidValidity(uidValidity)
  const deleteMode = options.afterArchive === 'delete'
  const canExpungeByUid = client.capabilities.has('UIDPLUS')
  if (!deleteMode) {
    const permanent = opened.permanentFlags
    if (permanent && !permanent.has('\\*') && !permanent.has(archivedKeyword)) {
      throw new JournalError('KEYWORD_NOT_PERMITTED', `the mailbox ${options.mailbox} does not accept the keyword ${archivedKeyword} that 'flag' mode sets`)
    }
  }
  if (deleteMode && !canExpungeByUid && state.awaitingExpunge.size >= heldMessagesMax) {
    throw new JournalError('LIMIT_EXCEEDED', `more than ${heldMessagesMax} archived messages wait for EXPUNGE (other clients keep messages flagged \\Deleted)`)
  }
  return { exists: opened.exists, keyPrefix: `imap:${options.host}:${options.mailbox}:`, uidValidity, deleteMode, canExpungeByUid }
}

/**
 * Lists the candidate UIDs and returns this pass's batch (ascending): held messages and
 * ones waiting for EXPUNGE are left out. Sets `serverMessages` and `remaining`.
 */
async function listBatch(run: ImapRun, mailbox: SelectedMailbox): Promise<number[]> {
  const { context, client, state } = run
  const { options, report } = context
  run.step = 'listing messages'
  let listed: number[] = []
  if (!mailbox.deleteMode) {
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
  context.held.prune(mailbox.keyPrefix, new Set(listed.map((uid) => keyOf(mailbox, uid))))
  const candidates = listed.filter((uid) => !context.held.has(keyOf(mailbox, uid)) && !state.awaitingExpunge.has(uid))
  report.remaining = mailbox.deleteMode ? mailbox.exists - (listed.length - candidates.length) : candidates.length
  return candidates.slice(0, options.batchMessagesMax)
}

/** RFC822.SIZE of each UID of the batch still on the server. */
async function readSizes(run: ImapRun, batch: readonly number[]): Promise<Map<number, number>> {
  const sizes = new Map<number, number>()
  if (batch.length === 0) return sizes
  run.step = 'reading message sizes'
  for (const message of await run.client.fetchAll(toSequenceSet(batch), { uid: true, size: true }, { uid: true })) {
    if (typeof message.size === 'number') sizes.set(message.uid, message.size)
  }
  return sizes
}

/** Acknowledges an archived (durable) message: the keyword, UID EXPUNGE, or \Deleted to expunge later. */
async function acknowledge(run: ImapRun, mailbox: SelectedMailbox, uid: number): Promise<void> {
  const { client, context } = run
  if (!mailbox.deleteMode) {
    run.step = `flagging UID ${uid}`
    expectDone(await client.messageFlagsAdd(String(uid), [archivedKeyword], { uid: true, silent: true }), `STORE ${archivedKeyword} on UID ${uid}`)
    context.report.acknowledged++
  } else if (mailbox.canExpungeByUid) {
    run.step = `deleting UID ${uid}`
    // \Deleted, then UID EXPUNGE of this UID only (UIDPLUS).
    expectDone(await client.messageDelete(String(uid), { uid: true }), `the deletion of UID ${uid}`)
    context.report.acknowledged++
  } else {
    run.step = `marking UID ${uid} deleted`
    expectDone(await client.messageFlagsAdd(String(uid), ['\\Deleted'], { uid: true, silent: true }), `STORE \\Deleted on UID ${uid}`)
    run.state.awaitingExpunge.add(uid)
  }
}

/** Fetches, archives and acknowledges one message of the batch; false when the pass is to stop. */
async function passMessage(run: ImapRun, mailbox: SelectedMailbox, uid: number, sizeBytes: number | undefined): Promise<boolean> {
  const { context } = run
  const key = keyOf(mailbox, uid)
  // Expunged by someone else since the listing: nothing to do.
  if (sizeBytes === undefined || holdIfTooLarge(context, key, sizeBytes)) {
    context.report.remaining--
    return true
  }
  run.step = `fetching UID ${uid}`
  const message = await run.client.fetchOne(String(uid), { uid: true, source: true }, { uid: true })
  if (!message || !message.source) {
    context.report.remaining--
    return true
  }
  const outcome = await archiveMessage(context, message.source, key)
  if (outcome === 'stop') return false
  // The archive is durable from here on.
  if (outcome === 'acknowledge') await acknowledge(run, mailbox, uid)
  return true
}

/** Runs the batch until it ends, stop() asks, or a message stops the pass; then expunges what waits. */
async function passBatch(run: ImapRun, mailbox: SelectedMailbox, batch: readonly number[], sizes: ReadonlyMap<number, number>): Promise<void> {
  const { context, client, state } = run
  try {
    for (const uid of batch) {
      if (context.control.stopping) {
        context.report.stopped = true
        break
      }
      if (!(await passMessage(run, mailbox, uid, sizes.get(uid)))) break
    }
  } finally {
    // Also after a failed message: what was archived before it is durable and may go.
    if (state.awaitingExpunge.size > 0 && !context.control.abandoned && client.usable) {
      run.step = 'expunging'
      context.report.acknowledged += await expungeCarefully(context, client, state)
    }
  }
}

/**
 * Runs one IMAP pass, filling `context.report`. Errors that end the pass are put on the
 * report (not thrown), with everything acknowledged so far counted.
 */
export async function runImapPass(context: PassContext, state: ImapSourceState): Promise<void> {
  const { options, report, control } = context
  let lastClientError: unknown = null
  const client = createImapClient(options)
  // imapflow emits 'error' for connection failures; without a listener they would crash the process.
  client.on('error', (error: unknown) => {
    lastClientError = error
  })
  const run: ImapRun = { context, client, state, step: `connecting to ${options.host}:${options.port}` }
  const unregister = control.onAbandon(() => client.close())
  try {
    await client.connect()
    const mailbox = await selectMailbox(run)
    const batch = await listBatch(run, mailbox)
    await passBatch(run, mailbox, batch, await readSizes(run, batch))
    if (!control.abandoned && client.usable) await client.logout().catch(() => undefined)
  } catch (error) {
    if (report.error === null)
      report.error = control.abandoned ? new JournalError('STOPPED', 'the pass was abandoned by stop()') : toImapError(error ?? lastClientError, run.step, options.password)
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
