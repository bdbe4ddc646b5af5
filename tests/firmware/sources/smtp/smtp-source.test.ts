import t from 'tap'
import { createHash } from 'node:crypto'
import { spawn, spawnSync } from 'node:child_process'
import { connect as tlsConnect } from 'node:tls'
import { createServer } from 'node:net'
import nodemailer from 'nodemailer'
import { ArchiveError } from '../../../../firmware/archive/errors.js'
import { MailkeepError } from '../../../../firmware/common/errors.js'
import { systemClock } from '../../../../firmware/common/clock.js'
import { createMemoryLogger } from '../../../../firmware/common/logger.js'
import {
  createRecipientPolicy,
  createSmtpSource,
  formatReply,
  resolveSmtpOptions,
  smtpErrorForIngestFailure,
  validateSmtpOptions,
  SmtpError,
} from '../../../../firmware/sources/smtp/index.js'
import { carriesEnhancedCode } from '../../../../firmware/sources/smtp/immediate-greeting.js'
import { createFakePipeline, createSelfSignedCertificate, dotStuff, RawSmtpClient, type RawReply } from './fixtures/smtp-test-kit.js'
import { archiveRecipient, baseOptions, greeted, simpleMessage, startSource, transaction } from './fixtures/smtp-source-harness.js'
import { waitUntil } from '../../../helpers/wait.js'

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex')

t.test('pure parts: policy, options, error mapping', async (t) => {
  const built = createRecipientPolicy({ archiveRecipients: ['Journal@Archive.Example'], trustedNetworks: ['10.1.0.0/16', '2001:db8::/32', '192.0.2.7'] })
  t.ok(built.policy, 'valid options build a policy')
  const policy = built.policy!
  t.equal(policy.isTrustedClient('10.1.200.3'), true, 'inside an IPv4 network')
  t.equal(policy.isTrustedClient('10.2.0.1'), false, 'outside it')
  t.equal(policy.isTrustedClient('::ffff:10.1.0.9'), true, 'IPv4-mapped IPv6 matches the IPv4 network')
  t.equal(policy.isTrustedClient('2001:db8:1::5'), true, 'inside an IPv6 network')
  t.equal(policy.isTrustedClient('192.0.2.7'), true, 'a bare address is one host')
  t.equal(policy.isTrustedClient('192.0.2.8'), false)
  t.equal(policy.isTrustedClient('not-an-ip'), false)
  t.equal(policy.mayReceive('JOURNAL@archive.example', false), true, 'archive recipient compared case-insensitively')
  t.equal(policy.mayReceive('someone@else.example', false), false, 'untrusted client, other recipient: relay')
  t.equal(policy.mayReceive('someone@else.example', true), true, 'trusted client may use any recipient')

  const bad = createRecipientPolicy({ archiveRecipients: ['no-at-sign'], trustedNetworks: ['10.0.0.0/33', 'nonsense/8', '10.0.0.0/'] })
  t.equal(bad.policy, null)
  t.same(bad.problems, [
    'smtp.trustedNetworks[0]: not a CIDR network (got "10.0.0.0/33")',
    'smtp.trustedNetworks[1]: not a CIDR network (got "nonsense/8")',
    'smtp.trustedNetworks[2]: not a CIDR network (got "10.0.0.0/")',
    'smtp.archiveRecipients[0]: not an address local@domain (got "no-at-sign")',
  ])

  const resolved = resolveSmtpOptions(baseOptions({ sizeBytesMax: 512 * 1024 * 1024 }))
  t.equal(resolved.bufferedBytesMax, 512 * 1024 * 1024, 'the buffer budget holds at least one largest message')
  t.match(validateSmtpOptions({ ...resolved, bufferedBytesMax: 10, recipientsMax: 0 }).join('\n'), /smtp\.recipientsMax: must be a positive integer \(got 0\)[\s\S]*smtp\.bufferedBytesMax/)

  const cases: [unknown, string, string][] = [
    [new ArchiveError('STORE_FULL', 'disk full'), '452 4.3.1', 'STORE_FULL'],
    [new ArchiveError('STORE_UNAVAILABLE', 'closed'), '451 4.3.0', 'ARCHIVE_UNAVAILABLE'],
    [new ArchiveError('MESSAGE_TOO_LARGE', 'big'), '552 5.3.4', 'MESSAGE_TOO_LARGE'],
    [new ArchiveError('STORE_CORRUPT', 'bad'), '554 5.6.0', 'MESSAGE_REFUSED'],
    [new MailkeepError('PARSE_REFUSED', 'no', { retryable: false }), '554 5.6.0', 'MESSAGE_REFUSED'],
    [new TypeError('bug'), '451 4.3.0', 'ARCHIVE_UNAVAILABLE'],
  ]
  for (const [error, reply, code] of cases) {
    const mapped = smtpErrorForIngestFailure(error)
    t.equal(mapped.code, code, `${String(error)} → ${code}`)
    t.equal(formatReply(mapped.reply!).slice(0, 9), reply, `${String(error)} → ${reply}`)
    t.equal(mapped.retryable, reply.startsWith('4'), 'retryable follows the reply class')
  }
  t.equal(new SmtpError('RELAY_DENIED', 'x', { replyText: 'a\r\nb' }).reply?.text, 'a  b', 'reply text stays on one line')
  t.equal(carriesEnhancedCode(550, '5.7.1 Relay'), true)
  t.equal(carriesEnhancedCode(451, '5.7.1 Relay'), false, 'class must match the reply code')
  t.equal(carriesEnhancedCode(250, 'Accepted'), false)
})

