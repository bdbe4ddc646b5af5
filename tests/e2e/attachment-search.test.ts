import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir, writeConfig, startService, cliJson, portOf } from '../helpers/service.js'
import { SmtpSession, archivedId } from '../helpers/smtp.js'
import { tinyPdf } from '../helpers/pdf.js'

/**
 * Issue 4's "done when" through the real service: a word found only inside an attachment
 * (plain text, HTML, PDF — typed and as octet-stream) finds its message, and a BCC
 * recipient known only from an Exchange journal report's envelope finds it with `to:`,
 * through both the CLI and the HTTP API.
 */

function withAttachment(subject: string, type: string, filename: string, content: Uint8Array): Buffer {
  return Buffer.from(
    [
      'From: Erin <erin@example.com>',
      'To: frank@example.com',
      `Subject: ${subject}`,
      'Date: Sat, 28 Nov 2026 10:00:00 +0000',
      `Message-ID: <${filename}@example.com>`,
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="b1"',
      '',
      '--b1',
      'Content-Type: text/plain',
      '',
      'please see the attachment',
      '--b1',
      `Content-Type: ${type}; name="${filename}"`,
      `Content-Disposition: attachment; filename="${filename}"`,
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from(content).toString('base64').replace(/.{76}/g, '$&\r\n'),
      '--b1--',
      '',
    ].join('\r\n'),
  )
}

function journalReport(): Buffer {
  return Buffer.from(
    [
      'From: Microsoft Exchange <journal@corp.example>',
      'To: journal@archive.local',
      'Subject: merger terms',
      'X-MS-Journal-Report:',
      'MIME-Version: 1.0',
      'Content-Type: multipart/mixed; boundary="jr"',
      '',
      '--jr',
      'Content-Type: text/plain; charset="us-ascii"',
      '',
      'Sender: alice@example.com',
      'Subject: merger terms',
      'Message-Id: <merger@example.com>',
      'To: bob@example.com',
      'Bcc: quiet.observer@example.net',
      '',
      '--jr',
      'Content-Type: message/rfc822',
      '',
      'From: Alice <alice@example.com>',
      'To: bob@example.com',
      'Subject: merger terms',
      'Date: Sat, 28 Nov 2026 11:00:00 +0000',
      'Message-ID: <merger@example.com>',
      '',
      'the merger terms are attached in spirit',
      '--jr--',
      '',
    ].join('\r\n'),
  )
}

t.test('words only inside text, HTML and PDF attachments, and a journal BCC recipient, are found', async (t) => {
  const dir = await tempDir()
  const config = await writeConfig(dir, { smtp: { archiveRecipients: ['journal@archive.local'] } })
  const service = await startService(config)
  t.teardown(() => service.stop())
  const encode = (text: string): Uint8Array => new TextEncoder().encode(text)
  const messages: Array<[string, Buffer]> = [
    ['plain', withAttachment('plain attachment', 'text/plain', 'notes.txt', encode('the quokkaplain lives here'))],
    ['html', withAttachment('html attachment', 'text/html', 'page.html', encode('<html><body><p>An <b>axolotlhtml</b> appears</p><script>var hiddenscript = 1</script></body></html>'))],
    ['pdf', withAttachment('pdf attachment', 'application/pdf', 'report.pdf', tinyPdf('Quarterly pangolinpdf figures'))],
    ['octet', withAttachment('octet attachment', 'application/octet-stream', 'scan.bin', tinyPdf('Scanned okapioctet page'))],
    ['journal', journalReport()],
  ]
  const session = await SmtpSession.open(portOf(service, 'smtp'))
  const ids = new Map<string, string>()
  for (const [name, raw] of messages) {
    const reply = await session.send('erin@example.com', ['journal@archive.local'], raw)
    t.equal(reply.code, 250, `${name}: ${reply.text}`)
    ids.set(name, archivedId(reply)!)
  }
  session.close()

  const password = (await readFile(join(service.dataDir, 'initial-admin-password'), 'utf8')).trim()
  const authorization = `Basic ${Buffer.from(`admin:${password}`).toString('base64')}`
  const viaApi = async (query: string): Promise<string[]> => {
    const response = await fetch(`http://127.0.0.1:${portOf(service, 'http')}/api/v1/search?q=${encodeURIComponent(query)}`, { headers: { authorization } })
    t.equal(response.status, 200, query)
    return ((await response.json()) as { hits: { id: string }[] }).hits.map((hit) => hit.id)
  }
  const viaCli = async (query: string): Promise<string[]> => {
    const result = await cliJson(config, ['search', query])
    t.equal(result.code, 0, result.stderr)
    return (result.json as { hits: { id: string }[] }).hits.map((hit) => hit.id)
  }
  const expectations: Array<[string, string]> = [
    ['quokkaplain', 'plain'],
    ['axolotlhtml', 'html'],
    ['pangolinpdf', 'pdf'],
    ['"quarterly pangolinpdf figures"', 'pdf'],
    ['okapioctet', 'octet'],
    ['attachment:report.pdf', 'pdf'],
    ['to:quiet.observer@example.net', 'journal'],
    ['to:example.net merger', 'journal'],
  ]
  for (const [query, name] of expectations) {
    t.same(await viaCli(query), [ids.get(name)], `CLI: ${query}`)
    t.same(await viaApi(query), [ids.get(name)], `API: ${query}`)
  }
  t.same(await viaCli('hiddenscript'), [], 'script content of an HTML attachment is not text')
})
