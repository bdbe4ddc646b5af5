import { createHmac, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { MailkeepError } from '../common/errors.js'
import { readTextIfPresent, writeFileDurable } from '../common/durable-file.js'
import { hashPassword, passwordBytesMax, verifyPassword } from '../common/password.js'
import { isRole, roles, type Principal, type Role } from './roles.js'
import { normalizeAddress } from './scope.js'

/**
 * Local accounts: name, role, addresses (a `user` sees the mail of these), scrypt password
 * hash, disabled or not. Kept in `<dataDir>/accounts.json` (mode 0600: it holds hashes),
 * rewritten whole and durably on each change — a few thousand accounts at most, changed by
 * a technician now and then. The first admin (`admin`, http.adminPasswordHash or the
 * generated initial password) is not among them: its name is reserved.
 */

/** File of the local accounts under dataDir. */
export const accountsFile = 'accounts.json'
/** Most local accounts. */
export const accountsMax = 10_000
/** Most addresses (primary and aliases) of one account. */
export const addressesPerAccountMax = 100
/** Shortest password of a local account, in characters. */
export const passwordCharsMin = 10
/** How long a verified password is remembered, so each request does not pay for scrypt, in ms. */
export const verifiedPasswordTtlMs = 5 * 60_000
/** Account names: lower case letters, digits, `.`, `_`, `-`; 1–64 characters, starting with a letter or digit. */
export const accountNamePattern = /^[a-z0-9][a-z0-9._-]{0,63}$/
/** Names no local account may take: the first admin. */
export const reservedAccountNames: readonly string[] = ['admin']
/** Longest address, in characters (RFC 5321's path limit). */
const addressCharsMax = 254

export type AccountErrorCode = 'INVALID' | 'EXISTS' | 'NOT_FOUND' | 'TOO_MANY' | 'ACCOUNTS_UNREADABLE'

export class AccountError extends MailkeepError {
  constructor(code: AccountErrorCode, message: string) {
    super(code, message)
    this.name = 'AccountError'
  }
}

interface StoredAccount {
  name: string
  role: Role
  addresses: string[]
  passwordHash: string
  disabled: boolean
  createdAtMs: number
  changedAtMs: number
}

/** An account as shown (never its hash). */
export interface AccountView {
  name: string
  role: Role
  addresses: string[]
  disabled: boolean
  createdAt: string
  changedAt: string
}

/** What `add` takes. */
export interface NewAccount {
  name: string
  role: string
  addresses: readonly string[]
}

/** The outcome of a password check: the principal, or why not. */
export type AccountCheck = { outcome: 'ok'; principal: Principal } | { outcome: 'unknown' | 'wrong-password' | 'disabled' | 'no-role' }

/** @throws AccountError INVALID naming the problem */
function checkName(name: string): void {
  if (!accountNamePattern.test(name)) throw new AccountError('INVALID', `account name ${JSON.stringify(name.slice(0, 80))}: 1–64 of a-z 0-9 . _ - starting with a letter or digit`)
  if (reservedAccountNames.includes(name)) throw new AccountError('INVALID', `account name ${name}: reserved for the first admin`)
}

/** @throws AccountError INVALID naming the problem */
function checkPassword(password: string): void {
  if (password.length < passwordCharsMin) throw new AccountError('INVALID', `the password is shorter than ${passwordCharsMin} characters`)
  if (Buffer.byteLength(password) > passwordBytesMax) throw new AccountError('INVALID', `the password is over ${passwordBytesMax} bytes`)
}

/** The addresses normalized and de-duplicated. @throws AccountError INVALID naming the bad one */
export function checkAddresses(addresses: readonly string[]): string[] {
  if (addresses.length > addressesPerAccountMax) throw new AccountError('INVALID', `${addresses.length} addresses: at most ${addressesPerAccountMax} per account`)
  const out: string[] = []
  for (const address of addresses) {
    const normalized = normalizeAddress(address)
    if (normalized.length > addressCharsMax || !/^[^\s@<>",;]+@[^\s@<>",;]+$/.test(normalized)) {
      throw new AccountError('INVALID', `address ${JSON.stringify(address.slice(0, 80))}: not an address local@domain`)
    }
    if (!out.includes(normalized)) out.push(normalized)
  }
  return out
}

/** A new account's role and normalized addresses. @throws AccountError INVALID naming the problem */
function checkNewAccount(input: NewAccount, password: string): { role: Role; addresses: string[] } {
  checkName(input.name)
  if (!isRole(input.role)) throw new AccountError('INVALID', `role ${JSON.stringify(input.role.slice(0, 40))}: one of ${roles.join(', ')}`)
  const addresses = checkAddresses(input.addresses)
  if (input.role === 'user' && addresses.length === 0) throw new AccountError('INVALID', 'a user account needs at least one address (--address): it sees only mail of its addresses')
  checkPassword(password)
  return { role: input.role, addresses }
}

const view = (account: StoredAccount): AccountView => ({
  name: account.name,
  role: account.role,
  addresses: [...account.addresses],
  disabled: account.disabled,
  createdAt: new Date(account.createdAtMs).toISOString(),
  changedAt: new Date(account.changedAtMs).toISOString(),
})

/** The accounts of a file's text. @throws AccountError ACCOUNTS_UNREADABLE with `path: reason` */
function parseAccounts(path: string, text: string): Map<string, StoredAccount> {
  const fail = (reason: string): never => {
    throw new AccountError('ACCOUNTS_UNREADABLE', `${path}: ${reason}`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return fail('not valid JSON')
  }
  const list = (parsed as { version?: unknown; accounts?: unknown }).accounts
  if ((parsed as { version?: unknown }).version !== 1 || !Array.isArray(list)) return fail('not an accounts file of version 1')
  const accounts = new Map<string, StoredAccount>()
  list.forEach((entry: Partial<StoredAccount>, index) => {
    const ok =
      typeof entry.name === 'string' &&
      typeof entry.role === 'string' &&
      isRole(entry.role) &&
      Array.isArray(entry.addresses) &&
      entry.addresses.every((address) => typeof address === 'string') &&
      typeof entry.passwordHash === 'string' &&
      typeof entry.disabled === 'boolean' &&
      Number.isSafeInteger(entry.createdAtMs) &&
      Number.isSafeInteger(entry.changedAtMs)
    if (!ok) fail(`accounts[${index}]: not an account record`)
    accounts.set(entry.name!, entry as StoredAccount)
  })
  return accounts
}

/**
 * Password checks with scrypt, a verified one remembered for `verifiedPasswordTtlMs` as an
 * HMAC under a per-process key; `decoy` does the same work for a name no account has.
 */
function passwordMemory(clock: Clock) {
  const cacheKey = randomBytes(32)
  const verified = new Map<string, number>()
  let decoyHash: Promise<string> | undefined
  const tagOf = (name: string, password: string, hash: string) => createHmac('sha256', cacheKey).update(`${name}\u0000${password}\u0000${hash}`).digest('hex')
  return {
    async matches(account: Pick<StoredAccount, 'name' | 'passwordHash'>, password: string): Promise<boolean> {
      const tag = tagOf(account.name, password, account.passwordHash)
      const until = verified.get(tag)
      if (until !== undefined && until > clock.monotonicMs()) return true
      if (!(await verifyPassword(password, account.passwordHash))) return false
      if (verified.size > 1000) verified.clear()
      verified.set(tag, clock.monotonicMs() + verifiedPasswordTtlMs)
      return true
    },
    async decoy(password: string): Promise<void> {
      decoyHash ??= hashPassword(randomBytes(18).toString('base64'))
      await verifyPassword(password, await decoyHash)
    },
    forget(): void {
      verified.clear()
    },
  }
}

/** The accounts file's text (version 1, accounts by name). */
function accountsText(accounts: ReadonlyMap<string, StoredAccount>): string {
  return JSON.stringify({ version: 1, accounts: [...accounts.values()].sort((a, b) => a.name.localeCompare(b.name)) }, null, 1) + '\n'
}

/** @throws AccountError NOT_FOUND */
function existingIn(accounts: ReadonlyMap<string, StoredAccount>, name: string): StoredAccount {
  const account = accounts.get(name)
  if (!account) throw new AccountError('NOT_FOUND', `no account ${JSON.stringify(name.slice(0, 80))}`)
  return account
}

/**
 * The local accounts. `load` reads the file (none yet: no accounts); every change is
 * written before it is answered. Verified passwords are remembered for
 * `verifiedPasswordTtlMs` as an HMAC under a per-process key (scrypt costs ~50–100 ms by
 * design); any change to the accounts forgets them all.
 */
export function createAccountStore(deps: { clock: Clock; logger: Logger }, options: { dataDir: string }) {
  const path = join(options.dataDir, accountsFile)
  let accounts = new Map<string, StoredAccount>()
  const passwords = passwordMemory(deps.clock)

  async function save(next: Map<string, StoredAccount>): Promise<void> {
    await writeFileDurable(path, accountsText(next), 0o600)
    accounts = next
    passwords.forget()
  }

  const existing = (name: string): StoredAccount => existingIn(accounts, name)

  async function change(name: string, update: (account: StoredAccount) => StoredAccount): Promise<AccountView> {
    const next = new Map(accounts)
    const updated = { ...update(existing(name)), changedAtMs: deps.clock.now() }
    next.set(name, updated)
    await save(next)
    return view(updated)
  }

  return {
    /** Reads the accounts file. @throws AccountError ACCOUNTS_UNREADABLE naming the file and the problem */
    async load(): Promise<void> {
      const text = await readTextIfPresent(path)
      accounts = text === undefined ? new Map() : parseAccounts(path, text)
    },
    list(): AccountView[] {
      return [...accounts.values()].map(view).sort((a, b) => a.name.localeCompare(b.name))
    },
    /** Whether a local account has this name. */
    has(name: string): boolean {
      return accounts.has(name)
    },
    /** @throws AccountError INVALID, EXISTS, TOO_MANY */
    async add(input: NewAccount, password: string): Promise<AccountView> {
      const { role, addresses } = checkNewAccount(input, password)
      if (accounts.has(input.name)) throw new AccountError('EXISTS', `account ${input.name} exists`)
      if (accounts.size >= accountsMax) throw new AccountError('TOO_MANY', `at most ${accountsMax} local accounts`)
      const now = deps.clock.now()
      const account: StoredAccount = { name: input.name, role, addresses, passwordHash: await hashPassword(password), disabled: false, createdAtMs: now, changedAtMs: now }
      const next = new Map(accounts)
      next.set(account.name, account)
      await save(next)
      deps.logger.info('account added', { name: account.name, role: account.role, addresses: addresses.length })
      return view(account)
    },
    /** @throws AccountError NOT_FOUND */
    async remove(name: string): Promise<AccountView> {
      const account = existing(name)
      const next = new Map(accounts)
      next.delete(name)
      await save(next)
      deps.logger.info('account removed', { name })
      return view(account)
    },
    /** @throws AccountError NOT_FOUND, INVALID */
    async setPassword(name: string, password: string): Promise<AccountView> {
      existing(name)
      checkPassword(password)
      const passwordHash = await hashPassword(password)
      return change(name, (account) => ({ ...account, passwordHash }))
    },
    /** @throws AccountError NOT_FOUND */
    async setDisabled(name: string, disabled: boolean): Promise<AccountView> {
      return change(name, (account) => ({ ...account, disabled }))
    },
    /**
     * Checks a local account's password. A disabled account is refused only after its
     * password was checked, so the answer does not tell a guesser that the account exists.
     */
    async check(name: string, password: string): Promise<AccountCheck> {
      const account = accounts.get(name)
      if (!account) {
        await passwords.decoy(password)
        return { outcome: 'unknown' }
      }
      if (!(await passwords.matches(account, password)) || accounts.get(name) !== account) return { outcome: 'wrong-password' }
      if (account.disabled) return { outcome: 'disabled' }
      return { outcome: 'ok', principal: { name: account.name, role: account.role, addresses: account.addresses, source: 'local' } }
    },
  }
}

export type AccountStore = ReturnType<typeof createAccountStore>
