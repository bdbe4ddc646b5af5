import t from 'tap'
import { mkdtemp, readFile, readdir, stat, chmod, writeFile, unlink } from 'node:fs/promises'
import { X509Certificate, createHash, randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { inspect } from 'node:util'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock, systemClock } from '../../../firmware/common/clock.js'
import { loadOrCreateIdentityCertificate } from '../../../firmware/mirror/certificate.js'
import { checkSharedSecret, deriveMirrorSecret, generateSharedSecret, proofKeysOf, sharedSecretLengthMin } from '../../../firmware/mirror/secret.js'
import { FrameDecoder, FrameType, decodeRefusal, encodeFrame, encodeJson, encodeRefusal, handshakeFramePayloadBytesMax } from '../../../firmware/mirror/protocol.js'
import { compareIdentities, computeProof, encodeHello, handshakeTranscript, parseHello, protocolVersion } from '../../../firmware/mirror/handshake.js'
import { createAuthFailureLimiter, authFailuresMax, authFailureWindowMs } from '../../../firmware/mirror/listener.js'
import { MirrorError } from '../../../firmware/mirror/errors.js'

const deps = () => ({ logger: createMemoryLogger(), clock: systemClock })

t.test('identity certificate: created once with a 0600 key, reused with the same fingerprint, repaired when damaged', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-mirror-cert-'))
  const first = await loadOrCreateIdentityCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  t.equal(first.created, true)
  t.match(first.fingerprint, /^[0-9a-f]{64}$/)
  const keyPath = join(dataDir, 'mirror', 'key.pem')
  const certificatePath = join(dataDir, 'mirror', 'cert.pem')
  t.equal((await stat(keyPath)).mode & 0o777, 0o600, 'private key is 0600')
  t.equal((await stat(join(dataDir, 'mirror'))).mode & 0o777, 0o700, 'mirror directory is 0700')
  const certificate = new X509Certificate(await readFile(certificatePath, 'utf8'))
  t.equal(
    certificate.subject.split('\n').find((line) => line.startsWith('CN=')),
    'CN=MK650-0001',
  )
  t.equal(certificate.issuer, certificate.subject, 'self-signed')
  t.ok(certificate.verify(certificate.publicKey), 'signature verifies with its own key')
  t.equal(createHash('sha256').update(certificate.raw).digest('hex'), first.fingerprint, 'fingerprint = SHA-256 of the DER')
  t.ok(new Date(certificate.validTo).getUTCFullYear() >= new Date().getUTCFullYear() + 99, 'long validity')
  t.equal(certificate.publicKey.asymmetricKeyDetails?.modulusLength, 2048)
  t.same((await readdir(join(dataDir, 'mirror'))).sort(), ['cert.pem', 'key.pem'], 'no temporary files left behind')

  // A restart loads the same files.
  const again = await loadOrCreateIdentityCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  t.equal(again.created, false)
  t.equal(again.fingerprint, first.fingerprint)
  t.equal(again.privateKeyPem, first.privateKeyPem)

  // A loosened key mode is tightened.
  await chmod(keyPath, 0o644)
  await loadOrCreateIdentityCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  t.equal((await stat(keyPath)).mode & 0o777, 0o600)

  // A crash between the two writes leaves a key without certificate: a new certificate, same key.
  await unlink(certificatePath)
  const reissued = await loadOrCreateIdentityCertificate(deps(), { dataDir, serial: 'MK650-0001' })
  t.equal(reissued.created, false)
  t.equal(reissued.privateKeyPem, first.privateKeyPem, 'key kept')
  t.not(reissued.fingerprint, first.fingerprint, 'new certificate')

  // A changed serial gets a certificate naming it; the old one is set aside, not deleted.
  const renamed = await loadOrCreateIdentityCertificate(deps(), { dataDir, serial: 'MK650-0002' })
  t.equal(renamed.privateKeyPem, first.privateKeyPem)
  t.match(new X509Certificate(renamed.certificatePem).subject, /CN=MK650-0002/)
  t.ok((await readdir(join(dataDir, 'mirror'))).some((name) => name.startsWith('cert.pem.corrupt-')))

  // An unusable key is quarantined and replaced by a new pair.
  await writeFile(keyPath, 'not a key')
  const logger = createMemoryLogger()
  const replaced = await loadOrCreateIdentityCertificate({ logger, clock: systemClock }, { dataDir, serial: 'MK650-0002' })
  t.equal(replaced.created, true)
  t.not(replaced.privateKeyPem, first.privateKeyPem)
  t.ok(new X509Certificate(replaced.certificatePem).checkPrivateKey(await import('node:crypto').then((c) => c.createPrivateKey(replaced.privateKeyPem))))
  const asideKeys = (await readdir(join(dataDir, 'mirror'))).filter((name) => name.startsWith('key.pem.corrupt-'))
  t.equal(asideKeys.length, 1)
  t.equal(await readFile(join(dataDir, 'mirror', asideKeys[0]!), 'utf8'), 'not a key', 'raw bytes kept')
  t.notOk(JSON.stringify(logger.records).includes('PRIVATE KEY'), 'key material never logged')

  await t.rejects(loadOrCreateIdentityCertificate(deps(), { dataDir, serial: '' }), { code: 'CERTIFICATE_INVALID' })
})

