import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { validateConfig } from '../../../../config/load.js'
import { resolveSmtpOptions, validateSmtpOptions } from '../../../../firmware/sources/smtp/index.js'
import { clientAddressKey, decideAdmission, untrustedConnectionsMax, UntrustedConnections } from '../../../../firmware/sources/smtp/connection-admission.js'
import { smtpErrorForDeadline } from '../../../../firmware/sources/smtp/session-deadlines.js'
import {
  checkDeadlines,
  dataRateDeadlineMs,
  noteDataEnd,
  noteDataStart,
  noteMailFrom,
  noteReply,
  openTimeline,
  type SessionDeadlineLimits,
} from '../../../../firmware/sources/smtp/session-timeline.js'
import { formatReply } from '../../../../firmware/sources/smtp/errors.js'
import { loopbackAddresses, startTrickler, type TricklerOutcome } from '../../../helpers/slow-smtp-client.js'
import { archiveRecipient, baseOptions, greeted, simpleMessage, startSource, transaction } from './fixtures/smtp-source-harness.js'
import { RawSmtpClient } from './fixtures/smtp-test-kit.js'
import { waitUntil } from '../../../helpers/wait.js'

/*
 * Issue 20, finding 2: smtp-server's idle timeout restarts on every byte, so a client
 * sending one byte every few seconds was never closed, and enough of them kept every
 * sender out. These tests hold the listener to absolute deadlines per phase and to the
 * admission limits, with real sockets from other loopback addresses.
 */

/** The schema's defaults, checked below. */
const limits: SessionDeadlineLimits = {
  mailFromTimeoutMs: 60_000,
  commandTimeoutMs: 30_000,
  dataTimeoutMs: 600_000,
  dataBytesPerSecondMin: 4_096,
  dataRateGraceMs: 10_000,
  sessionTimeoutMs: 1_800_000,
}

t.test('pure: deadlines per phase', async (t) => {
  const timeline = openTimeline(1_000)
  t.same(checkDeadlines(timeline, 1_000, limits), { expired: null, checkAtMs: 31_000 }, 'after the greeting the command deadline comes first')
  t.same(checkDeadlines(timeline, 31_000, limits), { expired: 'COMMAND_TIMEOUT', deadlineAtMs: 31_000 }, 'a deadline passes when the clock reaches it')
  // Commands keep coming (each reply restarts the command clock), but no MAIL FROM.
  for (let at = 20_000; at <= 60_000; at += 20_000) noteReply(timeline, at)
  t.same(checkDeadlines(timeline, 60_999, limits), { expired: null, checkAtMs: 61_000 })
  t.same(checkDeadlines(timeline, 61_000, limits), { expired: 'MAIL_FROM_TIMEOUT', deadlineAtMs: 61_000 }, 'replies do not extend the MAIL FROM deadline')

  noteMailFrom(timeline)
  t.equal(timeline.phase, 'envelope')
  t.same(checkDeadlines(timeline, 61_000, limits), { expired: null, checkAtMs: 90_000 }, 'in the envelope only the command deadline runs')

  noteDataStart(timeline, 70_000)
  t.same(checkDeadlines(timeline, 70_000, limits), { expired: null, checkAtMs: 80_000 }, 'the rate is first checked when the grace ends')
  t.same(checkDeadlines(timeline, 80_000, limits), { expired: 'DATA_TOO_SLOW', deadlineAtMs: 80_000 }, 'nothing in the grace period: too slow')
  timeline.dataBytes = 4_096 * 15
  t.equal(dataRateDeadlineMs(timeline, limits), 85_000, '15 s worth of bytes at the minimum rate')
  t.same(checkDeadlines(timeline, 84_999, limits), { expired: null, checkAtMs: 85_000 })
  t.same(checkDeadlines(timeline, 85_000, limits).expired, 'DATA_TOO_SLOW')
  timeline.dataBytes = 1_000_000_000
  t.same(checkDeadlines(timeline, 670_000, limits), { expired: 'DATA_TIMEOUT', deadlineAtMs: 670_000 }, 'fast enough, but DATA as a whole is bounded')
  t.equal(dataRateDeadlineMs(timeline, { ...limits, dataBytesPerSecondMin: 0 }), Number.POSITIVE_INFINITY, '0 turns the rate check off')

  noteDataEnd(timeline)
  t.same(checkDeadlines(timeline, 5_000_000, limits), { expired: null, checkAtMs: null }, 'while the message is archived no deadline runs, not even the session')
  noteReply(timeline, 5_000_000)
  t.equal(timeline.phase, 'mail', 'the reply to the message ends the transaction')
  t.same(checkDeadlines(timeline, 5_000_000, limits), { expired: 'SESSION_TIMEOUT', deadlineAtMs: 1_801_000 }, 'then the session deadline, already passed, closes it')

  const busy = openTimeline(0)
  noteMailFrom(busy)
  noteDataStart(busy, 1_000)
  busy.dataBytes = 1_000_000_000
  t.same(checkDeadlines(busy, 1_800_000, { ...limits, dataTimeoutMs: 3_600_000 }), { expired: 'SESSION_TIMEOUT', deadlineAtMs: 1_800_000 }, 'the session deadline also cuts DATA')
  const reused = openTimeline(0)
  noteMailFrom(reused)
  noteDataStart(reused, 100)
  noteDataEnd(reused)
  noteReply(reused, 2_000)
  t.same(checkDeadlines(reused, 2_000, limits), { expired: null, checkAtMs: 32_000 }, 'the next MAIL FROM is owed from the end of the transaction')
  t.same(checkDeadlines(reused, 62_000, { ...limits, commandTimeoutMs: 120_000 }), { expired: 'MAIL_FROM_TIMEOUT', deadlineAtMs: 62_000 })
})

