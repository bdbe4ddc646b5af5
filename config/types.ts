/**
 * TypeScript view of config/schema.ts after defaults are applied. The schema is the
 * source of truth; tests/config checks that the defaults produce exactly this shape.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error'

export interface JournalSourceConfig {
  name: string
  protocol: 'imap' | 'pop3'
  host: string
  port?: number
  tls: 'implicit' | 'starttls' | 'none'
  tlsRejectUnauthorized: boolean
  user: string
  password: string
  mailbox: string
  intervalMs: number
  afterArchive: 'delete' | 'flag'
  batchMessagesMax: number
  enabled: boolean
  /** Source takeover: the mirror peer (`host:port`) this source belongs to; pulled here only while that peer is offline. Null: an own source. */
  takeoverFor: string | null
  /** Source takeover: how long the peer must have been unreachable before this system pulls its source, in milliseconds. */
  takeoverAfterMs: number
}

export interface PeerConfig {
  host: string
  port: number
}

export interface Config {
  /** Absolute after loading. */
  dataDir: string
  logging: { level: LogLevel; format: 'json' | 'pretty' }
  hal: {
    provider: 'sim' | 'linux'
    sim: {
      seed: number
      tickMs: number
      rebuildTicks: number
      /** Simulated appliance only: the firmware version it reports; absent = the running firmware. */
      firmwareVersion?: string
      faults: { diskCount: number | null; nicCount: number | null; failedDisks: number[]; replacedDisks: number[]; linksDown: string[] }
    }
    linux: { mdstatPath: string; mdadmPath: string; commandTimeoutMs: number }
  }
  identity: { model: number | null; serial: string | null }
  storage: { freeBytesMin: number; readOnlyMarginBytes: number; readOnlyRecheckMs: number; mapSizeBytes: number; messageBytesMax: number }
  search: { queryTimeMsMax: number; sliceMs: number; waitingMax: number }
  /** `socketPath` is absolute after loading (derived from dataDir when not set). */
  control: { socketPath: string; requestBytesMax: number; requestTimeoutMs: number }
  technician: { passwordHash: string | null }
  shutdown: { timeoutMs: number }
  smtp: {
    enabled: boolean
    host: string
    port: number
    hostname: string
    archiveRecipients: string[]
    trustedNetworks: string[]
    sizeBytesMax: number
    recipientsMax: number
    connectionsMax: number
    socketTimeoutMs: number
    starttls: boolean
    mailFromTimeoutMs: number
    commandTimeoutMs: number
    dataTimeoutMs: number
    dataBytesPerSecondMin: number
    dataRateGraceMs: number
    sessionTimeoutMs: number
    untrustedConnectionsPerAddressMax: number
    trustedConnectionsReserved: number
  }
  journal: { sources: JournalSourceConfig[] }
  retention: { purgeIntervalMs: number; batchMessagesMax: number }
  /** Bulk import: `concurrency` messages in flight per job, at most `jobsMax` jobs at once. */
  import: { concurrency: number; jobsMax: number }
  http: {
    enabled: boolean
    host: string
    port: number
    adminPasswordHash: string | null
    /** Clients (CIDR) served over plain HTTP while HTTPS is on; others are redirected. */
    plainNetworks: string[]
    /** Failed-login throttling per (address, user): firmware/api/login-throttle.ts. */
    loginThrottle: { failuresBeforeDelay: number; delayMsMin: number; delayMsMax: number; forgetAfterMs: number; pairsMax: number }
  }
  /** Accounts beyond the first admin: browser sessions (firmware/access/sessions.ts). */
  auth: { session: { idleTimeoutMs: number; absoluteTimeoutMs: number; sessionsMax: number }; ldap: LdapConfig | null }
  /** The API over TLS (firmware/api/tls-certificate.ts has the certificate). */
  https: { enabled: boolean; host: string; port: number; hstsMaxAgeSeconds: number }
  mirror: {
    enabled: boolean
    host: string
    port: number
    sharedSecret: string | null
    peers: PeerConfig[]
    retryDelayMsMin: number
    retryDelayMsMax: number
    idleTimeoutMs: number
    ackTimeoutMs: number
    acceptJoins: boolean
    unreachableAlertMs: number
    verifyIntervalMs: number
    /** Messages per copy batch, at most. */
    batchMessagesMax: number
    /** Raw bytes per copy batch, at most. */
    batchBytesMax: number
    /** Unacknowledged batches per peer, at most. */
    inflightBatchesMax: number
    /** From TCP connect to an authenticated channel, in milliseconds. */
    handshakeTimeoutMs: number
  }
}

/** `auth.ldap`: directory sign-in (firmware/access/directory.ts). */
export interface LdapConfig {
  url: string
  startTls: boolean
  caFile: string | null
  bindDn: string | null
  bindPassword: string | null
  userBase: string
  userFilter: string
  mailAttribute: string
  aliasAttributes: string[]
  disabledFilter: string | null
  groupBase: string | null
  groupFilter: string
  roleGroups: { admin: string[]; auditor: string[]; user: string[] }
  timeoutMs: number
}
