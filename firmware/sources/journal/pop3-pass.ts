import { JournalError } from './errors.js'
import { toJournalNetworkError } from './network-errors.js'
import { archiveMessage, holdIfTooLarge, holdMessage, type PassContext } from './pass.js'
import { Pop3Session } from './pop3-client.js'
import type { Pop3ArchivedState } from './pop3-archived-state.js'

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
  let step = `connecting to ${options.host}:${options.port}`
  let session: Pop3Session | null = null
  const unregister = control.onAbandon(() => session?.close())
  let markedForDeletion = 0
  let rememberedArchived = 0
  try {
    session = await Pop3Session.open({
      host: options.host,
      port: options.port,
      tls: options.tls,
      tlsRejectUnauthorized: options.tlsRejectUnauthorized,
      connectTimeoutMs: options.connectTimeoutMs,
      commandTimeoutMs: options.commandTimeoutMs,
    })
    if (control.abandoned) session.close()
    step = 'logging in'
    await session.login(options.user, options.password)
    step = 'listing messages'
    const uidls = await session.uidl()
    const sizes = await session.list()
    report.serverMessages = uidls.length

    const keyPrefix = `pop3:${options.host}:${options.user}:`
    const keyOf = (uidl: string): string => keyPrefix + uidl
    context.held.prune(keyPrefix, new Set(uidls.map((entry) => keyOf(entry.value))))
    let archivedBefore: ReadonlySet<string> = new Set()
    if (state) {
      step = 'reading the state file'
      const archived = await state.load(context.clock.now())
      state.prune(new Set(uidls.map((entry) => entry.value)))
      archivedBefore = archived
    }
    const candidates = uidls.filter((entry) => !archivedBefore.has(entry.value) && !context.held.has(keyOf(entry.value)))
    const batch = candidates.slice(0, options.batchMessagesMax)
    report.remaining = candidates.length

    try {
      for (const entry of batch) {
        if (control.stopping) {
          report.stopped = true
          break
        }
        const key = keyOf(entry.value)
        const sizeBytes = sizes.get(entry.number)
        if (sizeBytes !== undefined && holdIfTooLarge(context, key, sizeBytes)) {
          report.remaining--
          continue
        }
        step = `retrieving message ${entry.number}`
        let raw: Buffer
        try {
          raw = await session.retrieve(entry.number, options.messageBytesMax)
        } catch (error) {
          // LIST understated the size: hold the message so it does not block every pass.
          if (error instanceof JournalError && error.code === 'LIMIT_EXCEEDED') {
            holdMessage(context, key, 'TOO_LARGE', null, error.message)
          }
          throw error
        }
        const outcome = await archiveMessage(context, raw, key)
        if (outcome === 'stop') break
        if (outcome === 'next') continue
        // The archive is durable from here on.
        if (state) {
          state.add(entry.value)
          rememberedArchived++
        } else {
          step = `deleting message ${entry.number}`
          await session.delete(entry.number)
          markedForDeletion++
        }
      }
    } finally {
      // Whatever ended the loop, the UIDLs archived so far are durable in the archive:
      // remember them, so the next pass does not fetch them again.
      if (state && !control.abandoned) {
        step = 'writing the state file'
        await state.save()
        report.acknowledged += rememberedArchived
      }
    }
    if (!control.abandoned) {
      step = 'quitting (committing deletions)'
      await session.quit()
      report.acknowledged += markedForDeletion
    }
  } catch (error) {
    if (report.error === null) {
      report.error = control.abandoned ? new JournalError('STOPPED', 'the pass was abandoned by stop()') : toJournalNetworkError(error, step, options.password)
    }
  } finally {
    unregister()
    session?.close()
  }
}
