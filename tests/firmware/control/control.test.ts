import t from 'tap'
import { mkdtemp, stat, writeFile } from 'node:fs/promises'
import { createConnection } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { hashPassword } from '../../../firmware/common/password.js'
import { createControlServer, authFailuresMax, type CommandHandler } from '../../../firmware/control/server.js'
import { connectControl } from '../../../firmware/control/client.js'
import { ControlError } from '../../../firmware/control/errors.js'
import { commandTable, resolveCommand, checkArguments, resolvePathArguments, completeWords, usageOf } from '../../../firmware/control/command-table.js'

t.test('command table resolution, arguments and completion', async (t) => {
  t.equal(resolveCommand(['show', 'status'])!.spec.name, 'show status')
  t.same(resolveCommand(['sim', 'link', 'eth0', 'down'])!.args, ['eth0', 'down'])
  t.equal(resolveCommand(['show']), undefined)
  t.equal(resolveCommand(['nope']), undefined)
  const link = commandTable.find((spec) => spec.name === 'sim link')!
  t.equal(usageOf(link), 'sim link <nic> <up|down>')
  t.equal(checkArguments(link, ['eth0', 'up']), undefined)
  t.match(checkArguments(link, ['eth0', 'sideways'])!, /state must be one of up\|down/)
  t.match(checkArguments(link, ['eth0'])!, /^usage: sim link/)
  const fail = commandTable.find((spec) => spec.name === 'sim fail-disk')!
  t.match(checkArguments(fail, ['x'])!, /index must be an integer/)
  const names = commandTable.map((spec) => spec.name)
  t.same(completeWords(names, 'sh'), ['show'])
  t.same(completeWords(names, 'show r'), ['raid'])
  t.same(completeWords(names, 'show '), ['config', 'disks', 'journal', 'mirror', 'nics', 'raid', 'status', 'store', 'tls', 'version'])
  t.same(completeWords(names, 'show status '), [])
  const install = commandTable.find((spec) => spec.name === 'tls install')!
  t.same(resolvePathArguments(install, ['cert.pem', '/etc/ssl/key.pem'], '/home/tech'), ['/home/tech/cert.pem', '/etc/ssl/key.pem'], 'path arguments are made absolute by the client')
  t.same(resolvePathArguments(fail, ['2'], '/home/tech'), ['2'], 'other kinds are left as typed')
  const exportSpec = commandTable.find((spec) => spec.name === 'export')!
  t.same(
    resolvePathArguments(exportSpec, ['subject:out', '--out', 'case.zip'], '/home/tech'),
    ['subject:out', '--out', '/home/tech/case.zip'],
    'a path flag among the rest words is resolved; other words are not',
  )
  t.same(completeWords(names, 'zz'), [])
})

t.test('show mirror: one line per peer for its copy lanes, requeued and refused copies', async (t) => {
  const render = commandTable.find((spec) => spec.name === 'show mirror')!.render
  const peer = { host: 'b.example', port: 9443, serial: 'MK650-B', state: 'connected', cursor: 120, backfillThroughSequence: null, liveCursor: null, requeuedMessages: 0, rejectedCopies: 0 }
  const quiet = render({ peers: [peer] })
  t.notMatch(quiet, /backlog|requeued|refused/, 'nothing to say: no line')
  const busy = render({ peers: [{ ...peer, backfillThroughSequence: 100_000, liveCursor: 100_042, requeuedMessages: 3, rejectedCopies: 1 }] })
  t.match(
    busy,
    'b.example:9443: backlog copied beside new mail: change log (120, 100000] to go, new mail acknowledged through 100042; 3 message(s) requeued; 1 copy(ies) refused by the peer',
  )
})

t.test('server answers commands over a 0600 socket; technician commands need the password', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-control-'))
  const socketPath = join(dir, 'run', 'control.sock')
  const logger = createMemoryLogger()
  const calls: string[][] = []
  const handlers = new Map<string, CommandHandler>([
    ['show version', () => ({ firmwareVersion: '1.2.3' })],
    ['sim fail-disk', (args) => (calls.push(args), { message: 'failed' })],
    ['show status', () => new Promise(() => undefined)],
  ])
  const password = 'technician-password'
  const server = createControlServer(
    { logger, clock: createManualClock(), handlers },
    { socketPath, requestBytesMax: 4096, requestTimeoutMs: 300, technicianPasswordHash: await hashPassword(password) },
  )
  await server.start()
  t.teardown(() => server.stop())
  t.equal((await stat(socketPath)).mode & 0o777, 0o600)
  t.equal((await stat(join(dir, 'run'))).mode & 0o777, 0o700)

  const client = await connectControl(socketPath)
  t.teardown(() => client.close())
  t.same(await client.call('show version'), { firmwareVersion: '1.2.3' })
  await t.rejects(client.call('sim fail-disk', ['1']), { code: 'AUTH_REQUIRED' })
  await t.rejects(client.call('sim fail-disk', ['1'], 'wrong'), { code: 'AUTH_FAILED' })
  t.same(calls, [], 'no state change without the password')
  t.same(await client.call('sim fail-disk', ['1'], password), { message: 'failed' })
  t.same(calls, [['1']])
  await t.rejects(client.call('sim fail-disk', ['x'], password), { code: 'USAGE' })
  await t.rejects(client.call('no such'), { code: 'UNKNOWN_COMMAND' })
  await t.rejects(client.call('show disks'), { code: 'UNAVAILABLE' }, 'no handler registered')
  await t.rejects(client.call('show status'), { code: 'TIMEOUT' })

  // auth unlocks the connection for later commands
  const console = await connectControl(socketPath)
  t.teardown(() => console.close())
  await console.call('auth', [], password)
  t.same(await console.call('sim fail-disk', ['2']), { message: 'failed' })

  const text = JSON.stringify(logger.records)
  t.notMatch(text, password, 'password never logged')
  t.ok(logger.records.some((record) => record.msg === 'technician authentication failed'))
})

