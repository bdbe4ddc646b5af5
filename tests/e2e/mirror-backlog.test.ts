import t from 'tap'
import { tempDir, startService, cliJson, type RunningService } from '../helpers/service.js'
import { apiGet, appliancePolling, freePort, sendMail, technicianPassword, testMessage, writeApplianceConfig as node } from '../helpers/mirror-appliances.js'
import { waitUntil } from '../helpers/wait.js'

/**
 * A peer behind a backlog, with real appliance processes (issue 18 findings 5 and 6: a
 * paused A left B answering searches as if complete; mail archived during a catch-up became
 * visible on B only at the end of the backlog).
 */

const host = '127.0.0.1'
/** Over the sender's split threshold (2 × batchMessagesMax = 2,000 entries), so the queue splits. */
const backlog = 4_000

interface Completeness {
  complete: boolean
  peers: { serial: string; queuedMessages: number; connected: boolean }[]
}
interface PeerView {
  state: string
  backfillThroughSequence: number | null
  queueMessages: number
}

const technician = (config: string, args: string[]) => cliJson(config, [...args, '--password-stdin'], { input: technicianPassword + '\n' })
const storeCount = async (config: string): Promise<number> => ((await cliJson(config, ['show', 'store'])).json as { messages: number }).messages
async function search(service: RunningService, query: string): Promise<{ total: number; completeness: Completeness }> {
  const response = await apiGet(service, `/api/v1/search?q=${encodeURIComponent(query)}`)
  if (!response || response.status !== 200) throw new Error(`search: ${response?.status ?? 'no answer'}`)
  return (await response.json()) as { total: number; completeness: Completeness }
}

t.test('a paused peer is reported behind; during the catch-up new mail reaches the peer before the backlog ends', async (t) => {
  const dir = await tempDir('mailkeep-mirror-backlog-')
  const [portA, portB] = [await freePort(), await freePort()]
  const configA = await node(dir, 'a', { mirrorPort: portA, peers: [portB], serial: 'MK650-LA' })
  const configB = await node(dir, 'b', { mirrorPort: portB, peers: [portA], serial: 'MK650-LB' })
  const running: RunningService[] = []
  t.teardown(() => Promise.all(running.map((service) => service.stop())))
  const a = await startService(configA, { timeoutMs: 60_000 })
  running.push(a)
  const b = await startService(configB, { timeoutMs: 60_000 })
  running.push(b)
  await sendMail(a, [testMessage('first contact')])
  await waitUntil(async () => (await storeCount(configB)) === 1, { ...appliancePolling, what: 'B has the first message' })

  t.equal((await technician(configA, ['mirror', 'pause', `${host}:${portB}`])).code, 0)
  const raws = Array.from({ length: backlog }, (_, index) => testMessage(`backlog message ${index}`, 200))
  await Promise.all(
    [0, 1, 2, 3].map((part) =>
      sendMail(
        a,
        raws.filter((_, index) => index % 4 === part),
      ),
    ),
  )
  // Finding 5: B's search answers say they may be incomplete, with how much A still holds for it.
  const behind = await waitUntil(
    async () => {
      const answer = await search(b, 'subject:backlog')
      return !answer.completeness.complete && answer.completeness.peers[0]?.queuedMessages === backlog ? answer : undefined
    },
    { ...appliancePolling, what: 'B reports the backlog while A is paused' },
  )
  t.match(behind.completeness.peers, [{ serial: 'MK650-LA', queuedMessages: backlog }])
  t.equal(behind.total, 0, 'nothing of the backlog on B yet')
  const text = await cliJson(configB, ['show', 'status'])
  t.match(JSON.stringify(text.json), /"complete":false/, 'show status carries the same completeness')

  // Finding 6: resume; once the sender has split its queue, new mail goes first.
  t.equal((await technician(configA, ['mirror', 'resume', `${host}:${portB}`])).code, 0)
  // Polled over HTTP (cheaper than a CLI process): the split must be seen before the backlog drains.
  await waitUntil(
    async () => {
      const response = await apiGet(a, '/api/v1/status')
      const peer = response?.status === 200 ? ((await response.json()) as { mirror: { peers: PeerView[] } }).mirror.peers[0] : undefined
      return peer?.state === 'connected' && peer.backfillThroughSequence !== null ? peer : undefined
    },
    { ...appliancePolling, what: 'A split the queue into backlog and new mail' },
  )
  const [probeId] = [...(await sendMail(a, [testMessage('fresh probe during catch-up')])).keys()]
  const seenWith = await waitUntil(
    async () => {
      const answer = await search(b, 'subject:"fresh probe"')
      return answer.total === 1 ? await storeCount(configB) : undefined
    },
    { ...appliancePolling, what: 'the probe searchable on B', timeoutMs: 60_000 },
  )
  t.ok(probeId)
  t.ok(seenWith < backlog, `the probe was searchable on B while the backlog was still arriving (${seenWith - 2} of ${backlog} there)`)
  const done = await waitUntil(
    async () => {
      const answer = await search(b, 'subject:backlog')
      return answer.completeness.complete && answer.total === backlog ? answer : undefined
    },
    { ...appliancePolling, what: 'B complete', timeoutMs: 120_000 },
  )
  t.match(done.completeness.peers, [{ serial: 'MK650-LA', queuedMessages: 0 }])
  t.equal(await storeCount(configB), backlog + 2, 'everything once')
})
