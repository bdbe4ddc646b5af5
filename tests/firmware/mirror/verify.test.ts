import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { MirrorError } from '../../../firmware/mirror/errors.js'
import { buildReport, classifyAll, classifyDifference, unexplainedOn } from '../../../firmware/mirror/verify-classify.js'
import {
  VerifyOp,
  checkReportSignature,
  decodeExplainAnswer,
  decodeReport,
  decodeVerifyAnswer,
  decodeVerifyRequest,
  encodeJsonBody,
  encodeVerifyAnswer,
  encodeVerifyRequest,
  reportDifferencesListedMax,
  signReport,
  type MissingFacts,
  type PresentFacts,
  type SignedVerifyReport,
  type VerifySide,
} from '../../../firmware/mirror/verify-protocol.js'
import { certificateFor, createTestNode, type TestNode } from './nodes.js'
import { waitUntil } from '../../helpers/wait.js'
import { localDelivery, makeMessage } from './fakes.js'
import { testSeed } from '../../helpers/random.js'

const { random } = testSeed(t, 'the random content')
const host = '127.0.0.1'
const hex = (byte: number, length = 64): string =>
  byte
    .toString(16)
    .padStart(2, '0')
    .repeat(length / 2)

function side(serial: string, root = hex(1)): VerifySide {
  return { serial, storeId: hex(2, 32), fingerprint: hex(3), lastSequence: 10, messages: 5, bytes: 500, root, auditHead: { seq: 4, hash: hex(4) }, policyFingerprint: 'p1' }
}
const present = (id: string, facts: Partial<PresentFacts> = {}): PresentFacts => ({ id, queued: false, held: [], refused: null, origin: null, ...facts })
const missing = (id: string, purged: MissingFacts['purged'] = null): MissingFacts => ({ id, purged })

// ---------------------------------------------------------------- pure parts

t.test('classification: queued, held, purged, refused, other origin, unexplained, in that order', async (t) => {
  const id = hex(9)
  const purged = { atMs: Date.UTC(2026, 0, 1), sequence: 7, auditSeq: 12 }
  t.equal(classifyDifference(present(id, { queued: true, held: ['h'] }), missing(id, purged), 'B').class, 'queued', 'in the queue beats everything')
  const held = classifyDifference(present(id, { held: ['case-42'] }), missing(id, purged), 'B')
  t.equal(held.class, 'held')
  t.match(held.detail, /audit entry 12.*hold case-42/)
  const purgedOnly = classifyDifference(present(id), missing(id, purged), 'B')
  t.equal(purgedOnly.class, 'purged')
  t.match(purgedOnly.detail, /2026-01-01.*audit entry 12/)
  t.match(classifyDifference(present(id), missing(id, { ...purged, auditSeq: null }), 'B').detail, /audit entry not found/)
  t.equal(classifyDifference(present(id, { held: ['h'] }), missing(id), 'B').class, 'unexplained', 'a hold alone explains nothing: the other side did not purge it')
  t.equal(classifyDifference(present(id, { refused: 'MESSAGE_TOO_LARGE' }), missing(id), 'B').class, 'refused')
  t.equal(classifyDifference(present(id, { origin: 'C' }), missing(id), 'B').class, 'other-origin')
  t.equal(classifyDifference(present(id, { origin: 'B' }), missing(id), 'B').class, 'unexplained', "the other side's own message, lost there: put back")
  t.equal(classifyDifference(present(id), missing(id), 'B').class, 'unexplained')
})

