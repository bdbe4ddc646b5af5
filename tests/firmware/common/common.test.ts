import t from 'tap'
import { mkdtemp, readFile, stat, readdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLogger, createMemoryLogger } from '../../../firmware/common/logger.js'
import { writeFileDurable } from '../../../firmware/common/durable-file.js'
import { hashPassword, verifyPassword } from '../../../firmware/common/password.js'
import { createRandom } from '../../../firmware/common/clock.js'
import { MailkeepError, hasCode } from '../../../firmware/common/errors.js'

t.test('logger writes JSON lines with namespace and redacts secrets', async (t) => {
  const lines: string[] = []
  const logger = createLogger('mailkeep', { write: (line) => lines.push(line), now: () => new Date(0) })
  logger.child('smtp', { listener: 'a' }).info('hello', { password: 'hunter2', nested: { sharedSecret: 'x'.repeat(30), ok: 1 }, body: Buffer.from('abc') })
  logger.debug('hidden at info level')
  t.equal(lines.length, 1)
  const record = JSON.parse(lines[0]!)
  t.same(record, {
    time: '1970-01-01T00:00:00.000Z',
    level: 'info',
    ns: 'mailkeep.smtp',
    msg: 'hello',
    listener: 'a',
    password: '[redacted]',
    nested: { sharedSecret: '[redacted]', ok: 1 },
    body: '[3 bytes]',
  })
  t.notMatch(lines[0]!, 'hunter2')
})

t.test('pretty format and errors as fields', async (t) => {
  const lines: string[] = []
  const logger = createLogger('ns', { format: 'pretty', write: (line) => lines.push(line), now: () => new Date(0) })
  logger.error('failed', { error: new MailkeepError('X_CODE', 'boom') })
  t.equal(lines[0], '00:00:00.000 error ns: failed error={"name":"MailkeepError","message":"boom","code":"X_CODE"}')
  const memory = createMemoryLogger()
  memory.warn('w', { token: 'abc' })
  t.equal(memory.records[0]!.token, '[redacted]')
})

t.test('durable file write replaces content atomically with the given mode', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-durable-'))
  const path = join(dir, 'sub', 'state.json')
  await writeFileDurable(path, 'one', 0o600)
  await writeFileDurable(path, 'two', 0o600)
  t.equal(await readFile(path, 'utf8'), 'two')
  t.equal((await stat(path)).mode & 0o777, 0o600)
  t.same(await readdir(join(dir, 'sub')), ['state.json'], 'no temporary files left behind')
})

t.test('password hashes verify and never match wrong input', async (t) => {
  const hash = await hashPassword('correct horse')
  t.match(hash, /^scrypt\$32768\$8\$1\$/)
  t.equal(await verifyPassword('correct horse', hash), true)
  t.equal(await verifyPassword('correct horsE', hash), false)
  t.equal(await verifyPassword('', hash), false)
  t.equal(await verifyPassword('correct horse', 'scrypt$1$1$1$AAAA$AAAA'), false, 'malformed hash')
  t.equal(await verifyPassword('x', 'plain'), false)
  await t.rejects(hashPassword(''), RangeError)
  t.not(await hashPassword('same'), await hashPassword('same'), 'salted')
})

t.test('seeded random is reproducible', async (t) => {
  const a = createRandom(42)
  const b = createRandom(42)
  const seqA = Array.from({ length: 5 }, () => a.int(1000))
  t.same(
    seqA,
    Array.from({ length: 5 }, () => b.int(1000)),
  )
  t.not(seqA.join(), Array.from({ length: 5 }, () => createRandom(43).int(1000)).join())
  t.ok(hasCode(new MailkeepError('A', 'a'), 'A'))
  t.notOk(hasCode(new Error('a'), 'A'))
})
