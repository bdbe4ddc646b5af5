import { createHash, createPrivateKey, sign, verify, X509Certificate } from 'node:crypto'
import { canonicalJson } from '../common/canonical.js'
import { MirrorError } from './errors.js'
import { parseJsonObject, sanitizePeerText } from './protocol.js'

/**
 * Frames of `mirror verify` on a mirror channel (see verify-initiator.ts for the run).
 * The side that runs the verify (initiator) opens its own channel to the peer and sends
 * requests; the peer's receiver hands them to its responder, which answers each in turn:
 *
 *     initiator → VERIFY_REQUEST  u32 BE request id | u8 op | body
 *     responder → VERIFY_ANSWER   u32 BE request id | u8 status (0 ok, 1 error) | body
 *
 *     op BEGIN    {verifyId}                      → VerifySide of the responder (its snapshot is open)
 *     op CHILDREN id-digest prefixes (binary)     → id-digest children (binary)
 *     op IDS      id-digest prefixes (binary)     → id-digest ids (binary)
 *     op EXPLAIN  {missingHere[], presentHere[]}  → {missingHere: MissingFacts[], presentHere: PresentFacts[]}
 *     op SIGN     {report}                        → {signature, certificatePem, requeued}
 *     op END      {}                              → {}  (snapshot released)
 *
 * An error answer carries {code, message}. Requests are answered in order, one at a time.
 */
export const VerifyFrameType = { request: 23, answer: 24 } as const

export const VerifyOp = { begin: 1, children: 2, ids: 3, explain: 4, sign: 5, end: 6 } as const
export type VerifyOpCode = (typeof VerifyOp)[keyof typeof VerifyOp]
const verifyOps: ReadonlySet<number> = new Set(Object.values(VerifyOp))

/** Ids in one EXPLAIN list, at most (the comparison's own bound, compareLimitsDefault.idsMax). */
export const explainIdsMax = 65_536
/** Differences a report lists by id (the counts cover all of them). */
export const reportDifferencesListedMax = 1_000
/** Longest detail text of one difference, in characters. */
const detailLengthMax = 200
/** Bytes before a request's or an answer's body. */
const envelopeBytes = 5
const hexId = /^[0-9a-f]{64}$/
const hex32 = /^[0-9a-f]{32}$/

/** One side's facts at the cut: who it is, what its snapshot holds, its audit head and policy. */
export interface VerifySide {
  serial: string
  storeId: string
  /** SHA-256 of its mirror certificate (the key that signs the report). */
  fingerprint: string
  /** The change-log sequence its digest snapshot reflects. */
  lastSequence: number
  messages: number
  bytes: number
  /** The root of its id digest, hex (32 bytes). */
  root: string
  auditHead: { seq: number; hash: string }
  policyFingerprint: string
}

/** Why the side that holds an id has it while the other does not (its own view). */
export interface PresentFacts {
  id: string
  /** Not yet acknowledged by the other side at the cut (or re-queued): on its way. */
  queued: boolean
  /** Active holds that keep it here past its retention. */
  held: string[]
  /** The other side refused this copy for good (its code), as this side's sender recorded it. */
  refused: string | null
  /** Where this copy came from: null = a local source, else the serial of the peer that copied it here. */
  origin: string | null
}

/** Why the side that lacks an id does not have it (its own view). */
export interface MissingFacts {
  id: string
  /** The retention purge removed it here: when, its change-log entry and its audit entry. */
  purged: { atMs: number; sequence: number; auditSeq: number | null } | null
}

export type DifferenceClass = 'queued' | 'purged' | 'held' | 'refused' | 'other-origin' | 'unexplained'
export const differenceClasses: readonly DifferenceClass[] = ['queued', 'purged', 'held', 'refused', 'other-origin', 'unexplained']

/** One id held by one side only, classified. */
export interface VerifyDifference {
  id: string
  presentOn: 'initiator' | 'responder'
  class: DifferenceClass
  detail: string
}