t.test('report: counts all, lists unexplained first and at most the listed maximum, outcome', async (t) => {
  const initiator = side('A')
  const responder = side('B')
  const many = Array.from({ length: reportDifferencesListedMax + 5 }, (_, index) => ({
    present: present(index.toString(16).padStart(64, '0'), { queued: true }),
    missing: missing(index.toString(16).padStart(64, '0')),
  }))
  const lost = { present: present(hex(0xff)), missing: missing(hex(0xff)) }
  const differences = classifyAll({ onlyInitiator: [...many, lost], onlyResponder: [{ present: present(hex(0xee)), missing: missing(hex(0xee)) }] }, { initiator, responder })
  const report = buildReport({
    verifyId: 'v',
    startedAtMs: 1,
    finishedAtMs: 2,
    initiator,
    responder,
    truncated: false,
    roundTrips: 3,
    bytesExchanged: 100,
    differences,
    requeued: { initiator: 1, responder: 1 },
  })
  t.equal(report.counts.queued, reportDifferencesListedMax + 5)
  t.equal(report.counts.unexplained, 2)
  t.equal(report.differences.length, reportDifferencesListedMax)
  t.same(
    report.differences
      .slice(0, 2)
      .map((difference) => difference.id)
      .sort(),
    [hex(0xee), hex(0xff)],
    'unexplained first',
  )
  t.equal(report.outcome, 'unexplained')
  t.same(unexplainedOn(differences, 'initiator'), [hex(0xff)])
  t.same(unexplainedOn(differences, 'responder'), [hex(0xee)])
  t.equal(report.rootsAgree, true, 'equal roots, counts and bytes')
  const explained = buildReport({
    verifyId: 'v',
    startedAtMs: 1,
    finishedAtMs: 2,
    initiator,
    responder: side('B', hex(7)),
    truncated: false,
    roundTrips: 1,
    bytesExchanged: 1,
    differences: [],
    requeued: { initiator: 0, responder: 0 },
  })
  t.equal(explained.outcome, 'explained')
  t.equal(buildReport({ ...explained, initiator, responder: side('B', hex(7)), differences: [], truncated: true }).outcome, 'incomplete')
  t.equal(buildReport({ ...explained, initiator, responder, differences: [] }).outcome, 'agree')
  t.equal(buildReport({ ...explained, initiator, responder: { ...side('B'), policyFingerprint: 'p2' }, differences: [] }).policyAgree, false)
})

t.test('wire: requests and answers round-trip; malformed ones are PROTOCOL errors', async (t) => {
  const request = decodeVerifyRequest(encodeVerifyRequest(7, VerifyOp.ids, Buffer.from('abc')))
  t.same({ requestId: request.requestId, op: request.op, body: request.body.toString() }, { requestId: 7, op: VerifyOp.ids, body: 'abc' })
  t.throws(() => decodeVerifyRequest(Buffer.from([0, 0, 0, 1, 99])), { code: 'PROTOCOL' }, 'unknown op')
  t.throws(() => decodeVerifyRequest(Buffer.from([0, 0])), { code: 'PROTOCOL' }, 'short')
  const ok = decodeVerifyAnswer(encodeVerifyAnswer(3, { ok: true, body: Buffer.from('x') }))
  t.equal('body' in ok && ok.body.toString(), 'x')
  const failed = decodeVerifyAnswer(encodeVerifyAnswer(4, { ok: false, code: 'DIGEST_SNAPSHOTS_BUSY', message: 'too many\nsnapshots' }))
  t.ok('error' in failed && failed.error instanceof MirrorError && failed.error.code === 'VERIFY_FAILED' && !failed.error.message.includes('\n'), 'peer text sanitised')
  const asked = { missingHere: [hex(1)], presentHere: [hex(2)] }
  const answer = { missingHere: [{ id: hex(1), purged: { atMs: 5, sequence: 6, auditSeq: null } }], presentHere: [{ id: hex(2), queued: false, held: ['h'], refused: null, origin: 'C' }] }
  t.same(decodeExplainAnswer(encodeJsonBody(answer), asked), answer)
  t.throws(() => decodeExplainAnswer(encodeJsonBody({ ...answer, presentHere: [] }), asked), { code: 'PROTOCOL' }, 'one fact per id asked')
  t.throws(() => decodeExplainAnswer(encodeJsonBody({ ...answer, missingHere: [{ id: hex(3), purged: null }] }), asked), { code: 'PROTOCOL' }, 'ids in the order asked')
  t.throws(() => decodeReport({ version: 2 }), { code: 'PROTOCOL' })
})