t.test('pure: admission, address keys, replies, options', async (t) => {
  const admission = { connectionsMax: 10, trustedConnectionsReserved: 3, untrustedConnectionsPerAddressMax: 2 }
  t.equal(untrustedConnectionsMax(admission), 7)
  const request = { trusted: false, connectionsOpen: 0, untrustedOpen: 0, untrustedOpenFromAddress: 0 }
  t.same(decideAdmission(request, admission), { admitted: true })
  t.same(decideAdmission({ ...request, untrustedOpenFromAddress: 2 }, admission), {
    admitted: false,
    code: 'TOO_MANY_CONNECTIONS_FROM_ADDRESS',
    limit: 'untrustedConnectionsPerAddressMax',
    limitValue: 2,
  })
  t.same(decideAdmission({ ...request, connectionsOpen: 7, untrustedOpen: 7 }, admission), { admitted: false, code: 'TOO_MANY_CONNECTIONS', limit: 'untrustedConnectionsMax', limitValue: 7 })
  t.same(
    decideAdmission({ ...request, trusted: true, connectionsOpen: 9, untrustedOpen: 7, untrustedOpenFromAddress: 5 }, admission),
    { admitted: true },
    'a trusted client takes a kept slot',
  )
  t.same(decideAdmission({ ...request, trusted: true, connectionsOpen: 10 }, admission), { admitted: false, code: 'TOO_MANY_CONNECTIONS', limit: 'connectionsMax', limitValue: 10 })
  t.same(decideAdmission(request, { ...admission, trustedConnectionsReserved: 10 }).admitted, false, 'all slots kept: no untrusted client')

  t.equal(clientAddressKey('192.0.2.7'), '192.0.2.7')
  t.equal(clientAddressKey('::ffff:192.0.2.7'), '192.0.2.7', 'IPv4-mapped counts as the IPv4 address')
  t.equal(clientAddressKey('2001:db8:0:1:aaaa::1'), '2001:db8:0:1::/64')
  t.equal(clientAddressKey('2001:DB8:0:1:ffff:ffff:ffff:ffff'), '2001:db8:0:1::/64', 'one /64, one key')
  t.equal(clientAddressKey('::1'), '0:0:0:0::/64')
  t.not(clientAddressKey('2001:db8:0:2::1'), clientAddressKey('2001:db8:0:1::1'))

  const open = new UntrustedConnections()
  open.add('a')
  open.add('a')
  open.add('b')
  t.same([open.total, open.from('a'), open.from('b'), open.addresses], [3, 2, 1, 2])
  open.remove('a')
  open.remove('b')
  open.remove('b')
  t.same([open.total, open.from('a'), open.from('b'), open.addresses], [1, 1, 0, 1], 'removing what is not there changes nothing')

  t.equal(formatReply(smtpErrorForDeadline('MAIL_FROM_TIMEOUT', limits, false).reply!), '421 4.4.2 No MAIL FROM within 60 s, closing connection')
  t.equal(formatReply(smtpErrorForDeadline('COMMAND_TIMEOUT', { ...limits, commandTimeoutMs: 1_500 }, false).reply!), '421 4.4.2 No complete command within 1.5 s, closing connection')
  t.equal(formatReply(smtpErrorForDeadline('DATA_TOO_SLOW', limits, true).reply!), '421 4.4.2 Message data slower than 4096 bytes/s, closing connection; the message was not archived')
  t.equal(formatReply(smtpErrorForDeadline('DATA_TIMEOUT', limits, true).reply!), '421 4.4.2 Message not complete within 600 s, closing connection; the message was not archived')
  t.equal(formatReply(smtpErrorForDeadline('SESSION_TIMEOUT', limits, false).reply!), '421 4.4.2 Session longer than 1800 s, closing connection')
  t.equal(smtpErrorForDeadline('SESSION_TIMEOUT', limits, false).retryable, true, 'a 421 tells the sender to retry')

  const resolved = resolveSmtpOptions(baseOptions())
  t.match(
    validateSmtpOptions({ ...resolved, trustedConnectionsReserved: 30, commandTimeoutMs: 0, dataBytesPerSecondMin: -1 }).join('\n'),
    /smtp\.commandTimeoutMs: must be a positive integer \(got 0\)[\s\S]*smtp\.dataBytesPerSecondMin: must be an integer of 0 or more \(got -1\)[\s\S]*smtp\.trustedConnectionsReserved: must be at most connectionsMax 20 \(got 30\)/,
  )
  const config = validateConfig({})
  t.match(config.smtp, { ...limits, untrustedConnectionsPerAddressMax: 10, trustedConnectionsReserved: 20 }, 'schema defaults (the limits above)')
  t.throws(() => validateConfig({ smtp: { connectionsMax: 10, trustedConnectionsReserved: 11 } }), { message: /problem/ }, 'config check refuses more kept slots than slots')
})

