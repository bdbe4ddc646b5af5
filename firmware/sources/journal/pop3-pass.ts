import { JournalError } from './errors.js'
import { toJournalNetworkError } from './network-errors.js'
import { archiveMessage, holdIfTooLarge, holdMessage, type PassContext } from './pass.js'
import { Pop3Session, type Pop3ListingEntry } from './pop3-client.js'
import type { Pop3ArchivedState } from './pop3-archived-state.js'

/** One POP3 pass in progress: what its steps share. */
interface Pop3Run {
  context: PassContext
  /** The archived-UIDL state ('flag' mode), or null ('delete' mode). */
  state: Pop3ArchivedState | null
  /** Set once connected; closed when the pass is abandoned. */
  session: Pop3Session | null
  /** What the pass is doing now, for the error that ends it. */
  step: string
  /** DELEs sent; they count as acknowledged once QUIT answers. */
  markedForDeletion: number
  /** UIDLs added to the state; they count as acknowledged once the state file is written. */
  rememberedArchived: number
}

/** This pass's messages and the sizes LIST gave, by message number. */
interface Pop3Batch {
  entries: Pop3ListingEntry[]
  sizes: Map<number, number>
  /** Delivery keys of this account: `pop3:host:user:`. */
  keyPrefix: string
}

/** Connects and logs in. */
async function openSession(run: Pop3Run): Promise<Pop3Session> {
  const { options, control } = run.context
  const session = await Pop3Session.open({
    host: options.host,
    port: options.port,
    tls: options.tls,
    tlsRejectUnauthorized: options.tlsRejectUnauthorized,
    connectTimeoutMs: options.connectTimeoutMs,
    commandTimeoutMs: options.commandTimeoutMs,
  })
  run.session = session
  if (control.abandoned) session.close()
  run.step = 'logging in'
  await session.login(options.user, options.password)
  return session
}

/**
 * UIDL and LIST, then the batch: messages neither archived before ('flag' state) nor held.
 * Sets `serverMessages` and `remaining`; prunes held messages and the state to what the
 * server lists.
 */
async function listBatch(run: Pop3Run, session: Pop3Session): Promise<Pop3Batch> {
  const { context, state } = run
  const { options, report } = context
  run.step = 'listing messages'
  const uidls = await session.uidl()
  const sizes = await session.list()
  report.serverMessages = uidls.length

  const keyPrefix = `pop3:${options.host}:${options.user}:`
  context.held.prune(keyPrefix, new Set(uidls.map((entry) => keyPrefix + entry.value)))
  let archivedBefore: ReadonlySet<string> = new Set()
  if (state) {
    run.step = 'reading the state file'
    const archived = await state.load(context.clock.now())
    state.prune(new Set(uidls.map((entry) => entry.value)))
    archivedBefore = archived
  }
  const candidates = uidls.filter((entry) => !archivedBefore.has(entry.value) && !context.held.has(keyPrefix + entry.value))
  report.remaining = candidates.length
  return { entries: candidates.slice(0, options.batchMessagesMax), sizes, keyPrefix }
}

/** RETR within `messageBytesMax`; a message LIST understated is held before the error ends the pass. */
async function retrieve(run: Pop3Run, session: Pop3Session, entry: Pop3ListingEntry, key: string): Promise<Buffer> {
  run.step = `retrieving message ${entry.number}`
  try {
    return await session.retrieve(entry.number, run.context.options.messageBytesMax)
  } catch (error) {
    // LIST understated the size: hold the message so it does not block every pass.
    if (error instanceof JournalError && error.code === 'LIMIT_EXCEEDED') {
      holdMessage(run.context, key, 'TOO_LARGE', null, error.message)
    }
    throw error
  }
}

/** Retrieves, archives and acknowledges one message of the batch; false when the pass is to stop. */
async function passMessage(run: Pop3Run, session: Pop3Session, batch: Pop3Batch, entry: Pop3ListingEntry): Promise<boolean> {
  const { context, state } = run
  const key = batch.keyPrefix + entry.value
  const sizeBytes = batch.sizes.get(entry.number)
  if (sizeBytes !== undefined && holdIfTooLarge(context, key, sizeBytes)) {
    context.report.remaining--
    return true
  }
  const raw = await retrieve(run, session, entry, key)
  const outcome = await archiveMessage(context, raw, key)
  if (outcome !== 'acknowledge') return outcome === 'next'
  // The archive is durable from here on.
  if (state) {
    state.add(entry.value)
    run.rememberedArchived++
  } else {
    run.step = `deleting message ${entry.number}`
    await session.delete(entry.number)
    run.markedForDeletion++
  }
  return true
}

/** Runs the batch until it ends, stop() asks, or a message stops the pass; then writes the state file. */
async function passBatch(run: Pop3Run, session: Pop3Session, batch: Pop3Batch): Promise<void> {
  const { context, state } = run
  try {
    for (const entry of batch.entries) {
      if (context.control.stopping) {
        context.report.stopped = true
        break
      }
      if (!(await passMessage(run, session, batch, entry))) break
    }
  } finally {
    // Whatever ended the loop, the UIDLs archived so far are durable in the archive:
    // remember them, so the next pass does not fetch them again.
    if (state && !context.control.abandoned) {
      run.step = 'writing the state file'
      await state.save()
      context.report.acknowledged += run.rememberedArchived
    }
  }
}

/**
 * One POP3 pass: connect, log in, UIDL + LIST, and for a bounded batch of messages RETR,
 * archive durably, then DELE ('delete') or remember the UIDL in the durable state file
 * ('flag'). QUIT commits the deletions: a pass that dies before QUIT leaves every message
 * on the server, and the next pass re-fetches them into dedup (same content hash, same
 * delivery key `pop3:host:user:uidl`).
 *
 * @param state the archived-UIDL state, required for 'flag' mode
 */
export async function runPop3Pass(context: PassContext, state: Pop3ArchivedState | null): Promise<void> {
  const { options, report, control } = context
  const run: Pop3Run = { context, state, session: null, step: `connecting to ${options.host}:${options.port}`, markedForDeletion: 0, rememberedArchived: 0 }
  const unregister = control.onAbandon(() => run.session?.close())
  try {
    const session = await openSession(run)
    await passBatch(run, session, await listBatch(run, session))
    if (!control.abandoned) {
      run.step = 'quitting (committing deletions)'
      await session.quit()
      report.acknowledged += run.markedForDeletion
    }
  } catch (error) {
    if (report.error === null) {
      report.error = control.abandoned ? new JournalError('STOPPED', 'the pass was abandoned by stop()') : toJournalNetworkError(error, run.step, options.password)
    }
  } finally {
    unregister()
    run.session?.close()
  }
}
