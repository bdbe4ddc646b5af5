import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { mirroringModelMin } from '../../config/models.js'
import { MirrorError } from './errors.js'
import { certificateFingerprint } from './certificate.js'
import { FrameType, decodeRefusal, encodeJson, frameTypeName, parseJsonObject, type FramedSocket, type MirrorFrame } from './protocol.js'
import { proofKeysOf, mirrorKeyLabel, type MirrorSecret } from './secret.js'

/**
 * The mirror trust handshake, run over a fresh TLS 1.3 connection in which both sides
 * presented self-signed certificates (no CA: trust comes from the shared secret):
 *
 *     client → HELLO {protocolVersion, model, firmwareVersion, serial, storeId, listenPort, nonce}
 *     server   checks the client's HELLO; a mismatch → REFUSE, close
 *     server → HELLO
 *     client   checks the server's HELLO the same way
 *     client → PROOF  HMAC(clientKey, transcript)
 *     server   verifies; wrong → REFUSE AUTH_FAILED, close
 *              admits the now proven peer: identity pinned for it? → else REFUSE
 *              IDENTITY_CHANGED or NOT_A_PEER, close
 *     server → PROOF  HMAC(serverKey, transcript)
 *     client   verifies; wrong → REFUSE AUTH_FAILED, close
 *              admits the proven peer the same way → else REFUSE, close
 *     client → READY  (both sides now hold an authenticated channel)
 *
 * The server speaks its proof only after the client's has verified, so a stranger who
 * connects to a listener never obtains material to test guesses of the secret against
 * offline. Compatibility is decided by the server, whose expected/actual the client then
 * reports unchanged, so both sides show the same reason. Admission (is this proven appliance
 * the peer we pinned, or a configured peer at all?) runs only after the peer's proof: an
 * unauthenticated stranger learns nothing of the pins, and nothing it claims is pinned.
 */

/**
 * Version of this handshake and framing. Peers with another version are refused PROTOCOL_MISMATCH.
 * 2: HELLO carries the store id and the listening port (peer identity and joins).
 */
export const protocolVersion = 2
/** Random bytes in each side's nonce. */
export const nonceBytes = 32
/** Bytes of an HMAC-SHA256 proof. */
export const proofBytes = 32
/** Longest serial or firmware version accepted in a HELLO, in characters. */
export const helloTextLengthMax = 64
/** Length of the TLS exporter value bound into the transcript, in bytes. */
export const exporterBytes = 32
/** RFC 5705 exporter label (the EXPORTER prefix is reserved for private use). */
export const exporterLabel = `EXPORTER-${mirrorKeyLabel}`

/** What a side says about itself in its HELLO. */
export interface MirrorIdentity {
  model: number
  serial: string
  firmwareVersion: string
  /** The archive's random id (32 lower-case hex), made with the archive: a wiped or replaced volume has a new one. */
  storeId: string
}

/** A parsed HELLO frame. */
export interface HelloMessage extends MirrorIdentity {
  protocolVersion: number
  /** The port the side's mirror listener is bound to; 0 when it does not listen. */
  listenPort: number
  /** 64 lower-case hex digits. */
  nonce: string
}

/** The authenticated other side of a channel. */
export interface MirrorPeerIdentity extends MirrorIdentity {
  /** SHA-256 of the peer's DER certificate as presented in this TLS session, lower-case hex. */
  fingerprint: string
  /** The port its mirror listener is bound to (its address for a join); 0 when it does not listen. */
  listenPort: number
}

/** A proven peer as admission sees it: its identity and where the connection came from. */
export interface AdmissionCandidate extends MirrorPeerIdentity {
  /** The remote address of the connection (IPv4-mapped addresses unwrapped). */
  address: string
  direction: 'inbound' | 'outbound'
}

/**
 * Decides whether a peer that has just proven the secret may have a channel: undefined to
 * admit, or the refusal (IDENTITY_CHANGED, NOT_A_PEER) to send instead.
 */