/** What a verify found, as both sides sign it and keep it in their audit logs. */
export interface VerifyReport {
  version: 1
  verifyId: string
  startedAtMs: number
  finishedAtMs: number
  initiator: VerifySide
  responder: VerifySide
  /** Both digests' roots are equal: the same set of ids on both sides. */
  rootsAgree: boolean
  /** The comparison hit its limits: more differences exist than were found. */
  truncated: boolean
  roundTrips: number
  bytesExchanged: number
  /** Differences per class (all of them found, not only those listed). */
  counts: Record<DifferenceClass, number>
  /** The first reportDifferencesListedMax differences, unexplained first. */
  differences: VerifyDifference[]
  /** Retention and hold settings: equal fingerprints. */
  policyAgree: boolean
  /** agree: same ids; explained: every difference has a reason; unexplained: some have none; incomplete: truncated. */
  outcome: 'agree' | 'explained' | 'unexplained' | 'incomplete'
  /** Unexplained ids put back in each side's copy queue. */
  requeued: { initiator: number; responder: number }
}

/** A report with both sides' signatures (base64 RSA-SHA256 over canonicalJson(report)). */
export interface SignedVerifyReport {
  report: VerifyReport
  signatures: { initiator: string; responder: string }
}

function protocolError(what: string): MirrorError {
  return new MirrorError('PROTOCOL', `malformed ${what}`)
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0
}

function isText(value: unknown, lengthMax: number): value is string {
  return typeof value === 'string' && value.length <= lengthMax
}

/** A request's bytes. */
export function encodeVerifyRequest(requestId: number, op: VerifyOpCode, body: Uint8Array): Buffer {
  const head = Buffer.allocUnsafe(envelopeBytes)
  head.writeUInt32BE(requestId, 0)
  head.writeUInt8(op, 4)
  return Buffer.concat([head, body])
}

/** @throws MirrorError PROTOCOL for a short payload or an unknown op */
export function decodeVerifyRequest(payload: Buffer): { requestId: number; op: VerifyOpCode; body: Buffer } {
  if (payload.length < envelopeBytes) throw protocolError('VERIFY_REQUEST')
  const op = payload.readUInt8(4)
  if (!verifyOps.has(op)) throw protocolError(`VERIFY_REQUEST: unknown op ${op}`)
  return { requestId: payload.readUInt32BE(0), op: op as VerifyOpCode, body: payload.subarray(envelopeBytes) }
}

/** An answer's bytes: ok with a body, or an error with {code, message}. */
export function encodeVerifyAnswer(requestId: number, answer: { ok: true; body: Uint8Array } | { ok: false; code: string; message: string }): Buffer {
  const head = Buffer.allocUnsafe(envelopeBytes)
  head.writeUInt32BE(requestId, 0)
  head.writeUInt8(answer.ok ? 0 : 1, 4)
  const body = answer.ok ? answer.body : Buffer.from(JSON.stringify({ code: answer.code.slice(0, 64), message: answer.message.slice(0, 512) }), 'utf8')
  return Buffer.concat([head, body])
}

/**
 * An answer: its body, or the peer's error as a MirrorError VERIFY_FAILED (origin peer).
 * @throws MirrorError PROTOCOL when malformed
 */
export function decodeVerifyAnswer(payload: Buffer): { requestId: number; body: Buffer } | { requestId: number; error: MirrorError } {
  if (payload.length < envelopeBytes) throw protocolError('VERIFY_ANSWER')
  const requestId = payload.readUInt32BE(0)
  const status = payload.readUInt8(4)
  const body = payload.subarray(envelopeBytes)
  if (status === 0) return { requestId, body }
  if (status !== 1) throw protocolError('VERIFY_ANSWER status')
  const { code, message } = parseJsonObject(body, 'VERIFY_ANSWER error')
  if (typeof code !== 'string' || typeof message !== 'string') throw protocolError('VERIFY_ANSWER error')
  return {
    requestId,
    error: new MirrorError('VERIFY_FAILED', `the peer could not answer: ${sanitizePeerText(code, 64)}: ${sanitizePeerText(message, 512)}`, {
      origin: 'peer',
      fields: { peerCode: sanitizePeerText(code, 64) },
    }),
  }
}

export function encodeJsonBody(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8')
}

