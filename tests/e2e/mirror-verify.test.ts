import t from 'tap'
import { tempDir, startService, cliJson, runCli, type RunningService } from '../helpers/service.js'
import { appliancePolling, freePort, rawFrom, sendMail, technicianPassword, testMessage, writeApplianceConfig as node } from '../helpers/mirror-appliances.js'
import { waitUntil } from '../helpers/wait.js'
import { removeMessageByHand } from '../helpers/archive-surgery.js'

/**
 * `mirror verify` between real appliance processes (issue: nothing compared two appliances;
 * counts prove nothing because retention and holds differ per system).
 */

const host = '127.0.0.1'

interface Report {
  outcome: string
  rootsAgree: boolean
  counts: Record<string, number>
  differences: { id: string; presentOn: string; class: string; detail: string }[]
  requeued: { initiator: number; responder: number }
  initiator: { serial: string; messages: number; auditHead: { seq: number } }
  responder: { serial: string; messages: number; auditHead: { seq: number } }
  policyAgree: boolean
}

const newsletter = (from: string, subject: string): Buffer =>
  Buffer.from(`From: ${from}\r\nTo: staff@corp.example\r\nSubject: ${subject}\r\nDate: Sun, 29 Nov 2026 01:00:00 +0000\r\n\r\nbody of ${subject}\r\n`)

const storeCount = async (config: string): Promise<number> => ((await cliJson(config, ['show', 'store'])).json as { messages: number }).messages
const technician = (config: string, args: string[]) => cliJson(config, [...args, '--password-stdin'], { input: technicianPassword + '\n' })
const verify = async (config: string, port: number): Promise<Report> => {
  const result = await cliJson(config, ['mirror', 'verify', `${host}:${port}`])
  if (result.code !== 0) throw new Error(`mirror verify failed: ${result.stderr}`)
  return (result.json as { report: Report }).report
}
const status = async (config: string) => (await cliJson(config, ['show', 'status'])).json as { state: string; degraded?: string[]; reasons?: string[] }
const auditVerifies = async (config: string) => {
  const entries = (await cliJson(config, ['audit', 'show', '--limit', '200'])).json as { action: string; details: Record<string, unknown> }[]
  return entries.filter((entry) => entry.action === 'mirror.verify')
}