t.test('shared secret: generated strong, weak ones refused, derived keys redacted and role-separated', async (t) => {
  const generated = new Set(Array.from({ length: 50 }, () => generateSharedSecret()))
  t.equal(generated.size, 50, 'no repeats')
  for (const secret of generated) {
    t.match(secret, /^[A-Z2-7]{32}$/, 'printable base32, 32 characters = 160 bits')
    t.equal(checkSharedSecret(secret), undefined)
  }
  t.match(checkSharedSecret('short-secret'), /at least 20 characters \(got 12\)/)
  t.equal(checkSharedSecret('x'.repeat(sharedSecretLengthMin - 1))?.includes('x'.repeat(5)), false, 'the reason never quotes the secret')
  t.match(checkSharedSecret('a'.repeat(40)), /distinct characters/)
  t.match(checkSharedSecret('abcdefghijklmnopqrstuvwxyz\n'), /control characters/)
  t.match(checkSharedSecret(42), /must be a string/)
  t.match(checkSharedSecret('x'.repeat(1025)), /at most 1024/)
  t.equal(checkSharedSecret('correct horse battery staple'), undefined)

  await t.rejects(deriveMirrorSecret('too-short'), { code: 'SECRET_WEAK', retryable: false })
  const text = 'correct horse battery staple'
  const derived = await deriveMirrorSecret(text)
  const derivedAgain = await deriveMirrorSecret(text)
  const other = await deriveMirrorSecret('correct horse battery stapler')
  t.equal(JSON.stringify({ derived }), '{"derived":"[redacted]"}')
  t.equal(inspect(derived), 'MirrorSecret [redacted]')
  t.equal(String(derived), '[redacted]')
  const keys = proofKeysOf(derived)
  t.ok(keys.client.equals(proofKeysOf(derivedAgain).client), 'deterministic')
  t.notOk(keys.client.equals(keys.server), 'client and server keys differ (no reflection)')
  t.notOk(keys.client.equals(proofKeysOf(other).client))
  const transcript = randomBytes(32)
  t.notOk(computeProof(derived, 'client', transcript).equals(computeProof(derived, 'server', transcript)))
})

