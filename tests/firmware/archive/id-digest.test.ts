/**
 * The id digest without a store (firmware/archive/id-digest.ts): prefix math, leaf updates,
 * the tree, the wire format's strict decoders, and compareDigests over random sets (seeded;
 * set MAILKEEP_TEST_SEED to replay) through the real byte encoding.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import { createRandom, type Random } from '../../../firmware/common/clock.js'
import { hasCode } from '../../../firmware/common/errors.js'
import {
  answerChildren,
  answerIds,
  bucketRange,
  combineNodes,
  compareDigests,
  createMemoryDigest,
  decodeChildren,
  decodeIds,
  decodeLeafValue,
  decodePrefixes,
  digestIdsPerResponseMax,
  encodeChildren,
  encodeIds,
  encodeLeafValue,
  encodePrefixes,
  idDigestHash,
  nodesAgree,
  parsePrefix,
  prefixOf,
  remoteOverBytes,
  updatedLeafValue,
  type DigestEntry,
  type DigestNode,
  type DigestView,
  type MemoryDigest,
  type RemoteDigestView,
} from '../../../firmware/archive/id-digest.js'
import { testSeed } from '../../helpers/random.js'

type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const { seed } = testSeed(t, 'the ids and differences')

function randomId(random: Random): Buffer {
  const id = Buffer.alloc(32)
  for (let index = 0; index < 32; index++) id[index] = random.int(256)
  return id
}

/** A random set of entries (distinct ids, sizes up to 200 KB), in id order. */
function randomEntries(random: Random, count: number): DigestEntry[] {
  const ids = new Set<string>()
  while (ids.size < count) ids.add(randomId(random).toString('hex'))
  return [...ids].sort().map((id) => ({ id, sizeBytes: random.int(200_000) }))
}

function digestOf(entries: readonly DigestEntry[]): MemoryDigest {
  return createMemoryDigest(
    Buffer.concat(entries.map((entry) => Buffer.from(entry.id, 'hex'))),
    entries.map((entry) => entry.sizeBytes),
  )
}

/** The peer's digest over the real wire format, counting calls and bytes as a transport would. */
function overTheWire(view: DigestView): { remote: RemoteDigestView; calls: () => number; bytes: () => number } {
  let calls = 0
  let bytes = 0
  const carry = async (request: Uint8Array, answer: (request: Uint8Array) => Uint8Array) => {
    calls++
    const response = answer(request)
    bytes += request.byteLength + response.byteLength
    return response
  }
  const remote = remoteOverBytes({ children: (request) => carry(request, (bytes) => answerChildren(view, bytes)), ids: (request) => carry(request, (bytes) => answerIds(view, bytes)) })
  return { remote, calls: () => calls, bytes: () => bytes }
}

function throwsCode(t: TestContext, run: () => unknown, code: string, message: string) {
  try {
    run()
    t.fail(`${message}: did not throw, expected ${code}`)
  } catch (error) {
    t.ok(hasCode(error, code), `${message}: ${code} (got ${(error as Error).message})`)
  }
}

t.test('prefixes name nodes by the leading hex digits of their ids; malformed ones are refused', async (t) => {
  t.same(parsePrefix(''), { level: 0, index: 0 })
  t.same(parsePrefix('a'), { level: 1, index: 10 })
  t.same(parsePrefix('a3f0'), { level: 4, index: 0xa3f0 })
  t.equal(prefixOf(3, 0x0a3), '0a3')
  t.equal(prefixOf(0, 0), '')
  t.same(bucketRange(''), { start: 0, end: 65_536 })
  t.same(bucketRange('a'), { start: 0xa000, end: 0xb000 })
  t.same(bucketRange('a3f'), { start: 0xa3f0, end: 0xa400 })
  t.same(bucketRange('ffff'), { start: 0xffff, end: 0x10000 })
  for (const bad of ['A', 'g', '12345', ' ', 'a-']) throwsCode(t, () => parsePrefix(bad), 'DIGEST_INVALID', `prefix ${JSON.stringify(bad)}`)
})

