import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { verifyPassword } from '../common/password.js'
import { writeFileDurable } from '../common/durable-file.js'
import type { Clock } from '../common/clock.js'

/** The one HTTP user (ARCHITECTURE: HTTP Basic, user `admin`). */
export const adminUser = 'admin'
/** File holding the generated admin password when none is configured (mode 0600). */
export const initialPasswordFile = 'initial-admin-password'
/** How long a verified credential is remembered, so each request does not pay for scrypt. */
export const verifiedCredentialTtlMs = 5 * 60_000

export interface AdminCredential {
  /** True when `user:password` is the admin's. Constant-time; never logs the password. */
  verify(user: string, password: string): Promise<boolean>
  /** 'config' (scrypt hash from config) or 'initial-file' (generated at first boot). */
  readonly source: 'config' | 'initial-file'
}

/**
 * The admin credential: the scrypt hash from config when set; otherwise the password in
 * `<dataDir>/initial-admin-password`, created (random, 24 characters, 0600) at first boot.
 * Verified credentials are remembered as an HMAC under a per-process key for a few
 * minutes, because scrypt costs ~50–100 ms per check by design.
 */
export async function loadAdminCredential(deps: { clock: Clock }, options: { dataDir: string; adminPasswordHash: string | null }): Promise<AdminCredential> {
  const cacheKey = randomBytes(32)
  const verified = new Map<string, number>()
  const remember = (user: string, password: string) => createHmac('sha256', cacheKey).update(`${user}\u0000${password}`).digest('hex')

  if (options.adminPasswordHash) {
    const hash = options.adminPasswordHash
    return {
      source: 'config',
      async verify(user, password) {
        const tag = remember(user, password)
        const until = verified.get(tag)
        if (until !== undefined && until > deps.clock.monotonicMs()) return true
        const userOk = timingSafeEqual(createHash('sha256').update(user).digest(), createHash('sha256').update(adminUser).digest())
        const passwordOk = await verifyPassword(password, hash)
        if (!(userOk && passwordOk)) return false
        if (verified.size > 1000) verified.clear()
        verified.set(tag, deps.clock.monotonicMs() + verifiedCredentialTtlMs)
        return true
      },
    }
  }
  const path = join(options.dataDir, initialPasswordFile)
  let password: string
  try {
    password = (await readFile(path, 'utf8')).trim()
  } catch {
    password = randomBytes(18).toString('base64url')
    await writeFileDurable(path, password + '\n', 0o600)
  }
  const expected = createHash('sha256').update(`${adminUser}\u0000${password}`).digest()
  return {
    source: 'initial-file',
    async verify(user, typed) {
      return timingSafeEqual(createHash('sha256').update(`${user}\u0000${typed}`).digest(), expected)
    },
  }
}

/** Parses an `Authorization: Basic …` header. */
export function parseBasicAuth(header: string | undefined): { user: string; password: string } | undefined {
  if (!header || !/^Basic /i.test(header)) return undefined
  const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8')
  const colon = decoded.indexOf(':')
  if (colon < 0) return undefined
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) }
}