t.test('HELLO parsing is strict and checks the protocol version first', async (t) => {
  const identity = { model: 650, serial: 'MK650-0001', firmwareVersion: '1.0.0', storeId: 'ab'.repeat(16) }
  const nonce = randomBytes(32)
  const hello = parseHello(encodeHello(identity, nonce, 9443))
  t.same(hello, { protocolVersion, ...identity, listenPort: 9443, nonce: nonce.toString('hex') })
  t.equal(parseHello(encodeHello(identity, nonce)).listenPort, 0, 'not listening: port 0')

  const encode = (value: unknown) => encodeJson(value)
  const good = { protocolVersion, ...identity, listenPort: 9443, nonce: nonce.toString('hex') }
  t.throws(() => parseHello(Buffer.from('not json')), { code: 'PROTOCOL' })
  t.throws(() => parseHello(Buffer.from([0xff, 0xfe, 0x7b, 0x7d])), { code: 'PROTOCOL' }, 'invalid UTF-8')
  t.throws(() => parseHello(encode([1, 2])), { code: 'PROTOCOL' })
  t.throws(() => parseHello(encode({ ...good, protocolVersion: '1' })), { code: 'PROTOCOL' })
  // Another version is refused as such even when the rest has another shape.
  t.throws(() => parseHello(encode({ protocolVersion: 1, serial: 'MK650-0001', nonce: good.nonce })), { code: 'PROTOCOL_MISMATCH', expected: 2, actual: 1 })
  t.throws(() => parseHello(encode({ protocolVersion: 3, whatever: true })), { code: 'PROTOCOL_MISMATCH', expected: 2, actual: 3 })
  t.throws(() => parseHello(encode({ ...good, extra: 1 })), { code: 'PROTOCOL' })
  t.throws(() => parseHello(encode({ ...good, model: 650.5 })), { code: 'PROTOCOL' })
  t.throws(() => parseHello(encode({ ...good, serial: '' })), { code: 'PROTOCOL' })
  t.throws(() => parseHello(encode({ ...good, serial: 'a\nb' })), { code: 'PROTOCOL' })
  t.throws(() => parseHello(encode({ ...good, firmwareVersion: 'v'.repeat(65) })), { code: 'PROTOCOL' })
  t.throws(() => parseHello(encode({ ...good, nonce: 'AB'.repeat(32) })), { code: 'PROTOCOL' }, 'upper-case hex')
  t.throws(() => parseHello(encode({ ...good, nonce: 'ab'.repeat(31) })), { code: 'PROTOCOL' }, 'short nonce')
  t.throws(() => parseHello(encode({ ...good, storeId: 'AB'.repeat(16) })), { code: 'PROTOCOL' }, 'upper-case store id')
  t.throws(() => parseHello(encode({ ...good, storeId: 'ab'.repeat(15) })), { code: 'PROTOCOL' }, 'short store id')
  t.throws(() => parseHello(encode({ ...good, listenPort: 65536 })), { code: 'PROTOCOL' }, 'port out of range')
  t.throws(() => parseHello(encode({ ...good, listenPort: -1 })), { code: 'PROTOCOL' }, 'negative port')
  t.throws(() => parseHello(encode({ ...good, listenPort: '9443' })), { code: 'PROTOCOL' }, 'port as text')
  const { storeId: _storeId, ...withoutStore } = good
  t.throws(() => parseHello(encode(withoutStore)), { code: 'PROTOCOL' }, 'store id missing')
})

const STORE = 'cd'.repeat(16)

t.test('identity comparison follows the specified order with expected vs actual', async (t) => {
  const own = { model: 650, serial: 'A', firmwareVersion: '1.0.0', storeId: STORE }
  t.equal(compareIdentities(own, { model: 650, serial: 'B', firmwareVersion: '1.0.0', storeId: STORE }), undefined)
  t.match(compareIdentities({ ...own, model: 350 }, { model: 850, serial: 'B', firmwareVersion: '2.0.0', storeId: STORE }), {
    code: 'MODEL_NOT_ELIGIBLE',
    expected: '>= 450',
    actual: 350,
  })
  t.match(compareIdentities(own, { model: 350, serial: 'B', firmwareVersion: '2.0.0', storeId: STORE }), { code: 'MODEL_NOT_ELIGIBLE', actual: 350 })
  t.match(compareIdentities(own, { model: 850, serial: 'A', firmwareVersion: '2.0.0', storeId: STORE }), { code: 'MODEL_MISMATCH', expected: 650, actual: 850 })
  t.match(compareIdentities(own, { model: 650, serial: 'A', firmwareVersion: '1.0.1', storeId: STORE }), {
    code: 'FIRMWARE_MISMATCH',
    expected: '1.0.0',
    actual: '1.0.1',
  })
  t.match(compareIdentities(own, { model: 650, serial: 'A', firmwareVersion: '1.0.0', storeId: STORE }), { code: 'SERIAL_CONFLICT', actual: 'A' })
  t.match(compareIdentities({ ...own, model: 450 }, { model: 450, serial: 'B', firmwareVersion: '1.0.0', storeId: STORE }), undefined, '450 is eligible')
})

