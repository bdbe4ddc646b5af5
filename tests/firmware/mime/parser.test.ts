import t from 'tap'
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createRandom, type Clock } from '../../../firmware/common/clock.js'
import { createMimeParser, defaultMimeParserOptions, journalRecipientsMax, type MimeParserOptions } from '../../../firmware/mime/parser.js'
import { scanHeaders, parseContentType } from '../../../firmware/mime/header-scan.js'
import { scanStructure } from '../../../firmware/mime/structure-scan.js'
import { parseMailDate } from '../../../firmware/mime/mail-date.js'
import { decodeQuotedPrintable, parseJournalEnvelope } from '../../../firmware/mime/journal.js'
import type { MimeFlag, ParsedMessage } from '../../../firmware/mime/types.js'

/** tap's test object, as the callback of t.test receives it. */
type TestContext = Parameters<Parameters<typeof t.test>[0]>[0]

const fixturesDirectory = fileURLToPath(new URL('./fixtures/', import.meta.url))
const encoder = new TextEncoder()

/** Text with LF line breaks as CRLF bytes (UTF-8). */
function crlf(text: string): Uint8Array {
  return encoder.encode(text.replace(/\r?\n/g, '\r\n'))
}

function concatBytes(...pieces: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(pieces.reduce((sum, piece) => sum + piece.byteLength, 0))
  let offset = 0
  for (const piece of pieces) {
    out.set(piece, offset)
    offset += piece.byteLength
  }
  return out
}

async function fixture(name: string): Promise<Uint8Array> {
  return new Uint8Array(await readFile(fixturesDirectory + name))
}

function makeParser(options: Partial<MimeParserOptions> = {}, clock?: Clock) {
  const logger = createMemoryLogger()
  const parser = createMimeParser({ logger, ...(clock ? { clock } : {}) }, { ...defaultMimeParserOptions, ...options })
  return { parser, logger }
}

/** Parses and checks the promise resolves and the input bytes are unchanged. */
async function parseUnchanged(t: TestContext, raw: Uint8Array, options: Partial<MimeParserOptions> = {}, clock?: Clock): Promise<ParsedMessage> {
  const before = raw.slice()
  const { parser } = makeParser(options, clock)
  const parsed = await parser.parse(raw)
  t.same(Buffer.compare(Buffer.from(raw), Buffer.from(before)), 0, 'raw bytes unchanged')
  return parsed
}

const generatedHead = `From: gen@example.com
To: r@example.com
Subject: generated
Date: Tue, 01 Oct 2024 09:30:00 +0000
Message-ID: <gen@example.com>
MIME-Version: 1.0
`

