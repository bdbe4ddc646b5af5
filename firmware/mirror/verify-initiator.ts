import { randomBytes } from 'node:crypto'
import { compareDigests, remoteOverBytes, type CompareLimits } from '../archive/id-digest.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import type { MirrorChannel } from './channel.js'
import { CopyFrameType } from './copy-protocol.js'
import { MirrorError } from './errors.js'
import { parseJsonObject } from './protocol.js'
import { buildReport, classifyAll, unexplainedOn } from './verify-classify.js'
import { explainMissing, explainPresent, queueAtCut, sideFacts, type VerifyLocalDeps, type VerifyPeerQueue } from './verify-facts.js'
import {
  VerifyFrameType,
  VerifyOp,
  checkReportSignature,
  decodeExplainAnswer,
  decodeVerifyAnswer,
  decodeVerifySide,
  encodeJsonBody,
  encodeVerifyRequest,
  reportDigest,
  signReport,
  type SignedVerifyReport,
  type VerifyOpCode,
} from './verify-protocol.js'

/** How long one verify request may wait for its answer, in milliseconds (a snapshot read of a large bucket is the slowest). */
export const verifyRequestTimeoutMs = 120_000

/** Collaborators of one run. */
export interface VerifyRunDeps {
  logger: Logger
  clock: Clock
  local: VerifyLocalDeps
  /** This side's copy queue toward the peer. */
  queue: VerifyPeerQueue
}

/** A request/answer client over one channel: many requests may be outstanding; answers are matched by id. */
function createVerifyClient(channel: MirrorChannel, timeoutMs: number) {
  let nextId = 1
  const pending = new Map<number, { resolve(body: Buffer): void; reject(error: unknown): void; timer: NodeJS.Timeout }>()
  let ended: unknown
  const failAll = (error: unknown): void => {
    ended ??= error
    for (const [id, entry] of pending) {
      clearTimeout(entry.timer)
      entry.reject(error)
      pending.delete(id)
    }
  }
  const reader = (async () => {
    for (;;) {
      const frame = await channel.receive()
      if (frame === null) throw new MirrorError('CONNECTION_CLOSED', 'the peer closed the verify channel')
      // The peer's receiver announces its settings on every channel; not this exchange's business.
      if (frame.type === CopyFrameType.policy) continue
      if (frame.type !== VerifyFrameType.answer) throw new MirrorError('PROTOCOL', `unexpected frame type ${frame.type} on a verify channel`, { actual: frame.type })
      const answer = decodeVerifyAnswer(frame.payload)
      const entry = pending.get(answer.requestId)
      if (!entry) throw new MirrorError('PROTOCOL', `an answer to request ${answer.requestId}, which is not outstanding`)
      pending.delete(answer.requestId)
      clearTimeout(entry.timer)
      if ('error' in answer) entry.reject(answer.error)
      else entry.resolve(answer.body)
    }
  })().catch(failAll)

  return {
    request(op: VerifyOpCode, body: Uint8Array): Promise<Buffer> {
      if (ended !== undefined) return Promise.reject(ended)
      const requestId = nextId++
      return new Promise<Buffer>((resolve, reject) => {
        const timer = setTimeout(() => {
          pending.delete(requestId)
          reject(new MirrorError('TIMEOUT', `no verify answer within ${timeoutMs} ms`, { expected: `<= ${timeoutMs} ms`, actual: null }))
        }, timeoutMs)
        timer.unref()
        pending.set(requestId, { resolve, reject, timer })
        channel.send(VerifyFrameType.request, encodeVerifyRequest(requestId, op, body)).catch((error: unknown) => failAll(error))
      })
    },
    async json(op: VerifyOpCode, value: unknown): Promise<Record<string, unknown>> {
      return parseJsonObject(await this.request(op, encodeJsonBody(value)), 'verify answer')
    },
    reader,
  }
}