/** @throws MirrorError PROTOCOL */
export function decodeVerifySide(value: unknown): VerifySide {
  const side = (value ?? {}) as Record<string, unknown>
  const head = (side.auditHead ?? {}) as Record<string, unknown>
  if (
    !isText(side.serial, 64) ||
    typeof side.storeId !== 'string' ||
    !hex32.test(side.storeId) ||
    typeof side.fingerprint !== 'string' ||
    !hexId.test(side.fingerprint) ||
    !isCount(side.lastSequence) ||
    !isCount(side.messages) ||
    !isCount(side.bytes) ||
    typeof side.root !== 'string' ||
    !hexId.test(side.root) ||
    !isCount(head.seq) ||
    !isText(head.hash, 128) ||
    !isText(side.policyFingerprint, 256)
  ) {
    throw protocolError('verify side')
  }
  return {
    serial: sanitizePeerText(side.serial, 64),
    storeId: side.storeId,
    fingerprint: side.fingerprint,
    lastSequence: side.lastSequence,
    messages: side.messages,
    bytes: side.bytes,
    root: side.root,
    auditHead: { seq: head.seq, hash: sanitizePeerText(head.hash, 128) },
    policyFingerprint: sanitizePeerText(side.policyFingerprint, 256),
  }
}

function idList(value: unknown, what: string): string[] {
  if (!Array.isArray(value) || value.length > explainIdsMax || !value.every((id) => typeof id === 'string' && hexId.test(id))) throw protocolError(what)
  return value as string[]
}

/** @throws MirrorError PROTOCOL */
export function decodeExplainRequest(body: Buffer): { missingHere: string[]; presentHere: string[] } {
  const { missingHere, presentHere } = parseJsonObject(body, 'EXPLAIN')
  return { missingHere: idList(missingHere, 'EXPLAIN missingHere'), presentHere: idList(presentHere, 'EXPLAIN presentHere') }
}

/** @throws MirrorError PROTOCOL */
export function decodeExplainAnswer(body: Buffer, asked: { missingHere: readonly string[]; presentHere: readonly string[] }): { missingHere: MissingFacts[]; presentHere: PresentFacts[] } {
  const { missingHere, presentHere } = parseJsonObject(body, 'EXPLAIN answer')
  if (!Array.isArray(missingHere) || missingHere.length !== asked.missingHere.length || !Array.isArray(presentHere) || presentHere.length !== asked.presentHere.length) {
    throw protocolError('EXPLAIN answer: wrong number of facts')
  }
  const missing = missingHere.map((item: unknown, index): MissingFacts => {
    const facts = (item ?? {}) as Record<string, unknown>
    if (facts.id !== asked.missingHere[index]) throw protocolError('EXPLAIN answer: ids out of order')
    if (facts.purged === null) return { id: facts.id as string, purged: null }
    const purged = (facts.purged ?? {}) as Record<string, unknown>
    if (typeof purged.atMs !== 'number' || !isCount(purged.sequence) || !(purged.auditSeq === null || isCount(purged.auditSeq))) throw protocolError('EXPLAIN answer: purged')
    return { id: facts.id as string, purged: { atMs: purged.atMs, sequence: purged.sequence, auditSeq: purged.auditSeq } }
  })
  const present = presentHere.map((item: unknown, index): PresentFacts => {
    const facts = (item ?? {}) as Record<string, unknown>
    if (facts.id !== asked.presentHere[index]) throw protocolError('EXPLAIN answer: ids out of order')
    if (
      typeof facts.queued !== 'boolean' ||
      !Array.isArray(facts.held) ||
      facts.held.length > 64 ||
      !facts.held.every((name) => isText(name, 1024)) ||
      !(facts.refused === null || isText(facts.refused, 64)) ||
      !(facts.origin === null || isText(facts.origin, 64))
    ) {
      throw protocolError('EXPLAIN answer: present facts')
    }
    return {
      id: facts.id as string,
      queued: facts.queued,
      held: (facts.held as string[]).map((name) => sanitizePeerText(name, 1024)),
      refused: facts.refused === null ? null : sanitizePeerText(facts.refused as string, 64),
      origin: facts.origin === null ? null : sanitizePeerText(facts.origin as string, 64),
    }
  })
  return { missingHere: missing, presentHere: present }
}

/**
 * The report the initiator sends for signing, checked for shape (the responder then checks
 * its own side's facts against what it answered).
 * @throws MirrorError PROTOCOL
 */