t.test('lifecycle: start, address, healthcheck, stop, start failures', async (t) => {
  const pipeline = createFakePipeline()
  const source = createSmtpSource({ logger: createMemoryLogger(), clock: systemClock, pipeline }, baseOptions())
  t.same(source.healthcheck(), { ok: false, detail: 'not started' })
  t.throws(() => source.address(), /before start/)
  await source.start()
  const { host, port } = source.address()
  t.equal(host, '127.0.0.1')
  t.ok(port > 0, 'port 0 binds a free port')
  t.match(source.healthcheck(), { ok: true, detail: new RegExp(`listening on 127\\.0\\.0\\.1:${port}`) })
  t.same(source.listeners(), { smtp: `127.0.0.1:${port}` })
  const first = source.stop()
  t.equal(source.stop(), first, 'stop is idempotent (same promise)')
  await first
  await source.stop()
  t.same(source.healthcheck(), { ok: false, detail: 'stopped' })
  t.same(source.listeners(), {})
  await t.rejects(RawSmtpClient.open(port), { code: 'ECONNREFUSED' }, 'no longer accepting')
  await t.rejects(source.start(), { code: 'STOPPED' })

  const invalid = createSmtpSource({ logger: createMemoryLogger(), clock: systemClock, pipeline }, baseOptions({ trustedNetworks: ['300.0.0.0/8'] }))
  await t.rejects(invalid.start(), { code: 'INVALID_OPTIONS', message: /smtp\.trustedNetworks\[0\]: not a CIDR network \(got "300\.0\.0\.0\/8"\)/ })

  const blocker = createServer()
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => blocker.close(() => resolve())))
  const busyPort = (blocker.address() as { port: number }).port
  const clash = createSmtpSource({ logger: createMemoryLogger(), clock: systemClock, pipeline }, baseOptions({ port: busyPort }))
  await t.rejects(clash.start(), { code: 'LISTEN_FAILED', message: /EADDRINUSE/ })
  t.same(clash.healthcheck(), { ok: false, detail: 'not started' })
  await clash.stop()
})