export type AdmitPeer = (candidate: AdmissionCandidate) => MirrorError | undefined | Promise<MirrorError | undefined>

/** What a handshake needs from its side. */
export interface HandshakeContext {
  identity: MirrorIdentity
  secret: MirrorSecret
  /** Cryptographically secure random bytes (node:crypto randomBytes; tests may fix them). */
  randomBytes: (size: number) => Buffer
  /** This side's mirror listener port, said in its HELLO; 0 (the default) when it does not listen. */
  listenPort?: number
  /** Admission of the proven peer; every proven peer is admitted when absent. */
  admit?: AdmitPeer
}

/** Filled in as the handshake learns about the peer, so a failure can still be audited with it. */
export interface HandshakeProgress {
  peerSerial?: string
  peerFingerprint?: string
  peerStoreId?: string
}

const helloKeys = ['firmwareVersion', 'listenPort', 'model', 'nonce', 'protocolVersion', 'serial', 'storeId']
const printableText = /^[\x20-\x7e]+$/
const storeIdPattern = /^[0-9a-f]{32}$/

/** True when `value` has the form of a store id: 32 lower-case hex digits. */
export function isStoreId(value: unknown): value is string {
  return typeof value === 'string' && storeIdPattern.test(value)
}

/** The HELLO payload (JSON bytes, exactly what goes on the wire and into the transcript). */
export function encodeHello(identity: MirrorIdentity, nonce: Buffer, listenPort = 0): Buffer {
  return encodeJson({
    protocolVersion,
    model: identity.model,
    firmwareVersion: identity.firmwareVersion,
    serial: identity.serial,
    storeId: identity.storeId,
    listenPort,
    nonce: nonce.toString('hex'),
  })
}

/**
 * Parses a peer's HELLO. The protocol version is looked at first and alone, so a peer of
 * another version gets PROTOCOL_MISMATCH even if the rest of its HELLO has changed shape.
 * @throws MirrorError PROTOCOL (malformed), PROTOCOL_MISMATCH (expected our version, actual theirs)
 */
export function parseHello(payload: Buffer): HelloMessage {
  const body = parseJsonObject(payload, 'HELLO')
  const version = body.protocolVersion
  if (typeof version !== 'number' || !Number.isInteger(version)) {
    throw new MirrorError('PROTOCOL', 'malformed HELLO: protocolVersion is not an integer')
  }
  if (version !== protocolVersion) {
    throw new MirrorError('PROTOCOL_MISMATCH', `mirror protocol version differs: expected ${protocolVersion}, got ${version}`, {
      expected: protocolVersion,
      actual: version,
    })
  }
  const keys = Object.keys(body).sort()
  if (keys.length !== helloKeys.length || keys.some((key, index) => key !== helloKeys[index])) {
    throw new MirrorError('PROTOCOL', `malformed HELLO: fields must be ${helloKeys.join(', ')}`)
  }
  const { model, firmwareVersion, serial, storeId, listenPort, nonce } = body
  if (typeof model !== 'number' || !Number.isInteger(model) || model < 0 || model > 1_000_000) {
    throw new MirrorError('PROTOCOL', 'malformed HELLO: model is not a model number')
  }
  for (const [name, value] of [
    ['firmwareVersion', firmwareVersion],
    ['serial', serial],
  ] as const) {
    if (typeof value !== 'string' || value.length > helloTextLengthMax || !printableText.test(value)) {
      throw new MirrorError('PROTOCOL', `malformed HELLO: ${name} must be 1–${helloTextLengthMax} printable characters`)
    }
  }
  if (!isStoreId(storeId)) throw new MirrorError('PROTOCOL', 'malformed HELLO: storeId must be 32 lower-case hex digits')
  if (typeof listenPort !== 'number' || !Number.isInteger(listenPort) || listenPort < 0 || listenPort > 65535) {
    throw new MirrorError('PROTOCOL', 'malformed HELLO: listenPort must be a port number (0 when not listening)')
  }
  if (typeof nonce !== 'string' || !/^[0-9a-f]{64}$/.test(nonce)) {
    throw new MirrorError('PROTOCOL', `malformed HELLO: nonce must be ${nonceBytes} bytes in lower-case hex`)
  }
  return { protocolVersion: version, model, firmwareVersion: firmwareVersion as string, serial: serial as string, storeId, listenPort, nonce }
}

