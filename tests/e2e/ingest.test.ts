import t from 'tap'
import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import nodemailer from 'nodemailer'
import { writeFile } from 'node:fs/promises'
import { hashPassword } from '../../firmware/common/password.js'
import { tempDir, writeConfig, startService, cliJson, runCli, type RunningService, portOf } from '../helpers/service.js'
import { startDovecot, seedMailbox, readMailbox } from '../helpers/dovecot.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'
import { exchangeJournalReport } from '../helpers/journal-report.js'
import { testSeed } from '../helpers/random.js'

const technicianPassword = 'e2e-technician-pass'
const sha256 = (bytes: Uint8Array) => createHash('sha256').update(bytes).digest('hex')

async function api(service: RunningService) {
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const base = `http://127.0.0.1:${portOf(service, 'http')}`
  const authorization = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
  return {
    raw: async (id: string) => {
      const response = await fetch(`${base}/api/v1/messages/${id}/raw`, { headers: { authorization } })
      return response.status === 200 ? Buffer.from(await response.arrayBuffer()) : response.status
    },
    meta: async (id: string) => {
      const response = await fetch(`${base}/api/v1/messages/${id}`, { headers: { authorization } })
      return response.status === 200 ? ((await response.json()) as Record<string, unknown>) : response.status
    },
    status: async () => (await (await fetch(`${base}/api/v1/status`, { headers: { authorization } })).json()) as Record<string, unknown>,
  }
}

function message(subject: string, body: string, extraHeaders = ''): Buffer {
  return Buffer.from(
    `From: Alice <alice@example.com>\r\nTo: bob@example.com\r\nSubject: ${subject}\r\nDate: Sun, 29 Nov 2026 01:00:00 +0000\r\nMessage-ID: <${sha256(Buffer.from(subject)).slice(0, 16)}@example.com>\r\n${extraHeaders}\r\n${body}\r\n`,
    'latin1',
  )
}

t.test('SMTP deliveries (raw client, nodemailer, swaks) are retrievable byte-identical; a repeat is stored once with both deliveries', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { smtp: { archiveRecipients: ['journal@archive.local'] } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const smtpPort = portOf(service, 'smtp')
  const client = await api(service)

  // Raw SMTP: exact bytes with a dot line, 8-bit bytes and CRLF.
  const raw = Buffer.concat([message('raw bytes', '.leading dot\r\n..two dots\r\ncaf\xe9 8-bit')])
  const session = await SmtpSession.open(smtpPort)
  const first = await session.send('sender@example.com', ['journal@archive.local', 'hidden-bcc@example.com'], raw)
  t.equal(first.code, 250, first.text)
  const id = archivedId(first)!
  t.equal(id, sha256(raw), 'the archive id is the SHA-256 of the bytes received')
  t.same(await client.raw(id), raw, 'byte-identical through /raw')
  const second = await session.send('other-sender@example.com', ['journal@archive.local'], raw)
  t.equal(archivedId(second), id, 'the same message again gets the same id')
  session.close()
  const meta = (await client.meta(id)) as { deliveries: { envelopeFrom: string; envelopeTo: string[] }[] }
  t.equal(meta.deliveries.length, 2, 'both deliveries are recorded')
  t.same(
    meta.deliveries.map((delivery) => delivery.envelopeFrom),
    ['sender@example.com', 'other-sender@example.com'],
  )
  t.ok(meta.deliveries[0]!.envelopeTo.includes('hidden-bcc@example.com'), 'envelope recipients (BCC) recorded')

  // nodemailer, a real client library.
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: smtpPort, secure: false, tls: { rejectUnauthorized: false } })
  const info = await transport.sendMail({ from: 'n@example.com', to: 'journal@archive.local', bcc: 'secret@example.com', subject: 'from nodemailer', text: 'hello from nodemailer' })
  transport.close()
  const nodemailerId = /archived ([0-9a-f]{64})/.exec(info.response)![1]!
  const stored = (await client.raw(nodemailerId)) as Buffer
  t.equal(sha256(stored), nodemailerId)
  t.match(stored.toString(), /hello from nodemailer/)
  const nodemailerMeta = (await client.meta(nodemailerId)) as { deliveries: { envelopeTo: string[] }[] }
  t.ok(nodemailerMeta.deliveries[0]!.envelopeTo.includes('secret@example.com'), 'BCC from the envelope')

  // swaks, the command-line SMTP tester from Debian.
  const swaks = spawnSync(
    'swaks',
    ['--server', `127.0.0.1:${smtpPort}`, '--to', 'journal@archive.local', '--from', 's@example.com', '--header', 'Subject: from swaks', '--body', 'hello from swaks'],
    { encoding: 'utf8', timeout: 30000 },
  )
  t.equal(swaks.status, 0, `swaks ran (CI installs it): ${swaks.stderr}`)
  const swaksId = /archived ([0-9a-f]{64})/.exec(swaks.stdout)?.[1]
  t.ok(swaksId, 'swaks got the archive id')
  if (swaksId) t.match(((await client.raw(swaksId)) as Buffer).toString(), /hello from swaks/)

  const store = (await cliJson(config, ['show', 'store'])).json as { messages: number; deliveries: number }
  t.equal(store.messages, 3)
  t.equal(store.deliveries, 4)
})

