/**
 * The JSON Schema of mailkeep's configuration: the single source of truth for every
 * setting, its type, its limits and its default (STYLE 16). `config/load.ts` fills the
 * defaults from here, validates with ajv (allErrors, no unknown keys) and freezes the
 * result. `mailkeep config schema` prints it. Units are last in every name.
 */

const port = (defaultPort: number) => ({ type: 'integer', minimum: 0, maximum: 65535, default: defaultPort }) as const
const host = (defaultHost: string) => ({ type: 'string', minLength: 1, maxLength: 253, default: defaultHost }) as const
const scryptHash = {
  type: ['string', 'null'],
  pattern: '^scrypt\\$\\d+\\$\\d+\\$\\d+\\$[A-Za-z0-9+/=]+\\$[A-Za-z0-9+/=]+$',
  default: null,
  description: 'scrypt$N$r$p$salt$hash (base64), as printed by `mailkeep hash-password`',
} as const
const cidr = {
  type: 'string',
  pattern: '^([0-9]{1,3}\\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])$|^[0-9a-fA-F:]+/[0-9]{1,3}$',
} as const

export const configSchema = {
  $id: 'https://mailkeep.invalid/config.schema.json',
  type: 'object',
  additionalProperties: false,
  properties: {
    dataDir: { type: 'string', minLength: 1, default: './var', description: 'relative paths resolve against the working directory' },
    logging: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        level: { enum: ['debug', 'info', 'warn', 'error'], default: 'info' },
        format: { enum: ['json', 'pretty'], default: 'json' },
      },
    },
    hal: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        provider: { enum: ['sim', 'linux'], default: 'sim' },
        sim: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            seed: { type: 'integer', minimum: 0, maximum: 4294967295, default: 1 },
            tickMs: { type: 'integer', minimum: 10, maximum: 3600000, default: 1000, description: 'simulated time step (rebuild progress)' },
            rebuildTicks: { type: 'integer', minimum: 1, maximum: 100000, default: 20, description: 'ticks a simulated rebuild takes' },
            firmwareVersion: {
              type: 'string',
              pattern: '^[0-9A-Za-z.+-]{1,64}$',
              description: 'simulated appliance only: the firmware version it reports (mirror compatibility drills); absent = the running firmware',
            },
            faults: {
              type: 'object',
              additionalProperties: false,
              default: {},
              description: 'faults the simulated appliance boots with (factory-test and field-fault drills)',
              properties: {
                diskCount: { type: ['integer', 'null'], minimum: 0, maximum: 64, default: null, description: 'disks present, overriding the model profile' },
                nicCount: { type: ['integer', 'null'], minimum: 0, maximum: 16, default: null, description: 'NICs present, overriding the model profile' },
                failedDisks: { type: 'array', items: { type: 'integer', minimum: 0, maximum: 63 }, maxItems: 64, default: [] },
                replacedDisks: {
                  type: 'array',
                  items: { type: 'integer', minimum: 0, maximum: 63 },
                  maxItems: 64,
                  default: [],
                  description: 'failed disks already replaced: their array boots rebuilding',
                },
                linksDown: { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 16, default: [] },
              },
            },
          },
        },
        linux: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            mdstatPath: { type: 'string', default: '/proc/mdstat' },
            mdadmPath: { type: 'string', default: 'mdadm' },
            commandTimeoutMs: { type: 'integer', minimum: 100, maximum: 60000, default: 5000 },
          },
        },
      },
    },
    identity: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        model: { type: ['integer', 'null'], minimum: 1, maximum: 99999, default: null, description: 'override of the model (sim: defaults to 650)' },
        serial: { type: ['string', 'null'], pattern: '^[A-Za-z0-9-]{1,64}$', default: null },
      },
    },
    storage: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        freeBytesMin: { type: 'integer', minimum: 0, default: 268435456, description: 'below this free space the store refuses new mail (4xx) and turns read-only' },
        readOnlyMarginBytes: { type: 'integer', minimum: 0, default: 67108864, description: 'free space above freeBytesMin needed before a read-only store takes mail again' },
        readOnlyRecheckMs: { type: 'integer', minimum: 100, maximum: 600000, default: 10000, description: 'while read-only, how often the free space is read' },
        mapSizeBytes: { type: 'integer', minimum: 16777216, default: 1099511627776, description: 'LMDB map size (virtual, grows the file lazily)' },
        messageBytesMax: { type: 'integer', minimum: 1024, maximum: 1073741824, default: 104857600, description: 'largest message archived from any source' },
      },
    },
    search: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        queryTimeMsMax: {
          type: 'integer',
          minimum: 100,
          maximum: 600000,
          default: 2000,
          description: 'time budget of one search from its turn; over it the search fails with QUERY_TOO_EXPENSIVE (503, retryable)',
        },
        sliceMs: { type: 'integer', minimum: 1, maximum: 1000, default: 4, description: 'longest run of a search before mail, status and commits get a turn' },
        waitingMax: { type: 'integer', minimum: 0, maximum: 1000, default: 8, description: 'searches that may wait while one evaluates; more fail with SEARCH_BUSY (503, retryable)' },
      },
    },
    control: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        socketPath: { type: ['string', 'null'], default: null, description: 'null: <dataDir>/run/mailkeep.sock' },
        requestBytesMax: { type: 'integer', minimum: 1024, maximum: 16777216, default: 1048576 },
        requestTimeoutMs: { type: 'integer', minimum: 100, maximum: 3600000, default: 30000 },
      },
    },
    technician: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { passwordHash: scryptHash },
    },
    shutdown: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: { timeoutMs: { type: 'integer', minimum: 100, maximum: 600000, default: 10000 } },
    },
    smtp: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: true },
        host: host('127.0.0.1'),
        port: port(2525),
        hostname: { type: 'string', minLength: 1, default: 'mailkeep.local', description: 'name in the greeting' },
        archiveRecipients: { type: 'array', items: { type: 'string', minLength: 3, maxLength: 320 }, maxItems: 1000, default: [] },
        trustedNetworks: { type: 'array', items: cidr, maxItems: 1000, default: ['127.0.0.0/8'] },
        sizeBytesMax: { type: 'integer', minimum: 1024, maximum: 1073741824, default: 52428800 },
        recipientsMax: { type: 'integer', minimum: 1, maximum: 100000, default: 1000 },
        connectionsMax: { type: 'integer', minimum: 1, maximum: 10000, default: 200 },
        socketTimeoutMs: { type: 'integer', minimum: 1000, maximum: 3600000, default: 60000 },
        starttls: { type: 'boolean', default: true },
        // Slow clients (firmware/sources/smtp/README.md, "Slow clients"): absolute deadlines
        // that no trickled byte extends, and connection slots an untrusted client cannot take.
        mailFromTimeoutMs: {
          type: 'integer',
          minimum: 1000,
          maximum: 3600000,
          default: 60000,
          description: 'from the greeting, and from the reply that ends each transaction, to MAIL FROM',
        },
        commandTimeoutMs: { type: 'integer', minimum: 1000, maximum: 3600000, default: 30000, description: 'from each reply to the end of the next command line' },
        dataTimeoutMs: { type: 'integer', minimum: 1000, maximum: 3600000, default: 600000, description: 'from DATA to the final dot' },
        dataBytesPerSecondMin: {
          type: 'integer',
          minimum: 0,
          maximum: 1073741824,
          default: 4096,
          description: 'average DATA rate since DATA, checked after dataRateGraceMs; 0 = no minimum',
        },
        dataRateGraceMs: { type: 'integer', minimum: 0, maximum: 3600000, default: 10000 },
        sessionTimeoutMs: { type: 'integer', minimum: 1000, maximum: 86400000, default: 1800000, description: 'whole connection, except while its message is being archived' },
        untrustedConnectionsPerAddressMax: { type: 'integer', minimum: 1, maximum: 10000, default: 10, description: 'per IPv4 address or IPv6 /64 outside trustedNetworks' },
        trustedConnectionsReserved: { type: 'integer', minimum: 0, maximum: 10000, default: 20, description: 'of connectionsMax, kept for clients in trustedNetworks' },
      },
    },
    journal: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        sources: {
          type: 'array',
          maxItems: 100,
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['name', 'protocol', 'host', 'user', 'password'],
            properties: {
              name: { type: 'string', pattern: '^[a-z0-9][a-z0-9-]{0,63}$' },
              protocol: { enum: ['imap', 'pop3'] },
              host: { type: 'string', minLength: 1 },
              port: { type: 'integer', minimum: 1, maximum: 65535 },
              tls: { enum: ['implicit', 'starttls', 'none'], default: 'implicit' },
              tlsRejectUnauthorized: { type: 'boolean', default: true },
              user: { type: 'string', minLength: 1 },
              password: { type: 'string', minLength: 1 },
              mailbox: { type: 'string', default: 'INBOX' },
              intervalMs: { type: 'integer', minimum: 1000, maximum: 86400000, default: 60000 },
              afterArchive: { enum: ['delete', 'flag'], default: 'delete' },
              batchMessagesMax: { type: 'integer', minimum: 1, maximum: 10000, default: 100 },
              enabled: { type: 'boolean', default: true },
              takeoverFor: {
                type: ['string', 'null'],
                pattern: '^[^\\s:]+:[0-9]{1,5}$',
                default: null,
                description: 'source takeover: the mirror peer (host:port, as in mirror.peers) that normally pulls this source; pulled here only while that peer is unreachable',
              },
              takeoverAfterMs: {
                type: 'integer',
                minimum: 1000,
                maximum: 86400000,
                default: 300000,
                description: 'source takeover: how long the peer must be unreachable before this system pulls',
              },
            },
          },
        },
      },
    },
    retention: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'retention policies and holds are managed with `mailkeep policy|hold` or the API; these set the purge job',
      properties: {
        purgeIntervalMs: { type: 'integer', minimum: 0, maximum: 604800000, default: 3600000, description: 'how often the scheduled purge runs; 0: only on `mailkeep purge run`' },
        batchMessagesMax: { type: 'integer', minimum: 1, maximum: 10000, default: 500, description: 'messages removed per purge batch (one audit entry each)' },
      },
    },
    import: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'bulk import (`mailkeep import PATH`), run inside the service',
      properties: {
        concurrency: {
          type: 'integer',
          minimum: 1,
          maximum: 256,
          default: 8,
          description: 'messages of one import job submitted to the pipeline at once: enough to fill group commits, bounded in memory (each holds a whole message)',
        },
        jobsMax: { type: 'integer', minimum: 1, maximum: 64, default: 4, description: 'import jobs running at once; one more is refused (TOO_MANY_JOBS, retryable)' },
      },
    },
    http: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: true },
        host: host('127.0.0.1'),
        port: port(8080),
        adminPasswordHash: scryptHash,
        plainNetworks: {
          type: 'array',
          items: cidr,
          maxItems: 1000,
          default: ['127.0.0.0/8', '::1/128'],
          description: 'clients (CIDR) served the API over plain HTTP while HTTPS is on; any other client is redirected (308) to HTTPS',
        },
        loginThrottle: {
          type: 'object',
          additionalProperties: false,
          default: {},
          description:
            'failed logins are throttled per (client address, user name; IPv6 per /64): after failuresBeforeDelay failures each attempt of that pair waits a delay, doubling per failure, before its password is checked; no attempt is refused, so a correct password waits at most delayMsMax',
          properties: {
            failuresBeforeDelay: { type: 'integer', minimum: 1, maximum: 1000, default: 5, description: 'failed logins of one pair answered without delay (typing mistakes)' },
            delayMsMin: { type: 'integer', minimum: 1, maximum: 600000, default: 1000, description: 'the first delay; doubles per further failure (at most delayMsMax)' },
            delayMsMax: {
              type: 'integer',
              minimum: 1,
              maximum: 600000,
              default: 30000,
              description: 'cap of the delay: the longest a correct password waits; keep it under the read timeout of clients and proxies (often 60 s)',
            },
            forgetAfterMs: {
              type: 'integer',
              minimum: 1000,
              maximum: 604800000,
              default: 900000,
              description: 'a pair without a failure for this long is forgotten; its throttling ends (audited)',
            },
            pairsMax: { type: 'integer', minimum: 1, maximum: 1000000, default: 10000, description: 'most pairs tracked; beyond, the oldest unthrottled pair is forgotten first' },
          },
        },
      },
    },
    auth: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'accounts beyond the first admin: browser sessions (and the directory)',
      properties: {
        session: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            idleTimeoutMs: { type: 'integer', minimum: 60000, maximum: 86400000, default: 1800000, description: 'a session unused this long ends' },
            absoluteTimeoutMs: { type: 'integer', minimum: 60000, maximum: 604800000, default: 43200000, description: 'a session ends this long after sign-in, used or not' },
            sessionsMax: { type: 'integer', minimum: 1, maximum: 1000000, default: 10000, description: 'sessions kept at most; beyond, the one idle longest ends' },
          },
        },
        ldap: {
          type: ['object', 'null'],
          additionalProperties: false,
          default: null,
          description: 'sign-in with directory accounts (OpenLDAP, Active Directory); null: local accounts only',
          required: ['url', 'userBase', 'roleGroups'],
          properties: {
            url: { type: 'string', pattern: '^ldaps?://[^\\s/]+(:[0-9]{1,5})?/?$', description: 'ldaps://host:636, or ldap://host:389 (then set startTls)' },
            startTls: { type: 'boolean', default: false, description: 'upgrade an ldap:// connection with StartTLS before anything is sent' },
            caFile: { type: ['string', 'null'], minLength: 1, default: null, description: "PEM file of the CA that issued the directory's certificate (default: the system's CAs)" },
            bindDn: { type: ['string', 'null'], minLength: 1, maxLength: 1024, default: null, description: 'account that searches for users; null: search anonymously' },
            bindPassword: { type: ['string', 'null'], minLength: 1, maxLength: 1024, default: null },
            userBase: { type: 'string', minLength: 1, maxLength: 1024 },
            userFilter: {
              type: 'string',
              minLength: 1,
              maxLength: 1024,
              pattern: '\\{user\\}',
              default: '(&(objectClass=person)(|(uid={user})(sAMAccountName={user})))',
              description: '{user} is replaced by the typed name, escaped (RFC 4515); it must find exactly one entry',
            },
            mailAttribute: { type: 'string', minLength: 1, maxLength: 128, default: 'mail' },
            aliasAttributes: {
              type: 'array',
              items: { type: 'string', minLength: 1, maxLength: 128 },
              maxItems: 16,
              default: ['proxyAddresses'],
              description: 'values like smtp:alias@x are read as alias@x',
            },
            disabledFilter: {
              type: ['string', 'null'],
              maxLength: 1024,
              default: '(userAccountControl:1.2.840.113556.1.4.803:=2)',
              description: "a user entry that matches it is disabled (the default is Active Directory's ACCOUNTDISABLE bit)",
            },
            groupBase: { type: ['string', 'null'], maxLength: 1024, default: null, description: 'where groups are searched; null: userBase' },
            groupFilter: {
              type: 'string',
              minLength: 1,
              maxLength: 1024,
              pattern: '\\{dn\\}',
              default: '(|(member={dn})(uniqueMember={dn}))',
              description: "{dn} is the user's DN, escaped",
            },
            roleGroups: {
              type: 'object',
              additionalProperties: false,
              description: 'group DNs per role; a user in several gets the highest role (admin, auditor, user); in none: cannot sign in',
              properties: {
                admin: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 1024 }, maxItems: 100, default: [] },
                auditor: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 1024 }, maxItems: 100, default: [] },
                user: { type: 'array', items: { type: 'string', minLength: 1, maxLength: 1024 }, maxItems: 100, default: [] },
              },
            },
            timeoutMs: { type: 'integer', minimum: 100, maximum: 60000, default: 5000, description: 'connect and each operation, in ms' },
          },
        },
      },
    },
    https: {
      type: 'object',
      additionalProperties: false,
      default: {},
      description: 'the API over TLS 1.2+ with the appliance certificate (generated at first boot; `mailkeep tls install` replaces it)',
      properties: {
        enabled: { type: 'boolean', default: true },
        host: host('127.0.0.1'),
        port: port(8443),
        hstsMaxAgeSeconds: {
          type: 'integer',
          minimum: 0,
          maximum: 63072000,
          default: 31536000,
          description: 'Strict-Transport-Security max-age of every HTTPS answer, in seconds (0 tells browsers to forget it)',
        },
      },
    },
    mirror: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        enabled: { type: 'boolean', default: true },
        host: host('127.0.0.1'),
        port: port(9443),
        sharedSecret: { type: ['string', 'null'], minLength: 20, maxLength: 1024, default: null },
        peers: {
          type: 'array',
          maxItems: 64,
          default: [],
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['host', 'port'],
            properties: { host: { type: 'string', minLength: 1 }, port: { type: 'integer', minimum: 1, maximum: 65535 } },
          },
        },
        retryDelayMsMin: { type: 'integer', minimum: 10, maximum: 3600000, default: 500, description: 'first retry delay after a failed copy attempt; doubles per failure' },
        retryDelayMsMax: { type: 'integer', minimum: 10, maximum: 3600000, default: 30000, description: 'cap of the retry delay (refused peers are retried at this delay)' },
        idleTimeoutMs: { type: 'integer', minimum: 300, maximum: 3600000, default: 60000, description: 'a mirror connection without a byte from the peer for this long is dropped' },
        ackTimeoutMs: { type: 'integer', minimum: 100, maximum: 3600000, default: 120000, description: 'with copies in flight, the longest wait for the next acknowledgement' },
        unreachableAlertMs: {
          type: 'integer',
          minimum: 1000,
          maximum: 604800000,
          default: 900000,
          description: 'a mirror peer unreachable for longer than this makes `show status` degraded',
        },
        verifyIntervalMs: {
          type: 'integer',
          minimum: 0,
          maximum: 2592000000,
          default: 86400000,
          description: 'each connected peer is verified (`mirror verify`) this often; 0 turns the scheduled verify off',
        },
        batchMessagesMax: {
          type: 'integer',
          minimum: 1,
          maximum: 10000,
          default: 1000,
          description: 'messages in one copy batch to a peer, at most (the store returns at most 10,000 change entries per read)',
        },
        batchBytesMax: { type: 'integer', minimum: 65536, maximum: 268435456, default: 16777216, description: 'raw bytes in one copy batch, at most (a larger single message goes alone)' },
        inflightBatchesMax: { type: 'integer', minimum: 1, maximum: 64, default: 4, description: 'batches sent to one peer and not yet acknowledged, at most (pipelining)' },
        handshakeTimeoutMs: {
          type: 'integer',
          minimum: 100,
          maximum: 600000,
          default: 10000,
          description: 'from TCP connect to an authenticated channel, both directions; over it the handshake is refused (TIMEOUT)',
        },
        acceptJoins: {
          type: 'boolean',
          default: false,
          description:
            'an appliance that proves the shared secret but is not in mirror.peers: false = refused (NOT_A_PEER) and listed as a pending join for `mirror accept`; true = added and pinned at once. Audited either way',
        },
      },
    },
  },
} as const

/** Config keys whose values are secrets: never echoed in errors, logs or `show config`. */
export const secretConfigPaths: readonly RegExp[] = [/^auth\.ldap\.bindPassword$/, /^mirror\.sharedSecret$/, /^journal\.sources\.\d+\.password$/, /passwordHash$/]
