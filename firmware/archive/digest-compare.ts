import assert from 'node:assert/strict'
import {
  combineNodes,
  digestFanout,
  digestIdsPerResponseMax,
  digestInvalid,
  digestLeafLevel,
  digestPrefixesPerRequestMax,
  digestWireHashBytes,
  idDigestHash,
  nodesAgree,
  xorInto,
  type DigestEntry,
  type DigestNode,
  type DigestView,
  type RemoteDigestView,
} from './digest-nodes.js'
import { encodeChildren, encodeIds, encodePrefixes, entriesProblem } from './digest-wire.js'

/**
 * The comparison of two id digests (id-digest.ts has the design and the measured figures):
 * breadth-first from the root, one batched round trip per level into differing nodes only,
 * small differing nodes enumerated and their sorted ids merged, every answer of the peer
 * checked against what it said one level up, within named limits. Pure apart from the calls
 * to the remote view it is given.
 */

/** Bounds on one comparison; defaults in compareLimitsDefault. */
export interface CompareLimits {
  /** Most ids enumerated, both sides together; past it the result is truncated. */
  idsMax: number
  /** Most differing nodes visited over all levels; past it the result is truncated. */
  differingNodesMax: number
  /** A differing node with at most this many ids on each side has its ids enumerated instead of its children fetched. */
  enumerateCountMax: number
  /** Most prefixes per remote call (≤ digestPrefixesPerRequestMax). */
  prefixesPerRequestMax: number
  /** Most peer ids asked for per ids call (≤ digestIdsPerResponseMax). */
  idsPerRequestMax: number
}

/**
 * Defaults: enumerating ids costs ~35 bytes a peer id against ~350 bytes and a round trip for
 * a node's children, so a node with up to 16 peer ids is enumerated. 65,536 ids (~2.3 MB)
 * covers about 2,000 differences at a million ids; past that the sides differ too much for
 * a proof to be worth the traffic, and the mirror's copy queue is what repairs them.
 */
export const compareLimitsDefault: CompareLimits = {
  idsMax: 65_536,
  differingNodesMax: 16_384,
  enumerateCountMax: 16,
  prefixesPerRequestMax: digestPrefixesPerRequestMax,
  idsPerRequestMax: digestIdsPerResponseMax,
}

/** Outcome of compareDigests. */
export interface DigestComparison {
  /** True when the roots agree: same count, bytes and (wire) hash. */
  agree: boolean
  /** Ids held here and not by the peer, in id order (incomplete when truncated). */
  onlyLocal: string[]
  /** Ids held by the peer and not here, in id order (incomplete when truncated). */
  onlyRemote: string[]
  /** True when the limits stopped the descent: the sides differ in more than the lists say. */
  truncated: boolean
  /** Remote calls made. */
  roundTrips: number
  /** Bytes of the requests and answers in the wire format (digest-wire.ts; framing excluded). */
  bytesExchanged: number
  localRoot: DigestNode
  remoteRoot: DigestNode
  localCount: number
  remoteCount: number
  localBytes: number
  remoteBytes: number
}

/** A node that differs between the two sides. */
interface Differing {
  prefix: string
  local: DigestNode
  remote: DigestNode
}

/** Splits `items` into batches of at most `itemsMax` items and `weightMax` total weight. */
function batches<T>(items: readonly T[], itemsMax: number, weightMax: number, weight: (item: T) => number): T[][] {
  const result: T[][] = []
  let current: T[] = []
  let currentWeight = 0
  for (const item of items) {
    if (current.length > 0 && (current.length >= itemsMax || currentWeight + weight(item) > weightMax)) {
      result.push(current)
      current = []
      currentWeight = 0
    }
    current.push(item)
    currentWeight += weight(item)
  }
  if (current.length > 0) result.push(current)
  return result
}

function differingChildren(prefix: string, local: readonly DigestNode[], remote: readonly DigestNode[]): Differing[] {
  const found: Differing[] = []
  for (let child = 0; child < digestFanout; child++) {
    if (!nodesAgree(local[child]!, remote[child]!)) found.push({ prefix: prefix + child.toString(16), local: local[child]!, remote: remote[child]! })
  }
  return found
}