t.test('an Exchange journal report is unwrapped: the original is archived, BCC recorded', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { smtp: { archiveRecipients: ['journal@archive.local'] } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const client = await api(service)
  const original = message('quarterly numbers', 'the original body')
  const report = exchangeJournalReport(original)
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const reply = await session.send('journal@corp.example', ['journal@archive.local'], report)
  session.close()
  t.equal(reply.code, 250, reply.text)
  const id = archivedId(reply)!
  const stored = (await client.raw(id)) as Buffer
  t.equal(id, sha256(stored))
  t.same(stored.toString('latin1'), original.toString('latin1').replace(/\r\n$/, ''), 'the original, byte-exact, is what is archived')
  const meta = (await client.meta(id)) as { deliveries: { envelopeTo: string[]; envelopeBcc: string[] }[]; subject: string }
  t.equal(meta.subject, 'quarterly numbers')
  t.ok(meta.deliveries[0]!.envelopeBcc.includes('carol.hidden@example.com'), 'BCC from the journal envelope')
  t.ok(meta.deliveries[0]!.envelopeTo.includes('dave@example.com'))
})

t.test('SIGKILL during concurrent SMTP delivery: every message that got a 250 survives', async (t) => {
  const { seed, random } = testSeed(t, 'the message bodies and kill times')
  const dir = await tempDir()
  const config = await writeConfig(dir, { smtp: { archiveRecipients: ['journal@archive.local'] } })
  const acknowledged = new Map<string, Buffer>()
  const rounds = 3
  const senders = 4
  let sequence = 0
  for (let round = 0; round < rounds; round += 1) {
    const service = await startService(config)
    const port = portOf(service, 'smtp')
    let killed = false
    const loops = Array.from({ length: senders }, async () => {
      const session = await SmtpSession.open(port).catch(() => undefined)
      if (!session) return
      while (!killed) {
        const raw = message(`crash round ${round} message ${sequence++}`, `body ${random.int(1e9)}`)
        const reply = await session.send('s@example.com', ['journal@archive.local'], raw).catch(() => ({ code: 0, text: '' }))
        if (reply.code === 250) acknowledged.set(archivedId(reply)!, raw)
        else break
      }
      session.close()
    })
    await new Promise((resolve) => setTimeout(resolve, 300 + random.int(700)))
    killed = true
    service.process.kill('SIGKILL')
    await service.exited
    await Promise.all(loops)
  }
  t.ok(acknowledged.size > rounds, `${acknowledged.size} messages acknowledged across ${rounds} kills`)
  const service = await startService(config)
  t.teardown(() => service.stop())
  const client = await api(service)
  let missing = 0
  for (const [id, raw] of acknowledged) {
    const stored = await client.raw(id)
    if (!Buffer.isBuffer(stored) || !stored.equals(raw)) missing += 1
  }
  t.equal(missing, 0, `every acknowledged message is present and intact (seed ${seed})`)
})

