import t from 'tap'
import { archivedId, SmtpSession } from '../helpers/smtp.js'
import { portOf, startService, tempDir, writeConfig } from '../helpers/service.js'
import { loopbackAddresses, startTrickler, type Trickler } from '../helpers/slow-smtp-client.js'

/*
 * Issue 20, finding 2, against the real firmware under Bun: 200 slow connections from one
 * address, then 200 from 200 other addresses, each trickling a byte a second before EHLO
 * or inside DATA, while a trusted relay on 127.0.0.1 keeps delivering. The listener
 * accepts from all of 127.0.0.0/8 on 127.0.0.1; only 127.0.0.1 is trusted.
 */

const commandTimeoutMs = 6_000
const dataRateGraceMs = 5_000
/** Timers, the event loop of a loaded 2-core machine, 400 sockets on one process. */
const slackMs = 1_500

t.test('200 slow clients do not keep a trusted relay out; each is closed by its deadline', { timeout: 60_000 }, async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, {
    smtp: {
      archiveRecipients: ['journal@archive.local'],
      trustedNetworks: ['127.0.0.1/32'],
      connectionsMax: 200,
      trustedConnectionsReserved: 20,
      untrustedConnectionsPerAddressMax: 10,
      mailFromTimeoutMs: 10_000,
      commandTimeoutMs,
      dataBytesPerSecondMin: 4_096,
      dataRateGraceMs,
    },
  })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const port = portOf(service, 'smtp')
  const tricklers: Trickler[] = []
  t.teardown(() => tricklers.forEach((trickler) => trickler.stop()))
  const trickle = (localAddress: string, index: number): Trickler => {
    const trickler = startTrickler({ port, localAddress, mode: index % 2 === 0 ? 'command' : 'data', intervalMs: 1_000, recipient: 'journal@archive.local' })
    tricklers.push(trickler)
    return trickler
  }

  // The finding as reported: 200 connections from one address.
  const fromOne = Array.from({ length: 200 }, (_, index) => trickle('127.0.0.2', index))
  const oneGreetings = await Promise.all(fromOne.map((trickler) => trickler.greeted))
  t.equal(oneGreetings.filter((line) => line?.startsWith('220')).length, 10, 'one untrusted address holds 10 slots')
  t.equal(oneGreetings.filter((line) => line === '421 4.7.0 Too many connections from your address (at most 10), try again later').length, 190)

  // Then one connection from each of 199 more addresses: the untrusted share (180) fills up.
  const many = loopbackAddresses(199, 3).map((address, index) => trickle(address, index))
  const manyGreetings = await Promise.all(many.map((trickler) => trickler.greeted))
  t.equal(manyGreetings.filter((line) => line?.startsWith('220')).length, 170, '180 untrusted slots in all')
  t.equal(manyGreetings.filter((line) => line === '421 4.7.0 Too many connections from outside the trusted networks, try again later').length, 29)

  // The trusted relay: a connection per message, as journaling servers often do, for as
  // long as the slow clients hold their slots.
  const startedMs = performance.now()
  const replies: string[] = []
  while (performance.now() - startedMs < dataRateGraceMs - 1_000) {
    const session = await SmtpSession.open(port)
    const raw = Buffer.from(`From: relay@example.com\r\nTo: someone@example.com\r\nSubject: relay ${replies.length}\r\n\r\nbody ${replies.length}\r\n`, 'latin1')
    const reply = await session.send('relay@example.com', ['someone@example.com'], raw)
    replies.push(archivedId(reply) ? '250 archived' : `${reply.code} ${reply.text}`)
    session.close()
  }
  const unexpected = replies.filter((reply) => reply !== '250 archived')
  t.same(unexpected, [], `the relay got ${replies.length} replies, all 250 with an archive id`)
  t.ok(replies.length >= 10, `${replies.length} messages archived while 180 slow clients held their slots`)

  const greetings = [...oneGreetings, ...manyGreetings]
  const admitted = await Promise.all(tricklers.filter((_, index) => greetings[index]?.startsWith('220')).map((trickler) => trickler.outcome))
  t.equal(admitted.length, 180)
  const byReply = new Map<string, number[]>()
  for (const outcome of admitted) {
    const key = outcome.lastLine ?? 'no reply'
    byReply.set(key, [...(byReply.get(key) ?? []), outcome.closedAfterMs ?? Number.POSITIVE_INFINITY])
  }
  const commandCut = byReply.get('421 4.4.2 No complete command within 6 s, closing connection') ?? []
  const dataCut = byReply.get('421 4.4.2 Message data slower than 4096 bytes/s, closing connection; the message was not archived') ?? []
  t.same([commandCut.length, dataCut.length], [90, 90], `closed by their deadlines: ${JSON.stringify([...byReply.keys()])}`)
  t.ok(Math.max(...commandCut) <= commandTimeoutMs + slackMs, `command tricklers closed within ${Math.max(...commandCut).toFixed(0)} ms (deadline ${commandTimeoutMs})`)
  t.ok(Math.max(...dataCut) <= dataRateGraceMs + slackMs, `DATA tricklers closed within ${Math.max(...dataCut).toFixed(0)} ms (grace ${dataRateGraceMs})`)

  // After the deadlines the slots are free again: a new untrusted client gets in.
  const late = await SmtpSession.open(port, '127.0.0.1').catch((error: Error) => error)
  t.ok(late instanceof SmtpSession, 'the listener still greets')
  if (late instanceof SmtpSession) late.close()
  const fresh = startTrickler({ port, localAddress: '127.0.0.250', mode: 'command', intervalMs: 1_000 })
  tricklers.push(fresh)
  t.match(await fresh.greeted, /^220 /, 'a freed untrusted slot is usable')
  fresh.stop()

  const records = service.lines.map((line) => JSON.parse(line) as Record<string, unknown>)
  const closes = records.filter((record) => record.msg === 'session closed: deadline passed')
  t.equal(closes.length, 180, 'every deadline close is logged as JSON')
  t.ok(
    closes.every((record) => record.trusted === false && typeof record.remoteAddress === 'string' && typeof record.reply === 'string'),
    'with the client, its trust and the reply',
  )
  // The client's clock starts when it reads the greeting, late when it is busy; the service's is exact.
  const serverMs = (deadline: string, field: string): number[] => closes.filter((record) => record.deadline === deadline).map((record) => Number(record[field]))
  t.ok(Math.min(...serverMs('COMMAND_TIMEOUT', 'sessionMs')) >= commandTimeoutMs, 'no command trickler was closed before its deadline (service clock)')
  t.ok(Math.min(...serverMs('DATA_TOO_SLOW', 'dataMs')) >= dataRateGraceMs, 'no DATA trickler was closed before the grace ended (service clock)')
  t.notMatch(service.lines.join('\n'), /Subject: slow|a-very-slow-client/, 'no message content or command text in the log')
  t.equal(await service.stop(), 0, 'the service stops cleanly')
})