/**
 * Runs `mirror verify` against the peer on `channel` (an outbound channel opened for it):
 *
 * 1. the cut: this side's queue for the peer is read, then BEGIN makes the peer read its queue
 *    and open its snapshot, then this side opens its own; whatever either side's queue had
 *    acknowledged before is in the other's snapshot, so a difference outside both queues is real;
 * 2. the id digests are compared (compareDigests: into differing buckets only);
 * 3. each side explains the ids it holds alone (queued, held, refused, origin) and those it
 *    lacks (purged, with the audit entry), and the differences are classified;
 * 4. the report is signed here, sent to the peer, which checks it against its own answers and
 *    this signature, re-queues its unexplained ids, countersigns and keeps it; this side checks
 *    the countersignature and re-queues its own unexplained ids.
 *
 * @throws MirrorError VERIFY_FAILED (the peer's error answer, a bad signature), TIMEOUT, PROTOCOL,
 *   CONNECTION_CLOSED; ArchiveError from the snapshot or a malformed digest answer
 */
export async function runVerify(deps: VerifyRunDeps, channel: MirrorChannel, limits: Partial<CompareLimits> = {}): Promise<SignedVerifyReport> {
  const { local } = deps
  const logger = deps.logger.child('verify', { peerSerial: channel.peer.serial })
  const client = createVerifyClient(channel, verifyRequestTimeoutMs)
  const verifyId = randomBytes(16).toString('hex')
  const startedAtMs = deps.clock.now()
  const startedMono = deps.clock.monotonicMs()
  const cut = queueAtCut(deps.queue)
  const responder = decodeVerifySide(await client.json(VerifyOp.begin, { verifyId }))
  if (responder.serial !== channel.peer.serial || responder.fingerprint !== channel.peer.fingerprint || responder.storeId !== channel.peer.storeId) {
    throw new MirrorError('VERIFY_FAILED', 'the peer describes itself differently from its handshake', { expected: channel.peer.serial, actual: responder.serial })
  }
  const snapshot = await local.archive.digestSnapshot()
  try {
    const initiator = sideFacts(local, snapshot)
    const comparison = await compareDigests(
      snapshot,
      remoteOverBytes({ children: (request) => client.request(VerifyOp.children, request), ids: (request) => client.request(VerifyOp.ids, request) }),
      limits,
    )
    const asked = { missingHere: comparison.onlyLocal, presentHere: comparison.onlyRemote }
    const remote =
      asked.missingHere.length + asked.presentHere.length > 0
        ? decodeExplainAnswer(await client.request(VerifyOp.explain, encodeJsonBody(asked)), asked)
        : { missingHere: [], presentHere: [] }
    const presentHere = await explainPresent(local, deps.queue, cut, initiator.lastSequence, comparison.onlyLocal)
    const missingHere = explainMissing(local, comparison.onlyRemote)
    const differences = classifyAll(
      {
        onlyInitiator: presentHere.map((present, index) => ({ present, missing: remote.missingHere[index]! })),
        onlyResponder: remote.presentHere.map((present, index) => ({ present, missing: missingHere[index]! })),
      },
      { initiator, responder },
    )
    const requeueHere = unexplainedOn(differences, 'initiator')
    const report = buildReport({
      verifyId,
      startedAtMs,
      finishedAtMs: deps.clock.now(),
      initiator,
      responder,
      truncated: comparison.truncated,
      roundTrips: comparison.roundTrips,
      bytesExchanged: comparison.bytesExchanged,
      differences,
      requeued: { initiator: requeueHere.length, responder: unexplainedOn(differences, 'responder').length },
    })
    const signature = signReport(report, local.privateKeyPem)
    const countersigned = await client.json(VerifyOp.sign, { report, signature, certificatePem: local.certificatePem })
    if (typeof countersigned.signature !== 'string' || typeof countersigned.certificatePem !== 'string') throw new MirrorError('PROTOCOL', 'malformed SIGN answer')
    checkReportSignature(report, countersigned.signature, countersigned.certificatePem, channel.peer.fingerprint)
    if (requeueHere.length > 0) {
      await deps.queue.requeue(requeueHere)
      logger.warn('mirror verify found copies missing on the peer; re-queued', { requeued: requeueHere.length, verifyId })
    }
    await client.json(VerifyOp.end, {}).catch(() => undefined)
    logger.info('mirror verify done', {
      verifyId,
      outcome: report.outcome,
      counts: report.counts,
      roundTrips: report.roundTrips,
      bytesExchanged: report.bytesExchanged,
      durationMs: Math.round(deps.clock.monotonicMs() - startedMono),
      digest: reportDigest(report),
    })
    return { report, signatures: { initiator: signature, responder: countersigned.signature } }
  } finally {
    snapshot.close()
  }
}