/** Milliseconds of slack for the deadlines below: timers, the event loop, a loaded CI machine. */
const slackMs = 700

t.test('each phase deadline closes a trickler with its 421', { timeout: 20_000 }, async (t) => {
  const quick = { mailFromTimeoutMs: 2_500, commandTimeoutMs: 1_000, dataTimeoutMs: 2_000, dataBytesPerSecondMin: 50, dataRateGraceMs: 1_000, sessionTimeoutMs: 20_000 }
  const { port, pipeline, source, logger } = await startSource(t, { ...quick, socketTimeoutMs: 10_000 })
  const expectClose = (outcome: TricklerOutcome, pattern: RegExp, afterMs: number, what: string): void => {
    t.match(outcome.lastLine, pattern, `${what}: ${outcome.lastLine}`)
    const closedAfterMs = outcome.closedAfterMs ?? Number.NaN
    t.ok(closedAfterMs >= afterMs - 50 && closedAfterMs <= afterMs + slackMs, `${what}: closed after ${closedAfterMs.toFixed(0)} ms (deadline ${afterMs} ms), idle timeout 10 s`)
  }
  // Both trickle a byte every 200 ms: smtp-server's idle timeout (10 s here) would never fire.
  const [inCommand, inData] = await Promise.all([
    startTrickler({ port, localAddress: '127.0.0.2', mode: 'command', intervalMs: 200 }).outcome,
    startTrickler({ port, localAddress: '127.0.0.3', mode: 'data', intervalMs: 200, recipient: archiveRecipient }).outcome,
  ])
  expectClose(inCommand, /^421 4\.4\.2 No complete command within 1 s, closing connection$/, 1_000, 'a command line trickled byte by byte')
  t.ok(inCommand.trickledBytes >= 3, 'bytes kept coming until the close')
  // 5 bytes/s in DATA is under the 50 bytes/s minimum once the 1 s grace is over.
  expectClose(inData, /^421 4\.4\.2 Message data slower than 50 bytes\/s, closing connection; the message was not archived$/, 1_000, 'DATA trickled byte by byte')

  // Complete commands every 300 ms keep the command deadline at bay, not MAIL FROM's.
  const noop = await greeted(port, '127.0.0.4')
  const openedMs = performance.now()
  let last = ''
  while (performance.now() - openedMs < 5_000) {
    const reply = await noop.client.command('NOOP').catch(() => null)
    if (!reply) break
    last = reply.last
    if (reply.code !== 250) break
    await sleep(300)
  }
  t.match(last, /^421 4\.4\.2 No MAIL FROM within 2\.5 s, closing connection$/)
  t.ok(performance.now() - openedMs <= 2_500 + slackMs, 'NOOPs did not extend the MAIL FROM deadline')
  await noop.client.closed

  // DATA fast enough but never finished: the DATA deadline (2 s).
  const steady = await greeted(port, '127.0.0.5')
  await steady.client.command('MAIL FROM:<s@example.test>')
  await steady.client.command(`RCPT TO:<${archiveRecipient}>`)
  t.equal((await steady.client.command('DATA')).code, 354)
  const dataStartMs = performance.now()
  const pump = setInterval(() => steady.client.write('y'.repeat(200) + '\r\n'), 100)
  const cut = await steady.client.readReply(5_000)
  clearInterval(pump)
  t.match(cut.last, /^421 4\.4\.2 Message not complete within 2 s, closing connection; the message was not archived$/)
  t.ok(cut.atMs - dataStartMs <= 2_000 + slackMs && cut.atMs - dataStartMs >= 1_950, `DATA deadline after ${(cut.atMs - dataStartMs).toFixed(0)} ms`)
  await steady.client.closed

  await waitUntil(() => source.stats().sessionsActive === 0, { what: 'every session closed', observe: () => source.stats() })
  t.equal(pipeline.calls, 0, 'nothing cut off was submitted')
  t.match(source.stats(), {
    sessionsClosedByDeadline: { COMMAND_TIMEOUT: 1, DATA_TOO_SLOW: 1, MAIL_FROM_TIMEOUT: 1, DATA_TIMEOUT: 1, SESSION_TIMEOUT: 0 },
    messagesAborted: 2,
    messagesInFlight: 0,
    bufferedBytes: 0,
    sessionsUntrusted: 0,
  })
  const records = logger.records.filter((record) => record.msg === 'session closed: deadline passed')
  t.equal(records.length, 4, 'each close is logged')
  t.match(
    records.find((record) => record.deadline === 'DATA_TIMEOUT'),
    { level: 'info', remoteAddress: '127.0.0.5', trusted: false, phase: 'data', reply: /^421 4\.4\.2 / },
  )
  t.notMatch(JSON.stringify(logger.records), /yyyy|Subject: slow/, 'no message content in the log')

  // A client within the limits is not touched.
  const { client } = await greeted(port, '127.0.0.6')
  t.match((await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('in time'))).last, /^250 2\.0\.0 Ok: archived /)
  client.end()
})

