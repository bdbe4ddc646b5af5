/**
 * Real mirror certificates for simulated appliances, so `mirror verify` runs with its real
 * signatures: a small pool made once per process (RSA key generation is the slow part), and
 * a node's certificate picked from it by its serial, data-volume generation and seed. Two
 * identities may share a certificate; the store id still tells them apart.
 */
import { mkdtemp, rm } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { systemClock } from '../../firmware/common/clock.js'
import { createMemoryLogger } from '../../firmware/common/logger.js'
import { loadOrCreateIdentityCertificate, type IdentityCertificate } from '../../firmware/mirror/certificate.js'

/** Certificates in the pool. */
const poolSize = 8
let pool: IdentityCertificate[] | undefined
let making: Promise<IdentityCertificate[]> | undefined

/** Makes the pool (once per process). */
export function certificatePool(): Promise<IdentityCertificate[]> {
  making ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mailkeep-sim-certificates-'))
    try {
      const made = await Promise.all(
        Array.from({ length: poolSize }, (_, index) =>
          loadOrCreateIdentityCertificate({ logger: createMemoryLogger('error'), clock: systemClock }, { dataDir: join(dir, String(index)), serial: `SIM-POOL-${index}` }),
        ),
      )
      pool = made
      return made
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })()
  return making
}

/** The certificate of an identity, or undefined before certificatePool() has resolved. */
export function simCertificate(label: string): IdentityCertificate | undefined {
  if (!pool) return undefined
  return pool[createHash('sha256').update(label).digest().readUInt32BE(0) % pool.length]
}
