import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { join } from 'node:path'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { readTextIfPresent, writeFileDurable } from '../common/durable-file.js'
import { AccountError, checkAddresses } from './accounts.js'
import { isRole, roles, type Principal, type Role } from './roles.js'

/**
 * API tokens for scripts: `Authorization: Bearer mkt_NAME_SECRET`. A token acts with a role
 * (and, for `user`, addresses) of its own, as principal `token:NAME`. The secret (256 random
 * bits) is shown once, at creation; only its SHA-256 is kept — a hash that needs no salt or
 * stretching, since nobody guesses 256 random bits — in `<dataDir>/tokens.json` (0600).
 * Revoking deletes the record: the token stops working at once.
 */

export const tokensFile = 'tokens.json'
/** Most tokens. */
export const tokensMax = 1_000
/** Token names: as account names. */
export const tokenNamePattern = /^[a-z0-9][a-z0-9._-]{0,63}$/
const tokenPattern = /^mkt_([a-z0-9][a-z0-9._-]{0,63})_([A-Za-z0-9_-]{43})$/

interface StoredToken {
  name: string
  role: Role
  addresses: string[]
  /** SHA-256 of the secret, hex. */
  secretHash: string
  createdAtMs: number
}

/** A token as listed (never its secret or hash). */
export interface TokenView {
  name: string
  role: Role
  addresses: string[]
  createdAt: string
  /** When it was last used since the service started, or null. */
  lastUsedAt: string | null
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text).digest()

/** The tokens of a file's text. @throws AccountError ACCOUNTS_UNREADABLE with `path: reason` */
function parseTokens(path: string, text: string): Map<string, StoredToken> {
  let parsed: { version?: unknown; tokens?: StoredToken[] }
  try {
    parsed = JSON.parse(text) as typeof parsed
  } catch {
    throw new AccountError('ACCOUNTS_UNREADABLE', `${path}: not valid JSON`)
  }
  if (parsed.version !== 1 || !Array.isArray(parsed.tokens)) throw new AccountError('ACCOUNTS_UNREADABLE', `${path}: not a tokens file of version 1`)
  const loaded = new Map<string, StoredToken>()
  parsed.tokens.forEach((token, index) => {
    if (typeof token?.name !== 'string' || !isRole(String(token.role)) || !/^[0-9a-f]{64}$/.test(String(token.secretHash)) || !Array.isArray(token.addresses)) {
      throw new AccountError('ACCOUNTS_UNREADABLE', `${path}: tokens[${index}]: not a token record`)
    }
    loaded.set(token.name, token)
  })
  return loaded
}

export function createTokenStore(deps: { clock: Clock; logger: Logger }, options: { dataDir: string }) {
  const path = join(options.dataDir, tokensFile)
  let tokens = new Map<string, StoredToken>()
  const lastUsed = new Map<string, number>()
  const view = (token: StoredToken): TokenView => {
    const used = lastUsed.get(token.name)
    return {
      name: token.name,
      role: token.role,
      addresses: [...token.addresses],
      createdAt: new Date(token.createdAtMs).toISOString(),
      lastUsedAt: used === undefined ? null : new Date(used).toISOString(),
    }
  }
  async function save(next: Map<string, StoredToken>): Promise<void> {
    await writeFileDurable(path, JSON.stringify({ version: 1, tokens: [...next.values()] }, null, 1) + '\n', 0o600)
    tokens = next
  }

  return {
    /** @throws AccountError ACCOUNTS_UNREADABLE naming the file and the problem */
    async load(): Promise<void> {
      const text = await readTextIfPresent(path)
      if (text !== undefined) tokens = parseTokens(path, text)
    },
    list(): TokenView[] {
      return [...tokens.values()].map(view).sort((a, b) => a.name.localeCompare(b.name))
    },
    /**
     * Creates a token; the answer holds the token itself, shown this once.
     * @throws AccountError INVALID, EXISTS, TOO_MANY
     */
    async create(input: { name: string; role: string; addresses: readonly string[] }): Promise<TokenView & { token: string }> {
      if (!tokenNamePattern.test(input.name))
        throw new AccountError('INVALID', `token name ${JSON.stringify(input.name.slice(0, 80))}: 1–64 of a-z 0-9 . _ - starting with a letter or digit`)
      if (!isRole(input.role)) throw new AccountError('INVALID', `role ${JSON.stringify(input.role.slice(0, 40))}: one of ${roles.join(', ')}`)
      const addresses = checkAddresses(input.addresses)
      if (input.role === 'user' && addresses.length === 0) throw new AccountError('INVALID', 'a user token needs at least one address (--address)')
      if (tokens.has(input.name)) throw new AccountError('EXISTS', `token ${input.name} exists`)
      if (tokens.size >= tokensMax) throw new AccountError('TOO_MANY', `at most ${tokensMax} tokens`)
      const secret = randomBytes(32).toString('base64url')
      const stored: StoredToken = { name: input.name, role: input.role, addresses, secretHash: sha256(secret).toString('hex'), createdAtMs: deps.clock.now() }
      const next = new Map(tokens)
      next.set(stored.name, stored)
      await save(next)
      deps.logger.info('token created', { name: stored.name, role: stored.role })
      return { ...view(stored), token: `mkt_${stored.name}_${secret}` }
    },
    /** @throws AccountError NOT_FOUND */
    async revoke(name: string): Promise<TokenView> {
      const token = tokens.get(name)
      if (!token) throw new AccountError('NOT_FOUND', `no token ${JSON.stringify(name.slice(0, 80))}`)
      const next = new Map(tokens)
      next.delete(name)
      await save(next)
      lastUsed.delete(name)
      deps.logger.info('token revoked', { name })
      return view(token)
    },
    /** The principal a bearer token acts as, or undefined for anything but a live token. Constant time in the secret. */
    check(bearer: string): Principal | undefined {
      const match = tokenPattern.exec(bearer.trim())
      if (!match) return undefined
      const token = tokens.get(match[1]!)
      const presented = sha256(match[2]!)
      const expected = token ? Buffer.from(token.secretHash, 'hex') : sha256('no such token')
      if (!timingSafeEqual(presented, expected) || !token) return undefined
      lastUsed.set(token.name, deps.clock.now())
      return { name: `token:${token.name}`, role: token.role, addresses: token.addresses, source: 'token' }
    },
  }
}

export type TokenStore = ReturnType<typeof createTokenStore>