/** Checks the peer's entries under a node against what it said of the node: count, bytes, hash. */
function checkRemoteEntries(node: Differing, entries: readonly DigestEntry[]): void {
  const problem = entriesProblem(node.prefix, entries)
  const hash = new Uint8Array(digestWireHashBytes)
  let bytes = 0
  if (!problem) {
    for (const entry of entries) {
      bytes += entry.sizeBytes
      xorInto(hash, 0, idDigestHash(Buffer.from(entry.id, 'hex')), 0, digestWireHashBytes)
    }
  }
  if (problem || !nodesAgree({ count: entries.length, bytes, hash }, node.remote)) {
    throw digestInvalid(`the peer's ids under digest prefix '${node.prefix}' contradict its digest${problem ? `: ${problem}` : ''}`, {
      prefix: node.prefix,
      count: entries.length,
      expectedCount: node.remote.count,
    })
  }
}

/** Adds to the two lists the ids only one of two sorted entry lists holds. */
function mergeDifferences(local: readonly DigestEntry[], remote: readonly DigestEntry[], onlyLocal: string[], onlyRemote: string[]): void {
  let localIndex = 0
  let remoteIndex = 0
  while (localIndex < local.length || remoteIndex < remote.length) {
    const localId = local[localIndex]?.id
    const remoteId = remote[remoteIndex]?.id
    if (remoteId === undefined || (localId !== undefined && localId < remoteId)) {
      onlyLocal.push(localId!)
      localIndex++
    } else if (localId === undefined || remoteId < localId) {
      onlyRemote.push(remoteId)
      remoteIndex++
    } else {
      localIndex++
      remoteIndex++
    }
  }
}

/**
 * The peer's side of one comparison: its calls batched within the limits, each answer's
 * shape checked, and the round trips and wire bytes counted.
 */
interface RemoteCalls {
  roundTrips: number
  bytesExchanged: number
  /** The 16 children of each prefix, in order. */
  children(prefixes: readonly string[]): Promise<DigestNode[][]>
  /** The peer's ids under each node, in order. */
  ids(nodes: readonly Differing[]): Promise<DigestEntry[][]>
}

function remoteCalls(remote: RemoteDigestView, bounds: CompareLimits): RemoteCalls {
  const calls: RemoteCalls = {
    roundTrips: 0,
    bytesExchanged: 0,
    async children(prefixes) {
      const answers = await Promise.all(
        batches(prefixes, bounds.prefixesPerRequestMax, Number.POSITIVE_INFINITY, () => 1).map(async (batch) => {
          calls.roundTrips++
          const groups = await remote.children(batch)
          if (groups.length !== batch.length || groups.some((group) => group.length !== digestFanout || group.some((node) => node.hash.byteLength < digestWireHashBytes))) {
            throw digestInvalid('the peer answered a children request with the wrong shape', { prefixes: batch.length, answered: groups.length })
          }
          calls.bytesExchanged += encodePrefixes(batch).byteLength + encodeChildren(groups).byteLength
          return groups
        }),
      )
      return answers.flat()
    },
    async ids(nodes) {
      const answers = await Promise.all(
        batches(nodes, bounds.prefixesPerRequestMax, bounds.idsPerRequestMax, (node) => node.remote.count).map(async (batch) => {
          calls.roundTrips++
          const prefixes = batch.map((node) => node.prefix)
          const groups = await remote.ids(prefixes)
          if (groups.length !== batch.length) throw digestInvalid('the peer answered an ids request with the wrong shape', { prefixes: batch.length, answered: groups.length })
          calls.bytesExchanged += encodePrefixes(prefixes).byteLength + encodeIds(groups).byteLength
          return groups
        }),
      )
      return answers.flat()
    },
  }
  return calls
}

/** What one comparison has found so far, and the work it has spent against its limits. */
interface Findings {
  onlyLocal: string[]
  onlyRemote: string[]
  truncated: boolean
  /** Ids enumerated so far, both sides together (bounded by idsMax). */
  idsSpent: number
  /** Differing nodes visited so far (bounded by differingNodesMax). */
  differingVisited: number
}

/** Reserves enumeration work; false (and truncated) when it would pass idsMax. */
function spend(found: Findings, ids: number, bounds: CompareLimits): boolean {
  if (found.idsSpent + ids > bounds.idsMax) {
    found.truncated = true
    return false
  }
  found.idsSpent += ids
  return true
}

/**
 * Sorts one level's differing nodes: ours alone (listed at once, no round trip), small
 * enough to enumerate, or to descend into; marks the comparison truncated past its limits.
 */
