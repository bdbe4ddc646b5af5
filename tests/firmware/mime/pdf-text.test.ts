import t from 'tap'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createMimeParser, defaultMimeParserOptions } from '../../../firmware/mime/parser.js'
import { createPdfTextExtractor, defaultPdfTextLimits, looksLikePdf } from '../../../firmware/mime/pdf-text.js'
import { tinyPdf } from '../../helpers/pdf.js'

const encoder = new TextEncoder()
// Loading pdf.js in a fresh worker takes a while on a busy 2-core machine: generous limits.
const slack = { ...defaultPdfTextLimits, timeoutMs: 20_000 }

/** A multipart message whose attachments are given as [content type, filename, bytes]. */
function messageWith(parts: Array<[string, string, Uint8Array]>): Uint8Array {
  const lines = [
    'From: a@example.com',
    'To: b@example.com',
    'Subject: documents',
    'Date: Tue, 01 Oct 2024 09:30:00 +0000',
    'Message-ID: <docs@example.com>',
    'MIME-Version: 1.0',
    'Content-Type: multipart/mixed; boundary="x"',
    '',
    '--x',
    'Content-Type: text/plain',
    '',
    'see attached',
    '',
  ]
  for (const [type, name, bytes] of parts) {
    lines.push(
      '--x',
      `Content-Type: ${type}; name="${name}"`,
      `Content-Disposition: attachment; filename="${name}"`,
      'Content-Transfer-Encoding: base64',
      '',
      Buffer.from(bytes).toString('base64'),
      '',
    )
  }
  lines.push('--x--', '')
  return encoder.encode(lines.join('\r\n'))
}

t.test('looksLikePdf: by type, and by magic bytes for generic types only', async (t) => {
  const pdf = tinyPdf('x')
  t.ok(looksLikePdf('application/pdf', new Uint8Array(0)))
  t.ok(looksLikePdf('Application/PDF', new Uint8Array(0)))
  t.ok(looksLikePdf('application/octet-stream', pdf))
  t.notOk(looksLikePdf('application/octet-stream', encoder.encode('%PD')))
  t.notOk(looksLikePdf('application/octet-stream', encoder.encode('GIF89a')))
  t.notOk(looksLikePdf('image/png', pdf), 'a declared specific type is believed')
})

t.test('extract: text, damaged, timeout, size bound, text bound', async (t) => {
  const extractor = createPdfTextExtractor(slack)
  const ok = await extractor.extract(tinyPdf('Hello PDF quokka'))
  t.equal(ok.outcome, 'ok', ok.detail ?? '')
  t.match(ok.text, /Hello PDF quokka/)
  const damaged = await extractor.extract(encoder.encode('%PDF-1.4 garbage'))
  t.equal(damaged.outcome, 'failed')
  t.equal(damaged.text, null)
  const stalled = await extractor.extract(tinyPdf('Hello'), 1)
  t.equal(stalled.outcome, 'timeout', 'a 1 ms limit ends the worker')
  const small = createPdfTextExtractor({ ...slack, bytesMax: 100 })
  t.equal((await small.extract(tinyPdf('too large for the bound'))).outcome, 'too-large')
  const short = createPdfTextExtractor({ ...slack, textCharsMax: 5 })
  const cut = await short.extract(tinyPdf('abcdefghij'))
  t.equal(cut.outcome, 'ok', cut.detail ?? '')
  t.equal(cut.text, 'abcde')
})

t.test('extract: no more workers at once than concurrentMax; all finish', async (t) => {
  const extractor = createPdfTextExtractor({ ...slack, concurrentMax: 1 })
  const pending = [extractor.extract(tinyPdf('one')), extractor.extract(tinyPdf('two')), extractor.extract(tinyPdf('three'))]
  t.same(extractor.load(), { running: 1, waiting: 2 })
  const results = await Promise.all(pending)
  t.same(
    results.map((result) => result.text?.trim()),
    ['one', 'two', 'three'],
  )
  t.same(extractor.load(), { running: 0, waiting: 0 })
})

t.test('parse: a PDF attachment (typed or octet-stream) gets its text; a damaged one is listed without text', async (t) => {
  const logger = createMemoryLogger()
  const parser = createMimeParser({ logger, pdf: createPdfTextExtractor(slack) }, defaultMimeParserOptions)
  const parsed = await parser.parse(
    messageWith([
      ['application/pdf', 'report.pdf', tinyPdf('Quarterly wombat figures')],
      ['application/octet-stream', 'scan.bin', tinyPdf('Octet numbat')],
      ['application/pdf', 'broken.pdf', encoder.encode('%PDF-1.4 not really')],
      ['text/plain', 'notes.txt', encoder.encode('plain notes')],
    ]),
  )
  t.same(parsed.flags, [])
  t.same(
    parsed.attachments.map((attachment) => attachment.filename),
    ['report.pdf', 'scan.bin', 'broken.pdf', 'notes.txt'],
  )
  t.match(parsed.attachments[0]!.text, /Quarterly wombat figures/)
  t.match(parsed.attachments[1]!.text, /Octet numbat/)
  t.equal(parsed.attachments[2]!.text, null)
  t.equal(parsed.attachments[3]!.text, 'plain notes')
  t.ok(
    logger.records.some((record) => record.msg === 'pdf text not extracted' && record.outcome === 'failed'),
    'the damaged PDF is logged',
  )
})

t.test('parse: the attachment text bound applies to PDF text', async (t) => {
  const parser = createMimeParser({ logger: createMemoryLogger(), pdf: createPdfTextExtractor(slack) }, { ...defaultMimeParserOptions, attachmentTextCharsMax: 7 })
  const parsed = await parser.parse(messageWith([['application/pdf', 'a.pdf', tinyPdf('Quarterly wombat')]]))
  t.equal(parsed.attachments[0]!.text, 'Quarter')
})