t.test('a leaf value: add and remove are the same XOR, order does not matter, an impossible removal is damage', async (t) => {
  const random = createRandom(seed)
  const first = randomId(random)
  const second = Buffer.from(first)
  second[31]! ^= 0xff
  const ab = updatedLeafValue(updatedLeafValue(undefined, first, 100, 1)!, second, 2 ** 40, 1)!
  const ba = updatedLeafValue(updatedLeafValue(undefined, second, 2 ** 40, 1)!, first, 100, 1)!
  t.ok(ab.equals(ba), 'same leaf whatever the order')
  const node = decodeLeafValue(ab, 0)
  t.same([node.count, node.bytes], [2, 2 ** 40 + 100], 'count and bytes past 32 bits')
  const expected = Buffer.alloc(32)
  for (const id of [first, second]) {
    const hash = idDigestHash(id)
    for (let index = 0; index < 32; index++) expected[index]! ^= hash[index]!
  }
  t.ok(Buffer.from(node.hash).equals(expected), 'hash is the XOR of the domain-separated hashes')
  t.ok(Buffer.from(idDigestHash(first)).equals(createHash('sha256').update('mailkeep-digest-v1').update(first).digest()), 'hash = SHA-256("mailkeep-digest-v1" || id)')
  t.ok(encodeLeafValue(node).equals(ab), 'encode and decode round-trip')
  const back = updatedLeafValue(ab, second, 2 ** 40, -1)!
  t.ok(back.equals(updatedLeafValue(undefined, first, 100, 1)!), 'removing gives the leaf without it')
  t.equal(updatedLeafValue(back, first, 100, -1), null, 'the last removal empties the bucket')
  throwsCode(t, () => updatedLeafValue(undefined, first, 100, -1), 'STORE_CORRUPT', 'removal from an empty bucket')
  throwsCode(t, () => updatedLeafValue(back, second, 100, -1), 'STORE_CORRUPT', 'removal of another id leaves a non-zero hash at count 0')
  throwsCode(t, () => decodeLeafValue(ab.subarray(1), 0), 'STORE_CORRUPT', 'a short leaf value')
})

t.test('the tree: each node combines its children; leaves hold their bucket ids; ids come sorted', async (t) => {
  const random = createRandom(seed + 1)
  const entries = randomEntries(random, 3000)
  const digest = digestOf(entries)
  t.equal(digest.root.count, 3000)
  t.equal(
    digest.root.bytes,
    entries.reduce((sum, entry) => sum + entry.sizeBytes, 0),
  )
  const check = (prefix: string, depth: number) => {
    const children = digest.children(prefix)
    const combined = combineNodes(children)
    const node = digest.node(prefix)
    t.ok(combined.count === node.count && combined.bytes === node.bytes && Buffer.from(combined.hash).equals(Buffer.from(node.hash)), `node '${prefix}' is its children combined`)
    if (depth > 0) check(prefix + random.int(16).toString(16), depth - 1)
  }
  for (let round = 0; round < 5; round++) check('', 3)
  const leafPrefix = entries[17]!.id.slice(0, 4)
  const inLeaf = entries.filter((entry) => entry.id.startsWith(leafPrefix))
  t.same(digest.idsInBucket(leafPrefix), inLeaf, 'a leaf lists its ids with sizes, in id order')
  t.same(combineNodes([digestOf(inLeaf).node('')]), { ...digest.node(leafPrefix), hash: digest.node(leafPrefix).hash }, 'a leaf equals the digest of its ids alone')
  t.same(digest.idsInBucket(''), entries, 'the root lists every id in order')
  t.same(
    digest.idsInBucket('7'),
    entries.filter((entry) => entry.id.startsWith('7')),
  )
  throwsCode(t, () => digest.children(leafPrefix), 'DIGEST_INVALID', 'a leaf has no children')
  t.throws(() => digestOf([entries[0]!, entries[0]!]), /a set/, 'a repeated id is a programmer error')
  const empty = digestOf([])
  t.same([empty.root.count, empty.root.bytes, Buffer.from(empty.root.hash).equals(Buffer.alloc(32))], [0, 0, true], 'the empty set: zero everything')
})