t.test('mirror verify: agreement, purged and held differences explained, a copy removed by hand found, re-queued and repaired', async (t) => {
  const dir = await tempDir('mailkeep-mirror-verify-')
  const [portA, portB] = [await freePort(), await freePort()]
  const extra = { retention: { purgeIntervalMs: 0 } }
  const configA = await node(dir, 'a', { mirrorPort: portA, peers: [portB], serial: 'MK650-VA', extra })
  const configB = await node(dir, 'b', { mirrorPort: portB, peers: [portA], serial: 'MK650-VB', extra })
  const running = new Set<RunningService>()
  const start = async (config: string) => {
    const service = await startService(config, { timeoutMs: 60_000 })
    running.add(service)
    return service
  }
  t.teardown(() => Promise.all([...running].map((service) => service.stop())))
  const a = await start(configA)
  let b = await start(configB)

  const plain = [...(await sendMail(a, [testMessage('verify 1'), testMessage('verify 2'), testMessage('verify 3')])).keys()]
  const [heldId, purgedId] = [...(await sendMail(a, [newsletter('held@news.example', 'kept by a hold on A'), newsletter('gone@news.example', 'purged by B')])).keys()]
  await sendMail(b, [testMessage('from b 1'), testMessage('from b 2')])
  await waitUntil(async () => (await storeCount(configA)) === 7 && (await storeCount(configB)) === 7, { ...appliancePolling, what: 'both sides hold all 7 messages' })

  const agreed = await verify(configA, portB)
  t.equal(agreed.outcome, 'agree')
  t.equal(agreed.rootsAgree, true)
  t.equal(agreed.initiator.messages, 7)
  t.equal(agreed.responder.serial, 'MK650-VB')
  t.ok(agreed.responder.auditHead.seq > 0, "the peer's audit head is witnessed in the report")
  const text = await runCli(['--config', configA, 'mirror', 'verify', `${host}:${portB}`])
  t.match(text.stdout, /AGREE/, 'the CLI prints the verdict first')
  await waitUntil(async () => (await auditVerifies(configA)).length >= 2 && (await auditVerifies(configB)).length >= 2, { ...appliancePolling, what: 'the report in both audit logs' })

  // Retention differs: B purges newsletters at once; A purges held@ too, but a hold keeps it.
  for (const [config, args] of [
    [configB, ['policy', 'add', 'news', '--days', '0', '--sender', '@news.example']],
    [configA, ['policy', 'add', 'short', '--days', '0', '--sender', 'held@news.example']],
    [configA, ['hold', 'add', 'case-7', '--reason', 'litigation', '--custodian', 'held@news.example']],
  ] as const) {
    const result = await technician(config, [...args])
    t.equal(result.code, 0, `${args.join(' ')}: ${result.stderr}`)
  }
  await waitUntil(
    async () => {
      await technician(configB, ['purge', 'run'])
      return (await storeCount(configB)) === 5
    },
    { ...appliancePolling, what: 'B purges both newsletters' },
  )
  t.equal((await technician(configA, ['purge', 'run'])).code, 0)
  t.equal(await storeCount(configA), 7, 'the hold keeps held@ on A; gone@ has no policy on A')

  // One of A's messages vanishes from B's store while B is stopped: no purge, no audit, no trace.
  await b.stop()
  running.delete(b)
  await removeMessageByHand(b.dataDir, plain[1]!)
  b = await start(configB)
  await waitUntil(
    async () => {
      const peers = ((await cliJson(configA, ['show', 'mirror'])).json as { peers: { state: string }[] }).peers
      return peers[0]?.state === 'connected'
    },
    { ...appliancePolling, what: 'A reconnected to B' },
  )

  const found = await verify(configA, portB)
  t.equal(found.outcome, 'unexplained', JSON.stringify(found.counts))
  t.same(found.counts, { queued: 0, purged: 1, held: 1, refused: 0, 'other-origin': 0, unexplained: 1 })
  t.same(found.requeued, { initiator: 1, responder: 0 })
  const byId = new Map(found.differences.map((difference) => [difference.id, difference]))
  t.match(byId.get(plain[1]!), { presentOn: 'initiator', class: 'unexplained' })
  t.match(byId.get(purgedId!), { presentOn: 'initiator', class: 'purged', detail: /audit entry \d+/ })
  t.match(byId.get(heldId!), { presentOn: 'initiator', class: 'held', detail: /case-7/ })
  t.equal(found.policyAgree, false, 'the two retention settings differ, and the report says so')
  const degraded = await status(configA)
  t.not(degraded.state, 'ok', 'an unexplained difference degrades A')
  t.match(JSON.stringify(degraded), /unexplained/)
  const auditA = (await auditVerifies(configA)).at(-1)!
  t.equal(auditA.details.outcome, 'unexplained')
  t.match(auditA.details.signatures, { initiator: /^[A-Za-z0-9+/=]{100,}$/, responder: /^[A-Za-z0-9+/=]{100,}$/ }, 'both signatures kept')

  await waitUntil(async () => Buffer.isBuffer(await rawFrom(b, plain[1]!)), { ...appliancePolling, what: 'the re-queued copy reaches B' })
  const repaired = await verify(configA, portB)
  t.equal(repaired.outcome, 'explained', 'only the purged and held differences remain')
  t.equal(repaired.counts.unexplained, 0)
  t.equal((await status(configA)).state, 'ok', 'the verify that finds nothing unexplained clears the reason')
  t.equal(await storeCount(configB), 5, 'B holds 5 again: the lost one is back, the purged ones stay purged')
})
