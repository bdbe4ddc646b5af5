import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileDurable } from '../common/durable-file.js'
import { PolicyError } from './errors.js'

/** File in the data dir holding the audit log's HMAC key (hex, mode 0600). */
export const auditKeyFile = 'audit.key'
const keyBytes = 32

/**
 * Reads the appliance's audit key, creating it (256 random bits) on first boot. The key
 * makes rewriting the audit log need more than write access to the LMDB file; it does not
 * protect against someone who can read the data dir (README: what the audit log can't show).
 * @throws PolicyError CORRUPT when the file exists but is not a key; fs errors when unreadable
 */
export async function loadOrCreateAuditKey(dataDir: string): Promise<Buffer> {
  const path = join(dataDir, auditKeyFile)
  let text: string
  try {
    text = (await readFile(path, 'utf8')).trim()
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error
    const key = randomBytes(keyBytes)
    await writeFileDurable(path, key.toString('hex') + '\n', 0o600)
    return key
  }
  if (!/^[0-9a-f]{64}$/.test(text))
    throw new PolicyError('CORRUPT', `${path} does not hold an audit key (64 hex digits); restore it from backup: without it every audit entry fails its HMAC check`, { fields: { path } })
  return Buffer.from(text, 'hex')
}