t.test('raw socket: byte-exact DATA, envelope, archive id in the 250', async (t) => {
  const { pipeline, port, logger, source } = await startSource(t, { trustedNetworks: ['127.0.0.0/8'] })
  const { client, ehlo } = await greeted(port)
  t.ok(ehlo.lines.includes('ENHANCEDSTATUSCODES'), 'enhanced status codes advertised')
  t.ok(ehlo.lines.includes('SIZE 65536'), 'SIZE advertised with the limit in bytes')
  t.notOk(
    ehlo.lines.some((line) => line.startsWith('AUTH')),
    'no AUTH offered',
  )
  t.notOk(ehlo.lines.includes('STARTTLS'), 'no STARTTLS without a certificate')

  // Lines that start with dots (one of them a lone dot), 8-bit bytes, a NUL, a bare LF and
  // trailing spaces: the archive must get exactly these bytes.
  const message = Buffer.concat([
    Buffer.from('.leading dot on the first line\r\nFrom: Sender <Sender@Example.Test>\r\nTo: to@example.test\r\nCc: cc@example.test\r\nSubject: exact\r\n\r\n', 'latin1'),
    Buffer.from('..two dots\r\n.\r\n. dot space\r\nbare\nLF\r\ntrailing spaces   \r\n', 'latin1'),
    Buffer.from([0xc3, 0xa9, 0xe2, 0x82, 0xac, 0xff, 0x80, 0x00, 0x41, 0x0d, 0x0a]),
    Buffer.from('last line\r\n', 'latin1'),
  ])
  const reply = await transaction(client, 'Sender@Example.Test', ['To@Example.Test', 'cc@example.test', 'Hidden.Bcc@Example.Test'], message)
  const id = sha256(message)
  t.equal(reply.last, `250 2.0.0 Ok: archived ${id}`, 'archive id (SHA-256 of the exact bytes) in the reply')
  t.equal(pipeline.submissions.length, 1)
  const submission = pipeline.submissions[0]!
  t.ok(submission.raw.equals(message), 'raw bytes identical to what the client meant to send')
  t.match(submission.delivery, {
    source: 'smtp',
    sourceName: `127.0.0.1:${port}`,
    envelopeFrom: 'Sender@Example.Test',
    envelopeTo: ['to@example.test', 'cc@example.test', 'hidden.bcc@example.test'],
    envelopeBcc: [],
    remoteAddress: '127.0.0.1',
    journalEnvelopeText: null,
  })
  t.ok(Math.abs(submission.delivery.receivedAtMs - Date.now()) < 60_000, 'receivedAtMs is a wall-clock time')

  // A second message on the same connection, null sender, empty body.
  const second = await transaction(client, '', [archiveRecipient], Buffer.alloc(0))
  t.match(second.last, /^250 2\.0\.0 Ok: archived [0-9a-f]{64}$/)
  t.equal(pipeline.submissions[1]?.delivery.envelopeFrom, null, 'null reverse-path → envelopeFrom null')
  t.equal(pipeline.submissions[1]?.raw.length, 0)
  t.equal((await client.command('QUIT')).code, 221)
  await client.closed

  t.match(source.stats(), { sessionsTotal: 1, messagesAccepted: 2, bytesAccepted: message.length, bufferedBytes: 0, messagesInFlight: 0 })
  const logged = JSON.stringify(logger.records)
  t.notMatch(logged, /two dots|leading dot|exact/, 'message bodies and subjects are never logged')
  t.match(logged, new RegExp(id), 'the archive id is logged')

  // PIPELINING (RFC 2920), as mail servers send: MAIL, RCPT and DATA in one packet; the
  // replies (corked into one write by the server) come back complete and in order.
  const { client: pipelining } = await greeted(port)
  pipelining.write(`MAIL FROM:<p@example.test>\r\nRCPT TO:<${archiveRecipient}>\r\nDATA\r\n`)
  const pipelined = [await pipelining.readReply(), await pipelining.readReply(), await pipelining.readReply()]
  t.same(
    pipelined.map((entry) => entry.code),
    [250, 250, 354],
    'pipelined replies in order',
  )
  pipelining.write(dotStuff(Buffer.from('Subject: pipelined\r\n\r\nbody\r\n', 'latin1')))
  t.match((await pipelining.readReply()).last, /^250 2\.0\.0 Ok: archived [0-9a-f]{64}$/, 'and the message is archived')
  t.equal((await pipelining.command('QUIT')).code, 221)
  await pipelining.closed
})

t.test('greeting: immediate by default, the library pause when disabled', async (t) => {
  const timeGreeting = async (port: number): Promise<number> => {
    const startedMs = performance.now()
    const client = await RawSmtpClient.open(port)
    const greeting = await client.readReply()
    const elapsedMs = performance.now() - startedMs
    t.match(greeting.last, /^220 archive\.mailkeep\.test ESMTP mailkeep archive$/)
    client.end()
    return elapsedMs
  }
  const fast = await startSource(t)
  const fastest = Math.min(await timeGreeting(fast.port), await timeGreeting(fast.port), await timeGreeting(fast.port))
  t.ok(fastest < 100, `greeting without the 100 ms pause (fastest of 3: ${fastest.toFixed(1)} ms)`)
  const slow = await startSource(t, { immediateGreeting: false })
  const slowest = await timeGreeting(slow.port)
  t.ok(slowest >= 99, `library behaviour keeps its pause (${slowest.toFixed(1)} ms)`)

  // A client that talks before the greeting is still refused by smtp-server; with the
  // immediate greeting that window is just shorter.
  const early = await RawSmtpClient.open(slow.port)
  early.write('EHLO early.example.test\r\n')
  const refusal = await early.readReply()
  t.match(refusal.last, /^421 .*You talk too soon/)
  await early.closed
})