t.test('after an event-loop stall, a command that arrived in time is read before its deadline is checked', { timeout: 10_000 }, async (t) => {
  const { port, source } = await startSource(t, { commandTimeoutMs: 300 })
  const { client } = await greeted(port)
  client.write('NOOP\r\n')
  // Block this process (the listener's event loop) well past the deadline, as a long
  // synchronous job would; the NOOP waits in the socket meanwhile.
  const blockedUntilMs = performance.now() + 800
  while (performance.now() < blockedUntilMs);
  t.match((await client.readReply()).last, /^250 /, 'the NOOP was answered, not cut off by the overdue timer')
  t.equal(source.stats().sessionsClosedByDeadline.COMMAND_TIMEOUT, 0)
  t.match((await client.readReply(2_000)).last, /^421 4\.4\.2 No complete command within 0\.3 s/, 'the deadline still runs from that reply')
  await client.closed
})

t.test('the session deadline waits for a message being archived, then closes', { timeout: 10_000 }, async (t) => {
  const { port, pipeline, source } = await startSource(t, { sessionTimeoutMs: 1_000 }, { delayMs: 1_500 })
  const { client } = await greeted(port)
  const startedMs = performance.now()
  const reply = await transaction(client, 'a@example.test', [archiveRecipient], simpleMessage('archived late'))
  t.match(reply.last, /^250 2\.0\.0 Ok: archived /, 'the 250 goes out though the session deadline passed during the write')
  t.ok(reply.atMs - startedMs >= 1_400, 'the write took longer than the session deadline')
  const closing = await client.readReply(2_000)
  t.match(closing.last, /^421 4\.4\.2 Session longer than 1 s, closing connection$/, 'and then the session is closed')
  t.ok(closing.atMs - reply.atMs < 200, 'at once')
  await client.closed
  t.equal(pipeline.submissions.length, 1)
  t.equal(source.stats().sessionsClosedByDeadline.SESSION_TIMEOUT, 1)
})