t.test('SMTP limits and a full disk give explicit codes', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, {
    smtp: { archiveRecipients: ['journal@archive.local'], trustedNetworks: [], sizeBytesMax: 4096, recipientsMax: 2 },
    technician: { passwordHash: await hashPassword(technicianPassword) },
  })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  t.teardown(() => session.close())
  const relay = await session.command('MAIL FROM:<a@example.com>')
  t.equal(relay.code, 250)
  const denied = await session.command('RCPT TO:<someone@elsewhere.example>')
  t.equal(denied.code, 550)
  t.match(denied.text, /^5\.7\.1/)
  await session.command('RSET')
  const big = await session.send('a@example.com', ['journal@archive.local'], message('big', 'x'.repeat(8000)))
  t.equal(big.code, 552)
  t.match(big.text, /^5\.3\.4/)

  // The data volume fills up: the store refuses with a retryable 4xx, and takes mail again
  // as soon as there is room, without a restart.
  const full = await runCli(['--config', config, 'sim', 'volume-free', '1000', '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal(full.code, 0, full.stderr)
  const refused = await session.send('a@example.com', ['journal@archive.local'], message('disk full', 'no room'))
  t.equal(refused.code, 452, refused.text)
  t.match(refused.text, /^4\.3\.1/)
  const status = (await cliJson(config, ['show', 'status'])).json as { state: string; reasons: string[] }
  t.equal(status.state, 'degraded')
  t.ok(status.reasons.some((reason) => /new mail is refused/.test(reason)))
  await runCli(['--config', config, 'sim', 'volume-free', 'real', '--password-stdin'], { input: technicianPassword + '\n' })
  await new Promise((resolve) => setTimeout(resolve, 1100))
  const retried = await session.send('a@example.com', ['journal@archive.local'], message('disk full', 'no room'))
  t.equal(retried.code, 250, 'the retry is accepted once there is room')
})

t.test('bulk import through the CLI: progress, summary, duplicates on re-import', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { technician: { passwordHash: await hashPassword(technicianPassword) } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const messages = Array.from({ length: 25 }, (_, index) => message(`imported ${index}`, `body of imported message ${index}`))
  const mbox = messages.map((raw) => `From sender@example.com Sun Nov 29 01:00:00 2026\r\n${raw.toString('latin1')}\r\n`).join('')
  const mboxPath = join(dir, 'mail.mbox')
  await writeFile(mboxPath, Buffer.from(mbox, 'latin1'))
  const first = await runCli(['--config', config, 'import', mboxPath, '--password-stdin'], { input: technicianPassword + '\n', timeoutMs: 60000 })
  t.equal(first.code, 0, first.stderr)
  t.match(first.stdout, /import done: 25 imported, 0 duplicates, 0 flagged, 0 failed/)
  const again = await runCli(['--config', config, 'import', mboxPath, '--password-stdin', '--json'], { input: technicianPassword + '\n', timeoutMs: 60000 })
  const job = JSON.parse(again.stdout) as { imported: number; duplicates: number; state: string }
  t.same({ state: job.state, imported: job.imported, duplicates: job.duplicates }, { state: 'done', imported: 0, duplicates: 25 })
  const client = await api(service)
  t.same(await client.raw(sha256(messages[7]!)), messages[7], 'imported byte-exact')
  const missing = await runCli(['--config', config, 'import', join(dir, 'nope'), '--password-stdin'], { input: technicianPassword + '\n' })
  t.equal(missing.code, 1)
  t.match(missing.stderr, /nope/)
})

t.test('journal pull from a real Dovecot over IMAP archives every message once and removes it', async (t) => {
  const user = { name: 'journal', password: 'journal-mailbox-pass' }
  const dovecot = await startDovecot({ users: [user] })
  t.teardown(() => dovecot.stop())
  const messages = Array.from({ length: 5 }, (_, index) => message(`journaled ${index}`, `journal body ${index}`))
  await seedMailbox(dovecot, user, messages)
  const dir = await tempDir()
  const config = await writeConfig(dir, {
    journal: {
      sources: [
        {
          name: 'exchange',
          protocol: 'imap',
          host: '127.0.0.1',
          port: dovecot.ports.imaps,
          tls: 'implicit',
          tlsRejectUnauthorized: false,
          user: user.name,
          password: user.password,
          intervalMs: 3600000,
        },
      ],
    },
  })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const pulled = await cliJson(config, ['journal', 'pull', 'exchange'])
  t.equal(pulled.code, 0, pulled.stderr)
  // The source's own first pass (after a random delay of up to 5 s) may run before the CLI's:
  // then the CLI's pass finds the mailbox empty. Over all passes, each message counts once.
  const [journalStatus] = (await cliJson(config, ['show', 'journal'])).json as { totals: { archived: number; acknowledged: number } }[]
  t.equal(journalStatus!.totals.archived, 5, 'every message archived once over the passes')
  t.equal(journalStatus!.totals.acknowledged, 5)
  const report = pulled.json as { archived: number; acknowledged: number }
  t.ok(report.archived === 5 || report.archived === 0, `the CLI's pass archived all or (after the first pass) none (${report.archived})`)
  t.same(await readMailbox(dovecot, user), [], 'removed at the server after archiving')
  const client = await api(service)
  for (const raw of messages) {
    const stored = await client.raw(sha256(raw))
    t.ok(Buffer.isBuffer(stored), 'archived')
  }
  t.notMatch(service.lines.join('\n'), user.password, 'the journal password is never logged')
  const shown = JSON.stringify((await cliJson(config, ['show', 'config'])).json)
  t.notMatch(shown, user.password)
})