t.test('relay policy: archive recipient from an untrusted client, everything else 550 5.7.1', async (t) => {
  const { port, pipeline, source } = await startSource(t, { trustedNetworks: ['10.0.0.0/8'] })
  const { client } = await greeted(port)
  t.equal((await client.command('MAIL FROM:<someone@outside.example>')).code, 250)
  const denied = await client.command('RCPT TO:<victim@elsewhere.example>')
  t.match(denied.last, /^550 5\.7\.1 Relay access denied/, 'other recipient from an untrusted network refused')
  const accepted = await client.command('RCPT TO:<JOURNAL@archive.example>')
  t.match(accepted.last, /^250 2\.1\.5 /, 'archive recipient accepted (case-insensitive)')
  t.equal((await client.command('DATA')).code, 354)
  const message = simpleMessage('policy')
  client.write(dotStuff(message))
  t.match((await client.readReply()).last, /^250 2\.0\.0 Ok: archived /)
  t.same(pipeline.submissions[0]?.delivery.envelopeTo, ['journal@archive.example'], 'only the accepted recipient is in the envelope')
  t.equal(source.stats().recipientsRefused.RELAY_DENIED, 1)
  client.end()
})

t.test('limits: size (552 5.3.4), recipients (452 4.5.3), buffer budget (452 4.3.1)', async (t) => {
  t.test('size', async (t) => {
    const { port, pipeline, source } = await startSource(t, { sizeBytesMax: 2_048 })
    const { client, ehlo } = await greeted(port)
    t.ok(ehlo.lines.includes('SIZE 2048'))
    const declared = await client.command('MAIL FROM:<a@example.test> SIZE=4096')
    t.match(declared.last, /^552 5\.3\.4 /, 'a declared SIZE over the limit is refused at MAIL')
    const header = 'Subject: size\r\n\r\n'
    const oversize = Buffer.from(header + 'y'.repeat(5_000) + '\r\n', 'latin1')
    const refused = await transaction(client, 'a@example.test', [archiveRecipient], oversize)
    t.match(refused.last, /^552 5\.3\.4 Message exceeds the size limit of 2048 bytes/, 'oversize DATA refused')
    t.equal(pipeline.calls, 0, 'nothing submitted')
    const exact = Buffer.from(header + 'z'.repeat(2_048 - header.length - 2) + '\r\n', 'latin1')
    t.equal(exact.length, 2_048)
    t.match((await transaction(client, 'a@example.test', [archiveRecipient], exact)).last, /^250 /, 'exactly sizeBytesMax is accepted, same connection')
    t.match(source.stats(), { messagesRefused: { MESSAGE_TOO_LARGE: 1 }, messagesAccepted: 1, bufferedBytes: 0 })
    client.end()
  })

  t.test('recipients', async (t) => {
    const { port, pipeline, source } = await startSource(t, { trustedNetworks: ['127.0.0.0/8'], recipientsMax: 3 })
    const { client } = await greeted(port)
    await client.command('MAIL FROM:<a@example.test>')
    for (const recipient of ['r1@example.test', 'r2@example.test', 'r3@example.test', 'R1@example.test']) {
      t.equal((await client.command(`RCPT TO:<${recipient}>`)).code, 250, `${recipient} accepted (a repeat does not count)`)
    }
    const fourth = await client.command('RCPT TO:<r4@example.test>')
    t.match(fourth.last, /^452 4\.5\.3 Too many recipients/)
    t.equal((await client.command('DATA')).code, 354, 'the transaction goes on with the accepted recipients')
    client.write(dotStuff(simpleMessage('recipients')))
    t.equal((await client.readReply()).code, 250)
    t.same(pipeline.submissions[0]?.delivery.envelopeTo, ['r1@example.test', 'r2@example.test', 'r3@example.test'])
    t.equal(source.stats().recipientsRefused.TOO_MANY_RECIPIENTS, 1)
    // The count starts over with the next transaction.
    await client.command('MAIL FROM:<a@example.test>')
    for (const recipient of ['s1@example.test', 's2@example.test', 's3@example.test']) t.equal((await client.command(`RCPT TO:<${recipient}>`)).code, 250)
    client.end()
  })

  t.test('buffer budget across sessions', async (t) => {
    const { port, pipeline, source } = await startSource(t, { sizeBytesMax: 8_192, bufferedBytesMax: 8_192 }, { delayMs: 400 })
    const first = (await greeted(port)).client
    const second = (await greeted(port)).client
    const firstReply = transaction(first, 'a@example.test', [archiveRecipient], simpleMessage('first', 6_000))
    await waitUntil(() => pipeline.calls === 1, { what: 'the first submit', observe: () => pipeline.calls })
    const secondReply = await transaction(second, 'a@example.test', [archiveRecipient], simpleMessage('second', 6_000))
    t.match(secondReply.last, /^452 4\.3\.1 Insufficient system resources/, 'a message that does not fit the budget is deferred')
    t.equal((await firstReply).code, 250, 'the first message is archived')
    t.equal(pipeline.submissions.length, 1)
    t.match(source.stats(), { messagesRefused: { BUFFER_FULL: 1 }, bufferedBytes: 0 })
    t.equal((await transaction(second, 'a@example.test', [archiveRecipient], simpleMessage('retry', 6_000))).code, 250, 'the retry fits once the first is archived')
    first.end()
    second.end()
  })
})

