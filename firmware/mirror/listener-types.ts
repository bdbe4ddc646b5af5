import type { Socket } from 'node:net'
import type { Logger } from '../common/logger.js'
import type { FramedSocket } from './protocol.js'
import type { AdmitPeer, HandshakeContext } from './handshake.js'
import type { MirrorChannel } from './channel.js'
import type { MirrorAuditEvent, MirrorTransportDeps } from './handshake-report.js'
import type { MirrorSecret } from './secret.js'
import type { InboundAuthLimits } from './listener-handshake.js'

/** Collaborators of the listener: audit is required, and onChannel receives each authenticated peer. */
export interface MirrorListenerDeps extends MirrorTransportDeps {
  audit: (event: MirrorAuditEvent) => void
  /** Receives each authenticated inbound channel; a rejection closes that channel. */
  onChannel: (channel: MirrorChannel) => void | Promise<void>
  /** Admission of each proven inbound appliance (pinned identity, configured peer); all admitted when absent. */
  admit?: AdmitPeer
  /** True when a certificate fingerprint is pinned for a peer: its failures never limit others on its address. */
  isPinnedFingerprint?: (fingerprint: string) => boolean
}

/** Where and how the listener accepts peers; from the config's `mirror` section. */
export interface MirrorListenerOptions {
  host: string
  /** 0 picks any free port; see address(). */
  port: number
  /** The secret string or its derived form (deriveMirrorSecret). */
  sharedSecret: string | MirrorSecret
  /** From TCP accept to an authenticated channel, in milliseconds; a slower peer is dropped. */
  handshakeTimeoutMs: number
  /** Connections open at once (handshaking and authenticated); more are dropped at accept. */
  connectionsMax: number
  /** Idle timeout of the channels this listener creates, in milliseconds. */
  idleTimeoutMs?: number
  /** Overrides unpinnedAuthFailuresPerAddressMax (tests). */
  unpinnedAuthFailuresPerAddressMax?: number
}

/** What healthcheck() reports; `ok`/`detail` fit boot's ServiceHealth. */
export interface MirrorListenerHealth {
  ok: boolean
  detail: string
  address: { host: string; port: number } | null
  connections: number
  handshakesInProgress: number
  channels: number
  rateLimitedAddresses: number
}

/** Per accepted TCP connection, from accept to close. */
export interface ConnectionState {
  raw: Socket
  address: string
  port: number
  deadline: NodeJS.Timeout
  /** Set once TLS is up. */
  framed?: FramedSocket
  channel?: MirrorChannel
  /** The outcome has been reported (audit + log). */
  reported: boolean
  tlsError?: Error
}

/** What the listener's parts share: its collaborators, its connections by remote address and port, and its state. */
export interface ListenerContext {
  deps: MirrorListenerDeps
  options: MirrorListenerOptions
  logger: Logger
  /** Open connections, keyed `<remote address>:<remote port>` as the socket reports them. */
  connections: Map<string, ConnectionState>
  limits: InboundAuthLimits
  /** Idle timeout of the channels, in milliseconds. */
  idleTimeoutMs: number
  /** The handshake context (identity, derived secret, admission), set at start(). */
  handshake: HandshakeContext | undefined
  /** True once stop() began. */
  stopping: () => boolean
  /** The bound address, or null before start / after stop. */
  address: () => { host: string; port: number } | null
}
