import type { DigestSnapshot } from '../archive/types.js'
import { answerChildren, answerIds } from '../archive/id-digest.js'
import { canonicalJson } from '../common/canonical.js'
import type { Logger } from '../common/logger.js'
import type { MirrorChannel } from './channel.js'
import { MirrorError } from './errors.js'
import { parseJsonObject } from './protocol.js'
import { unexplainedOn } from './verify-classify.js'
import { explainMissing, explainPresent, queueAtCut, sideFacts, type QueueAtCut, type VerifyLocalDeps, type VerifyPeerQueue } from './verify-facts.js'
import {
  VerifyFrameType,
  VerifyOp,
  checkReportSignature,
  decodeExplainRequest,
  decodeReport,
  decodeVerifyRequest,
  encodeJsonBody,
  encodeVerifyAnswer,
  signReport,
  type SignedVerifyReport,
  type VerifyReport,
  type VerifySide,
} from './verify-protocol.js'

/** What the responder needs besides this side's facts. */
export interface VerifyResponderDeps {
  logger: Logger
  local: VerifyLocalDeps
  /** This side's copy queue toward the appliance with `serial` (its sender), if it is a peer here. */
  queueFor(serial: string): VerifyPeerQueue | undefined
  /** Told of every report this side signed, for the audit log and status. */
  onReport(signed: SignedVerifyReport, role: 'responder'): void
}

/** The state of one verify on one channel. */
interface Session {
  verifyId: string
  snapshot: DigestSnapshot
  side: VerifySide
  cut: QueueAtCut
  /** Ids the initiator asked this side to explain as held here (the only ones it may re-queue). */
  presentAsked: Set<string>
}

/** One channel's verify state: the channel, and the verify under way on it (from BEGIN to END). */
interface ChannelState {
  deps: VerifyResponderDeps
  logger: Logger
  channel: MirrorChannel
  session: Session | undefined
}

/** Closes the snapshot of the verify under way, if any. */
function release(state: ChannelState): void {
  state.session?.snapshot.close()
  state.session = undefined
}

/** BEGIN: this side's copy queue at the cut, then a snapshot; answers this side's facts. @throws MirrorError PROTOCOL */
async function begin(state: ChannelState, body: Buffer): Promise<Uint8Array> {
  const { deps, channel } = state
  const { verifyId } = parseJsonObject(body, 'BEGIN')
  if (typeof verifyId !== 'string' || verifyId.length > 64) throw new MirrorError('PROTOCOL', 'malformed BEGIN')
  release(state)
  // The queue first, then the snapshot: whatever the queue had acknowledged is in the snapshot.
  const cut = queueAtCut(deps.queueFor(channel.peer.serial))
  const snapshot = await deps.local.archive.digestSnapshot()
  state.session = { verifyId, snapshot, side: sideFacts(deps.local, snapshot), cut, presentAsked: new Set() }
  return encodeJsonBody(state.session.side)
}

/** The answer body to one request. @throws MirrorError PROTOCOL, VERIFY_FAILED and the snapshot's errors */
async function answer(state: ChannelState, op: number, body: Buffer): Promise<Uint8Array> {
  if (op === VerifyOp.begin) return begin(state, body)
  const current = state.session
  if (!current) throw new MirrorError('PROTOCOL', 'verify request before BEGIN')
  if (op === VerifyOp.children) return answerChildren(current.snapshot, body)
  if (op === VerifyOp.ids) return answerIds(current.snapshot, body)
  if (op === VerifyOp.explain) {
    const { deps, channel } = state
    const asked = decodeExplainRequest(body)
    for (const id of asked.presentHere) current.presentAsked.add(id)
    const presentHere = await explainPresent(deps.local, deps.queueFor(channel.peer.serial), current.cut, current.side.lastSequence, asked.presentHere)
    return encodeJsonBody({ missingHere: explainMissing(deps.local, asked.missingHere), presentHere })
  }
  if (op === VerifyOp.sign) return encodeJsonBody(await countersign(state, current, body))
  release(state)
  return encodeJsonBody({})
}

/**
 * The report of a SIGN request, checked: it states what this side answered, names the
 * appliance on this channel as initiator and carries its valid signature.
 * @throws MirrorError PROTOCOL, VERIFY_FAILED
 */
