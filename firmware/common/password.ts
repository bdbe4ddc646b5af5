import { scrypt, randomBytes, timingSafeEqual } from 'node:crypto'

/**
 * Password hashes for the technician and the HTTP admin: `scrypt$N$r$p$salt$hash` with
 * base64 salt and hash. Verification recomputes with the stored parameters and compares
 * in constant time (STYLE 14). Passwords are never logged.
 */

/** scrypt cost parameters for new hashes: N=2^15 takes ~50–100 ms here, enough to slow guessing. */
export const scryptCost = { N: 32768, r: 8, p: 1 } as const
const keyBytes = 32
const saltBytes = 16
/** Longest password accepted, in bytes: bounds the work an attacker can make us do. */
export const passwordBytesMax = 1024

function derive(password: string, salt: Buffer, N: number, r: number, p: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyBytes, { N, r, p, maxmem: 256 * N * r + 1024 * 1024 }, (error, key) => (error ? reject(error) : resolve(key)))
  })
}

/** Hashes a password for the config file. @throws RangeError when the password is empty or too long */
export async function hashPassword(password: string): Promise<string> {
  if (password.length === 0 || Buffer.byteLength(password) > passwordBytesMax) {
    throw new RangeError(`password must be 1–${passwordBytesMax} bytes`)
  }
  const salt = randomBytes(saltBytes)
  const key = await derive(password, salt, scryptCost.N, scryptCost.r, scryptCost.p)
  return `scrypt$${scryptCost.N}$${scryptCost.r}$${scryptCost.p}$${salt.toString('base64')}$${key.toString('base64')}`
}

/** True when `password` matches `hash`. A malformed hash or an over-long password never matches. */
export async function verifyPassword(password: string, hash: string): Promise<boolean> {
  const parts = hash.split('$')
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false
  if (Buffer.byteLength(password) > passwordBytesMax) return false
  const [N, r, p] = parts.slice(1, 4).map(Number) as [number, number, number]
  if (![N, r, p].every((value) => Number.isInteger(value) && value > 0) || N > 1 << 20) return false
  const salt = Buffer.from(parts[4]!, 'base64')
  const expected = Buffer.from(parts[5]!, 'base64')
  if (expected.length !== keyBytes) return false
  const actual = await derive(password, salt, N, r, p)
  return timingSafeEqual(actual, expected)
}
