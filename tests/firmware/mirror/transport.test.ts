import t from 'tap'
import { mkdtemp } from 'node:fs/promises'
import { randomBytes, createHash } from 'node:crypto'
import { createServer as createTcpServer, connect as connectTcp, type Server as TcpServer, type Socket } from 'node:net'
import { connect as connectTls, createServer as createTlsServer, type TLSSocket } from 'node:tls'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { waitUntil } from '../../helpers/wait.js'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock, systemClock, type Clock } from '../../../firmware/common/clock.js'
import { loadOrCreateIdentityCertificate, type IdentityCertificate } from '../../../firmware/mirror/certificate.js'
import { deriveMirrorSecret, generateSharedSecret, proofKeysOf } from '../../../firmware/mirror/secret.js'
import { FrameType, FramedSocket, decodeRefusal, encodeFrame, encodeJson, handshakeFramePayloadBytesMax, type MirrorFrame } from '../../../firmware/mirror/protocol.js'
import { clientHandshake, encodeHello, type AdmissionCandidate, type AdmitPeer, type MirrorIdentity } from '../../../firmware/mirror/handshake.js'
import {
  authFailuresMax,
  authFailureWindowMs,
  connectToPeer,
  createMirrorListener,
  handshakesPerAddressMax,
  unpinnedAuthFailuresPerAddressMax,
  listenerStopTimeoutMs,
  type MirrorAuditEvent,
} from '../../../firmware/mirror/listener.js'
import type { MirrorChannel } from '../../../firmware/mirror/channel.js'
import { MirrorError } from '../../../firmware/mirror/errors.js'

// Two appliances (A listens, B connects) and a third certificate for an attacker in the middle.
const [certificateA, certificateB, certificateC] = (await Promise.all(
  ['MK650-A0001', 'MK650-B0002', 'ATTACKER'].map(async (serial) =>
    loadOrCreateIdentityCertificate({ logger: createMemoryLogger(), clock: systemClock }, { dataDir: await mkdtemp(join(tmpdir(), 'mailkeep-mirror-transport-')), serial }),
  ),
)) as [IdentityCertificate, IdentityCertificate, IdentityCertificate]
const identityA: MirrorIdentity = { model: 650, serial: 'MK650-A0001', firmwareVersion: '1.0.0', storeId: 'a1'.repeat(16) }
const identityB: MirrorIdentity = { model: 650, serial: 'MK650-B0002', firmwareVersion: '1.0.0', storeId: 'b2'.repeat(16) }
const goodSecretText = `good-${generateSharedSecret()}`
const wrongSecretText = `wrong-${generateSharedSecret()}`
const goodSecret = await deriveMirrorSecret(goodSecretText)
const wrongSecret = await deriveMirrorSecret(wrongSecretText)
const host = '127.0.0.1'
/** What the helpers need of a tap test: a place to register cleanup. */
type Teardown = { teardown(fn: () => unknown): void }

async function startListener(
  t: Teardown,
  overrides: {
    identity?: Partial<MirrorIdentity>
    clock?: Clock
    randomBytes?: (size: number) => Buffer
    handshakeTimeoutMs?: number
    idleTimeoutMs?: number
    connectionsMax?: number
    unpinnedAuthFailuresPerAddressMax?: number
    admit?: AdmitPeer
    isPinnedFingerprint?: (fingerprint: string) => boolean
  } = {},
) {
  const logger = createMemoryLogger()
  const audits: MirrorAuditEvent[] = []
  const channels: MirrorChannel[] = []
  const listener = createMirrorListener(
    {
      logger,
      clock: overrides.clock ?? systemClock,
      identity: { ...identityA, ...overrides.identity },
      certificate: certificateA,
      audit: (event) => audits.push(event),
      onChannel: (channel) => void channels.push(channel),
      ...(overrides.randomBytes ? { randomBytes: overrides.randomBytes } : {}),
      ...(overrides.admit ? { admit: overrides.admit } : {}),
      ...(overrides.isPinnedFingerprint ? { isPinnedFingerprint: overrides.isPinnedFingerprint } : {}),
    },
    {
      host,
      port: 0,
      sharedSecret: goodSecret,
      handshakeTimeoutMs: overrides.handshakeTimeoutMs ?? 3_000,
      connectionsMax: overrides.connectionsMax ?? 32,
      ...(overrides.unpinnedAuthFailuresPerAddressMax ? { unpinnedAuthFailuresPerAddressMax: overrides.unpinnedAuthFailuresPerAddressMax } : {}),
      ...(overrides.idleTimeoutMs ? { idleTimeoutMs: overrides.idleTimeoutMs } : {}),
    },
  )
  await listener.start()
  t.teardown(() => listener.stop())
  const port = listener.address()!.port
  const nextChannel = (index: number) => waitUntil(() => channels[index], { what: `inbound channel ${index}` })
  const refusal = (code: string) => waitUntil(() => audits.find((event) => event.outcome === 'refused' && event.code === code), { what: `audit ${code}` })
  return { listener, port, logger, audits, channels, nextChannel, refusal }
}