function checkedReport(channel: MirrorChannel, current: Session, request: Record<string, unknown>): { report: VerifyReport; signature: string } {
  const report = decodeReport(request.report)
  if (typeof request.signature !== 'string' || typeof request.certificatePem !== 'string') throw new MirrorError('PROTOCOL', 'malformed SIGN')
  if (report.verifyId !== current.verifyId || canonicalJson(report.responder) !== canonicalJson(current.side)) {
    throw new MirrorError('VERIFY_FAILED', 'the report does not state what this side answered', { fields: { verifyId: report.verifyId } })
  }
  if (report.initiator.serial !== channel.peer.serial || report.initiator.fingerprint !== channel.peer.fingerprint) {
    throw new MirrorError('VERIFY_FAILED', 'the report names another initiator than the appliance on this channel')
  }
  checkReportSignature(report, request.signature, request.certificatePem, channel.peer.fingerprint)
  return { report, signature: request.signature }
}

/** SIGN: checks the report, re-queues this side's unexplained ids, signs and keeps it. @throws MirrorError PROTOCOL, VERIFY_FAILED */
async function countersign(state: ChannelState, current: Session, body: Buffer): Promise<{ signature: string; certificatePem: string; requeued: number }> {
  const { deps, channel } = state
  const { report, signature: initiatorSignature } = checkedReport(channel, current, parseJsonObject(body, 'SIGN'))
  const requeue = unexplainedOn(report.differences, 'responder').filter((id) => current.presentAsked.has(id))
  if (requeue.length !== report.requeued.responder) {
    throw new MirrorError('VERIFY_FAILED', 'the report asks this side to re-queue other ids than it listed', { expected: requeue.length, actual: report.requeued.responder })
  }
  const peerQueue = deps.queueFor(channel.peer.serial)
  if (requeue.length > 0) {
    if (!peerQueue) throw new MirrorError('VERIFY_FAILED', `${channel.peer.serial} is not a peer here: nothing can be re-queued for it`)
    await peerQueue.requeue(requeue)
    state.logger.warn('mirror verify found copies missing on the peer; re-queued', { peerSerial: channel.peer.serial, requeued: requeue.length, verifyId: report.verifyId })
  }
  const signature = signReport(report, deps.local.privateKeyPem)
  deps.onReport({ report, signatures: { initiator: initiatorSignature, responder: signature } }, 'responder')
  return { signature, certificatePem: deps.local.certificatePem, requeued: requeue.length }
}

/** Answers one request on the channel: the body, or the failure's code and message. */
async function reply(state: ChannelState, request: { requestId: number; op: number; body: Buffer }): Promise<void> {
  const { requestId, op, body } = request
  let answerFrame: Buffer
  try {
    answerFrame = encodeVerifyAnswer(requestId, { ok: true, body: await answer(state, op, body) })
  } catch (error) {
    const code = typeof (error as { code?: unknown })?.code === 'string' ? (error as { code: string }).code : 'FAILED'
    state.logger.warn('mirror verify request failed', { peerSerial: state.channel.peer.serial, op, error })
    answerFrame = encodeVerifyAnswer(requestId, { ok: false, code, message: (error as Error)?.message ?? String(error) })
  }
  await state.channel.send(VerifyFrameType.answer, answerFrame).catch(() => undefined)
}

/**
 * The peer's half of `mirror verify` on an inbound channel: opens a digest snapshot at BEGIN
 * (after reading its own copy queue, so the cut holds), answers digest and explanation
 * requests from it, and at SIGN checks the report against what it answered and the
 * initiator's signature, re-queues its own unexplained ids, signs and keeps the report.
 * Requests are answered one at a time, in order; the snapshot is released at END or when the
 * channel closes.
 */
export function createVerifyResponder(deps: VerifyResponderDeps) {
  const logger = deps.logger.child('verify')

  return {
    /** A handler for one channel's VERIFY_REQUEST frames; call `close()` when the channel ends. */
    forChannel(channel: MirrorChannel) {
      const state: ChannelState = { deps, logger, channel, session: undefined }
      let queue: Promise<void> = Promise.resolve()
      return {
        /** Takes one VERIFY_REQUEST frame; the answer is sent when its turn comes. */
        onRequest(payload: Buffer): void {
          const request = decodeVerifyRequest(payload)
          queue = queue.then(() => reply(state, request))
        },
        /** Releases the snapshot once the answers under way are done. */
        async close(): Promise<void> {
          await queue
          release(state)
        },
      }
    },
  }
}

/** A responder as createVerifyResponder makes it. */
export type VerifyResponder = ReturnType<typeof createVerifyResponder>
