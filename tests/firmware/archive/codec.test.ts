import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import { decodeBlob, encodeBlob } from '../../../firmware/archive/codec.js'
import { mailDictionary1 } from '../../../firmware/archive/mail-dictionary.js'
import { bunPath, repoRoot } from '../../helpers/service.js'
import { generatedMessage } from './fixtures/messages.js'

const typical = Buffer.from(
  [
    'Return-Path: <alice@corp.example>',
    'Received: from mx1.corp.example (mx1.corp.example [192.0.2.10])',
    '\tby archive.corp.example (Postfix) with ESMTP id 4F2A1C0034',
    '\tfor <journal@corp.example>; Tue, 3 Nov 2026 09:15:02 +0100 (CET)',
    'MIME-Version: 1.0',
    'Date: Tue, 3 Nov 2026 09:15:00 +0100',
    'Message-ID: <20261103091500.12345@corp.example>',
    'Subject: Re: quarterly numbers',
    'From: Alice <alice@corp.example>',
    'To: Bob <bob@corp.example>',
    'Content-Type: text/plain; charset="utf-8"',
    'Content-Transfer-Encoding: 7bit',
    '',
    'Bob, the numbers are in the shared folder. Alice',
    '',
  ].join('\r\n'),
)

t.test('new blobs use the mail dictionary: smaller than plain deflate, restored exactly', async (t) => {
  const encoded = await encodeBlob(typical)
  t.equal(encoded.codec, 'deflate-raw-mail1')
  const plain = deflateRawSync(typical, { level: 6 })
  t.ok(encoded.bytes.byteLength < plain.byteLength, `headers refer into the dictionary: ${encoded.bytes.byteLength} bytes against ${plain.byteLength}`)
  t.ok(Buffer.from(await decodeBlob(encoded.codec, encoded.bytes, typical.byteLength)).equals(typical), 'restored byte for byte')
  t.throws(() => inflateRawSync(encoded.bytes), 'without the dictionary the blob does not inflate')
  for (const raw of [generatedMessage(3, 2), Buffer.from('Subject: x\n\n\u0000\u00ff bare LF\n', 'latin1'), randomBytes(4096), Buffer.alloc(0), Buffer.alloc(300_000, 'mail ')]) {
    const blob = await encodeBlob(raw)
    t.ok(Buffer.from(await decodeBlob(blob.codec, blob.bytes, raw.byteLength)).equals(raw), `${raw.byteLength} bytes (${blob.codec}) come back exactly`)
  }
})

t.test('blobs written before the dictionary (deflate-raw) are still read', async (t) => {
  const old = deflateRawSync(typical)
  t.ok(Buffer.from(await decodeBlob('deflate-raw', old, typical.byteLength)).equals(typical))
})

t.test('the dictionary is frozen: stored blobs depend on its exact bytes', async (t) => {
  // Changing the text breaks every blob written with it. A new dictionary is a new codec.
  t.equal(createHash('sha256').update(Buffer.from(mailDictionary1, 'latin1')).digest('hex'), '6b1df334d34188df94482000ea323b59509c845267dc3fed6cb24f057ed4f69c')
  t.ok(/^[\x09\x0a\x0d\x20-\x7e]*$/.test(mailDictionary1), '7-bit text, so latin1 and UTF-8 encode it alike')
})

t.test('a blob written by Bun (the appliance) is read by Node and the other way round', async (t) => {
  const script = `import { encodeBlob } from ${JSON.stringify(`${repoRoot}/firmware/archive/codec.ts`)}; const raw = Buffer.from(await Bun.stdin.text(), 'base64'); const blob = await encodeBlob(raw); process.stdout.write(blob.codec + ' ' + Buffer.from(blob.bytes).toString('base64'))`
  const bun = spawnSync(bunPath, ['-e', script], { input: typical.toString('base64'), encoding: 'utf8', timeout: 20_000 })
  t.equal(bun.status, 0, bun.stderr)
  const [codec, base64] = bun.stdout.split(' ')
  t.equal(codec, 'deflate-raw-mail1')
  t.ok(Buffer.from(await decodeBlob('deflate-raw-mail1', Buffer.from(base64!, 'base64'), typical.byteLength)).equals(typical), 'Node restores what Bun wrote')
  const fromNode = await encodeBlob(typical)
  const decodeScript = `import { decodeBlob } from ${JSON.stringify(`${repoRoot}/firmware/archive/codec.ts`)}; const bytes = Buffer.from(await Bun.stdin.text(), 'base64'); process.stdout.write(Buffer.from(await decodeBlob('deflate-raw-mail1', bytes, ${typical.byteLength})).toString('base64'))`
  const back = spawnSync(bunPath, ['-e', decodeScript], { input: Buffer.from(fromNode.bytes).toString('base64'), encoding: 'utf8', timeout: 20_000 })
  t.equal(back.status, 0, back.stderr)
  t.ok(Buffer.from(back.stdout, 'base64').equals(typical), 'Bun restores what Node wrote')
})
