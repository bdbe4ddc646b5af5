import assert from 'node:assert/strict'
import { MirrorError } from './errors.js'
import { addRequeued, requeuedIdsMax } from './copy-lanes.js'
import { requeueCandidates } from './copy-batches.js'
import type { SeenIdentity } from './peer-state.js'
import { saveNow, type SenderContext } from './sender-context.js'
import { markAccepted, markResumed } from './sender-link.js'
import { acceptPendingIdentity, describeIdentity, pinnedIdentityOf, type IdentityEvent, type PinnedIdentity } from './sender-identity.js'

/** Pauses (true) or resumes (false) copying to the peer; saved durably before it resolves. @throws MirrorError STATE_FAILED */
export async function setSenderPaused(context: SenderContext, paused: boolean): Promise<void> {
  const { record } = context
  if (record.paused === paused) return
  record.paused = paused
  if (!paused) markResumed(context.link, context.deps.clock.now())
  await saveNow(context)
  context.work.notify()
  context.control.notify()
}

/** What `acceptIdentity` did: the identity pinned before, the one pinned now, and whether the queue starts again from 0. */
export interface AcceptedIdentity {
  previous: PinnedIdentity
  accepted: SeenIdentity
  cursorReset: boolean
}

/**
 * A technician accepts the pending identity: it becomes the pinned one (saved durably before
 * this resolves). A new store id is another archive: the cursor goes back to 0 and the whole
 * archive is copied to it (deduplicated by content where it already has something).
 * @throws MirrorError NOTHING_PENDING, STATE_FAILED
 */
export async function acceptSenderIdentity(context: SenderContext, tellIdentity: (event: Omit<IdentityEvent, 'peer'>) => void): Promise<AcceptedIdentity> {
  const { record, peer, deps } = context
  const accepted = record.pendingIdentity
  if (!accepted) {
    throw new MirrorError('NOTHING_PENDING', `the peer at ${peer.host}:${peer.port} has presented no other identity to accept`, {
      actual: describeIdentity(pinnedIdentityOf(record)),
    })
  }
  const previous = pinnedIdentityOf(record)
  const cursorReset = acceptPendingIdentity(record, accepted)
  if (cursorReset) {
    // Another archive: the whole queue starts again, and a session of before stops counting.
    // The new volume also gets back the peer's own messages held here (archived up to now).
    Object.assign(record, { cursor: 0, liveFrom: null, liveCursor: null, requeued: [], rejected: [], returnOwnThrough: await deps.archive.lastSequence() })
    context.queueEpoch++
  }
  await saveNow(context)
  markAccepted(context.link)
  deps.onCursor?.()
  tellIdentity({ action: 'mirror.identity-accepted', pinned: previous, presented: { serial: accepted.serial, storeId: accepted.storeId, fingerprint: accepted.fingerprint }, cursorReset })
  context.logger.warn('mirror peer identity accepted by a technician', { previous: describeIdentity(previous), accepted: describeIdentity(accepted), cursorReset })
  context.work.notify()
  context.control.notify()
  return { previous, accepted: { ...accepted }, cursorReset }
}

/**
 * Queues archived messages to be sent to the peer again, as their first local delivery (like
 * an `ingest` entry), after new mail and ahead of any backfill; saved durably before it
 * resolves. Each is sent and acknowledged like any copy but moves no cursor; it leaves the list
 * when its batch is acknowledged. Ids not archived (purged, malformed) or first archived from a
 * third appliance (its origin copies it) are dropped silently; the peer's own messages are sent
 * back to it (a repair after `mirror verify` found them missing there).
 * @returns how many distinct ids of `ids` are queued now (those already queued included)
 * @throws MirrorError REQUEUE_FULL when the list would pass requeuedIdsMax (nothing is added;
 *   retryable once the peer has taken some), STATE_FAILED when it cannot be saved (the ids stay
 *   queued in memory)
 */
export async function requeueForSender(context: SenderContext, ids: readonly string[]): Promise<number> {
  assert.ok(Array.isArray(ids), 'ids must be an array')
  const { record, peer, deps } = context
  const archived = await requeueCandidates(deps.archive, ids, record.serial)
  const next = addRequeued(record.requeued, archived)
  if (!next) {
    const wanted = new Set([...record.requeued, ...archived]).size
    throw new MirrorError('REQUEUE_FULL', `at most ${requeuedIdsMax} message ids may wait to be sent again to ${peer.host}:${peer.port}`, {
      expected: `<= ${requeuedIdsMax} ids`,
      actual: wanted,
      retryable: true,
    })
  }
  record.requeued = next
  await saveNow(context)
  if (archived.length > 0) context.logger.info('messages requeued for the mirror peer', { ids: archived.length, requeued: record.requeued.length })
  deps.onCursor?.()
  context.work.notify()
  return archived.length
}