t.test('signatures: both keys sign the canonical report; another key or a changed report fails', async (t) => {
  const a = await certificateFor('VERIFY-SIGN-A')
  const b = await certificateFor('VERIFY-SIGN-B')
  const report = buildReport({
    verifyId: 'v1',
    startedAtMs: 1,
    finishedAtMs: 2,
    initiator: { ...side('A'), fingerprint: a.fingerprint },
    responder: { ...side('B'), fingerprint: b.fingerprint },
    truncated: false,
    roundTrips: 1,
    bytesExchanged: 1,
    differences: [],
    requeued: { initiator: 0, responder: 0 },
  })
  const signature = signReport(report, a.privateKeyPem)
  t.doesNotThrow(() => checkReportSignature(decodeReport(JSON.parse(JSON.stringify(report))), signature, a.certificatePem, a.fingerprint), 'checks after a JSON round trip')
  t.throws(() => checkReportSignature(report, signature, b.certificatePem, a.fingerprint), { code: 'VERIFY_FAILED' }, 'the certificate must be the pinned one')
  t.throws(() => checkReportSignature({ ...report, outcome: 'explained' }, signature, a.certificatePem, a.fingerprint), { code: 'VERIFY_FAILED' }, 'a changed report fails')
  const stranger = generateKeyPairSync('rsa', { modulusLength: 2048, privateKeyEncoding: { type: 'pkcs8', format: 'pem' }, publicKeyEncoding: { type: 'spki', format: 'pem' } })
  t.throws(() => checkReportSignature(report, signReport(report, stranger.privateKey), a.certificatePem, a.fingerprint), { code: 'VERIFY_FAILED' }, 'another key fails')
})

// ---------------------------------------------------------------- two nodes over real TLS

/** A and B, peers of each other, each with some local mail, fully copied. */
async function pair(t: { teardown(fn: () => unknown): void }, options: { retentionB?: Parameters<typeof createTestNode>[0]['retention'] } = {}): Promise<{ a: TestNode; b: TestNode }> {
  const a = await createTestNode({ serial: `VA${random.int(1e6)}`, service: { verifyIntervalMs: 0 } })
  const b = await createTestNode({
    serial: `VB${random.int(1e6)}`,
    peers: [{ host, port: a.port }],
    service: { verifyIntervalMs: 0 },
    ...(options.retentionB ? { retention: options.retentionB } : {}),
  })
  await a.service.addPeer({ host, port: b.port })
  t.teardown(() => Promise.all([a.stop(), b.stop()]))
  for (let index = 0; index < 40; index++) await a.ingest(makeMessage(`a-${index}`, 300 + random.int(3000), random))
  for (let index = 0; index < 25; index++) await b.ingest(makeMessage(`b-${index}`, 300 + random.int(3000), random))
  await waitUntil(() => a.archive.messages.size === 65 && b.archive.messages.size === 65, { what: 'both sides to hold all 65 messages' })
  return { a, b }
}

const verifyEntries = (node: TestNode) => node.auditEntries.filter((entry) => entry.action === 'mirror.verify')

t.test('verify over the mirror: agreement is proven, signed by both and audited on both sides', async (t) => {
  const { a, b } = await pair(t)
  const signed: SignedVerifyReport = await a.service.verifyPeer({ host, port: b.port })
  const { report } = signed
  t.equal(report.outcome, 'agree')
  t.equal(report.rootsAgree, true)
  t.equal(report.initiator.messages, 65)
  t.equal(report.responder.messages, 65)
  t.equal(report.initiator.serial, a.serial)
  t.equal(report.responder.serial, b.serial)
  t.same(Object.values(report.counts), [0, 0, 0, 0, 0, 0])
  t.ok(report.roundTrips <= 2, `an agreeing pair costs one root exchange (took ${report.roundTrips})`)
  const certificateA = await certificateFor(a.serial)
  const certificateB = await certificateFor(b.serial)
  t.doesNotThrow(() => checkReportSignature(report, signed.signatures.initiator, certificateA.certificatePem, certificateA.fingerprint))
  t.doesNotThrow(() => checkReportSignature(report, signed.signatures.responder, certificateB.certificatePem, certificateB.fingerprint))
  await waitUntil(() => verifyEntries(b).length === 1, { what: "the responder's audit entry" })
  t.equal(verifyEntries(a)[0]!.details.reportDigest, verifyEntries(b)[0]!.details.reportDigest, 'both audit logs hold the same report')
  t.equal(verifyEntries(b)[0]!.details.role, 'responder')
  t.equal(a.peer(b.port)!.lastVerify!.outcome, 'agree')
  t.equal(b.peer(a.port)!.lastVerify!.role, 'responder', 'the responder shows the result too')
  t.equal(a.service.healthcheck().ok, true)
  await t.rejects(a.service.verifyPeer({ host, port: 1 }), { code: 'PEER_UNKNOWN' })
})