t.test('search through the CLI and the API: fields, BCC, attachments, pagination, errors', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { smtp: { archiveRecipients: ['journal@archive.local'] } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const attachment = Buffer.from('the word zanzibarquux lives only in this attachment').toString('base64')
  const withAttachment = Buffer.from(
    [
      'From: Erin <erin@example.com>',
      'To: frank@example.com',
      'Subject: report attached',
      'Date: Sat, 28 Nov 2026 10:00:00 +0000',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain',
      '',
      'see attachment',
      '--b1',
      'Content-Type: text/plain; name="notes.txt"',
      'Content-Disposition: attachment; filename="notes.txt"',
      'Content-Transfer-Encoding: base64',
      '',
      attachment,
      '--b1--',
      '',
    ].join('\r\n'),
  )
  const replies = [
    await session.send('erin@example.com', ['journal@archive.local'], withAttachment),
    await session.send('alice@example.com', ['journal@archive.local', 'grace.bcc@example.com'], message('budget meeting', 'the budget meeting moved to friday')),
  ]
  for (let index = 0; index < 5; index += 1) replies.push(await session.send('alice@example.com', ['journal@archive.local'], message(`weekly status ${index}`, `status number ${index}`)))
  session.close()
  t.ok(replies.every((reply) => reply.code === 250))
  const [attachmentId, budgetId] = replies.map((reply) => archivedId(reply)!)

  const search = async (query: string, extra: string[] = []) =>
    (await cliJson(config, ['search', query, ...extra])).json as { total: number; hits: { id: string; snippet: string }[]; nextCursor: string | null }
  t.same(
    (await search('zanzibarquux')).hits.map((hit) => hit.id),
    [attachmentId],
    'a word only inside an attachment finds its message',
  )
  t.same(
    (await search('attachment:notes.txt')).hits.map((hit) => hit.id),
    [attachmentId],
  )
  t.same(
    (await search('to:grace.bcc@example.com')).hits.map((hit) => hit.id),
    [budgetId],
    'an envelope (BCC) recipient is found with to:',
  )
  const phrase = await search('"budget meeting" from:alice')
  t.same(
    phrase.hits.map((hit) => hit.id),
    [budgetId],
  )
  t.match(phrase.hits[0]!.snippet, /<mark>budget<\/mark>/)
  // In the body only: checked on the message's phrase stream, under Bun as the appliance runs.
  t.same(
    (await search('"meeting moved to friday"')).hits.map((hit) => hit.id),
    [budgetId],
    'a body phrase',
  )
  t.equal((await search('"moved meeting"')).total, 0, 'its words in another order are no phrase')
  t.equal((await search('"budget friday"')).total, 0, 'nor its words apart')
  t.equal((await search('subject:weekly -status')).total, 0)
  const pageOne = await search('subject:weekly', ['--limit', '2'])
  t.equal(pageOne.total, 5)
  t.equal(pageOne.hits.length, 2)
  const pageTwo = await search('subject:weekly', ['--limit', '2', '--cursor', pageOne.nextCursor!])
  t.equal(new Set([...pageOne.hits, ...pageTwo.hits].map((hit) => hit.id)).size, 4, 'pages do not overlap')

  const bad = await runCli(['--config', config, 'search', 'from:(alice'])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /position/)
  const human = await runCli(['--config', config, 'search', 'budget'])
  t.match(human.stdout, /budget meeting/)
  t.match(human.stdout, /1 message\(s\)/)

  const client = await api(service)
  void client
  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const response = await fetch(`http://127.0.0.1:${portOf(service, 'http')}/api/v1/search?q=${encodeURIComponent('to:grace.bcc@example.com')}&limit=5`, {
    headers: { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` },
  })
  t.equal(response.status, 200)
  t.same(
    ((await response.json()) as { hits: { id: string }[] }).hits.map((hit) => hit.id),
    [budgetId],
  )
  const malformed = await fetch(`http://127.0.0.1:${portOf(service, 'http')}/api/v1/search?q=${encodeURIComponent('"unclosed')}`, {
    headers: { authorization: `Basic ${Buffer.from(`admin:${password}`).toString('base64')}` },
  })
  t.equal(malformed.status, 400)
  const verify = await cliJson(config, ['index', 'verify'])
  t.equal(verify.code, 0, verify.stderr)
})