t.test('wire format: round trips and strict refusals', async (t) => {
  const prefixes = ['', 'f', '0a', 'a3f', 'ffff', '0000', '1']
  const request = encodePrefixes(prefixes)
  t.same(decodePrefixes(request), prefixes, 'prefixes round-trip at every level')
  t.equal(request.byteLength, 1 + 1 + 2 + 2 + 3 + 3 + 3 + 2, 'a prefix is a level byte and its packed digits')
  throwsCode(t, () => decodePrefixes(Uint8Array.from([1, 1, 0xa1])), 'DIGEST_INVALID', 'an odd prefix with a non-zero padding digit')
  throwsCode(t, () => decodePrefixes(Uint8Array.from([1, 5, 0, 0, 0])), 'DIGEST_INVALID', 'a prefix below the leaves')
  throwsCode(t, () => decodePrefixes(Uint8Array.from([2, 0])), 'DIGEST_INVALID', 'a request that ends early')
  throwsCode(t, () => decodePrefixes(Uint8Array.from([1, 0, 0])), 'DIGEST_INVALID', 'trailing bytes')
  throwsCode(t, () => decodePrefixes(Uint8Array.from([0x81, 0x00])), 'DIGEST_INVALID', 'a non-minimal varint')
  throwsCode(t, () => decodePrefixes(Uint8Array.from([0x81, 0x10])), 'DIGEST_INVALID', 'more prefixes than a request may carry')
  t.throws(() => encodePrefixes(Array.from({ length: 1025 }, () => '')), 'our own oversized request is a programmer error')

  const random = createRandom(seed + 2)
  const digest = digestOf(randomEntries(random, 40))
  const groups = [digest.children(''), digest.children('3'), digest.children('e7a')]
  const answer = encodeChildren(groups)
  const decoded = decodeChildren(answer, groups.length)
  groups.forEach((group, index) =>
    group.forEach((node, child) =>
      t.ok(nodesAgree(node, decoded[index]![child]!) && decoded[index]![child]!.hash.byteLength === 16, `children ${index}/${child} round-trip with 16-byte hashes`),
    ),
  )
  t.equal(encodeChildren([Array.from({ length: 16 }, (): DigestNode => ({ count: 0, bytes: 0, hash: new Uint8Array(32) }))]).byteLength, 16, 'an empty node is one byte')
  throwsCode(t, () => decodeChildren(answer, groups.length + 1), 'DIGEST_INVALID', 'an answer with fewer groups than asked')
  throwsCode(t, () => decodeChildren(answer.subarray(0, answer.byteLength - 1), groups.length), 'DIGEST_INVALID', 'a truncated answer')

  const entries = digest.idsInBucket('')
  const ids = encodeIds([entries])
  t.same(decodeIds(ids, ['']), [entries], 'ids round-trip')
  const first = entries[0]!.id
  throwsCode(t, () => decodeIds(ids, [first.slice(0, 2) === 'ff' ? '00' : 'ff']), 'DIGEST_INVALID', 'an id outside its prefix')
  throwsCode(t, () => decodeIds(encodeIds([[entries[1]!, entries[0]!]]), ['']), 'DIGEST_INVALID', 'ids out of order')
  throwsCode(t, () => decodeIds(encodeIds([[entries[0]!, entries[0]!]]), ['']), 'DIGEST_INVALID', 'a repeated id')
  throwsCode(t, () => answerChildren(digest, encodePrefixes(['a3f0'])), 'DIGEST_INVALID', 'children of a leaf asked for')
})

t.test('compareDigests finds exactly the ids one side lacks, in both directions, over the wire', async (t) => {
  const random = createRandom(seed + 3)
  const cases: Array<{ name: string; shared: number; onlyLocal: number; onlyRemote: number }> = [
    { name: 'both empty', shared: 0, onlyLocal: 0, onlyRemote: 0 },
    { name: 'equal', shared: 5000, onlyLocal: 0, onlyRemote: 0 },
    { name: 'empty here', shared: 0, onlyLocal: 0, onlyRemote: 700 },
    { name: 'empty there', shared: 0, onlyLocal: 700, onlyRemote: 0 },
    { name: 'one missing there', shared: 20_000, onlyLocal: 1, onlyRemote: 0 },
    { name: 'one missing here', shared: 20_000, onlyLocal: 0, onlyRemote: 1 },
    { name: 'a few each way', shared: 8000, onlyLocal: 1 + random.int(20), onlyRemote: 1 + random.int(20) },
    { name: 'hundreds each way', shared: 3000, onlyLocal: 300 + random.int(200), onlyRemote: 300 + random.int(200) },
    { name: 'disjoint', shared: 0, onlyLocal: 1500, onlyRemote: 1200 },
  ]
  for (const testCase of cases) {
    const all = randomEntries(random, testCase.shared + testCase.onlyLocal + testCase.onlyRemote)
    // Shuffle which ids go where.
    for (let index = all.length - 1; index > 0; index--) {
      const other = random.int(index + 1)
      ;[all[index], all[other]] = [all[other]!, all[index]!]
    }
    const onlyLocal = all.slice(0, testCase.onlyLocal)
    const onlyRemote = all.slice(testCase.onlyLocal, testCase.onlyLocal + testCase.onlyRemote)
    const shared = all.slice(testCase.onlyLocal + testCase.onlyRemote)
    const local = digestOf([...shared, ...onlyLocal].sort((a, b) => (a.id < b.id ? -1 : 1)))
    const remoteDigest = digestOf([...shared, ...onlyRemote].sort((a, b) => (a.id < b.id ? -1 : 1)))
    const wire = overTheWire(remoteDigest)
    const result = await compareDigests(local, wire.remote)
    const label = `${testCase.name} (seed ${seed})`
    t.same(result.onlyLocal, onlyLocal.map((entry) => entry.id).sort(), `${label}: only here`)
    t.same(result.onlyRemote, onlyRemote.map((entry) => entry.id).sort(), `${label}: only there`)
    t.equal(result.truncated, false, `${label}: complete`)
    t.equal(result.agree, testCase.onlyLocal + testCase.onlyRemote === 0, `${label}: agree`)
    t.same([result.localCount, result.remoteCount], [local.root.count, remoteDigest.root.count], `${label}: counts`)
    t.same([result.localBytes, result.remoteBytes], [local.root.bytes, remoteDigest.root.bytes], `${label}: bytes`)
    t.ok(nodesAgree(result.remoteRoot, remoteDigest.root), `${label}: the peer's root is its children combined`)
    t.same([result.roundTrips, result.bytesExchanged], [wire.calls(), wire.bytes()], `${label}: round trips and bytes counted as carried (${result.roundTrips}, ${result.bytesExchanged} B)`)
    if (result.agree) t.equal(result.roundTrips, 1, `${label}: agreement takes one round trip`)
    if (testCase.onlyLocal + testCase.onlyRemote === 1) {
      t.ok(result.roundTrips <= 5 && result.bytesExchanged < 4096, `${label}: one difference in ${result.roundTrips} round trips, ${result.bytesExchanged} bytes`)
    }
  }
})