function startClient(
  port: number,
  overrides: {
    identity?: Partial<MirrorIdentity>
    certificate?: IdentityCertificate
    secret?: string | typeof goodSecret
    timeoutMs?: number
    idleTimeoutMs?: number
    admit?: AdmitPeer
  } = {},
) {
  const logger = createMemoryLogger()
  const audits: MirrorAuditEvent[] = []
  const channel = connectToPeer(
    {
      logger,
      clock: systemClock,
      identity: { ...identityB, ...overrides.identity },
      certificate: overrides.certificate ?? certificateB,
      audit: (event) => audits.push(event),
    },
    {
      host,
      port,
      sharedSecret: overrides.secret ?? goodSecret,
      timeoutMs: overrides.timeoutMs ?? 5_000,
      ...(overrides.idleTimeoutMs ? { idleTimeoutMs: overrides.idleTimeoutMs } : {}),
      ...(overrides.admit ? { admit: overrides.admit } : {}),
    },
  )
  return { channel, logger, audits }
}

/** Rejection of a promise as a MirrorError (fails the test when it resolves). */
async function failureOf(promise: Promise<unknown>): Promise<MirrorError> {
  try {
    await promise
  } catch (error) {
    return error as MirrorError
  }
  throw new Error('expected a rejection')
}

/** A TLS connection with a given certificate, for speaking the protocol by hand. */
function openTls(port: number, certificate: IdentityCertificate): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const socket = connectTls({ host, port, key: certificate.privateKeyPem, cert: certificate.certificatePem, rejectUnauthorized: false, minVersion: 'TLSv1.3' })
    socket.once('secureConnect', () => resolve(socket))
    socket.once('error', reject)
  })
}

/**
 * Every frame until the connection closes, and when it closed (ms since `started`). A
 * connection still open after 5 s is cut, so a server that wrongly keeps it fails the test
 * instead of hanging it.
 */
async function drain(framed: FramedSocket, started: number): Promise<{ frames: MirrorFrame[]; closedAfterMs: number }> {
  const frames: MirrorFrame[] = []
  const cut = setTimeout(() => framed.socket.destroy(), 5_000)
  void framed.closed.then(() => clearTimeout(cut))
  for (;;) {
    try {
      frames.push(await framed.receive())
    } catch {
      await framed.closed
      return { frames, closedAfterMs: Date.now() - started }
    }
  }
}

function socketClosed(socket: Socket, started: number): Promise<number> {
  // Read and drop what arrives: a paused socket never sees the peer's end, so never closes.
  socket.resume()
  return new Promise((resolve) => {
    socket.on('error', () => undefined)
    socket.once('close', () => resolve(Date.now() - started))
  })
}