t.test('admission: per-address cap and slots kept for trusted networks', { timeout: 10_000 }, async (t) => {
  const { port, source, logger } = await startSource(t, {
    connectionsMax: 10,
    trustedConnectionsReserved: 3,
    untrustedConnectionsPerAddressMax: 3,
    trustedNetworks: ['127.0.0.1/32'],
  })
  const openFrom = async (localAddress: string): Promise<{ client: RawSmtpClient; greeting: string }> => {
    const client = await RawSmtpClient.open(port, '127.0.0.1', localAddress)
    return { client, greeting: (await client.readReply()).last }
  }
  const fromOne = []
  for (let index = 0; index < 5; index++) fromOne.push(await openFrom('127.0.0.2'))
  t.same(
    fromOne.map((entry) => entry.greeting.slice(0, 3)),
    ['220', '220', '220', '421', '421'],
  )
  t.equal(fromOne[3]!.greeting, '421 4.7.0 Too many connections from your address (at most 3), try again later')
  await fromOne[4]!.client.closed
  t.equal(source.stats().sessionsRefused.TOO_MANY_CONNECTIONS_FROM_ADDRESS, 2)

  // Four more untrusted addresses fill the untrusted share (10 - 3 kept = 7).
  const others = []
  for (const address of ['127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6', '127.0.0.7']) others.push(await openFrom(address))
  t.same(
    others.map((entry) => entry.greeting.slice(0, 3)),
    ['220', '220', '220', '220', '421'],
  )
  t.equal(others[4]!.greeting, '421 4.7.0 Too many connections from outside the trusted networks, try again later')
  t.equal(source.stats().sessionsUntrusted, 7)

  // The trusted relay still gets the kept slots, and delivers.
  const trusted = []
  for (let index = 0; index < 3; index++) trusted.push(await greeted(port, '127.0.0.1'))
  t.match((await transaction(trusted[0]!.client, 'relay@example.test', ['anyone@example.test'], simpleMessage('kept slot'))).last, /^250 /)
  const overAll = await openFrom('127.0.0.1')
  t.equal(overAll.greeting, '421 4.7.0 Too many connections, try again later', 'connectionsMax bounds trusted clients too')
  t.match(
    logger.records.find((record) => record.limit === 'untrustedConnectionsMax'),
    { level: 'warn', remoteAddress: '127.0.0.7', trusted: false, limitValue: 7 },
  )

  // A slot freed by one address is usable by it again.
  fromOne[0]!.client.end()
  await fromOne[0]!.client.closed
  await waitUntil(() => source.stats().sessionsUntrusted === 6, { what: '6 untrusted sessions', observe: () => source.stats() })
  t.equal((await openFrom('127.0.0.2')).greeting.slice(0, 3), '220', 'the address got its slot back')
  for (const entry of [...fromOne, ...others]) entry.client.end()
  for (const entry of trusted) entry.client.end()
})