function planLevel(frontier: readonly Differing[], local: DigestView, bounds: CompareLimits, found: Findings): { descend: Differing[]; enumerate: Differing[] } {
  const descend: Differing[] = []
  const enumerate: Differing[] = []
  for (const node of frontier) {
    if (++found.differingVisited > bounds.differingNodesMax) {
      found.truncated = true
      break
    }
    const leaf = node.prefix.length === digestLeafLevel
    const small = node.local.count <= bounds.enumerateCountMax && node.remote.count <= bounds.enumerateCountMax
    const listable = node.local.count <= digestIdsPerResponseMax && node.remote.count <= bounds.idsPerRequestMax
    if (node.remote.count === 0) {
      // Everything here is ours alone: no round trip needed.
      if (node.local.count > digestIdsPerResponseMax) found.truncated = true
      else if (spend(found, node.local.count, bounds)) found.onlyLocal.push(...local.idsInBucket(node.prefix).map((entry) => entry.id))
    } else if ((leaf || small || node.local.count === 0) && listable) {
      if (spend(found, node.local.count + node.remote.count, bounds)) enumerate.push(node)
    } else if (leaf) {
      found.truncated = true
    } else {
      descend.push(node)
    }
  }
  return { descend, enumerate }
}

/**
 * One level of the descent, one round trip (or a batch of them): enumerates and merges the
 * small nodes, fetches the children of the others and checks that they add up to what the
 * peer said of their parent.
 * @returns the differing nodes of the next level
 */
async function descendLevel(frontier: readonly Differing[], local: DigestView, calls: RemoteCalls, bounds: CompareLimits, found: Findings): Promise<Differing[]> {
  const { descend, enumerate } = planLevel(frontier, local, bounds, found)
  const [childGroups, idGroups] = await Promise.all([calls.children(descend.map((node) => node.prefix)), calls.ids(enumerate)])
  enumerate.forEach((node, index) => {
    const entries = idGroups[index]!
    checkRemoteEntries(node, entries)
    mergeDifferences(node.local.count === 0 ? [] : local.idsInBucket(node.prefix), entries, found.onlyLocal, found.onlyRemote)
  })
  return descend.flatMap((node, index) => {
    const children = childGroups[index]!
    if (!nodesAgree(combineNodes(children), node.remote)) {
      throw digestInvalid(`the peer's children of digest node '${node.prefix}' do not add up to the node`, { prefix: node.prefix })
    }
    return differingChildren(node.prefix, local.children(node.prefix), children)
  })
}

/**
 * Finds the ids only one side holds by descending both trees from the root, one batched
 * round trip per level, into differing nodes only. Bounded by `limits` (compareLimitsDefault
 * for what is not given): past them it stops and says `truncated`, with the differences found
 * so far. Every answer of the peer is checked against what it said one level up.
 *
 * @throws ArchiveError DIGEST_INVALID when the peer's answers are malformed or contradict
 *   each other; whatever the transport or the local view throws (e.g. DIGEST_SNAPSHOT_CLOSED)
 */
export async function compareDigests(local: DigestView, remote: RemoteDigestView, limits: Partial<CompareLimits> = {}): Promise<DigestComparison> {
  const bounds: CompareLimits = { ...compareLimitsDefault, ...limits }
  assert.ok(bounds.prefixesPerRequestMax >= 1 && bounds.prefixesPerRequestMax <= digestPrefixesPerRequestMax, 'prefixesPerRequestMax out of range')
  assert.ok(bounds.idsPerRequestMax >= 1 && bounds.idsPerRequestMax <= digestIdsPerResponseMax, 'idsPerRequestMax out of range')
  const calls = remoteCalls(remote, bounds)
  const found: Findings = { onlyLocal: [], onlyRemote: [], truncated: false, idsSpent: 0, differingVisited: 0 }
  const rootChildren = (await calls.children(['']))[0]!
  const remoteRoot = combineNodes(rootChildren)
  const localRoot = local.node('')
  const agree = nodesAgree(localRoot, remoteRoot)
  let frontier = agree ? [] : differingChildren('', local.children(''), rootChildren)
  while (frontier.length > 0) frontier = await descendLevel(frontier, local, calls, bounds, found)
  found.onlyLocal.sort()
  found.onlyRemote.sort()
  return {
    agree,
    onlyLocal: found.onlyLocal,
    onlyRemote: found.onlyRemote,
    truncated: found.truncated,
    roundTrips: calls.roundTrips,
    bytesExchanged: calls.bytesExchanged,
    localRoot,
    remoteRoot,
    localCount: localRoot.count,
    remoteCount: remoteRoot.count,
    localBytes: localRoot.bytes,
    remoteBytes: remoteRoot.bytes,
  }
}
