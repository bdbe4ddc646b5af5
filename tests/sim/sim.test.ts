// The mirror simulation's own parts: its digest stand-in, its determinism, that its checks
// catch what they claim to, and one scripted run per known finding.
import t from 'tap'
import { createRandom } from '../../firmware/common/clock.js'
import { createMemoryDigest } from '../../firmware/archive/id-digest.js'
import { CopyFrameType } from '../../firmware/mirror/copy-protocol.js'
import { makeMessage, sha256Hex } from '../firmware/mirror/fakes.js'
import { createSimWorld, replayCommand, runSeed } from './engine.js'
import { createSparseDigest } from './model.js'
import { certificatePool } from './certificates.js'
import type { SimLimits } from './sim-node.js'
import { VirtualTime } from './virtual-time.js'
import { describeViolations } from './sweep.js'

const limits: SimLimits = {
  batchMessagesMax: 1,
  batchBytesMax: 4_000,
  inflightBatchesMax: 1,
  retryDelayMsMin: 10,
  retryDelayMsMax: 50,
  handshakeTimeoutMs: 1_000,
  ackTimeoutMs: 300,
  pollIntervalMs: 100,
  receiverSubmitsMax: 4,
}

t.test('the sparse digest answers exactly as createMemoryDigest', async (t) => {
  const random = createRandom(7)
  for (const size of [0, 1, 2, 17, 300]) {
    const ids = Array.from({ length: size }, (_, index) => sha256Hex(Buffer.from(`id ${size} ${index}`)))
    // Ids sharing a leading prefix, so deep nodes are not all empty or single.
    if (size > 2) ids[1] = ids[0]!.slice(0, 5) + ids[1]!.slice(5)
    const sizes = ids.map(() => 1 + random.int(10_000))
    const packed = Buffer.concat(ids.map((id) => Buffer.from(id, 'hex')))
    const full = createMemoryDigest(packed, sizes)
    const sparse = createSparseDigest(ids.map((id, index) => ({ id, sizeBytes: sizes[index]! })))
    const prefixes = ['', ...ids.slice(0, 5).flatMap((id) => [id.slice(0, 1), id.slice(0, 2), id.slice(0, 3), id.slice(0, 4)]), 'f', 'ff', '0000']
    for (const prefix of prefixes) {
      t.same(sparse.node(prefix), full.node(prefix), `${size} ids: node '${prefix}'`)
      t.same(sparse.idsInBucket(prefix), full.idsInBucket(prefix), `${size} ids: ids under '${prefix}'`)
      if (prefix.length < 4) t.same(sparse.children(prefix), full.children(prefix), `${size} ids: children of '${prefix}'`)
    }
    t.throws(() => sparse.children(prefixes[1]?.length === 1 ? '0000' : '0000'), { code: 'DIGEST_INVALID' }, 'a leaf has no children')
  }
})

t.test('a seed replays the same run', async (t) => {
  for (const seed of [1, 35, 351]) {
    const first = await runSeed(seed)
    const second = await runSeed(seed)
    t.ok(first.trace.length > 5, `seed ${seed}: a trace of ${first.trace.length} events`)
    t.equal(second.signature, first.signature, `seed ${seed}: same trace and archives (${first.signature})`)
    t.same(second.stats, first.stats, `seed ${seed}: same figures`)
  }
  t.match(replayCommand(12), /^npm run sim -- --seed 12$/)
})

/** Two nodes without faults; `plan` may script the a → b connections. */
function quietPair(resetOn?: (type: number, direction: 'outbound' | 'inbound') => boolean, retryDelayMsMin = limits.retryDelayMsMin) {
  let scripted = resetOn
  return createSimWorld({
    seed: 1,
    nodeCount: 2,
    limits: { ...limits, retryDelayMsMin, retryDelayMsMax: Math.max(retryDelayMsMin, limits.retryDelayMsMax) },
    random: createRandom(1),
    planConnection: (from, _to, faultsOn) => {
      // Only the first a → b connection is scripted; the ones after it are clean.
      const plan = { latencyMs: 2, lingerMs: 2_000, ...(from === 'a' && faultsOn && scripted ? { resetOn: scripted } : {}) }
      if (from === 'a') scripted = undefined
      return plan
    },
  })
}

t.test('the checks find a missing copy, a doubled delivery and a returned purge', async (t) => {
  await certificatePool()
  const sim = quietPair()
  const [a, b] = sim.nodes as [(typeof sim.nodes)[0], (typeof sim.nodes)[0]]
  sim.time.install()
  try {
    a.start()
    b.start()
    const messages = [0, 1, 2].map((index) => makeMessage(`check-${index}`, 200, createRandom(index)))
    for (const raw of messages) a.deliverLocally(raw)
    b.deliverLocally(messages[2]!)
    t.same(await sim.check(await sim.heal()), [], 'a clean run passes every check')

    const [first, second] = messages.map((raw) => sha256Hex(raw))
    b.archive.messages.delete(first!)
    const copy = b.archive.messages.get(second!)!
    copy.meta.deliveries.push({ ...copy.meta.deliveries[0]!, deliveryKey: 'another key' })
    const kinds = (await sim.check(true)).map((violation) => violation.kind).sort()
    t.same(
      kinds,
      ['duplicate-delivery', 'missing', 'verify-disagrees', 'verify-disagrees'],
      'tampering is found: a lost copy (by the digest check and the real mirror verify) and a doubled delivery',
    )
  } finally {
    VirtualTime.uninstall()
  }
})

// The findings the simulation made (F1, F3; F2 shows in the seed sweeps), now regression tests.
t.test('F1 fixed: a batch sent again after its acknowledgement was lost does not bring back what the receiver purged meanwhile', async (t) => {
  // a copies M to b; b stores it and acknowledges, the connection resets as the ACK leaves;
  // b's retention purges M (b has acknowledged b's own change-log entry for it to a); a,
  // whose cursor never moved, sends the batch again and b stores M again.
  const sim = quietPair((type, direction) => type === CopyFrameType.ack && direction === 'inbound', 1_500)
  const [a, b] = sim.nodes as [(typeof sim.nodes)[0], (typeof sim.nodes)[0]]
  const raw = makeMessage('ack-lost', 300, createRandom(3))
  const id = sha256Hex(raw)
  sim.time.install()
  try {
    a.start()
    b.start()
    a.deliverLocally(raw)
    await sim.time.runUntil(500)
    t.ok(b.archive.messages.has(id), 'b stored the copy before the reset')
    t.equal(a.senders.get('b')!.cursor, 0, 'a never saw the acknowledgement')
    t.same(
      b.purge(1, () => 0),
      [id],
      "b's retention purges the copy (its watermark allows it)",
    )
    const violations = await sim.check(await sim.heal())
    t.notOk(b.archive.messages.has(id), 'the purged copy stays purged on b')
    t.same(violations, [], describeViolations(violations))
  } finally {
    VirtualTime.uninstall()
  }
})

t.test("F3 fixed: an old ingest entry of a message purged and received back from a third peer is not sent (it would forward the peer's copy)", async (t) => {
  // Seed 35: c archives M, copies it to a and b, purges it; M comes back to c from b's later
  // deliveries; a's data volume is replaced and, once accepted, c backfills a from sequence 0:
  // c's old ingest entry of M goes with no delivery, and a records a bare delivery "from c".
  const result = await runSeed(35)
  const forwarded = result.violations.filter((violation) => violation.cause === 'forwarded-bare')
  t.same(forwarded, [], `${describeViolations(forwarded)}\nreplay: ${replayCommand(35)} --verbose`)
  t.same(result.violations, [], describeViolations(result.violations))
})