t.test('verify classifies: queued while paused, purged by policy with its audit entry, held', async (t) => {
  const heldIds = new Set<string>()
  const { a, b } = await pair(t, {
    retentionB: {
      auditHead: () => ({ seq: 77, hash: 'f'.repeat(64) }),
      holdsKeeping: async (ids) => new Map(ids.filter((id) => heldIds.has(id)).map((id) => [id, ['case-7']])),
      purgeAuditSeq: (id) => (id.startsWith('') ? 41 : null),
    },
  })
  // Two of B's messages purged on A by its retention; one of them B keeps under a hold.
  const fromB = [...a.archive.messages.values()].filter((message) => message.meta.origin === b.serial).map((message) => message.meta.id)
  a.archive.purge(fromB[0]!)
  a.archive.purge(fromB[1]!)
  heldIds.add(fromB[1]!)
  // Three new messages on A while copying to B is paused: queued.
  await a.service.pausePeer({ host, port: b.port })
  const queued: string[] = []
  for (let index = 0; index < 3; index++) queued.push((await a.ingest(makeMessage(`queued-${index}`, 500, random))).id)
  const { report } = await b.service.verifyPeer({ host, port: a.port })
  t.equal(report.outcome, 'explained', JSON.stringify(report.counts))
  t.equal(report.counts.queued, 3)
  t.equal(report.counts.purged, 1)
  t.equal(report.counts.held, 1)
  t.equal(report.counts.unexplained, 0)
  t.same(
    report.differences
      .filter((difference) => difference.class === 'queued')
      .map((difference) => difference.id)
      .sort(),
    queued.sort(),
  )
  t.ok(report.differences.every((difference) => (difference.class === 'queued' ? difference.presentOn === 'responder' : difference.presentOn === 'initiator')))
  t.match(report.differences.find((difference) => difference.class === 'held')!.detail, /case-7/)
  t.equal(report.initiator.auditHead.seq, 77, "the initiator's audit head is in the report")
  t.equal(b.service.healthcheck().ok, true, 'explained differences do not degrade')
  await a.service.resumePeer({ host, port: b.port })
  await waitUntil(() => queued.every((id) => b.archive.messages.has(id)), { what: 'the queued messages to arrive' })
  t.equal(b.archive.messages.has(fromB[0]!), true, 'B keeps its own message that A purged')
  t.equal(a.archive.messages.has(fromB[0]!), false, 'and it does not come back to A')
})