t.test('compareDigests stops at its limits and says the result is truncated', async (t) => {
  const random = createRandom(seed + 4)
  const shared = randomEntries(random, 4000)
  const extra = randomEntries(random, 3000)
  const local = digestOf([...shared, ...extra].sort((a, b) => (a.id < b.id ? -1 : 1)))
  const remote = digestOf(shared)
  const truth = new Set(extra.map((entry) => entry.id))
  for (const limits of [{ idsMax: 500 }, { differingNodesMax: 40 }, { idsMax: 2000, prefixesPerRequestMax: 7 }]) {
    const result = await compareDigests(local, overTheWire(remote).remote, limits)
    t.equal(result.truncated, true, `${JSON.stringify(limits)}: truncated`)
    t.ok(result.onlyLocal.length < truth.size && result.onlyLocal.every((id) => truth.has(id)), `${JSON.stringify(limits)}: ${result.onlyLocal.length} of ${truth.size} found, all real`)
    t.same(result.onlyRemote, [])
  }
  const batched = await compareDigests(local, overTheWire(remote).remote, { prefixesPerRequestMax: 3, idsPerRequestMax: 50 })
  t.same([batched.truncated, batched.onlyLocal.length], [false, truth.size], 'small batches still find everything, in more round trips')
  const unbatched = await compareDigests(local, overTheWire(remote).remote)
  t.ok(batched.roundTrips > unbatched.roundTrips, `${batched.roundTrips} round trips in small batches, ${unbatched.roundTrips} in full ones`)
  t.ok(digestIdsPerResponseMax >= 65_536)
})

t.test('a peer whose answers contradict its digest is refused with DIGEST_INVALID', async (t) => {
  const random = createRandom(seed + 5)
  const entries = randomEntries(random, 600)
  const local = digestOf(entries.slice(0, 590))
  const honest = digestOf(entries)
  const lyingChildren: RemoteDigestView = {
    async children(prefixes) {
      const groups = prefixes.map((prefix) => honest.children(prefix))
      if (prefixes[0] !== '') groups[0]![0] = { ...groups[0]![0]!, count: groups[0]![0]!.count + 1 }
      return groups
    },
    async ids(prefixes) {
      return prefixes.map((prefix) => honest.idsInBucket(prefix))
    },
  }
  const lyingIds: RemoteDigestView = {
    children: async (prefixes) => prefixes.map((prefix) => honest.children(prefix)),
    ids: async (prefixes) => prefixes.map((prefix) => honest.idsInBucket(prefix).slice(1)),
  }
  const wrongShape: RemoteDigestView = { children: async () => [], ids: async () => [] }
  for (const [name, remote, limits] of [
    ['children that do not add up', lyingChildren, { enumerateCountMax: 0 }],
    ['ids that do not match the node', lyingIds, {}],
    ['an answer of the wrong shape', wrongShape, {}],
  ] as const) {
    try {
      await compareDigests(local, remote, limits)
      t.fail(`${name}: accepted`)
    } catch (error) {
      t.ok(hasCode(error, 'DIGEST_INVALID'), `${name}: DIGEST_INVALID (${(error as Error).message})`)
    }
  }
})