t.test('durability: 250 only after submit resolved; store errors become 4xx/5xx', async (t) => {
  const { port, pipeline, source } = await startSource(t, {}, { delayMs: 300 })
  const { client } = await greeted(port)
  await client.command('MAIL FROM:<a@example.test>')
  await client.command(`RCPT TO:<${archiveRecipient}>`)
  await client.command('DATA')
  const sentAtMs = performance.now()
  client.write(dotStuff(simpleMessage('durable')))
  const reply = await client.readReply()
  t.equal(reply.code, 250)
  const resolvedAtMs = pipeline.submissions[0]!.resolvedAtMs
  t.ok(reply.atMs >= resolvedAtMs, 'the reply came after submit resolved')
  t.ok(reply.atMs - sentAtMs >= 290, `the reply waited for the archive (${(reply.atMs - sentAtMs).toFixed(0)} ms)`)
  pipeline.knobs.delayMs = 0

  const failures: [Error, RegExp, string][] = [
    [new ArchiveError('STORE_FULL', 'free space below the minimum'), /^452 4\.3\.1 /, 'STORE_FULL'],
    [new ArchiveError('STORE_UNAVAILABLE', 'store closed'), /^451 4\.3\.0 /, 'ARCHIVE_UNAVAILABLE'],
    [new ArchiveError('STORE_CORRUPT', 'checksum'), /^554 5\.6\.0 /, 'MESSAGE_REFUSED'],
    [new ArchiveError('MESSAGE_TOO_LARGE', 'store limit'), /^552 5\.3\.4 /, 'MESSAGE_TOO_LARGE'],
    [new Error('unexpected bug'), /^451 4\.3\.0 /, 'ARCHIVE_UNAVAILABLE'],
  ]
  for (const [error, expected, code] of failures) {
    pipeline.knobs.failWith = error
    const refused = await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage(`fail ${code}`))
    t.match(refused.last, expected, `${error.message} → ${refused.last}`)
  }
  t.equal(pipeline.submissions.length, 1, 'no failed message reported as archived')
  t.match(source.stats(), {
    messagesAccepted: 1,
    messagesRefused: { STORE_FULL: 1, ARCHIVE_UNAVAILABLE: 2, MESSAGE_REFUSED: 1, MESSAGE_TOO_LARGE: 1 },
    bufferedBytes: 0,
  })
  t.match(source.healthcheck().detail, /last archive failure ARCHIVE_UNAVAILABLE/)

  pipeline.knobs.failWith = null
  const retry = await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('fail STORE_FULL'))
  t.match(retry.last, /^250 2\.0\.0 Ok: archived /, 'the sender retry succeeds once the store recovers')
  client.end()
})

t.test('a read-only archive (volume full) is refused at MAIL FROM with 452 4.3.1, and taken again once it is not', async (t) => {
  const pipeline = createFakePipeline()
  let readOnly: { reason: string } | null = { reason: 'the data volume has 1000 bytes free, below the minimum of 268435456 bytes' }
  let asked = 0
  const archiveReadOnly = async () => {
    asked++
    return readOnly
  }
  const source = createSmtpSource({ logger: createMemoryLogger(), clock: systemClock, pipeline, archiveReadOnly }, baseOptions())
  await source.start()
  t.teardown(() => source.stop())
  const { client } = await greeted(source.address().port)
  const mail = await client.command('MAIL FROM:<a@example.test>')
  t.match(mail.last, /^452 4\.3\.1 Insufficient system storage, try again later/, 'refused before the message is sent')
  t.equal(pipeline.calls, 0)
  t.match(source.stats(), { messagesRefused: { STORE_FULL: 1 } })

  readOnly = null
  const accepted = await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('room again'))
  t.match(accepted.last, /^250 2\.0\.0 Ok: archived /, 'the same session is served once the archive takes mail')
  t.equal(asked, 2, 'asked once per MAIL FROM')
  client.end()
})

