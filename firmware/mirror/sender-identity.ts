import type { Logger } from '../common/logger.js'
import type { Clock } from '../common/clock.js'
import { MirrorError } from './errors.js'
import type { AdmissionCandidate } from './handshake.js'
import { previousSerialsMax, sameIdentity, type PeerRecord, type SeenIdentity } from './peer-state.js'

/** The pinned identity of a peer (all null before the first handshake). */
export interface PinnedIdentity {
  serial: string | null
  storeId: string | null
  fingerprint: string | null
}

/** An identity event of one peer, for the audit log. */
export interface IdentityEvent {
  action: 'mirror.peer-pinned' | 'mirror.identity-changed' | 'mirror.identity-accepted' | 'mirror.identity-restored'
  peer: { host: string; port: number }
  /** What was pinned before the event. */
  pinned: PinnedIdentity
  /** What the peer presented (pinned, changed) or what was accepted. */
  presented: PinnedIdentity & { address?: string; direction?: 'inbound' | 'outbound' }
  /** Accept only: the cursor went back to 0 because the store id changed (the new archive is backfilled). */
  cursorReset?: boolean
}

/** `serial S, store 0123456789abcdef…, certificate 0123456789abcdef…`: an identity in one short line. */
export function describeIdentity(identity: PinnedIdentity): string {
  const short = (value: string | null): string => (value === null ? 'none' : `${value.slice(0, 16)}…`)
  return `serial ${identity.serial ?? 'none'}, store ${short(identity.storeId)}, certificate ${short(identity.fingerprint)}`
}

/** The pinned identity of a peer record. */
export const pinnedIdentityOf = (record: PeerRecord): PinnedIdentity => ({ serial: record.serial, storeId: record.storeId, fingerprint: record.fingerprint })

/**
 * A technician accepts `accepted` (the record's pending identity): it becomes the pinned one
 * and an old serial goes to previousSerials. Changes the record in place; the caller saves it.
 * @returns true when the store id changed: another archive, whose queue starts again from 0
 */
export function acceptPendingIdentity(record: PeerRecord, accepted: SeenIdentity): boolean {
  const previous = pinnedIdentityOf(record)
  if (previous.serial !== null && previous.serial !== accepted.serial) {
    record.previousSerials = [...record.previousSerials, previous.serial].slice(-previousSerialsMax)
  }
  record.serial = accepted.serial
  record.storeId = accepted.storeId
  record.fingerprint = accepted.fingerprint
  record.pendingIdentity = null
  return previous.storeId !== accepted.storeId
}

/** The IDENTITY_CHANGED refusal for the peer at `peer`, with the pinned and presented identities as expected/actual. */
export function identityChangedError(peer: { host: string; port: number }, pinned: PinnedIdentity, presented: PinnedIdentity): MirrorError {
  return new MirrorError(
    'IDENTITY_CHANGED',
    `the peer at ${peer.host}:${peer.port} is not the appliance pinned for it; a technician must accept the new identity (mirror accept ${peer.host}:${peer.port})`,
    { expected: describeIdentity(pinned), actual: describeIdentity(presented) },
  )
}

/** What one peer's identity admission works on: its record (changed in place) and how to save and tell. */
export interface IdentityAdmissionDeps {
  peer: { host: string; port: number }
  record: PeerRecord
  logger: Logger
  clock: Clock
  /** Saves the record soon (coalesced). */
  save: () => void
  /** Told of identity events for the audit log; a throwing sink is logged, never fatal. */
  onIdentity?: (event: IdentityEvent) => void
}

/** One peer's identity pinning: admission of proven appliances and the audit events it causes. */
export function createIdentityAdmission(deps: IdentityAdmissionDeps) {
  const { peer, record, logger } = deps

  function tellIdentity(event: Omit<IdentityEvent, 'peer'>): void {
    try {
      deps.onIdentity?.({ peer: { host: peer.host, port: peer.port }, ...event })
    } catch (error) {
      logger.error('mirror identity audit failed', { error })
    }
  }

  /** The first appliance (or the one completing a version-1 pin) is pinned. */
  function pin(candidate: AdmissionCandidate, before: PinnedIdentity): void {
    const presented = { serial: candidate.serial, storeId: candidate.storeId, fingerprint: candidate.fingerprint }
    Object.assign(record, presented)
    record.pendingIdentity = null
    deps.save()
    logger.info('mirror peer identity pinned', { ...presented, address: candidate.address, direction: candidate.direction })
    tellIdentity({ action: 'mirror.peer-pinned', pinned: before, presented: { ...presented, address: candidate.address, direction: candidate.direction } })
  }

  /** Another appliance than the pinned one: kept as the pending identity, told once per new identity. */
  function holdPending(candidate: AdmissionCandidate, before: PinnedIdentity): MirrorError {
    const presented = { serial: candidate.serial, storeId: candidate.storeId, fingerprint: candidate.fingerprint }
    const now = deps.clock.now()
    const pending = record.pendingIdentity
    const samePending = pending !== null && sameIdentity(pending, candidate)
    const seen: SeenIdentity = {
      ...presented,
      model: candidate.model,
      firmwareVersion: candidate.firmwareVersion,
      address: candidate.address,
      listenPort: candidate.listenPort,
      firstSeenAtMs: samePending ? pending.firstSeenAtMs : now,
      lastSeenAtMs: now,
    }
    record.pendingIdentity = seen
    deps.save()
    if (!samePending) {
      logger.error('a mirror peer presented another identity than the one pinned; nothing is copied until a technician accepts it (mirror accept)', {
        expected: describeIdentity(before),
        actual: describeIdentity(presented),
        address: candidate.address,
        direction: candidate.direction,
      })
      tellIdentity({ action: 'mirror.identity-changed', pinned: before, presented: { ...presented, address: candidate.address, direction: candidate.direction } })
    }
    return identityChangedError(peer, before, presented)
  }

  /**
   * Admission of a proven appliance as this peer, inbound or outbound. The first one is
   * pinned (serial, store id, certificate); afterwards any difference is refused with
   * IDENTITY_CHANGED and kept as the pending identity for a technician's `mirror accept`, and
   * the cursor does not move: the queue waits for the real peer or the accept. A version-1
   * state file has only the serial pinned: a matching serial completes the pin.
   */
  function admit(candidate: AdmissionCandidate): MirrorError | undefined {
    const before = pinnedIdentityOf(record)
    const firstContact = record.serial === null || (record.storeId === null && record.serial === candidate.serial)
    if (firstContact) return void pin(candidate, before)
    if (!sameIdentity(record, candidate)) return holdPending(candidate, before)
    if (record.pendingIdentity) {
      // The pinned appliance is back: whatever presented itself meanwhile is no longer pending.
      logger.warn('the pinned mirror peer is back; the other identity seen at its place is dropped', { dropped: describeIdentity(record.pendingIdentity) })
      tellIdentity({ action: 'mirror.identity-restored', pinned: before, presented: { ...record.pendingIdentity } })
      record.pendingIdentity = null
      deps.save()
    }
    return undefined
  }

  return { admit, tellIdentity }
}
