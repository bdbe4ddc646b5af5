import { createHmac, randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { ConnectionOptions } from 'node:tls'
import { Client, FilterParser, InvalidCredentialsError, type Entry } from 'ldapts'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { MailkeepError } from '../common/errors.js'
import type { LdapConfig } from '../../config/types.js'
import type { AccountCheck } from './accounts.js'
import { checkAddresses } from './accounts.js'
import { roles, type Role } from './roles.js'
import type { DirectorySource } from './sign-in.js'

/**
 * Directory accounts (OpenLDAP, Active Directory) through ldapts. A sign-in: connect over
 * LDAPS or StartTLS (TLS 1.2+, the configured CA), bind as the search account (or search
 * anonymously), find the one entry `userFilter` names, bind as it with the typed password,
 * refuse it when it matches `disabledFilter`, read its groups (`groupFilter` under
 * `groupBase`) and map them to the highest role of `roleGroups`, and read its addresses
 * (`mailAttribute`, then `aliasAttributes`, `smtp:` prefixes dropped). The role and
 * addresses are read at each sign-in; a verified password is remembered for a few minutes
 * (as for local accounts) so that each API request does not ask the directory again.
 *
 * A directory that cannot be reached, refuses TLS or times out answers `unavailable` with
 * the reason (never a password or the bind DN's password): the caller answers 503 and
 * nothing else lets the user in.
 */

export class DirectoryConfigError extends MailkeepError {
  constructor(message: string) {
    super('INVALID_DIRECTORY_CONFIG', message)
    this.name = 'DirectoryConfigError'
  }
}

/** Most characters of a typed user name sent to the directory. */
const userNameCharsMax = 256
/** Most groups of a user that are read. */
const groupsMax = 1_000
const roleRank: Record<Role, number> = { user: 1, auditor: 2, admin: 3 }
/**
 * How long a verified directory sign-in is remembered, in ms: Basic auth checks every
 * request, and the directory is not asked each time. A change in the directory (disabled,
 * new password, other groups) applies within this long.
 */
export const directoryVerifiedTtlMs = 60_000

/** `value` escaped for an LDAP filter (RFC 4515): `*`, `(`, `)`, `\` and NUL as \hh. */
export function escapeFilterValue(value: string): string {
  return value.replace(/[*()\\\u0000]/g, (char) => `\\${char.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** The highest role of the groups `memberOf` (DNs compared without case and spaces after commas), or undefined. */
export function roleOfGroups(groups: readonly string[], roleGroups: LdapConfig['roleGroups']): Role | undefined {
  const normal = (dn: string) => dn.toLowerCase().replace(/,\s+/g, ',').trim()
  const member = new Set(groups.map(normal))
  let best: Role | undefined
  for (const role of roles) {
    if (roleGroups[role].some((dn) => member.has(normal(dn))) && (best === undefined || roleRank[role] > roleRank[best])) best = role
  }
  return best
}

/** The addresses of an entry: the mail attribute first, then the aliases (`smtp:x@y` → x@y); values that are not addresses are skipped. */
export function addressesOfEntry(entry: Entry, config: Pick<LdapConfig, 'mailAttribute' | 'aliasAttributes'>): string[] {
  const values = (attribute: string): string[] => {
    const raw = entry[attribute] ?? entry[Object.keys(entry).find((key) => key.toLowerCase() === attribute.toLowerCase()) ?? '']
    const list = Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]
    return list.map((value) => (Buffer.isBuffer(value) ? value.toString('utf8') : String(value)))
  }
  const candidates = [...values(config.mailAttribute), ...config.aliasAttributes.flatMap(values)].map((value) => value.replace(/^smtp:/i, '').trim())
  const addresses: string[] = []
  for (const candidate of candidates) {
    try {
      for (const address of checkAddresses([candidate])) if (!addresses.includes(address)) addresses.push(address)
    } catch {
      // x500:, sip: and other non-address values of proxyAddresses
    }
    if (addresses.length >= 100) break
  }
  return addresses
}

/**
 * Checks the parts of an `auth.ldap` block JSON Schema cannot, each as `path: reason`.
 * @throws DirectoryConfigError listing every problem
 */
export async function checkDirectoryConfig(config: LdapConfig): Promise<{ caPem: string | undefined }> {
  const problems: string[] = []
  const filter = (path: string, text: string | null, placeholder?: string) => {
    if (text === null) return
    try {
      FilterParser.parseString(placeholder ? text.replaceAll(placeholder, 'x') : text)
    } catch (error) {
      problems.push(`auth.ldap.${path}: not an LDAP filter (${(error as Error).message.slice(0, 120)})`)
    }
  }
  filter('userFilter', config.userFilter, '{user}')
  filter('groupFilter', config.groupFilter, '{dn}')
  filter('disabledFilter', config.disabledFilter)
  if ((config.bindDn === null) !== (config.bindPassword === null)) problems.push('auth.ldap.bindPassword: bindDn and bindPassword go together (both, or neither for an anonymous search)')
  if (config.startTls && config.url.startsWith('ldaps:')) problems.push('auth.ldap.startTls: an ldaps:// URL is TLS already; use ldap:// with startTls')
  if (!config.startTls && config.url.startsWith('ldap:')) problems.push('auth.ldap.url: ldap:// without startTls would send passwords in clear; use ldaps:// or set startTls')
  if (roles.every((role) => config.roleGroups[role].length === 0)) problems.push('auth.ldap.roleGroups: no group is mapped to a role, so no directory user could sign in')
  let caPem: string | undefined
  if (config.caFile !== null) {
    try {
      caPem = await readFile(config.caFile, 'utf8')
      if (!caPem.includes('-----BEGIN CERTIFICATE-----')) problems.push(`auth.ldap.caFile: ${config.caFile} holds no PEM certificate`)
    } catch (error) {
      problems.push(`auth.ldap.caFile: ${config.caFile}: ${(error as NodeJS.ErrnoException).code ?? 'cannot be read'}`)
    }
  }
  if (problems.length > 0) throw new DirectoryConfigError(`invalid directory configuration: ${problems.join('; ')}`)
  return { caPem }
}

/** The reason a directory error gives, without anything secret. */
function unavailableReason(error: unknown): string {
  const code = (error as NodeJS.ErrnoException).code
  const message = error instanceof Error ? error.message : String(error)
  return (code ? `${code}: ` : '') + message.replace(/\s+/g, ' ').slice(0, 200)
}

/** A connection to the directory, TLS up (LDAPS, or StartTLS before anything else is sent). */
async function connectTo(config: LdapConfig, tlsOptions: ConnectionOptions): Promise<Client> {
  // TLS options go to the constructor for ldaps:// only: given there, ldapts's StartTLS
  // upgrade fails (the handshake is cut off).
  const client = new Client({ url: config.url, timeout: config.timeoutMs, connectTimeout: config.timeoutMs, strictDN: false, ...(config.startTls ? {} : { tlsOptions }) })
  // A copy each time: ldapts writes the plain socket into the options it is given. `host`
  // is what the server's certificate must name.
  if (config.startTls) await client.startTLS({ ...tlsOptions, host: new URL(config.url).hostname.replace(/^\[|\]$/g, '') })
  return client
}

/** The password check, disabled check, role and addresses of one sign-in. @throws ldapts and socket errors (the directory is unavailable) */
async function lookUp(deps: { logger: Logger }, config: LdapConfig, connect: () => Promise<Client>, name: string, password: string): Promise<AccountCheck> {
  const client = await connect()
  try {
    if (config.bindDn !== null && config.bindPassword !== null) await client.bind(config.bindDn, config.bindPassword)
    const filter = config.userFilter.replaceAll('{user}', escapeFilterValue(name))
    const attributes = ['dn', config.mailAttribute, ...config.aliasAttributes]
    const { searchEntries } = await client.search(config.userBase, { scope: 'sub', filter, attributes, sizeLimit: 2 })
    if (searchEntries.length !== 1) {
      if (searchEntries.length > 1) deps.logger.warn('directory: user filter matches more than one entry', { user: name })
      return { outcome: 'unknown' }
    }
    const entry = searchEntries[0]!
    // The user's own bind checks the password; a second connection keeps the search account's rights apart.
    const own = await connect()
    try {
      await own.bind(entry.dn, password)
    } catch (error) {
      if (error instanceof InvalidCredentialsError) return { outcome: 'wrong-password' }
      throw error
    } finally {
      await own.unbind().catch(() => undefined)
    }
    if (config.disabledFilter) {
      const disabled = await client.search(entry.dn, { scope: 'base', filter: config.disabledFilter, attributes: ['dn'] })
      if (disabled.searchEntries.length > 0) return { outcome: 'disabled' }
    }
    const groupFilter = config.groupFilter.replaceAll('{dn}', escapeFilterValue(entry.dn))
    const groups = await client.search(config.groupBase ?? config.userBase, { scope: 'sub', filter: groupFilter, attributes: ['dn'], sizeLimit: groupsMax })
    const role = roleOfGroups(
      groups.searchEntries.map((group) => group.dn),
      config.roleGroups,
    )
    if (!role) return { outcome: 'no-role' }
    return { outcome: 'ok', principal: { name, role, addresses: addressesOfEntry(entry, config), source: 'directory' } }
  } finally {
    await client.unbind().catch(() => undefined)
  }
}

/** The directory as a sign-in source. Call `checkDirectoryConfig` first (boot does). */
export function createDirectory(deps: { clock: Clock; logger: Logger }, config: LdapConfig, tls: { caPem: string | undefined }): DirectorySource {
  const tlsOptions: ConnectionOptions = { minVersion: 'TLSv1.2', ...(tls.caPem ? { ca: [tls.caPem] } : {}) }
  const connect = () => connectTo(config, tlsOptions)
  const cacheKey = randomBytes(32)
  const verified = new Map<string, { untilMs: number; check: AccountCheck }>()
  const tagOf = (name: string, password: string) => createHmac('sha256', cacheKey).update(`${name}\u0000${password}`).digest('hex')

  return {
    async check(typed, password) {
      const name = typed.trim()
      // An empty password would be an unauthenticated bind, which many servers accept.
      if (password.length === 0 || name.length === 0 || name.length > userNameCharsMax) return { outcome: 'wrong-password' }
      const tag = tagOf(name, password)
      const known = verified.get(tag)
      if (known && known.untilMs > deps.clock.monotonicMs()) return known.check
      try {
        const check = await lookUp(deps, config, connect, name, password)
        if (check.outcome === 'ok') {
          if (verified.size > 1000) verified.clear()
          verified.set(tag, { untilMs: deps.clock.monotonicMs() + directoryVerifiedTtlMs, check })
        }
        deps.logger.info('directory sign-in', {
          user: name,
          outcome: check.outcome,
          ...(check.outcome === 'ok' ? { role: check.principal.role, addresses: check.principal.addresses.length } : {}),
        })
        return check
      } catch (error) {
        const reason = unavailableReason(error)
        deps.logger.warn('directory unavailable', { user: name, reason })
        return { outcome: 'unavailable', reason }
      }
    },
  }
}