t.test('many slow clients on other addresses do not stop a trusted sender', { timeout: 30_000 }, async (t) => {
  const tricklerCount = 120
  const { port, pipeline, source } = await startSource(t, {
    connectionsMax: 100,
    trustedConnectionsReserved: 10,
    untrustedConnectionsPerAddressMax: 2,
    trustedNetworks: ['127.0.0.1/32'],
    commandTimeoutMs: 3_000,
    mailFromTimeoutMs: 4_000,
    dataBytesPerSecondMin: 100,
    dataRateGraceMs: 3_000,
    socketTimeoutMs: 60_000,
  })
  const tricklers = loopbackAddresses(tricklerCount).map((localAddress, index) =>
    startTrickler({ port, localAddress, mode: index % 2 === 0 ? 'command' : 'data', intervalMs: 500, recipient: archiveRecipient }),
  )
  t.teardown(() => tricklers.forEach((trickler) => trickler.stop()))
  const greetings = await Promise.all(tricklers.map((trickler) => trickler.greeted))
  const admitted = greetings.filter((line) => line?.startsWith('220')).length
  t.equal(admitted, 90, 'the untrusted share (100 - 10 kept) is full')
  t.equal(greetings.filter((line) => line === '421 4.7.0 Too many connections from outside the trusted networks, try again later').length, 30)

  // Meanwhile the trusted relay sends message after message on connections of its own.
  const startedMs = performance.now()
  let delivered = 0
  const otherReplies: string[] = []
  while (performance.now() - startedMs < 2_500) {
    const { client } = await greeted(port, '127.0.0.1')
    const reply = await transaction(client, 'relay@example.test', ['someone@example.test'], simpleMessage(`relay ${delivered}`))
    if (/^250 2\.0\.0 Ok: archived /.test(reply.last)) delivered++
    else otherReplies.push(reply.last)
    client.end()
  }
  t.same(otherReplies, [], 'the relay got nothing but 250s')
  t.ok(delivered >= 5, `${delivered} messages delivered while ${admitted} slow clients held their slots`)

  const outcomes = await Promise.all(tricklers.map((trickler) => trickler.outcome))
  const closedByDeadline = outcomes.filter((outcome) => outcome.greeting?.startsWith('220'))
  t.equal(closedByDeadline.length, 90)
  t.ok(
    closedByDeadline.every((outcome) => /^421 4\.4\.2 (No complete command within 3 s|Message data slower than 100 bytes\/s)/.test(outcome.lastLine ?? '')),
    'every admitted slow client got its deadline 421',
  )
  const latestMs = Math.max(...closedByDeadline.map((outcome) => outcome.closedAfterMs ?? Number.POSITIVE_INFINITY))
  t.ok(latestMs <= 3_000 + slackMs + 500, `the last was closed ${latestMs.toFixed(0)} ms after it began to trickle (deadline 3 s)`)
  t.equal(pipeline.submissions.length, delivered, 'only the relay messages were archived')
  await waitUntil(() => source.stats().sessionsActive === 0, { what: 'every session closed', observe: () => source.stats() })
})