t.test('failed logins are rate limited', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-control-'))
  const socketPath = join(dir, 'c.sock')
  const clock = createManualClock()
  const server = createControlServer(
    { logger: createMemoryLogger(), clock, handlers: new Map() },
    { socketPath, requestBytesMax: 4096, requestTimeoutMs: 1000, technicianPasswordHash: await hashPassword('right') },
  )
  await server.start()
  t.teardown(() => server.stop())
  const client = await connectControl(socketPath)
  t.teardown(() => client.close())
  for (let attempt = 0; attempt < authFailuresMax; attempt += 1) await t.rejects(client.call('auth', [], 'wrong'), { code: 'AUTH_FAILED' })
  await t.rejects(client.call('auth', [], 'right'), { code: 'AUTH_RATE_LIMITED' }, 'even the right password waits')
  clock.advance(61_000)
  t.same(await client.call('auth', [], 'right'), { message: 'technician commands unlocked' })
})

t.test('no technician password configured refuses technician commands', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-control-'))
  const socketPath = join(dir, 'c.sock')
  const server = createControlServer(
    { logger: createMemoryLogger(), clock: createManualClock(), handlers: new Map([['sim tick', () => 'ticked']]) },
    { socketPath, requestBytesMax: 4096, requestTimeoutMs: 1000, technicianPasswordHash: null },
  )
  await server.start()
  t.teardown(() => server.stop())
  const client = await connectControl(socketPath)
  t.teardown(() => client.close())
  await t.rejects(client.call('sim tick', [], 'anything'), { code: 'AUTH_NOT_CONFIGURED' })
})

t.test('protocol edges: garbage, oversize, stale socket, second server, not running', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-control-'))
  const socketPath = join(dir, 'c.sock')
  await writeFile(socketPath, 'stale')
  const options = { socketPath, requestBytesMax: 1024, requestTimeoutMs: 1000, technicianPasswordHash: null }
  const deps = { logger: createMemoryLogger(), clock: createManualClock(), handlers: new Map([['show version', () => 'v']]) }
  const server = createControlServer(deps, options)
  await server.start()
  t.teardown(() => server.stop())
  await t.rejects(createControlServer(deps, options).start(), { code: 'ADDRESS_IN_USE' })

  const raw = createConnection(socketPath)
  const received: string[] = []
  raw.on('data', (chunk) => received.push(chunk.toString()))
  raw.write('not json\n')
  raw.write('x'.repeat(2000))
  await new Promise((resolve) => raw.on('close', resolve))
  const replies = received
    .join('')
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line).error.code)
  t.same(replies, ['PROTOCOL', 'REQUEST_TOO_LARGE'])
  t.equal(await (await connectControl(socketPath)).call('show version'), 'v', 'still serving')

  await server.stop()
  await server.stop()
  const error = await connectControl(socketPath).catch((e: ControlError) => e)
  t.type(error, ControlError)
  t.equal((error as ControlError).code, 'NOT_RUNNING')
  t.match((error as Error).message, /not running/)
})

t.test('search and status say when results may be incomplete (a mirror peer still has mail queued for this system)', async (t) => {
  const { completenessLines } = await import('../../../firmware/control/command-table.js')
  const asOfMs = Date.UTC(2026, 11, 4, 18, 0, 0)
  t.same(completenessLines(undefined), [])
  t.same(completenessLines({ complete: true, peers: [{ serial: 'MK650-A', queuedMessages: 0, queueEstimated: false, asOfMs }] }), [])
  t.same(
    completenessLines({
      complete: false,
      peers: [
        { serial: 'MK650-A', queuedMessages: 3000, queueEstimated: false, asOfMs },
        { serial: 'MK650-C', queuedMessages: 0, queueEstimated: false, asOfMs },
        { serial: 'MK650-D', queuedMessages: 12, queueEstimated: true, asOfMs },
      ],
    }),
    [
      'results may be incomplete: 3000 message(s) from MK650-A not yet received (as of 2026-12-04 18:00:00 UTC)',
      'results may be incomplete: about 12 message(s) from MK650-D not yet received (as of 2026-12-04 18:00:00 UTC)',
    ],
  )
})