t.test('a hung archive gets 451 4.3.0 after submitTimeoutMs', async (t) => {
  const { port, pipeline } = await startSource(t, { submitTimeoutMs: 300 }, { hang: true })
  const { client } = await greeted(port)
  const reply = await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('hung'))
  t.match(reply.last, /^451 4\.3\.0 Archive did not answer in time/)
  t.equal(pipeline.calls, 1)
  client.end()
})

t.test('connection limit: 421 4.7.0 over connectionsMax', async (t) => {
  const { port, source } = await startSource(t, { connectionsMax: 2 })
  const one = (await greeted(port)).client
  const two = (await greeted(port)).client
  const three = await RawSmtpClient.open(port)
  const refusal = await three.readReply()
  t.match(refusal.last, /^421 4\.7\.0 Too many connections/)
  await three.closed
  t.equal(source.stats().sessionsRefused.TOO_MANY_CONNECTIONS, 1)
  one.end()
  await one.closed
  await waitUntil(() => source.stats().sessionsActive === 1, { what: 'one active session', observe: () => source.stats() })
  const four = await RawSmtpClient.open(port)
  t.equal((await four.readReply()).code, 220, 'a slot freed by a closed session is usable again')
  two.end()
  four.end()
})

t.test('hostile and broken clients never crash the service', async (t) => {
  const { port, pipeline, source } = await startSource(t, { commandLineBytesMax: 512 })

  t.test('garbage and bad sequences', async (t) => {
    const { client } = await greeted(port)
    t.match((await client.command('\u0001\u00ff\u0000garbage')).last, /^500 5\.5\.2 /, 'binary garbage → 500 5.5.2')
    t.match((await client.command('AUTH PLAIN AGFAYQ==')).last, /^500 5\.5\.2 /, 'AUTH is disabled')
    t.match((await client.command('XCLIENT ADDR=10.0.0.1')).last, /^500 5\.5\.2 /, 'XCLIENT is disabled')
    t.match((await client.command('RCPT TO:<x@example.test>')).last, /^503 5\.5\.1 /, 'RCPT before MAIL')
    t.match((await client.command('DATA')).last, /^503 5\.5\.1 /, 'DATA before RCPT')
    t.match((await client.command('MAIL FROM:<not an address')).last, /^501 5\.1\.7 /, 'bad sender syntax')
    t.match((await client.command('HELO')).last, /^501 /, 'HELO without a name')
    t.match((await client.command('NOOP')).last, /^250 /, 'session still usable')
    client.end()
  })

  t.test('MAIL before EHLO', async (t) => {
    const client = await RawSmtpClient.open(port)
    await client.readReply()
    t.match((await client.command('MAIL FROM:<a@example.test>')).last, /^503 5\.5\.1 /)
    client.end()
  })

  t.test('over-long command line', async (t) => {
    const { client } = await greeted(port)
    client.write('MAIL FROM:<' + 'a'.repeat(2_000) + '@example.test>\r\n')
    t.match((await client.readReply()).last, /^421 4\.4\.2 Error: Command line too long/)
    await client.closed
  })

  t.test('too many unrecognized commands', async (t) => {
    const { client } = await greeted(port)
    let last: RawReply | null = null
    for (let index = 0; index < 10; index++) last = await client.command(`BOGUS${index}`)
    t.match(last?.last, /^421 .*too many unrecognized commands/)
    await client.closed
  })

  t.test('HTTP request to the SMTP port', async (t) => {
    const client = await RawSmtpClient.open(port)
    await client.readReply()
    t.match((await client.command('GET / HTTP/1.1')).last, /^421 .*HTTP requests not allowed/)
    await client.closed
  })

  t.test('abrupt disconnect mid-DATA submits nothing', async (t) => {
    const before = pipeline.calls
    const { client } = await greeted(port)
    await client.command('MAIL FROM:<a@example.test>')
    await client.command(`RCPT TO:<${archiveRecipient}>`)
    await client.command('DATA')
    client.write('Subject: cut\r\n\r\nhalf a message')
    await waitUntil(() => source.stats().bufferedBytes > 0, { what: 'the half message buffered', observe: () => source.stats() })
    client.destroy()
    await waitUntil(() => source.stats().messagesAborted === 1, { what: 'the message counted as aborted', observe: () => source.stats() })
    t.equal(pipeline.calls, before, 'nothing submitted')
    t.match(source.stats(), { bufferedBytes: 0, messagesInFlight: 0 })
  })

  t.test('disconnect without QUIT, half-sent command', async (t) => {
    const before = pipeline.calls
    const { client } = await greeted(port)
    client.write('MAIL FROM:<a@exa')
    client.end()
    await client.closed
    t.equal(pipeline.calls, before, 'nothing submitted')
    t.ok(source.healthcheck().ok, 'still listening')
  })

  t.test('idle client: 421 after socketTimeoutMs', async (t) => {
    const quick = await startSource(t, { socketTimeoutMs: 200 })
    const { client } = await greeted(quick.port)
    const startedMs = performance.now()
    const reply = await client.readReply(5_000)
    t.match(reply.last, /^421 4\.4\.2 Timeout - closing connection/)
    t.ok(performance.now() - startedMs >= 150, 'not before the timeout')
    await client.closed
  })

  t.test('still serving after all of it', async (t) => {
    const { client } = await greeted(port)
    t.equal((await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('after abuse'))).code, 250)
    client.end()
    t.ok(source.healthcheck().ok)
  })
})