t.test('malformed fixtures parse to the right flags and readable metadata', async (t) => {
  const cases: Array<{ file: string; flags: MimeFlag[]; check: (parsed: ParsedMessage) => void }> = [
    {
      file: 'clean.eml',
      flags: [],
      check: (parsed) => {
        t.same(parsed.from, [{ name: 'Alice Example', address: 'alice@example.com' }], 'address lower-cased')
        t.same(
          parsed.to.map((address) => address.address),
          ['bob@example.com', 'carol@example.org'],
        )
        t.same(parsed.cc, [], 'an empty group names nobody')
        t.equal(parsed.subject, 'Grüße from the lab', 'encoded words decoded')
        t.equal(parsed.dateMs, Date.UTC(2024, 9, 1, 7, 30, 0))
        t.equal(parsed.messageId, '<clean-1@example.com>')
        t.match(parsed.text, /measurements are in/)
      },
    },
    {
      file: 'no-headers.txt',
      flags: ['no-headers', 'no-from', 'no-date', 'no-message-id'],
      check: (parsed) => {
        t.equal(parsed.subject, null)
        t.match(parsed.text, /^Just some notes pasted into a file\nwithout any header section/, 'text without headers is kept as body text')
      },
    },
    {
      file: 'nul-bytes.eml',
      flags: ['nul-bytes'],
      check: (parsed) => {
        t.equal(parsed.subject, 'hasnul', 'NUL dropped from the subject text')
        t.notMatch(parsed.text, /\0/)
        t.same(
          parsed.from.map((address) => address.address),
          ['nul@example.com'],
        )
      },
    },
    {
      file: 'eight-bit-utf8-headers.eml',
      flags: ['eight-bit-headers'],
      check: (parsed) => {
        t.same(parsed.from, [{ name: 'Jörg Müller', address: 'joerg@example.de' }])
        t.equal(parsed.subject, 'Grüße aus Köln')
        t.same(
          parsed.to.map((address) => address.address),
          ['zoë@example.de'],
        )
      },
    },
    {
      file: 'eight-bit-latin1-headers.eml',
      flags: ['eight-bit-headers'],
      check: (parsed) => {
        t.equal(parsed.subject, 'Café crème à Paris', 'raw Latin-1 subject read in the declared charset')
        t.same(parsed.from, [{ name: 'René', address: 'rene@example.fr' }])
        t.match(parsed.text, /Un café, s'il vous plaît/)
      },
    },
    {
      file: 'unclosed-boundary.eml',
      flags: ['unterminated-multipart'],
      check: (parsed) => {
        t.match(parsed.text, /First part text/)
        t.equal(parsed.attachments.length, 1)
        t.equal(parsed.attachments[0]!.filename, 'notes.txt')
        t.match(parsed.attachments[0]!.text, /runs to the end of the message/)
      },
    },
    {
      file: 'bad-base64.eml',
      flags: ['bad-transfer-encoding'],
      check: (parsed) => {
        t.equal(parsed.attachments.length, 1, 'the damaged attachment is still listed')
        t.equal(parsed.attachments[0]!.filename, 'data.bin')
        t.match(parsed.attachments[0]!.sha256, /^[0-9a-f]{64}$/)
      },
    },
    {
      file: 'missing-from-date.eml',
      flags: ['no-from', 'no-date', 'no-message-id'],
      check: (parsed) => {
        t.equal(parsed.subject, 'Who sent this, and when?')
        t.same(
          parsed.to.map((address) => address.address),
          ['rcpt@example.com'],
        )
        t.equal(parsed.dateMs, null)
      },
    },
    {
      file: 'bad-date.eml',
      flags: ['bad-date'],
      check: (parsed) => {
        t.equal(parsed.dateMs, null)
        t.equal(parsed.subject, 'Date from nowhere')
      },
    },
    {
      file: 'bare-lf.eml',
      flags: ['bare-line-feeds'],
      check: (parsed) => {
        t.equal(parsed.subject, 'Unix line endings')
        t.match(parsed.text, /LF only/)
      },
    },
    {
      file: 'html-only.eml',
      flags: [],
      check: (parsed) => {
        t.match(parsed.text, /OCTOBER ISSUE/, 'heading converted')
        t.match(parsed.text, /Read about our new turbine\./, 'soft line break and link text joined')
        t.match(parsed.text, /alpha\s+beta/, 'table cells stay separate words')
        t.notMatch(parsed.text, /color: red|hidden|http:\/\/example\.com|</, 'no style, script, hrefs or tags')
      },
    },
    {
      file: 'text-and-html-attachments.eml',
      flags: [],
      check: (parsed) => {
        t.match(parsed.text, /attached twice/)
        t.equal(parsed.attachments.length, 2)
        const [plain, html] = parsed.attachments
        t.same(
          { filename: plain!.filename, contentType: plain!.contentType, sizeBytes: plain!.sizeBytes, text: plain!.text },
          { filename: 'report.txt', contentType: 'text/plain', sizeBytes: 29, text: 'Units shipped: 42\nReturns: 3\n' },
        )
        t.equal(plain!.sha256, createHash('sha256').update('Units shipped: 42\nReturns: 3\n').digest('hex'), 'sha256 of the decoded content')
        t.equal(html!.filename, 'report.html')
        t.equal(html!.contentType, 'text/html')
        t.match(html!.text, /Units shipped: 42\s+Returns: 3/)
        t.notMatch(html!.text, /<b>/)
      },
    },
  ]
  for (const testCase of cases) {
    await t.test(testCase.file, async (t) => {
      const parsed = await parseUnchanged(t, await fixture(testCase.file))
      t.same(parsed.flags, testCase.flags, 'flags')
      testCase.check(parsed)
    })
  }
})

t.test('generated hostile input: nesting, part count, huge header, garbage, empty', async (t) => {
  let nested = generatedHead + 'Content-Type: multipart/mixed; boundary="b0"\n\n'
  for (let level = 1; level < 200; level++) nested += `--b${level - 1}\nContent-Type: multipart/mixed; boundary="b${level}"\n\n`
  nested += '--b199\nContent-Type: text/plain\n\ninnermost\n'
  for (let level = 199; level >= 0; level--) nested += `--b${level}--\n`
  const deep = await parseUnchanged(t, crlf(nested))
  t.ok(deep.flags.includes('deep-nesting'), '200 levels flagged')
  t.equal(deep.subject, 'generated', 'metadata still read')
  t.equal(deep.text, '', 'no deep parse')

  let many = generatedHead + 'Content-Type: multipart/mixed; boundary="p"\n\n'
  for (let part = 0; part < 10_000; part++) many += `--p\nContent-Type: text/plain\n\npart ${part}\n`
  many += '--p--\n'
  const started = performance.now()
  const wide = await parseUnchanged(t, crlf(many))
  t.ok(wide.flags.includes('too-many-parts'), '10,000 parts flagged')
  t.same(wide.attachments, [])
  t.same(
    wide.from.map((address) => address.address),
    ['gen@example.com'],
  )
  t.ok(performance.now() - started < 2_000, 'skipping the deep parse keeps it quick')
  // The same message parses in depth when the limit allows it.
  const allowed = await parseUnchanged(t, crlf(many), { partsMax: 20_000 })
  t.notOk(allowed.flags.includes('too-many-parts'))
  t.match(allowed.text, /part 9999/)

  const huge = crlf(`From: big@example.com\nSubject: ${'x'.repeat(1_000_000)}\nDate: Tue, 01 Oct 2024 09:30:00 +0000\n\nbody\n`)
  const long = await parseUnchanged(t, huge)
  t.same(long.flags, ['no-message-id', 'long-header-line'])
  t.equal(long.subject!.length, 4_096, 'subject bounded')
  t.equal(long.dateMs, Date.UTC(2024, 9, 1, 9, 30), 'a header after the huge one is still read')
  t.equal(long.text, 'body\n')

  const random = createRandom(20_241_001)
  const garbage = new Uint8Array(8_192)
  for (let index = 0; index < garbage.length; index++) garbage[index] = random.int(256)
  const binary = await parseUnchanged(t, garbage)
  t.same(binary.flags, ['no-headers', 'no-from', 'no-date', 'no-message-id', 'nul-bytes', 'bare-line-feeds'], `garbage (seed ${random.seed})`)
  t.equal(binary.text, '', 'binary is not indexed as text')

  const { parser } = makeParser()
  for (const input of [garbage, new Uint8Array(0), crlf(nested), await fixture('clean.eml')]) {
    t.equal(await parser.unwrapJournal(input), null, 'not a journal report')
  }

  const empty = await parseUnchanged(t, new Uint8Array(0))
  t.same(empty.flags, ['no-headers', 'no-from', 'no-date', 'no-message-id'])
  t.same({ from: empty.from, subject: empty.subject, text: empty.text, attachments: empty.attachments }, { from: [], subject: null, text: '', attachments: [] })
})

t.test('oversize input gets only the crude header scan', async (t) => {
  const raw = crlf(
    `From: Big Sender <BIG@example.com>\nTo: a@example.com, b@example.com\nSubject: Large\nDate: Tue, 01 Oct 2024 09:30:00 +0000\nMessage-ID: <big@example.com>\n\n${'line of body text\n'.repeat(1_000)}`,
  )
  const parsed = await parseUnchanged(t, raw, { parseBytesMax: 4_096 })
  t.same(parsed.flags, ['oversize-for-parse'])
  t.same(parsed.from, [{ name: 'Big Sender', address: 'big@example.com' }])
  t.same(
    parsed.to.map((address) => address.address),
    ['a@example.com', 'b@example.com'],
  )
  t.equal(parsed.subject, 'Large')
  t.equal(parsed.text, '', 'body not parsed')
})

t.test('time budget: the line loop stops, and late steps are skipped', async (t) => {
  let many = generatedHead + 'Content-Type: text/plain\n\n'
  for (let line = 0; line < 5_000; line++) many += `line ${line}\n`
  // Every look at the clock costs 50 ms: the loop checks every 256 lines, so 5,000 lines
  // pass a 500 ms budget long before the end.
  let nowMs = 0
  const slowClock: Clock = { now: () => nowMs, monotonicMs: () => (nowMs += 50) }
  const stopped = await parseUnchanged(t, crlf(many), { parseTimeoutMs: 500 }, slowClock)
  t.same(stopped.flags, ['parse-timeout'])
  t.equal(stopped.subject, 'generated', 'metadata from the crude scan')
  t.equal(stopped.text, '')

  // The same message within budget: a clock that does not move.
  const stillClock: Clock = { now: () => 0, monotonicMs: () => 0 }
  const complete = await parseUnchanged(t, crlf(many), { parseTimeoutMs: 500 }, stillClock)
  t.same(complete.flags, [])
  t.match(complete.text, /line 4999/)

  // Budget spent after postal-mime finished (clock jumps on its second reading): the
  // attachments are listed with their hashes, their text is skipped.
  let readings = 0
  const jumpClock: Clock = { now: () => 0, monotonicMs: () => (++readings === 1 ? 0 : 10_000) }
  const late = await parseUnchanged(t, await fixture('text-and-html-attachments.eml'), { parseTimeoutMs: 1_000 }, jumpClock)
  t.same(late.flags, ['parse-timeout'])
  t.equal(late.attachments.length, 2)
  t.same(
    late.attachments.map((attachment) => attachment.text),
    [null, null],
  )
  t.match(late.attachments[0]!.sha256, /^[0-9a-f]{64}$/)
})

t.test('limits on text', async (t) => {
  const raw = crlf(
    `From: a@example.com\nDate: Tue, 01 Oct 2024 09:30:00 +0000\nMessage-ID: <l@example.com>\nContent-Type: multipart/mixed; boundary="x"\n\n--x\nContent-Type: text/plain\n\n${'body '.repeat(100)}\n--x\nContent-Type: text/plain\nContent-Disposition: attachment; filename="a.txt"\n\n${'attached '.repeat(100)}\n--x--\n`,
  )
  const parsed = await parseUnchanged(t, raw, { textCharsMax: 50, attachmentTextCharsMax: 20 })
  t.equal(parsed.text.length, 50)
  t.equal(parsed.attachments[0]!.text!.length, 20)
  t.equal(parsed.attachments[0]!.sizeBytes, 'attached '.repeat(100).length + 1, 'size is of the whole decoded content')
})

t.test('an attached message contributes its text to the attachment', async (t) => {
  const inner = `From: Inner <inner@example.com>\nSubject: Forwarded minutes\nDate: Tue, 01 Oct 2024 09:30:00 +0000\n\nMinutes of the board meeting.\n`
  const raw = crlf(
    `From: a@example.com\nDate: Tue, 01 Oct 2024 09:30:00 +0000\nMessage-ID: <fw@example.com>\nContent-Type: multipart/mixed; boundary="x"\n\n--x\nContent-Type: text/plain\n\nSee attached.\n--x\nContent-Type: message/rfc822\nContent-Disposition: attachment; filename="minutes.eml"\n\n${inner}\n--x--\n`,
  )
  const parsed = await parseUnchanged(t, raw)
  t.equal(parsed.attachments.length, 1)
  t.equal(parsed.attachments[0]!.contentType, 'message/rfc822')
  t.match(parsed.attachments[0]!.text, /From: inner@example\.com\nSubject: Forwarded minutes\n\nMinutes of the board meeting\./)
})

t.test('option validation is a programmer error', async (t) => {
  const logger = createMemoryLogger()
  t.throws(() => createMimeParser({ logger }, { ...defaultMimeParserOptions, partsMax: 0 }), /partsMax must be a positive integer/)
  t.throws(() => createMimeParser({ logger }, { ...defaultMimeParserOptions, parseTimeoutMs: Number.NaN }), /parseTimeoutMs/)
})

t.test('helpers', async (t) => {
  t.test('scanHeaders unfolds, skips an mbox From line, reports truncation', async (t) => {
    const scan = scanHeaders(crlf('From someone@example.com Thu Aug 22 12:36:23 2002\nSubject: one\n two\nbogus line\nX-A : b\n\nbody'), 1_000)
    t.ok(scan.mboxFromLine)
    t.same(
      scan.headers.map((header) => [header.key, header.value]),
      [
        ['subject', 'one two'],
        ['x-a', 'b'],
      ],
    )
    t.equal(scan.malformedLineCount, 1)
    t.equal(scan.bodyOffset, crlf('From someone@example.com Thu Aug 22 12:36:23 2002\nSubject: one\n two\nbogus line\nX-A : b\n\n').byteLength)
    const cut = scanHeaders(crlf('Subject: a\nX-B: bbbbbbbbbbbbbbbbbbbb\n\nbody'), 20)
    t.ok(cut.truncated)
    t.equal(cut.bodyOffset, null)
  })
  t.test('parseContentType', async (t) => {
    t.same(parseContentType('Multipart/Mixed; boundary="a;b"; charset=UTF-8'), { mediaType: 'multipart/mixed', params: { boundary: 'a;b', charset: 'UTF-8' } })
    t.equal(parseContentType(null).mediaType, 'text/plain')
  })
  t.test('scanStructure counts parts and depth and sees an unclosed multipart', async (t) => {
    const structure = scanStructure(crlf('Content-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: multipart/alternative;\n boundary="b"\n\n--b\n\nx\n--b\n\ny\n--b--\n--a\n\nz\n'))
    t.same(structure, { nulBytes: false, bareLineFeeds: false, partCount: 5, nestingDepth: 2, unterminatedMultipart: true })
  })
  t.test('parseMailDate', async (t) => {
    const cases: Array<[string, number | null]> = [
      ['Thu, 22 Aug 2002 12:36:23 +0100 (IST)', Date.UTC(2002, 7, 22, 11, 36, 23)],
      ['22 Aug 2002 12:36:23 -0400', Date.UTC(2002, 7, 22, 16, 36, 23)],
      ['Thu Aug 22 12:36:23 2002', Date.UTC(2002, 7, 22, 12, 36, 23)],
      ['Thu, 22 Aug 02 12:36 EDT', Date.UTC(2002, 7, 22, 16, 36)],
      ['Thu, 22 Aug 0102 12:07:35 +0800', Date.UTC(2002, 7, 22, 4, 7, 35)],
      ['Fri, 20 Sep 2002 12:15:37 GMT+1', Date.UTC(2002, 8, 20, 11, 15, 37)],
      ['Tue, 24 Sep 2002 10:39:13 +-0500', Date.UTC(2002, 8, 24, 15, 39, 13)],
      ['03 Jul 01 4:12:06 PM', Date.UTC(2001, 6, 3, 16, 12, 6)],
      ['2002/09/14 Sat 02:29:32 CDT', Date.UTC(2002, 8, 14, 7, 29, 32)],
      ['2024-10-01T09:30:00Z', Date.UTC(2024, 9, 1, 9, 30)],
      ['31 Feb 2002 10:00:00 +0000', null],
      ['sometime next week', null],
      ['', null],
    ]
    for (const [value, expected] of cases) t.equal(parseMailDate(value), expected, value)
  })
  t.test('decodeQuotedPrintable', async (t) => {
    t.equal(new TextDecoder().decode(decodeQuotedPrintable(encoder.encode('caf=C3=A9 =\r\nau lait=3D1 =ZZ'))), 'café au lait=1 =ZZ')
  })
})

// ---------------------------------------------------------------------------------------
// Exchange envelope journal reports

const journalOriginal = crlf(`From: Alice Example <alice@contoso.com>
To: Team List <team@contoso.com>
Cc: carol@contoso.com
Subject: Quarterly figures
Date: Tue, 01 Oct 2024 09:30:00 +0000
Message-ID: <q3-figures@contoso.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="orig-boundary"

--orig-boundary
Content-Type: text/plain; charset=utf-8

Figures attached.
--orig-boundary
Content-Type: application/pdf; name="q3.pdf"
Content-Disposition: attachment; filename="q3.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK
--orig-boundary--
`)

const journalEnvelopeText = `Sender: alice@contoso.com
Subject: Quarterly figures
Message-Id: <q3-figures@contoso.com>
To: bob@contoso.com, Expanded: team@contoso.com
To: dave@contoso.com, Expanded: team@contoso.com
Cc: carol@contoso.com
Bcc: eve@contoso.com
Bcc: frank@contoso.com, Expanded: auditors@contoso.com
Recipient: grace@contoso.com
`

function journalReport(rfc822Part: { headers: string; body: Uint8Array }, options: { journalHeader?: boolean; envelope?: string } = {}): Uint8Array {
  const head = crlf(`${options.journalHeader === false ? '' : 'X-MS-Journal-Report: \n'}From: Alice Example <alice@contoso.com>
To: journal@archive.contoso.com
Subject: Quarterly figures
Date: Tue, 01 Oct 2024 09:30:05 +0000
Message-ID: <journal-0001@contoso.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="_journal_report_boundary_"

This is a multi-part message in MIME format.
--_journal_report_boundary_
Content-Type: text/plain; charset="us-ascii"
Content-Transfer-Encoding: 7bit

${options.envelope ?? journalEnvelopeText}
--_journal_report_boundary_
${rfc822Part.headers}
`)
  return concatBytes(head, rfc822Part.body, crlf('\n--_journal_report_boundary_--\n'))
}

function base64Lines(bytes: Uint8Array): Uint8Array {
  const text = Buffer.from(bytes)
    .toString('base64')
    .replace(/.{1,76}/g, '$&\n')
  return crlf(text)
}

t.test('journal report: original cut byte-exact, envelope recipients with BCC and expanded lists', async (t) => {
  const report = journalReport({ headers: 'Content-Type: message/rfc822\nContent-Disposition: attachment\n', body: journalOriginal })
  const { parser } = makeParser()
  const before = report.slice()
  const unwrapped = await parser.unwrapJournal(report)
  t.ok(unwrapped, 'unwrapped')
  t.same(Buffer.compare(Buffer.from(report), Buffer.from(before)), 0, 'report bytes unchanged')
  t.equal(Buffer.compare(Buffer.from(unwrapped!.original), Buffer.from(journalOriginal)), 0, 'original byte-identical, CRLF kept')
  t.ok(Buffer.from(unwrapped!.original).includes('\r\n--orig-boundary--\r\n'))
  const envelope = unwrapped!.envelope
  t.equal(envelope.sender, 'alice@contoso.com')
  t.equal(envelope.messageId, '<q3-figures@contoso.com>')
  t.same([...envelope.recipients].sort(), [
    'auditors@contoso.com',
    'bob@contoso.com',
    'carol@contoso.com',
    'dave@contoso.com',
    'eve@contoso.com',
    'frank@contoso.com',
    'grace@contoso.com',
    'team@contoso.com',
  ])
  t.same([...envelope.bcc].sort(), ['auditors@contoso.com', 'eve@contoso.com', 'frank@contoso.com'])
  t.equal(envelope.recipientsTruncated, false)
  t.match(envelope.envelopeText, /^Sender: alice@contoso\.com\r\nSubject: Quarterly figures\r\n/)

  const reportParsed = await parser.parse(report)
  t.ok(reportParsed.flags.includes('journal-report'))
  t.notOk(reportParsed.flags.includes('journal-report-malformed'))

  const originalParsed = await parser.parse(unwrapped!.original)
  t.same(originalParsed.flags, [])
  t.equal(originalParsed.messageId, '<q3-figures@contoso.com>')
  t.equal(originalParsed.attachments.length, 1)
  t.equal(originalParsed.attachments[0]!.sha256, createHash('sha256').update(Buffer.from('JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PC9UeXBlL0NhdGFsb2c+PgplbmRvYmoK', 'base64')).digest('hex'))
})

t.test('journal report with a base64-encoded rfc822 part', async (t) => {
  const report = journalReport({ headers: 'Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n', body: base64Lines(journalOriginal) })
  const { parser } = makeParser()
  const unwrapped = await parser.unwrapJournal(report)
  t.ok(unwrapped)
  t.equal(Buffer.compare(Buffer.from(unwrapped!.original), Buffer.from(journalOriginal)), 0, 'decoded original byte-identical')
  t.ok(unwrapped!.envelope.bcc.includes('eve@contoso.com'))
})

t.test('journal report with a quoted-printable envelope and an 8bit original with bare LF', async (t) => {
  const original = encoder.encode('From: a@contoso.com\nTo: b@contoso.com\nSubject: caf\u00e9\n\nbody\n')
  const head = crlf(
    `X-MS-Journal-Report: \nContent-Type: multipart/mixed; boundary=jb\n\n--jb\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nSender: a@contoso.com\nSubject: caf=C3=A9\nMessage-Id: <x@contoso.com>\nTo: b@contoso.com\nBcc: hidden@contoso.com\n\n--jb\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n`,
  )
  const report = concatBytes(head, original, crlf('\n--jb--\n'))
  const { parser } = makeParser()
  const unwrapped = await parser.unwrapJournal(report)
  t.ok(unwrapped)
  t.equal(Buffer.compare(Buffer.from(unwrapped!.original), Buffer.from(original)), 0)
  t.match(unwrapped!.envelope.envelopeText, /Subject: café/)
  t.same(unwrapped!.envelope.bcc, ['hidden@contoso.com'])
})

t.test('a multipart with a message/rfc822 attachment but no journal header is not unwrapped', async (t) => {
  const forward = journalReport({ headers: 'Content-Type: message/rfc822\n', body: journalOriginal }, { journalHeader: false })
  const { parser } = makeParser()
  t.equal(await parser.unwrapJournal(forward), null)
  const parsed = await parser.parse(forward)
  t.notOk(parsed.flags.includes('journal-report'))
  t.notOk(parsed.flags.includes('journal-report-malformed'))
})

t.test('malformed journal reports are not unwrapped and are flagged by parse', async (t) => {
  const { parser, logger } = makeParser()
  const noOriginal = crlf(
    `X-MS-Journal-Report: \nFrom: alice@contoso.com\nSubject: Quarterly figures\nDate: Tue, 01 Oct 2024 09:30:05 +0000\nMessage-ID: <j2@contoso.com>\nContent-Type: multipart/mixed; boundary="jr"\n\n--jr\nContent-Type: text/plain\n\n${journalEnvelopeText}\n--jr--\n`,
  )
  const truncated = journalReport({ headers: 'Content-Type: message/rfc822\n', body: journalOriginal }).subarray(0, 900)
  const badBase64 = journalReport({ headers: 'Content-Type: message/rfc822\nContent-Transfer-Encoding: base64\n', body: crlf('not base64 at all!\n') })
  const notMultipart = crlf('X-MS-Journal-Report: \nFrom: alice@contoso.com\nContent-Type: text/plain\n\nSender: alice@contoso.com\n')
  const emptyEnvelope = journalReport({ headers: 'Content-Type: message/rfc822\n', body: journalOriginal }, { envelope: 'nothing useful here' })
  for (const [name, report] of [
    ['no rfc822 part', noOriginal],
    ['truncated', truncated],
    ['bad base64', badBase64],
    ['not multipart', notMultipart],
    ['empty envelope', emptyEnvelope],
  ] as const) {
    t.equal(await parser.unwrapJournal(report), null, `${name}: not unwrapped`)
    const parsed = await parser.parse(report)
    t.ok(parsed.flags.includes('journal-report-malformed'), `${name}: flagged`)
    t.notOk(parsed.flags.includes('journal-report'), `${name}: not flagged as a good report`)
  }
  const parsed = await parser.parse(noOriginal)
  t.equal(parsed.subject, 'Quarterly figures', 'the report itself is still parsed for metadata')
  t.ok(logger.records.some((record) => record.msg === 'journal report malformed' && record.reason === 'no message/rfc822 part'))
})

t.test('journal envelope variants and the recipient bound', async (t) => {
  // The form given in our brief (list first, members after Expanded) and Exchange 2003's
  // one-line Recipients: both name every address as a recipient.
  const envelope = parseJournalEnvelope(
    'Sender: <Boss@Contoso.com>\nOn-Behalf-Of: ceo@contoso.com\nTo: list@contoso.com, Expanded: a@contoso.com, b@contoso.com\nRecipients: c@contoso.com, SMTP:D@contoso.com\nTo: /O=ORG/OU=SITE/CN=RECIPIENTS/CN=legacy\nCc: fwd@contoso.com, Forwarded: user@contoso.com\n',
    100,
  )
  t.equal(envelope.sender, 'boss@contoso.com')
  t.equal(envelope.onBehalfOf, 'ceo@contoso.com')
  t.same(
    envelope.recipients,
    ['list@contoso.com', 'a@contoso.com', 'b@contoso.com', 'c@contoso.com', 'd@contoso.com', 'fwd@contoso.com', 'user@contoso.com'],
    'X.500 names are not addresses',
  )
  t.same(envelope.bcc, [])
  const many = Array.from({ length: 50 }, (_, index) => `Bcc: user${index}@contoso.com`).join('\n')
  const bounded = parseJournalEnvelope(`Sender: a@contoso.com\n${many}\n`, 10)
  t.equal(bounded.recipients.length, 10)
  t.equal(bounded.bcc.length, 10)
  t.ok(bounded.recipientsTruncated)
  t.ok(journalRecipientsMax >= 1_000, 'the service bound leaves room for large lists')
})
