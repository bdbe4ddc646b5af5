/**
 * Crash safety of the journal pull: the real puller runs in a child process under Bun
 * and is SIGKILLed at random points around its archive/acknowledge steps (seeded; set
 * MAILKEEP_TEST_SEED to replay), then a
 * last run finishes the pull. After every kill, each seeded message is at the server or
 * durably archived (never deleted without an archive); at the end every message is
 * archived, none is left at the server ('delete'), and the distinct content hashes
 * archived are exactly the seeded ones (re-fetches are duplicates the store absorbs).
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startDovecot, seedMailbox, readMailbox, type RunningDovecot, type DovecotUser } from '../../../helpers/dovecot.js'
import { bunPath } from '../../../helpers/service.js'
import { pop3StatePath } from '../../../../firmware/sources/journal/pop3-archived-state.js'
import type { JournalSourceOptions } from '../../../../firmware/sources/journal/types.js'
import { makeMessages, sha256 } from './fixtures/messages.js'
import { testSeed } from '../../../helpers/random.js'

/** Kills per scenario. */
const killRounds = 4
/** Messages seeded per scenario. */
const seededCount = 24
/** Longest a child may run, in milliseconds. */
const childTimeoutMs = 60_000
/** A kill lands up to this long after the child reported its chosen archived message, in milliseconds. */
const killJitterMsMax = 25

const childPath = join(import.meta.dirname, 'fixtures', 'pull-child.ts')
const { seed, random } = testSeed(t, 'the kill points')

const scenarios = [
  { name: 'imap-delete', protocol: 'imap', afterArchive: 'delete' },
  { name: 'pop3-delete', protocol: 'pop3', afterArchive: 'delete' },
  { name: 'pop3-flag', protocol: 'pop3', afterArchive: 'flag' },
] as const
const users: Record<string, DovecotUser> = Object.fromEntries(scenarios.map((scenario) => [scenario.name, { name: scenario.name, password: `pw-crash-${scenario.name}-5e5e` }]))

let dovecot: RunningDovecot
let workDir: string

t.before(async () => {
  dovecot = await startDovecot({ users: Object.values(users) })
  workDir = await mkdtemp(join(tmpdir(), 'mailkeep-journal-crash-'))
})

t.teardown(async () => {
  await dovecot?.stop()
  if (workDir) await rm(workDir, { recursive: true, force: true })
})

interface ChildRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  killed: boolean
}

/** Where a kill lands: `jitterMs` after the child reported its `afterArchived`-th durable message. */
interface KillPoint {
  afterArchived: number
  jitterMs: number
}

/** Runs the child; with a kill point, SIGKILLs it there (if it gets that far). */
function runChild(options: JournalSourceOptions, archivePath: string, kill: KillPoint | null): Promise<ChildRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(bunPath, [childPath], {
      env: { ...process.env, JOURNAL_CHILD_OPTIONS: JSON.stringify(options), JOURNAL_CHILD_ARCHIVE: archivePath, JOURNAL_CHILD_DELAY_MS: '15' },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let killed = false
    const deadline = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`child ran over ${childTimeoutMs} ms\n${stdout}\n${stderr}`))
    }, childTimeoutMs)
    let killArmed = kill !== null
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      const archivedLines = stdout.split('\n').filter((line) => line.startsWith('archived ')).length
      if (kill && killArmed && archivedLines >= kill.afterArchived) {
        killArmed = false
        setTimeout(() => {
          killed = child.exitCode === null && child.signalCode === null
          child.kill('SIGKILL')
        }, kill.jitterMs)
      }
    })
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('exit', (code, signal) => {
      clearTimeout(deadline)
      resolve({ code, signal, stdout, stderr, killed })
    })
  })
}

async function archivedIds(archivePath: string): Promise<string[]> {
  const text = await readFile(archivePath, 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => line.split(' ')[0]!)
}

t.test(`SIGKILL at random points loses nothing and duplicates nothing beyond dedup (seed ${seed})`, async (t) => {
  for (const scenario of scenarios) {
    const user = users[scenario.name]!
    const seeded = makeMessages(`crash-${scenario.name}`, seededCount)
    const seededIds = new Set(seeded.map(sha256))
    await seedMailbox(dovecot, user, seeded)
    const archivePath = join(workDir, `${scenario.name}.archive`)
    await writeFile(archivePath, '')
    const options: JournalSourceOptions = {
      name: scenario.name,
      protocol: scenario.protocol,
      host: dovecot.host,
      port: scenario.protocol === 'imap' ? dovecot.ports.imaps : dovecot.ports.pop3s,
      tls: 'implicit',
      tlsRejectUnauthorized: false,
      user: user.name,
      password: user.password,
      mailbox: 'INBOX',
      intervalMs: 60_000,
      afterArchive: scenario.afterArchive,
      batchMessagesMax: 7,
      enabled: true,
      stateDir: join(workDir, 'state'),
    }

    let killedMidRun = 0
    for (let round = 0; round < killRounds; round++) {
      // Mostly inside the run's first batch (POP3: before QUIT), sometimes just after it.
      const kill = { afterArchived: 1 + random.int(options.batchMessagesMax + 2), jitterMs: random.int(killJitterMsMax) }
      const run = await runChild(options, archivePath, kill)
      if (run.killed) killedMidRun++
      else t.equal(run.code, 0, `${scenario.name}: a run that ended before its kill succeeded`, { stdout: run.stdout, stderr: run.stderr })
      // The invariant at every crash point: whatever left the server is durably archived.
      const archived = new Set(await archivedIds(archivePath))
      const onServer = new Set((await readMailbox(dovecot, user)).map((message) => sha256(message.source)))
      const lost = [...seededIds].filter((id) => !archived.has(id) && !onServer.has(id))
      t.same(lost, [], `${scenario.name} round ${round} (kill ${kill.jitterMs} ms after archived message ${kill.afterArchived}): no message gone from the server without an archive`)
    }

    const last = await runChild(options, archivePath, null)
    t.equal(last.code, 0, `${scenario.name}: the last run finishes the pull`, { stdout: last.stdout, stderr: last.stderr })
    t.ok(last.stdout.includes('done\n'))
    const ids = await archivedIds(archivePath)
    const distinct = new Set(ids)
    t.equal(distinct.size, seededCount, `${scenario.name}: distinct archived hashes = seeded count`)
    t.same([...distinct].sort(), [...seededIds].sort(), `${scenario.name}: exactly the seeded messages, byte-identical`)
    const onServer = await readMailbox(dovecot, user)
    if (scenario.afterArchive === 'delete') {
      t.same(onServer, [], `${scenario.name}: none left at the server`)
    } else {
      t.equal(onServer.length, seededCount, `${scenario.name}: flag mode keeps the messages`)
      const state = JSON.parse(await readFile(pop3StatePath(options.stateDir, options.name), 'utf8')) as { uidls: string[] }
      t.equal(state.uidls.length, seededCount, `${scenario.name}: every UIDL remembered`)
    }
    t.notOk((last.stdout + last.stderr).includes(user.password), 'the password is not in the child output')
    t.comment(`${scenario.name}: ${killedMidRun} of ${killRounds} kills landed mid-run; ${ids.length - distinct.size} re-fetches absorbed by dedup`)
  }
})