t.test('a copy lost on the peer is unexplained, re-queued, degrades health, and the next verify agrees', async (t) => {
  const { a, b } = await pair(t)
  const lostOnB = [...b.archive.messages.values()].find((message) => message.meta.origin === a.serial)!.meta.id
  const lostOnA = [...a.archive.messages.values()].find((message) => message.meta.origin === b.serial)!.meta.id
  // B also loses one of its own messages: A holds the only copy and sends it back.
  const ownLostOnB = [...b.archive.messages.values()].filter((message) => message.meta.origin === null && message.meta.id !== lostOnA).at(-1)!.meta.id
  b.archive.lose(lostOnB)
  b.archive.lose(ownLostOnB)
  a.archive.lose(lostOnA)
  const { report } = await a.service.verifyPeer({ host, port: b.port })
  t.equal(report.outcome, 'unexplained')
  t.equal(report.counts.unexplained, 3)
  t.same(report.requeued, { initiator: 2, responder: 1 }, 'each side re-queues what it holds')
  t.same(
    report.differences.map((difference) => [difference.id, difference.presentOn]).sort(),
    [
      [lostOnA, 'responder'],
      [lostOnB, 'initiator'],
      [ownLostOnB, 'initiator'],
    ].sort(),
  )
  t.equal(a.service.healthcheck().ok, false)
  t.match(a.service.healthcheck().detail, /unexplained/)
  await waitUntil(() => b.archive.messages.has(lostOnB) && b.archive.messages.has(ownLostOnB) && a.archive.messages.has(lostOnA), { what: 'the re-queued copies to arrive on both sides' })
  const again = await a.service.verifyPeer({ host, port: b.port })
  t.equal(again.report.outcome, 'agree')
  t.equal(a.service.healthcheck().ok, true, 'a verify that agrees clears the reason')
})

t.test('scheduled verify: each connected peer is verified every verifyIntervalMs, results kept across a restart', async (t) => {
  const a = await createTestNode({ serial: `VSA${random.int(1e6)}`, service: { verifyIntervalMs: 300 } })
  const b = await createTestNode({ serial: `VSB${random.int(1e6)}`, peers: [{ host, port: a.port }], service: { verifyIntervalMs: 0 } })
  await a.service.addPeer({ host, port: b.port })
  t.teardown(() => Promise.all([a.stop(), b.stop()]))
  await a.ingest(makeMessage('scheduled', 800, random))
  await waitUntil(() => b.archive.messages.size === 1, { what: 'the copy' })
  const entry = await waitUntil(() => a.auditEntries.find((candidate) => candidate.action === 'mirror.verify'), { what: 'a scheduled verify' })
  t.equal(entry.actor, 'system', 'the schedule runs it, not a technician')
  t.equal(entry.details.outcome, 'agree')
  const runs = a.auditEntries.filter((candidate) => candidate.action === 'mirror.verify').length
  await waitUntil(() => a.auditEntries.filter((candidate) => candidate.action === 'mirror.verify').length > runs, { what: 'the next scheduled verify after the interval' })
  t.equal(
    b.auditEntries.some((candidate) => candidate.action === 'mirror.verify'),
    true,
    'B (schedule off) answered and kept the report',
  )
  await a.stop()
  const restarted = await createTestNode({ serial: a.serial, stateDir: a.stateDir, archive: a.archive, pipeline: a.pipeline, service: { verifyIntervalMs: 0 } })
  t.teardown(() => restarted.stop())
  t.equal(restarted.service.status().peers[0]!.lastVerify?.outcome, 'agree', 'the last result survives a restart (verify.json)')
})

t.test('a resent copy of a message purged on the receiver is not archived again; a newer delivery of it is', async (t) => {
  const { a, b } = await pair(t)
  const purged = [...b.archive.messages.values()].find((message) => message.meta.origin === a.serial)!
  const raw = a.archive.messages.get(purged.meta.id)!.raw
  b.archive.purge(purged.meta.id)
  // Re-adding the peer backfills it from sequence 0: every copy is sent again.
  await a.service.removePeer({ host, port: b.port })
  await a.service.addPeer({ host, port: b.port })
  await waitUntil(() => a.peer(b.port)?.cursor === a.archive.lastSequence() && a.peer(b.port)?.state === 'connected', { what: 'the backfill to finish' })
  t.equal(b.archive.messages.has(purged.meta.id), false, 'retention on B is not undone by a resend')
  t.equal(b.archive.messages.size, 64)
  // The same bytes delivered again to A later: new mail, copied and archived on B.
  await new Promise((resolve) => setTimeout(resolve, 5))
  await a.pipeline.submit(raw, localDelivery(10_000 + random.int(1e6)))
  await waitUntil(() => b.archive.messages.has(purged.meta.id), { what: 'the newer delivery to be archived on B' })
})