/**
 * Whether two appliances may mirror, checked in the order of the specification: model
 * eligibility (either side below 450), same model, same firmware version; then a different
 * serial (the same serial means a connection to itself or a cloned identity). Pure.
 *
 * @returns the refusal, with expected = this side's value and actual = the peer's, or undefined
 */
export function compareIdentities(own: MirrorIdentity, peer: MirrorIdentity): MirrorError | undefined {
  const eligible = `>= ${mirroringModelMin}`
  if (own.model < mirroringModelMin) {
    return new MirrorError('MODEL_NOT_ELIGIBLE', `this appliance (model ${own.model}) may not mirror: models ${eligible} only`, {
      expected: eligible,
      actual: own.model,
    })
  }
  if (peer.model < mirroringModelMin) {
    return new MirrorError('MODEL_NOT_ELIGIBLE', `the peer (model ${peer.model}) may not mirror: models ${eligible} only`, {
      expected: eligible,
      actual: peer.model,
    })
  }
  if (peer.model !== own.model) {
    return new MirrorError('MODEL_MISMATCH', `peers must be the same model: expected ${own.model}, got ${peer.model}`, {
      expected: own.model,
      actual: peer.model,
    })
  }
  if (peer.firmwareVersion !== own.firmwareVersion) {
    return new MirrorError('FIRMWARE_MISMATCH', `peers must run the same firmware: expected ${own.firmwareVersion}, got ${peer.firmwareVersion}`, {
      expected: own.firmwareVersion,
      actual: peer.firmwareVersion,
    })
  }
  if (peer.serial === own.serial) {
    return new MirrorError('SERIAL_CONFLICT', `the peer has this appliance's own serial ${own.serial}`, {
      expected: `not ${own.serial}`,
      actual: peer.serial,
    })
  }
  return undefined
}

/** The pieces the proofs bind, in client/server order (the same on both sides). */
export interface TranscriptParts {
  clientHello: Buffer
  serverHello: Buffer
  clientNonce: Buffer
  serverNonce: Buffer
  /** Raw SHA-256 of the client's DER certificate (32 bytes). */
  clientFingerprint: Buffer
  serverFingerprint: Buffer
  /** TLS exporter value of this session (exporterBytes, label exporterLabel). */
  exporter: Buffer
}

/**
 * SHA-256 over the label and every part, each preceded by its length as 4 bytes big-endian
 * (so no two different part lists can produce the same input).
 */
export function handshakeTranscript(parts: TranscriptParts): Buffer {
  const hash = createHash('sha256')
  const add = (bytes: Buffer): void => {
    const length = Buffer.allocUnsafe(4)
    length.writeUInt32BE(bytes.length, 0)
    hash.update(length).update(bytes)
  }
  add(Buffer.from(`${mirrorKeyLabel} transcript`, 'utf8'))
  for (const part of [parts.clientHello, parts.serverHello, parts.clientNonce, parts.serverNonce]) add(part)
  for (const part of [parts.clientFingerprint, parts.serverFingerprint, parts.exporter]) add(part)
  return hash.digest()
}

/** HMAC-SHA256 of the transcript under the role's key. */
export function computeProof(secret: MirrorSecret, role: 'client' | 'server', transcript: Buffer): Buffer {
  return createHmac('sha256', proofKeysOf(secret)[role]).update(transcript).digest()
}