/** A TCP proxy that records what the client sends and can turn into a black hole. */
async function startProxy(t: Teardown, targetPort: number) {
  const recorded: Buffer[] = []
  const sockets = new Set<Socket>()
  let stalled = false
  const server: TcpServer = createTcpServer((client) => {
    const upstream = connectTcp(targetPort, host)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => undefined)
      socket.on('close', () => {
        sockets.delete(socket)
        // A black hole passes nothing, a close (FIN) included: each side must time out on
        // its own. (Passing the close on let the side that timed out first close the other,
        // which then saw CONNECTION_CLOSED instead of its own TIMEOUT: a flaky test.)
        if (stalled) return
        client.destroy()
        upstream.destroy()
      })
    }
    client.on('data', (chunk: Buffer) => {
      if (stalled) return
      recorded.push(Buffer.from(chunk))
      upstream.write(chunk)
    })
    upstream.on('data', (chunk: Buffer) => {
      if (!stalled) client.write(chunk)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  t.teardown(() => {
    for (const socket of sockets) socket.destroy()
    server.close()
  })
  return {
    port: (server.address() as { port: number }).port,
    recorded,
    stall: () => {
      stalled = true
    },
  }
}

t.test('handshake succeeds: both sides know the authenticated peer and frames flow both ways', async (t) => {
  const server = await startListener(t)
  const client = startClient(server.port, { secret: goodSecretText })
  const outbound = await client.channel
  const inbound = await server.nextChannel(0)

  t.match(outbound.peer, { serial: identityA.serial, model: 650, firmwareVersion: '1.0.0', fingerprint: certificateA.fingerprint, address: host, port: server.port })
  t.match(inbound.peer, { serial: identityB.serial, model: 650, firmwareVersion: '1.0.0', fingerprint: certificateB.fingerprint, address: host })
  t.equal(outbound.direction, 'outbound')
  t.equal(inbound.direction, 'inbound')
  t.ok(outbound.isOpen && inbound.isOpen)
  t.match(client.audits, [{ outcome: 'accepted', direction: 'outbound', peerSerial: identityA.serial, peerFingerprint: certificateA.fingerprint }])
  t.match(server.audits, [{ outcome: 'accepted', direction: 'inbound', peerSerial: identityB.serial, peerFingerprint: certificateB.fingerprint }])
  t.match(server.listener.healthcheck(), { ok: true, channels: 1, handshakesInProgress: 0 })

  await outbound.sendJson(16, { hello: 'world' })
  const first = await inbound.receive()
  t.equal(first?.type, 16)
  t.same(JSON.parse(first!.payload.toString()), { hello: 'world' })

  // Several megabytes each way at the same time.
  const toClient = randomBytes(5 * 1024 * 1024)
  const toServer = randomBytes(3 * 1024 * 1024 + 7)
  const [, , atClient, atServer] = await Promise.all([inbound.send(17, toClient), outbound.send(18, toServer), outbound.receive(), inbound.receive()])
  t.equal(atClient?.type, 17)
  t.ok(atClient?.payload.equals(toClient), '5 MiB binary frame arrives intact at the client')
  t.equal(atServer?.type, 18)
  t.ok(atServer?.payload.equals(toServer), '3 MiB binary frame arrives intact at the listener')

  // Async iteration ends at a clean close.
  for (let index = 0; index < 3; index++) await outbound.send(20, Buffer.from([index]))
  const closing = outbound.close()
  const seen: number[] = []
  for await (const frame of inbound) seen.push(frame.payload[0]!)
  t.same(seen, [0, 1, 2])
  await closing
  t.equal(await outbound.closed, null, 'clean close on the closing side')
  t.equal(await inbound.closed, null, 'clean close on the other side')
  t.notOk(outbound.isOpen)
  t.equal(await inbound.receive(), null)
  await t.rejects(outbound.send(16, Buffer.alloc(1)), { code: 'CLOSED' })
  t.throws(() => void outbound.send(4, Buffer.alloc(0)), { name: 'AssertionError' }, 'control frame types are not for the copy layer')
})

t.test('compatibility refusals carry the same reason code and expected/actual on both sides', async (t) => {
  const cases = [
    { name: 'model', client: { model: 850 }, code: 'MODEL_MISMATCH', expected: 650, actual: 850 },
    { name: 'firmware', client: { firmwareVersion: '1.0.1' }, code: 'FIRMWARE_MISMATCH', expected: '1.0.0', actual: '1.0.1' },
    { name: 'ineligible model', client: { model: 350 }, code: 'MODEL_NOT_ELIGIBLE', expected: '>= 450', actual: 350 },
    { name: 'own serial', client: { serial: identityA.serial }, code: 'SERIAL_CONFLICT', expected: `not ${identityA.serial}`, actual: identityA.serial },
  ]
  const server = await startListener(t)
  for (const [index, testCase] of cases.entries()) {
    const client = startClient(server.port, { identity: testCase.client })
    const error = await failureOf(client.channel)
    t.match(error, { name: 'MirrorError', code: testCase.code, expected: testCase.expected, actual: testCase.actual, origin: 'peer', retryable: false }, `${testCase.name}: client`)
    const event = await waitUntil(() => server.audits[index], { what: 'listener audit' })
    t.match(event, { outcome: 'refused', direction: 'inbound', code: testCase.code, expected: testCase.expected, actual: testCase.actual, origin: 'local' }, `${testCase.name}: listener`)
    t.match(client.audits, [{ outcome: 'refused', direction: 'outbound', code: testCase.code, expected: testCase.expected, actual: testCase.actual }])
    t.ok(
      server.logger.records.some((record) => record.code === testCase.code && record.expected === testCase.expected && record.actual === testCase.actual),
      `${testCase.name}: listener log has the reason`,
    )
    t.ok(
      client.logger.records.some((record) => record.code === testCase.code && record.actual === testCase.actual),
      `${testCase.name}: client log has the reason`,
    )
  }
  t.equal(server.channels.length, 0, 'no channel from any refused handshake')

  // Another protocol version, spoken by hand: refused before anything else is looked at.
  const socket = await openTls(server.port, certificateB)
  const framed = new FramedSocket(socket, handshakeFramePayloadBytesMax)
  await framed.send(FrameType.hello, encodeJson({ protocolVersion: 3, features: ['future'] }))
  const { frames } = await drain(framed, Date.now())
  t.equal(frames.length, 1)
  t.match(decodeRefusal(frames[0]!.payload), { code: 'PROTOCOL_MISMATCH', expected: 2, actual: 3 })
  await server.refusal('PROTOCOL_MISMATCH')

  // A model that may not mirror does not even listen.
  const small = createMirrorListener(
    { logger: createMemoryLogger(), clock: systemClock, identity: { ...identityA, model: 350 }, certificate: certificateA, audit: () => undefined, onChannel: () => undefined },
    { host, port: 0, sharedSecret: goodSecret, handshakeTimeoutMs: 1_000, connectionsMax: 4 },
  )
  await t.rejects(small.start(), { code: 'MODEL_NOT_ELIGIBLE', expected: '>= 450', actual: 350 })
  t.equal(small.address(), null)
})

t.test('a wrong secret is AUTH_FAILED on both sides, audited, and no secret is ever written', async (t) => {
  const server = await startListener(t)
  const client = startClient(server.port, { secret: wrongSecretText })
  const error = await failureOf(client.channel)
  t.match(error, { code: 'AUTH_FAILED', origin: 'peer', retryable: false })
  const event = await server.refusal('AUTH_FAILED')
  t.match(event, { origin: 'local', peerSerial: identityB.serial, peerFingerprint: certificateB.fingerprint, remoteAddress: host })
  t.match(client.audits, [{ outcome: 'refused', code: 'AUTH_FAILED', origin: 'peer' }])
  t.equal(server.channels.length, 0)

  // The right secret still works afterwards.
  const good = startClient(server.port, { secret: goodSecretText })
  await good.channel
  await server.nextChannel(0)

  const everything = JSON.stringify([server.logger.records, client.logger.records, good.logger.records, server.audits, client.audits, error, error.message, error.stack])
  for (const secret of [goodSecretText, wrongSecretText, proofKeysOf(goodSecret).client.toString('hex'), proofKeysOf(goodSecret).server.toString('hex')]) {
    t.notOk(everything.includes(secret), 'secret material absent from logs, audits and errors')
  }
  t.ok(
    server.logger.records.some((record) => record.code === 'AUTH_FAILED'),
    'the failure itself is logged',
  )
})

t.test('failed proofs are rate-limited per source address, then allowed again after the window', async (t) => {
  const clock = createManualClock()
  const server = await startListener(t, { clock })
  for (let attempt = 0; attempt < authFailuresMax; attempt++) {
    t.match(await failureOf(startClient(server.port, { secret: wrongSecret }).channel), { code: 'AUTH_FAILED' })
  }
  // Even the right secret is now refused, without its HELLO being read.
  const limited = await failureOf(startClient(server.port, { secret: goodSecret }).channel)
  t.match(limited, { code: 'RATE_LIMITED', origin: 'peer', retryable: true, actual: authFailuresMax })
  const event = await server.refusal('RATE_LIMITED')
  t.equal(event.peerSerial, null, 'refused before the HELLO was parsed')
  t.equal(server.audits.filter((audit) => audit.code === 'AUTH_FAILED').length, authFailuresMax)
  t.equal(server.listener.healthcheck().rateLimitedAddresses, 1)
  t.equal(server.channels.length, 0)

  clock.advance(authFailureWindowMs)
  await startClient(server.port, { secret: goodSecret }).channel
  await server.nextChannel(0)
  t.equal(server.listener.healthcheck().rateLimitedAddresses, 0)
})

t.test('failed proofs throttle the failing certificate only: a peer on the same address still gets in', async (t) => {
  const clock = createManualClock()
  const pinned = new Set([certificateB.fingerprint])
  const server = await startListener(t, { clock, isPinnedFingerprint: (fingerprint) => pinned.has(fingerprint) })
  // An appliance with the wrong secret (its own certificate) fails until it is limited.
  for (let attempt = 0; attempt < authFailuresMax; attempt++) {
    t.match(await failureOf(startClient(server.port, { secret: wrongSecret, certificate: certificateC, identity: { serial: 'MK650-W' } }).channel), { code: 'AUTH_FAILED' })
  }
  t.match(await failureOf(startClient(server.port, { secret: goodSecret, certificate: certificateC, identity: { serial: 'MK650-W' } }).channel), { code: 'RATE_LIMITED' })
  // The real peer on the same address, with its own certificate, is not delayed.
  await startClient(server.port).channel
  await server.nextChannel(0)
  t.equal(server.listener.healthcheck().rateLimitedAddresses, 1)
})

t.test('a guesser changing certificates meets the per-address bound for unpinned certificates; pinned ones pass', async (t) => {
  const clock = createManualClock()
  const bound = 3
  const server = await startListener(t, { clock, isPinnedFingerprint: (fingerprint) => fingerprint === certificateB.fingerprint, unpinnedAuthFailuresPerAddressMax: bound })
  t.ok(bound < authFailuresMax && unpinnedAuthFailuresPerAddressMax > authFailuresMax)
  for (let attempt = 0; attempt < bound; attempt++) {
    t.match(await failureOf(startClient(server.port, { secret: wrongSecret, certificate: certificateC }).channel), { code: 'AUTH_FAILED' })
  }
  // Another unpinned certificate (A's, used as a client here) from the same address: limited.
  t.match(await failureOf(startClient(server.port, { certificate: certificateA }).channel), { code: 'RATE_LIMITED' })
  // The pinned certificate passes.
  await startClient(server.port).channel
  await server.nextChannel(0)
  clock.advance(authFailureWindowMs)
  await startClient(server.port, { certificate: certificateA }).channel
  await server.nextChannel(1)
})

t.test('admission after the proofs: a refused peer gets IDENTITY_CHANGED or NOT_A_PEER on both sides, and no proof from the server', async (t) => {
  const seen: AdmissionCandidate[] = []
  const server = await startListener(t, {
    admit: (candidate) => {
      seen.push(candidate)
      return candidate.serial === identityB.serial ? undefined : new MirrorError('NOT_A_PEER', 'not a peer here', { expected: 'a configured mirror peer', actual: candidate.serial })
    },
  })
  // Admitted: the server saw the client's proven identity, store id and listening port.
  await startClient(server.port, { identity: { storeId: 'b2'.repeat(16) } }).channel
  await server.nextChannel(0)
  t.match(seen[0], { serial: identityB.serial, storeId: 'b2'.repeat(16), fingerprint: certificateB.fingerprint, address: host, direction: 'inbound', listenPort: 0 })
  // Refused inbound: the client gets the server's refusal with expected/actual.
  const refused = await failureOf(startClient(server.port, { identity: { serial: 'MK650-J' }, certificate: certificateC }).channel)
  t.match(refused, { code: 'NOT_A_PEER', origin: 'peer', expected: 'a configured mirror peer', actual: 'MK650-J' })
  await server.refusal('NOT_A_PEER')
  t.equal(server.channels.length, 1)
  // Refused outbound: the client's own admission refuses after the server's proof; the server sees the refusal.
  const changed = await failureOf(
    startClient(server.port, {
      admit: (candidate) => new MirrorError('IDENTITY_CHANGED', 'pinned another', { expected: 'serial X', actual: `serial ${candidate.serial}` }),
    }).channel,
  )
  t.match(changed, { code: 'IDENTITY_CHANGED', origin: 'local', actual: `serial ${identityA.serial}` })
  const peerSide = await server.refusal('IDENTITY_CHANGED')
  t.match(peerSide, { origin: 'peer', expected: 'serial X' })
  t.equal(server.channels.length, 1, 'no channel from a refused admission')
})

t.test('replayed handshakes are refused: raw TLS bytes, and frames replayed with the same nonces and certificates', async (t) => {
  // Server nonces fixed on purpose: then only the TLS session (its exporter) differs between
  // the recorded and the replayed handshake, and that alone must defeat the replay.
  const fixedNonce = (size: number) => Buffer.alloc(size, 7)
  const server = await startListener(t, { randomBytes: fixedNonce })

  // 1. Raw bytes recorded by a TCP proxy during a successful handshake.
  const proxy = await startProxy(t, server.port)
  await startClient(proxy.port).channel
  await server.nextChannel(0)
  t.ok(proxy.recorded.length > 0)
  const replay = connectTcp(server.port, host)
  const replayClosed = socketClosed(replay, Date.now())
  replay.write(Buffer.concat(proxy.recorded))
  await replayClosed
  await server.refusal('TLS_FAILED')
  t.equal(server.channels.length, 1, 'no channel from the raw replay')

  // 2. The client's plaintext frames, recorded from a real handshake and replayed in a new TLS session.
  const socket = await openTls(server.port, certificateB)
  const written: Buffer[] = []
  const write = socket.write.bind(socket)
  socket.write = ((chunk: Buffer, ...rest: never[]) => {
    written.push(Buffer.from(chunk))
    return write(chunk, ...rest)
  }) as typeof socket.write
  const recordedPeer = await clientHandshake(new FramedSocket(socket, handshakeFramePayloadBytesMax), {
    identity: identityB,
    secret: goodSecret,
    randomBytes,
  })
  t.equal(recordedPeer.serial, identityA.serial, 'the recorded handshake succeeded')
  const recordedChannel = await server.nextChannel(1)

  const replaySocket = await openTls(server.port, certificateB)
  const replayFramed = new FramedSocket(replaySocket, handshakeFramePayloadBytesMax)
  replaySocket.write(Buffer.concat(written))
  const { frames } = await drain(replayFramed, Date.now())
  t.equal(frames[0]?.type, FrameType.hello)
  t.ok(frames[0]?.payload.equals(encodeHello(identityA, fixedNonce(32), server.port)), 'the server said exactly what it said the first time')
  t.equal(frames.length, 2)
  t.match(decodeRefusal(frames[1]!.payload), { code: 'AUTH_FAILED' })
  await server.refusal('AUTH_FAILED')
  t.equal(server.channels.length, 2, 'no channel from the replay')

  // A handshake frame on an established channel is a protocol error that closes only that channel.
  socket.write(encodeFrame(FrameType.hello, encodeJson({})))
  await t.rejects(recordedChannel.receive(), { code: 'PROTOCOL' })
  t.match(await recordedChannel.closed, { code: 'PROTOCOL' })
  t.ok(server.channels[0]!.isOpen, 'the other channel is undisturbed')
})

t.test('a TLS-terminating man in the middle cannot relay a handshake', async (t) => {
  const server = await startListener(t)
  const middle = createTlsServer(
    { key: certificateC.privateKeyPem, cert: certificateC.certificatePem, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' },
    (fromClient) => {
      const toServer = connectTls({ host, port: server.port, key: certificateC.privateKeyPem, cert: certificateC.certificatePem, rejectUnauthorized: false })
      for (const socket of [fromClient, toServer]) {
        socket.on('error', () => undefined)
        socket.on('close', () => {
          fromClient.destroy()
          toServer.destroy()
        })
      }
      fromClient.pipe(toServer)
      toServer.pipe(fromClient)
    },
  )
  await new Promise<void>((resolve) => middle.listen(0, host, resolve))
  t.teardown(() => middle.close())
  const client = startClient((middle.address() as { port: number }).port)
  t.match(await failureOf(client.channel), { code: 'AUTH_FAILED', origin: 'peer' })
  t.match(await server.refusal('AUTH_FAILED'), { peerFingerprint: certificateC.fingerprint })
  t.equal(server.channels.length, 0)
})

t.test('garbage, plain-text and stalled clients are dropped in time while a real peer gets through', async (t) => {
  const handshakeTimeoutMs = 1_000
  const server = await startListener(t, { handshakeTimeoutMs })
  const started = Date.now()

  // Stalled: TCP only, and TLS then silence.
  const stalledTcp = connectTcp(server.port, host)
  const stalledTcpClosed = socketClosed(stalledTcp, started)
  const stalledTls = new FramedSocket(await openTls(server.port, certificateB), handshakeFramePayloadBytesMax)
  const stalledTlsDrained = drain(stalledTls, started)

  // Plain text on a TLS port.
  const plain = connectTcp(server.port, host)
  const plainStarted = Date.now()
  const plainClosed = socketClosed(plain, plainStarted)
  plain.write('GET / HTTP/1.1\r\nHost: mailkeep\r\n\r\n')
  t.ok((await plainClosed) < handshakeTimeoutMs / 2, 'plain text dropped at once')

  // Garbage after TLS: each gets a REFUSE with the reason and is closed at once.
  const garbage = [
    { bytes: Buffer.from([0xff, 0xff, 0xff, 0xff, 0x01, 0x00]), code: 'FRAME_TOO_LARGE' },
    { bytes: encodeFrame(FrameType.hello, randomBytes(64).fill(0xfe, 0, 1)), code: 'PROTOCOL' },
    { bytes: encodeFrame(9, Buffer.alloc(4)), code: 'PROTOCOL' },
    { bytes: encodeFrame(FrameType.proof, randomBytes(32)), code: 'PROTOCOL' },
    { bytes: Buffer.concat([Buffer.from([0, 0x10, 0, 0, 16]), randomBytes(2000)]), code: 'FRAME_TOO_LARGE' },
  ]
  for (const { bytes, code } of garbage) {
    const garbageStarted = Date.now()
    const framed = new FramedSocket(await openTls(server.port, certificateB), handshakeFramePayloadBytesMax)
    framed.socket.write(bytes)
    const { frames, closedAfterMs } = await drain(framed, garbageStarted)
    t.equal(frames.length, 1, `${code}: one REFUSE`)
    t.match(decodeRefusal(frames[0]!.payload), { code }, `${code}: the reason is sent`)
    t.ok(closedAfterMs < handshakeTimeoutMs / 2, `${code}: dropped at once (${closedAfterMs} ms)`)
  }

  // A real peer connects while the stalled ones are still waiting.
  const legitimate = await startClient(server.port).channel
  t.ok(Date.now() - started < handshakeTimeoutMs, 'the real peer did not wait for the stalled ones')
  t.equal(legitimate.peer.serial, identityA.serial)

  // Fill this address's handshake slots; the next connection is dropped at accept.
  const fillers = Array.from({ length: handshakesPerAddressMax - 2 }, () => connectTcp(server.port, host))
  await Promise.all(fillers.map((socket) => new Promise((resolve) => socket.once('connect', resolve))))
  await waitUntil(() => server.listener.healthcheck().handshakesInProgress === handshakesPerAddressMax, { what: 'slots filled' })
  const extra = connectTcp(server.port, host)
  const extraStarted = Date.now()
  t.ok((await socketClosed(extra, extraStarted)) < handshakeTimeoutMs / 2, 'over the per-address limit: dropped at accept')
  await server.refusal('BUSY')

  const tcpClosedAfterMs = await stalledTcpClosed
  const tls = await stalledTlsDrained
  for (const [name, closedAfterMs] of [
    ['stalled TCP', tcpClosedAfterMs],
    ['stalled TLS', tls.closedAfterMs],
  ] as const) {
    t.ok(closedAfterMs >= handshakeTimeoutMs - 50 && closedAfterMs < handshakeTimeoutMs + 1_000, `${name} dropped after the handshake timeout (${closedAfterMs} ms)`)
  }
  t.match(decodeRefusal(tls.frames[0]!.payload), { code: 'TIMEOUT' }, 'a stalled TLS peer is told why')
  await Promise.all(fillers.map((socket) => socketClosed(socket, started)))

  const codes = server.audits.filter((event) => event.outcome === 'refused').map((event) => event.code)
  t.equal(codes.filter((code) => code === 'TIMEOUT').length, 2 + fillers.length)
  t.equal(codes.filter((code) => code === 'TLS_FAILED').length, 1)
  t.equal(codes.filter((code) => code === 'FRAME_TOO_LARGE').length, 2)
  t.equal(codes.filter((code) => code === 'PROTOCOL').length, 3)
  await waitUntil(() => server.listener.healthcheck().connections === 1, { what: 'dropped connections forgotten' })
  t.match(server.listener.healthcheck(), { connections: 1, channels: 1, handshakesInProgress: 0 })
  t.ok(legitimate.isOpen, 'the real channel is undisturbed')
})

t.test('channels: keepalives hold a quiet channel, a black-holed peer is dropped, a slow consumer is not', async (t) => {
  const idleTimeoutMs = 600
  const server = await startListener(t, { idleTimeoutMs })
  const proxy = await startProxy(t, server.port)
  const outbound = await startClient(proxy.port, { idleTimeoutMs }).channel
  const inbound = await server.nextChannel(0)

  await new Promise((resolve) => setTimeout(resolve, idleTimeoutMs * 2))
  t.ok(outbound.isOpen && inbound.isOpen, 'quiet for twice the idle timeout, still open')

  const stalledAt = Date.now()
  proxy.stall()
  const [outboundReason, inboundReason] = await Promise.all([outbound.closed, inbound.closed])
  const elapsedMs = Date.now() - stalledAt
  t.match(outboundReason, { code: 'TIMEOUT', origin: 'local' })
  t.match(inboundReason, { code: 'TIMEOUT', origin: 'local' })
  // The last byte before the black hole came at most one keepalive interval (a third) earlier.
  t.ok(elapsedMs >= (idleTimeoutMs * 2) / 3 - 50 && elapsedMs < idleTimeoutMs + 500, `dropped after the idle timeout (${elapsedMs} ms)`)

  // Backpressure: 40 MiB sent while the listener's consumer sleeps past the idle timeout.
  const direct = await startClient(server.port, { idleTimeoutMs }).channel
  const slow = await server.nextChannel(1)
  const frameCount = 40
  const sending = (async () => {
    for (let index = 0; index < frameCount; index++) await direct.send(30, Buffer.alloc(1024 * 1024, index))
  })()
  await new Promise((resolve) => setTimeout(resolve, idleTimeoutMs * 2.5))
  t.ok(slow.isOpen, 'a consumer that is behind is not mistaken for a dead peer')
  const hashes: string[] = []
  for (let index = 0; index < frameCount; index++) {
    const frame = await slow.receive()
    t.equal(frame?.payload[0], index, `frame ${index} in order`)
    hashes.push(createHash('sha256').update(frame!.payload).digest('hex'))
  }
  await sending
  t.equal(hashes.length, frameCount)
  t.equal(
    hashes[7],
    createHash('sha256')
      .update(Buffer.alloc(1024 * 1024, 7))
      .digest('hex'),
    'payload intact',
  )
})

t.test('connect failures are typed and retryable', async (t) => {
  // Nothing listens: connection refused.
  const probe = createTcpServer()
  await new Promise<void>((resolve) => probe.listen(0, host, resolve))
  const freePort = (probe.address() as { port: number }).port
  await new Promise((resolve) => probe.close(resolve))
  t.match(await failureOf(startClient(freePort).channel), { code: 'CONNECT_FAILED', retryable: true })

  // Something accepts and never speaks TLS: timeout.
  const silent = createTcpServer(() => undefined)
  await new Promise<void>((resolve) => silent.listen(0, host, resolve))
  t.teardown(() => silent.close())
  const started = Date.now()
  const timeout = await failureOf(startClient((silent.address() as { port: number }).port, { timeoutMs: 500 }).channel)
  const elapsedMs = Date.now() - started
  t.match(timeout, { code: 'TIMEOUT', retryable: true })
  t.ok(elapsedMs >= 450 && elapsedMs < 1_500, `timed out after ${elapsedMs} ms`)

  // A full listener drops the connection before TLS; the client may retry later.
  const server = await startListener(t, { connectionsMax: 1 })
  const holder = connectTcp(server.port, host)
  holder.on('error', () => undefined)
  await new Promise((resolve) => holder.once('connect', resolve))
  await waitUntil(() => server.listener.healthcheck().connections === 1, { what: 'holder accepted' })
  t.match(await failureOf(startClient(server.port).channel), { retryable: true })
  await server.refusal('BUSY')
  holder.destroy()

  // A weak secret is refused before any connection is made.
  t.match(await failureOf(startClient(server.port, { secret: 'short' }).channel), { code: 'SECRET_WEAK' })
})

t.test('stop is bounded, idempotent, and closes its channels cleanly', async (t) => {
  const server = await startListener(t)
  const outbound = await startClient(server.port).channel
  await server.nextChannel(0)
  const started = Date.now()
  const stopping = server.listener.stop()
  t.equal(server.listener.stop(), stopping, 'the same stop')
  await stopping
  t.ok(Date.now() - started < listenerStopTimeoutMs, 'stopped before the hard timeout')
  t.equal(await outbound.receive(), null, 'the peer sees a clean close')
  t.equal(await outbound.closed, null)
  t.match(server.listener.healthcheck(), { ok: false, detail: 'not listening', address: null })
  t.match(await failureOf(startClient(server.port).channel), { code: 'CONNECT_FAILED', retryable: true })
})
