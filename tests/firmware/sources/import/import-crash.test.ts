/**
 * Crash test of the bulk import: the real service runs in a child process under Bun with
 * a file-backed fake pipeline (each durable message's id appended and fsynced), is
 * SIGKILLed at random points for a few rounds, and is then run to the end. After every
 * kill, every message before the checkpoint must be in the archive file (the checkpoint
 * never passes a message that is not durable); at the end every message is archived,
 * nothing else is, and the reruns resumed from their checkpoints.
 */
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRandom } from '../../../../firmware/common/clock.js'
import { listMessageFiles, loadCheckpoint, readMbox } from '../../../../firmware/sources/import/index.js'
import { buildMaildir, buildMbox, loadCorpusMessages, sha256 } from './fixtures/mail.js'
import { waitUntil } from '../../../helpers/wait.js'
import { testSeed } from '../../../helpers/random.js'

const here = dirname(fileURLToPath(import.meta.url))
const repositoryRoot = join(here, '..', '..', '..', '..')
const bun = join(repositoryRoot, 'node_modules', '.bin', 'bun')
const childScript = join(here, 'fixtures', 'crash-child.ts')
/** Kill rounds per source before the final run; each round kills the child once, if it has not finished by then. */
const killRoundsMax = 5
/** Longest a child may take to finish the final run, in milliseconds. */
const finalRunTimeoutMs = 60_000

const { seed } = testSeed(t, "the kill points and the children's delays")

let workDir: string
t.before(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'mailkeep-import-crash-'))
})
t.teardown(async () => {
  if (workDir) await rm(workDir, { recursive: true, force: true })
})

async function archivedIds(archivePath: string): Promise<string[]> {
  return (await readFile(archivePath, 'utf8').catch(() => '')).split('\n').filter(Boolean)
}

interface ChildRun {
  exitCode: number | null
  signal: NodeJS.Signals | null
  lines: Record<string, unknown>[]
  stderr: string
}

/**
 * Runs the child; when `killAfterNewIds` is set, SIGKILLs it once the archive file holds
 * that many more ids than at the start (or lets it end if it finishes first).
 */
async function runChild(env: Record<string, string>, archivePath: string, killAfterNewIds: number | null, timeoutMs: number): Promise<ChildRun> {
  const before = (await archivedIds(archivePath)).length
  const child = spawn(bun, [childScript], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')))
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')))
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })))
  let finished = false
  void exited.then(() => (finished = true))
  // Until the child ends, or has archived enough to be killed.
  const killPointReached = async (): Promise<boolean> => killAfterNewIds !== null && (await archivedIds(archivePath)).length - before >= killAfterNewIds
  try {
    await waitUntil(async () => finished || (await killPointReached()), { what: 'the child to finish or reach its kill point', timeoutMs, intervalMs: 3 })
  } catch (error) {
    child.kill('SIGKILL')
    throw new Error(`child did not finish within ${timeoutMs} ms; stderr: ${stderr}`, { cause: error })
  }
  if (!finished) child.kill('SIGKILL')
  const { code, signal } = await exited
  const lines = stdout
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
  return { exitCode: code, signal, lines, stderr }
}

/** What the scenario needs of a tap test. */
type Tap = Pick<typeof t, 'equal' | 'ok' | 'fail' | 'match' | 'comment'>

/** The ids of the messages a checkpoint position says are durable. */
type DurableBefore = (position: number) => Promise<string[]>