function verifyProof(secret: MirrorSecret, role: 'client' | 'server', transcript: Buffer, received: Buffer): void {
  // The received proof has exactly proofBytes (checked on receipt), so lengths match.
  if (!timingSafeEqual(computeProof(secret, role, transcript), received)) {
    throw new MirrorError('AUTH_FAILED', `the peer's proof of the shared secret did not verify (${role} proof)`, {
      expected: 'proof of the shared secret',
      actual: 'proof did not verify',
    })
  }
}

/** The next frame, which must be of `type`; a REFUSE is turned into the peer's error. */
async function expectFrame(framed: FramedSocket, type: number): Promise<MirrorFrame> {
  const frame = await framed.receive()
  if (frame.type === FrameType.refuse) throw decodeRefusal(frame.payload)
  if (frame.type !== type) {
    throw new MirrorError('PROTOCOL', `expected a ${frameTypeName(type)} frame, got ${frameTypeName(frame.type)}`, {
      expected: frameTypeName(type),
      actual: frameTypeName(frame.type),
    })
  }
  return frame
}

async function expectProof(framed: FramedSocket): Promise<Buffer> {
  const frame = await expectFrame(framed, FrameType.proof)
  if (frame.payload.length !== proofBytes) {
    throw new MirrorError('PROTOCOL', `a PROOF must be ${proofBytes} bytes`, { expected: proofBytes, actual: frame.payload.length })
  }
  return frame.payload
}

/** Raw SHA-256 fingerprints of both certificates of this TLS session. */
function sessionFingerprints(framed: FramedSocket, progress: HandshakeProgress): { own: Buffer; peer: Buffer } {
  const peerCertificate = framed.socket.getPeerX509Certificate()
  const ownCertificate = framed.socket.getX509Certificate()
  if (!peerCertificate) throw new MirrorError('PROTOCOL', 'the peer presented no TLS certificate')
  if (!ownCertificate) throw new MirrorError('PROTOCOL', 'this side presented no TLS certificate')
  const peer = certificateFingerprint(peerCertificate)
  progress.peerFingerprint = peer
  return { own: Buffer.from(certificateFingerprint(ownCertificate), 'hex'), peer: Buffer.from(peer, 'hex') }
}

function exporterOf(framed: FramedSocket): Buffer {
  if (framed.socket.getProtocol() !== 'TLSv1.3') throw new MirrorError('PROTOCOL', 'the mirror needs TLS 1.3')
  return framed.socket.exportKeyingMaterial(exporterBytes, exporterLabel, Buffer.alloc(0))
}

/** Ends a failed handshake: a refusal this side decided is sent to the peer; otherwise the connection is dropped. */
function abandon(framed: FramedSocket, error: unknown): MirrorError {
  const failure = error instanceof MirrorError ? error : new MirrorError('PROTOCOL', 'internal failure during the mirror handshake', { cause: error })
  if (failure.origin === 'local' && ['CONNECTION_CLOSED', 'TLS_FAILED', 'CLOSED'].every((code) => code !== failure.code)) {
    framed.refuse(failure)
  } else {
    framed.destroy(failure)
  }
  return failure
}

function peerOf(hello: HelloMessage, fingerprint: Buffer): MirrorPeerIdentity {
  return {
    model: hello.model,
    serial: hello.serial,
    firmwareVersion: hello.firmwareVersion,
    storeId: hello.storeId,
    listenPort: hello.listenPort,
    fingerprint: fingerprint.toString('hex'),
  }
}

/** Runs the context's admission of a proven peer; its refusal is thrown (and sent by abandon()). */
async function admitPeer(framed: FramedSocket, context: HandshakeContext, peer: MirrorPeerIdentity, direction: 'inbound' | 'outbound'): Promise<void> {
  if (!context.admit) return
  const address = normalizeRemoteAddress(framed.socket.remoteAddress)
  const refusal = await context.admit({ ...peer, address, direction })
  if (refusal) throw refusal
}

/** IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d; one address, one key. */
export function normalizeRemoteAddress(address: string | undefined): string {
  if (!address) return 'unknown'
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice('::ffff:'.length) : address
}

