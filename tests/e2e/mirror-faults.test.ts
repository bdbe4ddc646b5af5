/**
 * Mirroring with real firmware processes under faults: the receiving appliance killed
 * (SIGKILL) mid-transfer again and again, three appliances in a full mesh, and a TCP fault
 * proxy (reset, stall, truncate) between two of them. Each ends with every message on every
 * appliance exactly once, byte-identical through /raw and searchable.
 */
import t, { type Test } from 'tap'
import { tempDir, startService, type RunningService } from '../helpers/service.js'
import { startFaultProxy, type Fault } from '../helpers/fault-proxy.js'
import { appliancePolling, freePort, rawFrom, searchIds, sendMail, statusOf, testMessage, writeApplianceConfig } from '../helpers/mirror-appliances.js'
import { waitUntil } from '../helpers/wait.js'

/** Every message of `sent` is on `service`, byte-identical, and the store holds `total` messages with one change entry each. */
async function holdsExactlyOnce(t: Test, service: RunningService, sent: Map<string, Buffer>, total: number, word: string): Promise<void> {
  let identical = 0
  for (const [id, raw] of sent) {
    const stored = await rawFrom(service, id)
    if (Buffer.isBuffer(stored) && stored.equals(raw)) identical += 1
  }
  t.equal(identical, sent.size, `${sent.size} messages byte-identical through /raw`)
  const status = await statusOf(service)
  t.equal(status.store.messages, total, `${total} messages in the store: nothing twice`)
  t.equal(status.mirror.lastSequence, total, 'one change-log entry each: no copy was recorded twice')
  const hits = await searchIds(service, word)
  t.equal(hits.length, sent.size, 'no search hit twice')
  t.same(new Set(hits), new Set(sent.keys()), `all ${sent.size} found by search`)
}

t.test('B killed with SIGKILL mid-transfer three times: every message arrives once, byte-identical, searchable', async (t) => {
  const dir = await tempDir('mailkeep-mirror-kill-')
  const [portA, portB] = [await freePort(), await freePort()]
  const configA = await writeApplianceConfig(dir, 'a', { serial: 'MK650-KA', mirrorPort: portA, peers: [portB] })
  const configB = await writeApplianceConfig(dir, 'b', { serial: 'MK650-KB', mirrorPort: portB, peers: [portA] })
  const a = await startService(configA)
  let b: RunningService | undefined
  t.teardown(async () => {
    await a.stop()
    await b?.stop('SIGKILL')
  })
  const sent = new Map<string, Buffer>()
  const killedAt: string[] = []
  let partialKills = 0
  for (let round = 0; round < 3; round += 1) {
    // A takes more mail while B is down: B always has a backlog to receive when it starts.
    const raws = Array.from({ length: round === 0 ? 200 : 60 }, (_, index) => testMessage(`killround r${round} n${index}`, 16_000 + ((index * 7919) % 16_000)))
    for (const [id, raw] of await sendMail(a, raws)) sent.set(id, raw)
    b = await startService(configB)
    const before = (await statusOf(b)).store.messages
    // Kill as soon as copies start landing: the rest of the backlog is then in flight.
    const seen = await waitUntil(
      async () => {
        const count = (await statusOf(b!).catch(() => undefined))?.store.messages
        return count !== undefined && count > before ? count : undefined
      },
      { ...appliancePolling, what: 'copies landing on B' },
    )
    await b.stop('SIGKILL')
    killedAt.push(`${seen}/${sent.size}`)
    if (seen < sent.size) partialKills += 1
  }
  t.comment(`B's store when killed (stored/held by A): ${killedAt.join(', ')}`)
  t.ok(partialKills >= 1, 'at least one kill hit B in the middle of a transfer')
  b = await startService(configB)
  await waitUntil(
    async () => {
      const peer = (await statusOf(a)).mirror.peers[0]!
      return peer.queueMessages === 0 && peer.state === 'connected' ? peer : undefined
    },
    { ...appliancePolling, what: 'A caught up' },
  )
  await holdsExactlyOnce(t, b, sent, sent.size, 'killround')
  const onA = await statusOf(a)
  t.equal(onA.store.messages, sent.size, 'nothing came back to A')
  t.equal(
    onA.mirror.inbound.reduce((sum, peer) => sum + peer.messagesStored, 0),
    0,
    'B forwarded none of the copies back',
  )
})