export function decodeReport(value: unknown): VerifyReport {
  const report = (value ?? {}) as Record<string, unknown>
  const counts = (report.counts ?? {}) as Record<string, unknown>
  const requeued = (report.requeued ?? {}) as Record<string, unknown>
  if (
    report.version !== 1 ||
    !isText(report.verifyId, 64) ||
    typeof report.startedAtMs !== 'number' ||
    typeof report.finishedAtMs !== 'number' ||
    typeof report.rootsAgree !== 'boolean' ||
    typeof report.truncated !== 'boolean' ||
    !isCount(report.roundTrips) ||
    !isCount(report.bytesExchanged) ||
    !differenceClasses.every((name) => isCount(counts[name])) ||
    !Array.isArray(report.differences) ||
    report.differences.length > reportDifferencesListedMax ||
    typeof report.policyAgree !== 'boolean' ||
    !['agree', 'explained', 'unexplained', 'incomplete'].includes(report.outcome as string) ||
    !isCount(requeued.initiator) ||
    !isCount(requeued.responder)
  ) {
    throw protocolError('verify report')
  }
  const differences = report.differences.map((item: unknown): VerifyDifference => {
    const difference = (item ?? {}) as Record<string, unknown>
    if (
      typeof difference.id !== 'string' ||
      !hexId.test(difference.id) ||
      (difference.presentOn !== 'initiator' && difference.presentOn !== 'responder') ||
      !differenceClasses.includes(difference.class as DifferenceClass) ||
      !isText(difference.detail, detailLengthMax)
    ) {
      throw protocolError('verify report difference')
    }
    return { id: difference.id, presentOn: difference.presentOn, class: difference.class as DifferenceClass, detail: sanitizePeerText(difference.detail, detailLengthMax) }
  })
  return {
    version: 1,
    verifyId: report.verifyId,
    startedAtMs: report.startedAtMs,
    finishedAtMs: report.finishedAtMs,
    initiator: decodeVerifySide(report.initiator),
    responder: decodeVerifySide(report.responder),
    rootsAgree: report.rootsAgree,
    truncated: report.truncated,
    roundTrips: report.roundTrips,
    bytesExchanged: report.bytesExchanged,
    counts: Object.fromEntries(differenceClasses.map((name) => [name, counts[name] as number])) as Record<DifferenceClass, number>,
    differences,
    policyAgree: report.policyAgree,
    outcome: report.outcome as VerifyReport['outcome'],
    requeued: { initiator: requeued.initiator as number, responder: requeued.responder as number },
  }
}

/** Longest detail text kept in a difference. */
export function differenceDetail(text: string): string {
  return text.slice(0, detailLengthMax)
}

/** The bytes both sides sign: the canonical JSON of the report. */
export function reportSigningText(report: VerifyReport): string {
  return canonicalJson(report)
}

/** Hex SHA-256 of the signing text: names the report in logs and audit entries. */
export function reportDigest(report: VerifyReport): string {
  return createHash('sha256').update(reportSigningText(report)).digest('hex')
}

/** Signs the report with this appliance's mirror key (RSA PKCS#1 v1.5, SHA-256), base64. */
export function signReport(report: VerifyReport, privateKeyPem: string): string {
  return sign('sha256', Buffer.from(reportSigningText(report), 'utf8'), createPrivateKey(privateKeyPem)).toString('base64')
}

/**
 * Checks a signature against a certificate, and that the certificate is the one whose
 * fingerprint the report names (the peer's pinned certificate).
 * @throws MirrorError VERIFY_FAILED when the certificate does not match or the signature is wrong
 */
export function checkReportSignature(report: VerifyReport, signature: string, certificatePem: string, expectedFingerprint: string): void {
  let certificate: X509Certificate
  try {
    certificate = new X509Certificate(certificatePem)
  } catch (error) {
    throw new MirrorError('VERIFY_FAILED', 'the peer sent an unreadable certificate with its signature', { cause: error })
  }
  const fingerprint = createHash('sha256').update(certificate.raw).digest('hex')
  if (fingerprint !== expectedFingerprint) {
    throw new MirrorError('VERIFY_FAILED', 'the peer signed with another certificate than the one it presented', { expected: expectedFingerprint, actual: fingerprint })
  }
  const ok = verify('sha256', Buffer.from(reportSigningText(report), 'utf8'), certificate.publicKey, Buffer.from(signature, 'base64'))
  if (!ok) throw new MirrorError('VERIFY_FAILED', "the peer's signature of the verify report does not check")
}