/**
 * Runs the listener's side of the handshake on a framed TLS socket.
 * @returns the authenticated peer; the socket then carries application frames
 * @throws MirrorError — a refusal this side decided (already sent to the peer, socket
 *   closing), a refusal the peer sent (origin `peer`), or CONNECTION_CLOSED/TLS_FAILED/TIMEOUT
 */
export async function serverHandshake(framed: FramedSocket, context: HandshakeContext, progress: HandshakeProgress = {}): Promise<MirrorPeerIdentity> {
  try {
    const fingerprints = sessionFingerprints(framed, progress)
    const clientHelloBytes = (await expectFrame(framed, FrameType.hello)).payload
    const clientHello = parseHello(clientHelloBytes)
    progress.peerSerial = clientHello.serial
    progress.peerStoreId = clientHello.storeId
    const refusal = compareIdentities(context.identity, clientHello)
    if (refusal) throw refusal

    const serverNonce = context.randomBytes(nonceBytes)
    const serverHelloBytes = encodeHello(context.identity, serverNonce, context.listenPort)
    await framed.send(FrameType.hello, serverHelloBytes)
    const transcript = handshakeTranscript({
      clientHello: clientHelloBytes,
      serverHello: serverHelloBytes,
      clientNonce: Buffer.from(clientHello.nonce, 'hex'),
      serverNonce,
      clientFingerprint: fingerprints.peer,
      serverFingerprint: fingerprints.own,
      exporter: exporterOf(framed),
    })
    verifyProof(context.secret, 'client', transcript, await expectProof(framed))
    const peer = peerOf(clientHello, fingerprints.peer)
    // Before this side's proof: a refused appliance never gets one.
    await admitPeer(framed, context, peer, 'inbound')
    await framed.send(FrameType.proof, computeProof(context.secret, 'server', transcript))
    const ready = await expectFrame(framed, FrameType.ready)
    if (ready.payload.length !== 0) throw new MirrorError('PROTOCOL', 'a READY frame must be empty')
    return peer
  } catch (error) {
    throw abandon(framed, error)
  }
}

/**
 * Runs the connecting side of the handshake on a framed TLS socket.
 * @returns the authenticated peer; READY has been sent and application frames may follow
 * @throws MirrorError as serverHandshake
 */
export async function clientHandshake(framed: FramedSocket, context: HandshakeContext, progress: HandshakeProgress = {}): Promise<MirrorPeerIdentity> {
  try {
    const fingerprints = sessionFingerprints(framed, progress)
    const clientNonce = context.randomBytes(nonceBytes)
    const clientHelloBytes = encodeHello(context.identity, clientNonce, context.listenPort)
    await framed.send(FrameType.hello, clientHelloBytes)
    const serverHelloBytes = (await expectFrame(framed, FrameType.hello)).payload
    const serverHello = parseHello(serverHelloBytes)
    progress.peerSerial = serverHello.serial
    progress.peerStoreId = serverHello.storeId
    // The server has already compared; this side checks again so a peer that skipped the
    // check (another firmware, an impostor) is still refused.
    const refusal = compareIdentities(context.identity, serverHello)
    if (refusal) throw refusal

    const transcript = handshakeTranscript({
      clientHello: clientHelloBytes,
      serverHello: serverHelloBytes,
      clientNonce,
      serverNonce: Buffer.from(serverHello.nonce, 'hex'),
      clientFingerprint: fingerprints.own,
      serverFingerprint: fingerprints.peer,
      exporter: exporterOf(framed),
    })
    await framed.send(FrameType.proof, computeProof(context.secret, 'client', transcript))
    verifyProof(context.secret, 'server', transcript, await expectProof(framed))
    const peer = peerOf(serverHello, fingerprints.peer)
    await admitPeer(framed, context, peer, 'outbound')
    await framed.send(FrameType.ready)
    return peer
  } catch (error) {
    throw abandon(framed, error)
  }
}