t.test('three appliances in a full mesh: each message on all three, nothing forwarded twice', async (t) => {
  const dir = await tempDir('mailkeep-mirror-mesh-')
  const ports = [await freePort(), await freePort(), await freePort()]
  const names = ['MK650-MA', 'MK650-MB', 'MK650-MC']
  const configs = await Promise.all(
    names.map((serial, index) => writeApplianceConfig(dir, `n${index}`, { serial, mirrorPort: ports[index]!, peers: ports.filter((_, other) => other !== index) })),
  )
  const nodes = await Promise.all(configs.map((config) => startService(config)))
  t.teardown(() => Promise.all(nodes.map((node) => node.stop())))
  const sent = new Map<string, Buffer>()
  const byOrigin = await Promise.all(
    nodes.map((node, index) =>
      sendMail(
        node,
        Array.from({ length: 5 }, (_, n) => testMessage(`meshword from ${names[index]} ${n}`)),
      ),
    ),
  )
  for (const batch of byOrigin) for (const [id, raw] of batch) sent.set(id, raw)
  for (const node of nodes) {
    await waitUntil(async () => (await statusOf(node)).store.messages === 15, { ...appliancePolling, what: 'mesh converged' })
  }
  for (const [index, node] of nodes.entries()) {
    await waitUntil(async () => (await statusOf(node)).mirror.peers.every((peer) => peer.queueMessages === 0), { ...appliancePolling, what: 'queues drained' })
    await holdsExactlyOnce(t, node, sent, 15, 'meshword')
    const status = await statusOf(node)
    const inbound = Object.fromEntries(status.mirror.inbound.map((peer) => [peer.serial, peer]))
    for (const other of names.filter((_, otherIndex) => otherIndex !== index)) {
      t.equal(inbound[other]?.messagesStored, 5, `${names[index]} stored 5 from ${other}`)
      t.equal(inbound[other]?.messagesDuplicate, 0, `${names[index]} got nothing from ${other} twice (no forwarding)`)
    }
  }
})

t.test('a fault proxy between A and B resets, stalls and truncates connections: every message arrives once', async (t) => {
  const dir = await tempDir('mailkeep-mirror-proxy-')
  const [portA, portB] = [await freePort(), await freePort()]
  // Short timeouts so a stalled link is noticed in a second or two, not a minute.
  const timeouts = { idleTimeoutMs: 1_500, ackTimeoutMs: 3_000 }
  // B names A as its peer: an appliance that is not a peer is refused (NOT_A_PEER).
  const configB = await writeApplianceConfig(dir, 'b', { serial: 'MK650-PB', mirrorPort: portB, peers: [portA], mirror: timeouts })
  const b = await startService(configB)
  const faults: Fault[] = [
    { kind: 'reset', afterBytes: 30_000, direction: 'up' },
    { kind: 'stall', afterBytes: 60_000 },
    { kind: 'truncate', afterBytes: 20_000 },
    { kind: 'reset', afterBytes: 4_500, direction: 'down' },
    { kind: 'stall', afterBytes: 90_000 },
    { kind: 'truncate', afterBytes: 45_000 },
  ]
  const proxy = await startFaultProxy(portB, (index) => faults[index] ?? { kind: 'pass' })
  const configA = await writeApplianceConfig(dir, 'a', { serial: 'MK650-PA', mirrorPort: portA, peers: [proxy.port], mirror: timeouts })
  const a = await startService(configA)
  t.teardown(async () => {
    await Promise.all([a.stop(), b.stop()])
    await proxy.close()
  })
  const sent = new Map<string, Buffer>()
  const started = Date.now()
  // Mail keeps coming in bursts while the faults happen, until the healed link is in use.
  for (let burst = 0; proxy.connections <= faults.length && Date.now() - started < 30_000; burst += 1) {
    const raws = Array.from({ length: 15 }, (_, index) => testMessage(`proxyword b${burst} n${index}`, 2_000 + ((burst * 31 + index * 977) % 6_000)))
    for (const [id, raw] of await sendMail(a, raws)) sent.set(id, raw)
    await new Promise((resolve) => setTimeout(resolve, 150))
  }
  await waitUntil(
    async () => {
      const peer = (await statusOf(a)).mirror.peers[0]!
      return peer.queueMessages === 0 && peer.cursor === (await statusOf(a)).mirror.lastSequence ? peer : undefined
    },
    { ...appliancePolling, what: 'A caught up through the proxy' },
  )
  t.comment(`${sent.size} messages, ${proxy.connections} connections, ${proxy.faultsTriggered} faults, ${Date.now() - started} ms`)
  t.ok(proxy.faultsTriggered >= faults.length, 'every planned fault fired')
  await holdsExactlyOnce(t, b, sent, sent.size, 'proxyword')
})