t.test('stop: in-flight DATA finishes, idle sessions get 421 4.3.2, new connections refused', async (t) => {
  const { port, pipeline, source } = await startSource(t, {}, { delayMs: 400 })
  const busy = (await greeted(port)).client
  const idle = (await greeted(port)).client
  const pending = transaction(busy, 'a@example.test', [archiveRecipient], simpleMessage('in flight'))
  await waitUntil(() => pipeline.calls === 1, { what: 'the first submit', observe: () => pipeline.calls })
  const stopped = source.stop()
  t.match((await idle.readReply()).last, /^421 4\.3\.2 Service shutting down/, 'idle session told at once')
  t.equal((await pending).code, 250, 'the message in DATA got its 250')
  await stopped
  t.equal(pipeline.submissions.length, 1)
  await t.rejects(RawSmtpClient.open(port), { code: 'ECONNREFUSED' })

  t.test('past stopTimeoutMs the connection is closed with 421', async (t) => {
    const hung = await startSource(t, { stopTimeoutMs: 300 }, { hang: true })
    const { client } = await greeted(hung.port)
    const reply = transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('never'))
    await waitUntil(() => hung.pipeline.calls === 1, { what: 'the submit to the hung pipeline', observe: () => hung.pipeline.calls })
    const startedMs = performance.now()
    await hung.source.stop()
    const tookMs = performance.now() - startedMs
    t.ok(tookMs < 300 + 2_000 + 500, `stop bounded by stopTimeoutMs plus the close grace (${tookMs.toFixed(0)} ms)`)
    t.match((await reply).last, /^421 4\.3\.2 /, 'the sender is told to retry')
    t.equal(hung.source.stats().messagesAccepted, 0)
  })
})

t.test('nodemailer: one-shot connections and a pooled connection, BCC in the envelope', async (t) => {
  const { port, pipeline, source } = await startSource(t, { trustedNetworks: ['127.0.0.0/8'] })
  const single = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, ignoreTLS: true })
  for (let index = 0; index < 3; index++) {
    const info = await single.sendMail({
      from: 'sender@example.test',
      to: 'to@example.test',
      cc: 'cc@example.test',
      bcc: 'secret.bcc@example.test',
      subject: `single ${index}`,
      text: `message ${index}\n.leading dot line\n`,
    })
    const id = /archived ([0-9a-f]{64})/.exec(info.response)?.[1]
    t.ok(id && pipeline.messages.has(id), `response carries the archive id (${info.response})`)
    const stored = pipeline.messages.get(id!)!
    t.equal(sha256(stored.raw), id, 'id is the SHA-256 of the stored bytes')
    t.same(stored.deliveries[0]?.envelopeTo, ['to@example.test', 'cc@example.test', 'secret.bcc@example.test'], 'BCC recipient recorded from the envelope')
    t.notMatch(stored.raw.toString('latin1'), /secret\.bcc/, 'the BCC address is not in the message itself')
    t.match(stored.raw.toString('latin1'), /\r\n\.leading dot line\r\n/, 'dot-stuffing undone')
  }
  t.equal(source.stats().sessionsTotal, 3, 'one connection per message')

  const pooled = nodemailer.createTransport({ pool: true, maxConnections: 1, maxMessages: 100, host: '127.0.0.1', port, secure: false, ignoreTLS: true })
  t.teardown(() => pooled.close())
  const infos = await Promise.all(
    Array.from({ length: 5 }, (_, index) => pooled.sendMail({ from: 'pool@example.test', to: 'to@example.test', subject: `pooled ${index}`, text: `pooled body ${index}` })),
  )
  for (const info of infos) t.match(info.response, /^250 2\.0\.0 Ok: archived [0-9a-f]{64}$/)
  t.equal(pipeline.submissions.length, 8)
  t.equal(source.stats().sessionsTotal, 4, 'five messages over one pooled connection')
  pooled.close()
})