t.test('transcript binds every part, unambiguously', async (t) => {
  const parts = {
    clientHello: Buffer.from('{"a":1}'),
    serverHello: Buffer.from('{"b":2}'),
    clientNonce: randomBytes(32),
    serverNonce: randomBytes(32),
    clientFingerprint: randomBytes(32),
    serverFingerprint: randomBytes(32),
    exporter: randomBytes(32),
  }
  const base = handshakeTranscript(parts)
  t.equal(base.length, 32)
  for (const name of Object.keys(parts) as (keyof typeof parts)[]) {
    const changed = { ...parts, [name]: Buffer.concat([parts[name], Buffer.from([0])]) }
    t.notOk(handshakeTranscript(changed).equals(base), `${name} is bound`)
  }
  // Moving a byte from one part to the next changes the transcript (length prefixes).
  const shifted = { ...parts, clientHello: Buffer.from('{"a":1}{'), serverHello: Buffer.from('"b":2}') }
  t.notOk(handshakeTranscript(shifted).equals(base))
  const swapped = { ...parts, clientFingerprint: parts.serverFingerprint, serverFingerprint: parts.clientFingerprint }
  t.notOk(handshakeTranscript(swapped).equals(base), 'roles of the certificates are bound')
})

t.test('frame decoder: any chunking, strict limits and types', async (t) => {
  const frames = [encodeFrame(FrameType.hello, encodeJson({ x: 1 })), encodeFrame(FrameType.ready), encodeFrame(200, randomBytes(5_000))]
  const stream = Buffer.concat(frames)
  for (const chunkBytes of [1, 3, 5, 4096, stream.length]) {
    const decoder = new FrameDecoder()
    const out = []
    for (let offset = 0; offset < stream.length; offset += chunkBytes) {
      decoder.push(stream.subarray(offset, offset + chunkBytes))
      for (let frame = decoder.next(100_000); frame; frame = decoder.next(100_000)) out.push(frame)
    }
    t.same(
      out.map((frame) => frame.type),
      [FrameType.hello, FrameType.ready, 200],
      `chunks of ${chunkBytes}`,
    )
    t.ok(Buffer.concat(out.map((frame) => encodeFrame(frame.type, frame.payload))).equals(stream), 'bytes round-trip')
    t.equal(decoder.bufferedBytes, 0)
  }

  // The limit is the one in force when a frame is cut: READY then a big frame in one chunk.
  const decoder = new FrameDecoder()
  decoder.push(Buffer.concat([encodeFrame(FrameType.ready), encodeFrame(16, randomBytes(20_000))]))
  t.equal(decoder.next(handshakeFramePayloadBytesMax)?.type, FrameType.ready)
  t.equal(decoder.next(1_000_000)?.payload.length, 20_000)

  const tooLarge = new FrameDecoder()
  tooLarge.push(Buffer.from([0xff, 0xff, 0xff, 0xff, FrameType.hello]))
  t.throws(() => tooLarge.next(handshakeFramePayloadBytesMax), { code: 'FRAME_TOO_LARGE', actual: 0xffffffff })
  for (const type of [0, 7, 15]) {
    const bad = new FrameDecoder()
    bad.push(encodeFrame(16).subarray(0, 4))
    bad.push(Buffer.from([type]))
    t.throws(() => bad.next(100), { code: 'PROTOCOL', actual: type }, `type ${type} is refused`)
  }

  const refusal = new MirrorError('MODEL_MISMATCH', 'peers must be the same model', { expected: 650, actual: 850 })
  t.match(decodeRefusal(encodeRefusal(refusal)), { code: 'MODEL_MISMATCH', expected: 650, actual: 850, origin: 'peer', retryable: false })
  t.throws(() => decodeRefusal(encodeJson({ code: 'NO_SUCH_CODE', expected: null, actual: null, message: '' })), { code: 'PROTOCOL' })
  t.match(decodeRefusal(encodeJson({ code: 'RATE_LIMITED', expected: null, actual: 5, message: 'a\nforged log line' })), {
    retryable: true,
    message: 'peer refused: a forged log line',
  })
})

t.test('auth failure limiter: per address, sliding window', async (t) => {
  const clock = createManualClock()
  const limiter = createAuthFailureLimiter(clock)
  for (let attempt = 0; attempt < authFailuresMax; attempt++) {
    t.equal(limiter.isLimited('10.0.0.1'), false)
    limiter.record('10.0.0.1')
  }
  t.equal(limiter.isLimited('10.0.0.1'), true)
  t.equal(limiter.isLimited('10.0.0.2'), false, 'other addresses unaffected')
  t.equal(limiter.limitedCount(), 1)
  clock.advance(authFailureWindowMs - 1)
  t.equal(limiter.isLimited('10.0.0.1'), true)
  clock.advance(1)
  t.equal(limiter.isLimited('10.0.0.1'), false, 'window passed')
  t.equal(limiter.count('10.0.0.1'), 0)
})