async function crashScenario(t: Tap, name: string, path: string, expected: Buffer[], durableBefore: DurableBefore, roundSeed: number): Promise<void> {
  const random = createRandom(roundSeed)
  const stateDir = join(workDir, `${name}-state`)
  const archivePath = join(workDir, `${name}-archive.txt`)
  await writeFile(archivePath, '')
  const env = (round: number) => ({
    IMPORT_CHILD_PATH: path,
    IMPORT_CHILD_STATE_DIR: stateDir,
    IMPORT_CHILD_ARCHIVE: archivePath,
    IMPORT_CHILD_SEED: String(roundSeed * 31 + round),
    IMPORT_CHILD_DELAY_MS_MAX: '4',
  })
  let kills = 0
  const resumedFrom: number[] = []
  let completedEarly = false
  for (let round = 0; round < killRoundsMax; round++) {
    const killAfter = 5 + random.int(40)
    const run = await runChild(env(round), archivePath, killAfter, finalRunTimeoutMs)
    const prepared = run.lines.find((line) => line.event === 'prepared')
    if (prepared) resumedFrom.push(Number(prepared.resumedFrom))
    if (run.signal !== 'SIGKILL') {
      t.equal(run.exitCode, 0, `${name}: round ${round} ended on its own, done (stderr: ${run.stderr.slice(0, 300)})`)
      completedEarly = true
      break
    }
    kills++
    const checkpoint = await loadCheckpoint(stateDir, path)
    if (checkpoint.kind === 'unusable') t.fail(`${name}: round ${round}: unusable checkpoint after SIGKILL: ${checkpoint.reason}`)
    if (checkpoint.kind === 'found') {
      const archived = new Set(await archivedIds(archivePath))
      const mustBeDurable = await durableBefore(checkpoint.checkpoint.position)
      const lost = mustBeDurable.filter((id) => !archived.has(id))
      t.equal(
        lost.length,
        0,
        `${name}: round ${round} (killed after ${killAfter} new ids): the ${mustBeDurable.length} messages before checkpoint ${checkpoint.checkpoint.position} are all durable`,
      )
    }
  }
  if (!completedEarly) {
    const final = await runChild(env(killRoundsMax), archivePath, null, finalRunTimeoutMs)
    t.equal(final.exitCode, 0, `${name}: the final run finishes the job (stderr: ${final.stderr.slice(0, 300)})`)
    const prepared = final.lines.find((line) => line.event === 'prepared')
    if (prepared) resumedFrom.push(Number(prepared.resumedFrom))
    t.match(
      final.lines.find((line) => line.event === 'finished'),
      { state: 'done', failed: 0 },
    )
  }
  t.ok(kills >= 1, `${name}: the child was killed mid-run ${kills} times`)
  t.ok(
    resumedFrom.slice(1).some((position) => position > 0),
    `${name}: a rerun resumed from its checkpoint (resumedFrom per run: ${resumedFrom.join(', ')})`,
  )
  const archived = await archivedIds(archivePath)
  const archivedSet = new Set(archived)
  const expectedIds = new Set(expected.map(sha256))
  t.equal([...expectedIds].filter((id) => !archivedSet.has(id)).length, 0, `${name}: every one of ${expectedIds.size} messages archived, byte-exact (by hash)`)
  t.equal([...archivedSet].filter((id) => !expectedIds.has(id)).length, 0, `${name}: nothing else archived`)
  t.comment(`${name}: ${archived.length} submits for ${expectedIds.size} messages over ${kills + 1} runs`)
  t.equal((await loadCheckpoint(stateDir, path)).kind, 'none', `${name}: no checkpoint left after the job finished`)
}

t.test('an mbox import survives SIGKILL at random points', async (t) => {
  const corpus = await loadCorpusMessages(300)
  const built = buildMbox(corpus)
  const path = join(workDir, 'crash.mbox')
  await writeFile(path, built.bytes)
  const entries: { endOffset: number; id: string }[] = []
  for await (const entry of readMbox(path, { messageBytesMax: 10_000_000 })) {
    if (entry.kind === 'message') entries.push({ endOffset: entry.endOffset, id: sha256(entry.raw) })
  }
  t.equal(entries.length, built.expected.length, 'the fixture reads back as its messages')
  await crashScenario(t, 'mbox', path, built.expected, async (position) => entries.filter((entry) => entry.endOffset <= position).map((entry) => entry.id), seed)
})

t.test('a maildir import survives SIGKILL at random points', async (t) => {
  const corpus = await loadCorpusMessages(300)
  const maildir = await buildMaildir(join(workDir, 'Maildir'), corpus.slice(100, 300), [Buffer.from('Subject: tmp\n\nx\n'), Buffer.from('Subject: side\n\ny\n')])
  const listing = await listMessageFiles(maildir.root, 'maildir', { filesMax: 1_000 })
  const ids = await Promise.all(listing.files.map(async (file) => sha256(await readFile(join(maildir.root, file.relativePath)))))
  await crashScenario(t, 'maildir', maildir.root, maildir.expected, async (position) => ids.slice(0, position), seed + 1)
})