t.test('STARTTLS with a real TLS handshake', async (t) => {
  const certificate = createSelfSignedCertificate()
  const { port, pipeline } = await startSource(t, { starttls: true }, {}, certificate)

  const transport = nodemailer.createTransport({ host: '127.0.0.1', port, secure: false, requireTLS: true, tls: { ca: [certificate.cert] } })
  const info = await transport.sendMail({ from: 'tls@example.test', to: archiveRecipient, subject: 'over tls', text: 'secret body' })
  t.match(info.response, /^250 2\.0\.0 Ok: archived /, 'nodemailer (requireTLS, certificate verified against the test CA) delivered')
  t.equal(pipeline.submissions.length, 1)

  const { client, ehlo } = await greeted(port)
  t.ok(ehlo.lines.includes('STARTTLS'), 'STARTTLS advertised')
  t.match((await client.command('STARTTLS')).last, /^220 /)
  const secure = tlsConnect({ socket: client.socket, ca: [certificate.cert], servername: 'localhost' })
  await new Promise<void>((resolve, reject) => {
    secure.once('secureConnect', resolve)
    secure.once('error', reject)
  })
  t.ok(secure.authorized, 'certificate verified')
  t.match(secure.getProtocol(), /^TLSv1\.[23]$/, 'TLS 1.2 or newer')
  const lines = await new Promise<string>((resolve) => {
    let text = ''
    secure.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1')
      if (/^250 /m.test(text)) resolve(text)
    })
    secure.write('EHLO client.example.test\r\n')
  })
  t.notMatch(lines, /STARTTLS/, 'not offered again inside TLS')
  secure.destroy()

  const withoutCertificate = await startSource(t, { starttls: true })
  const plain = await greeted(withoutCertificate.port)
  t.notOk(plain.ehlo.lines.includes('STARTTLS'), 'starttls without a certificate: not offered')
  t.match(JSON.stringify(withoutCertificate.logger.records), /STARTTLS is configured but no certificate/)
  plain.client.end()
  const disabled = await startSource(t, { starttls: false }, {}, certificate)
  const noTls = await greeted(disabled.port)
  t.notOk(noTls.ehlo.lines.includes('STARTTLS'), 'starttls false: not offered even with a certificate')
  noTls.client.end()
})

const swaksProbe = spawnSync('swaks', ['--version'])
const swaksMissing = swaksProbe.error ? `swaks is not installed (${swaksProbe.error.message}); CI installs it with apt-get install swaks` : false

t.test('swaks', { skip: swaksMissing }, async (t) => {
  const certificate = createSelfSignedCertificate()
  const { port, pipeline } = await startSource(t, { starttls: true }, {}, certificate)
  const runSwaks = (args: string[]): Promise<{ code: number | null; output: string }> =>
    new Promise((resolve) => {
      const child = spawn('swaks', ['--server', `127.0.0.1:${port}`, '--helo', 'swaks.example.test', '--timeout', '10', ...args])
      let output = ''
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()))
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()))
      child.on('close', (code) => resolve({ code, output }))
    })
  const body = 'Subject: from swaks\n\n.starts with a dot\nplain line\n'
  const plain = await runSwaks(['--from', 'swaks@example.test', '--to', archiveRecipient, '--data', body])
  t.equal(plain.code, 0, 'swaks exit 0')
  t.match(plain.output, /<- +250 2\.0\.0 Ok: archived [0-9a-f]{64}/)
  const stored = pipeline.submissions[0]?.raw.toString('latin1') ?? ''
  t.match(stored, /\r\n\.starts with a dot\r\nplain line\r\n/, 'swaks lines arrive CRLF-terminated, dot-stuffing undone')

  const tls = await runSwaks(['--tls', '--from', 'swaks@example.test', '--to', archiveRecipient, '--data', 'Subject: tls\n\nover tls\n'])
  t.equal(tls.code, 0, 'swaks --tls exit 0')
  t.match(tls.output, /TLS started/)
  t.match(tls.output, /<~ +250 2\.0\.0 Ok: archived/)

  const relay = await runSwaks(['--from', 'swaks@example.test', '--to', 'victim@elsewhere.example', '--data', 'Subject: relay\n\nno\n'])
  t.not(relay.code, 0, 'swaks reports the refusal')
  t.match(relay.output, /550 5\.7\.1 Relay access denied/)
  t.equal(pipeline.submissions.length, 2)
})
