import { createHash, randomBytes } from 'node:crypto'
import { open, rm, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { Hal } from '../../hal/types.js'
import { modelProfile, type ModelProfile } from '../../config/models.js'

/** Outcome of one factory check: what was measured against which limit. */
export interface CheckResult {
  name: string
  ok: boolean
  /** Human-readable reason, naming the failing part (disk, member, NIC). */
  message: string
  value: unknown
  limit: unknown
  durationMs: number
}

export interface CheckContext {
  hal: Hal
  dataDir: string
  /** The model's profile, or undefined for an unknown model. */
  profile: ModelProfile | undefined
}

export interface FactoryCheck {
  name: string
  run(context: CheckContext): Promise<Omit<CheckResult, 'name' | 'durationMs'>>
}

/** Smallest disk accepted, as a share of the profile's disk size (vendors round sizes). */
export const diskSizeToleranceRatio = 0.98
/** Bytes written, read back and verified on the data volume per run. */
export const volumeCheckBytesDefault = 64 * 1024 * 1024
/** Slowest data volume accepted, in MB/s (decimal) for the write+fsync and the read. */
export const volumeThroughputMegabytesPerSecondMin = 20

export const identityCheck: FactoryCheck = {
  name: 'identity',
  async run({ hal, profile }) {
    const identity = await hal.identity()
    const problems: string[] = []
    if (!profile) problems.push(`model ${identity.model} is not a known model`)
    if (!identity.serial) problems.push('serial number missing')
    if (!identity.firmwareVersion) problems.push('firmware version missing')
    return {
      ok: problems.length === 0,
      message: problems.length ? problems.join('; ') : `model ${identity.model} serial ${identity.serial} firmware ${identity.firmwareVersion}`,
      value: { model: identity.model, serial: identity.serial, firmwareVersion: identity.firmwareVersion },
      limit: { knownModel: true },
    }
  },
}

export const disksCheck: FactoryCheck = {
  name: 'disks',
  async run({ hal, profile }) {
    const disks = await hal.disks()
    if (!profile) return { ok: false, message: 'no profile for an unknown model', value: disks.length, limit: null }
    const problems: string[] = []
    if (disks.length !== profile.diskCount) problems.push(`${disks.length} disk(s) found, model ${profile.model} has ${profile.diskCount}`)
    const sizeMin = Math.floor(profile.diskBytes * diskSizeToleranceRatio)
    for (const disk of disks) {
      if (disk.sizeBytes < sizeMin) problems.push(`${disk.device} is ${disk.sizeBytes} bytes, below ${sizeMin}`)
      if (disk.health !== 'ok') problems.push(`${disk.device} health ${disk.health}`)
      if (disk.smart === 'failed') problems.push(`${disk.device} SMART failed`)
    }
    return {
      ok: problems.length === 0,
      message: problems.length ? problems.join('; ') : `${disks.length} disk(s) healthy`,
      value: disks.map((disk) => ({ device: disk.device, sizeBytes: disk.sizeBytes, health: disk.health, smart: disk.smart })),
      limit: { diskCount: profile.diskCount, sizeBytesMin: sizeMin, health: 'ok' },
    }
  },
}

export const raidCheck: FactoryCheck = {
  name: 'raid',
  async run({ hal, profile }) {
    const raid = await hal.raid()
    if (!profile) return { ok: false, message: 'no profile for an unknown model', value: raid, limit: null }
    if (profile.raidLevel === 'none') {
      return { ok: true, message: `model ${profile.model} has no RAID`, value: raid.arrays.length, limit: 'none' }
    }
    const problems: string[] = []
    if (!raid.present || raid.arrays.length === 0) problems.push(`no RAID array, model ${profile.model} uses ${profile.raidLevel}`)
    for (const array of raid.arrays) {
      if (array.level !== profile.raidLevel) problems.push(`${array.name} is ${array.level}, expected ${profile.raidLevel}`)
      if (array.state !== 'clean') {
        const members = array.members.filter((member) => member.state !== 'active' && member.state !== 'spare').map((member) => `${member.device} ${member.state}`)
        const progress = array.rebuildPercent === null ? '' : ` ${array.rebuildPercent}%`
        problems.push(`${array.name} ${array.state}${progress}${members.length ? ': ' + members.join(', ') : ''}`)
      }
    }
    return {
      ok: problems.length === 0,
      message: problems.length ? problems.join('; ') : `${raid.arrays.map((array) => `${array.name} ${array.level} clean`).join(', ')}`,
      value: raid.arrays.map((array) => ({ name: array.name, level: array.level, state: array.state, members: array.members })),
      limit: { level: profile.raidLevel, state: 'clean' },
    }
  },
}

export const nicsCheck: FactoryCheck = {
  name: 'nics',
  async run({ hal, profile }) {
    const nics = await hal.nics()
    if (!profile) return { ok: false, message: 'no profile for an unknown model', value: nics.length, limit: null }
    const problems: string[] = []
    if (nics.length !== profile.nicCount) problems.push(`${nics.length} NIC(s) found, model ${profile.model} has ${profile.nicCount}`)
    for (const nic of nics) if (nic.link !== 'up') problems.push(`${nic.name} link down`)
    return {
      ok: problems.length === 0,
      message: problems.length ? problems.join('; ') : `${nics.length} NIC(s), all links up`,
      value: nics.map((nic) => ({ name: nic.name, link: nic.link, speedMbps: nic.speedMbps })),
      limit: { nicCount: profile.nicCount, link: 'up' },
    }
  },
}

/** Writes, fsyncs, reads back and verifies `bytes` on the data volume; measures MB/s against `megabytesPerSecondMin`. */
export function volumeCheck(bytes = volumeCheckBytesDefault, megabytesPerSecondMin = volumeThroughputMegabytesPerSecondMin): FactoryCheck {
  return {
    name: 'data-volume',
    async run({ dataDir }) {
      const directory = join(dataDir, 'factory-test')
      await mkdir(directory, { recursive: true })
      const path = join(directory, `volume-${process.pid}.bin`)
      const chunkBytes = 1024 * 1024
      const chunk = randomBytes(chunkBytes)
      const written = createHash('sha256')
      try {
        const writeStartedMs = performance.now()
        const handle = await open(path, 'w', 0o600)
        try {
          for (let offset = 0; offset < bytes; offset += chunkBytes) {
            // Vary each chunk so a deduplicating or compressing layer cannot fake the speed.
            chunk.writeUInt32BE(offset / chunkBytes, 0)
            const piece = chunk.subarray(0, Math.min(chunkBytes, bytes - offset))
            written.update(piece)
            await handle.write(piece)
          }
          await handle.sync()
        } finally {
          await handle.close()
        }
        const writeSeconds = (performance.now() - writeStartedMs) / 1000
        const readStartedMs = performance.now()
        const read = createHash('sha256')
        const reader = await open(path, 'r')
        try {
          for await (const piece of reader.createReadStream({ highWaterMark: chunkBytes })) read.update(piece as Buffer)
        } finally {
          await reader.close().catch(() => undefined)
        }
        const readSeconds = (performance.now() - readStartedMs) / 1000
        const same = written.digest('hex') === read.digest('hex')
        const writeRate = bytes / 1e6 / Math.max(writeSeconds, 1e-6)
        const readRate = bytes / 1e6 / Math.max(readSeconds, 1e-6)
        const problems: string[] = []
        if (!same) problems.push('data read back differs from data written')
        if (writeRate < megabytesPerSecondMin) problems.push(`write ${writeRate.toFixed(1)} MB/s below ${megabytesPerSecondMin}`)
        if (readRate < megabytesPerSecondMin) problems.push(`read ${readRate.toFixed(1)} MB/s below ${megabytesPerSecondMin}`)
        return {
          ok: problems.length === 0,
          message: problems.length ? problems.join('; ') : `${bytes} bytes verified, write ${writeRate.toFixed(1)} MB/s, read ${readRate.toFixed(1)} MB/s`,
          value: { bytes, verified: same, writeMegabytesPerSecond: Number(writeRate.toFixed(1)), readMegabytesPerSecond: Number(readRate.toFixed(1)) },
          limit: { verified: true, megabytesPerSecondMin },
        }
      } finally {
        await rm(path, { force: true })
      }
    },
  }
}

/** The HAL checks, in the order the factory runs them. */
export function hardwareChecks(options: { volumeBytes?: number; volumeMegabytesPerSecondMin?: number } = {}): FactoryCheck[] {
  return [identityCheck, disksCheck, raidCheck, nicsCheck, volumeCheck(options.volumeBytes, options.volumeMegabytesPerSecondMin)]
}

/** Runs checks in order; a check that throws fails with its error message, the rest still run. */
export async function runChecks(checks: readonly FactoryCheck[], context: CheckContext, onResult?: (result: CheckResult, index: number) => void): Promise<CheckResult[]> {
  const results: CheckResult[] = []
  for (const [index, check] of checks.entries()) {
    const startedMs = performance.now()
    let result: CheckResult
    try {
      const outcome = await check.run(context)
      result = { name: check.name, ...outcome, durationMs: Math.round(performance.now() - startedMs) }
    } catch (error) {
      result = { name: check.name, ok: false, message: `check failed to run: ${(error as Error).message}`, value: null, limit: null, durationMs: Math.round(performance.now() - startedMs) }
    }
    results.push(result)
    onResult?.(result, index)
  }
  return results
}

/** One TAP test point for a result, with the measured value and limit as YAML diagnostics. */
export function tapLine(result: CheckResult, number: number): string {
  const lines = [`${result.ok ? 'ok' : 'not ok'} ${number} - ${result.name}: ${result.message.replace(/#/g, '\\#')}`]
  lines.push('  ---', `  value: ${JSON.stringify(result.value)}`, `  limit: ${JSON.stringify(result.limit)}`, `  durationMs: ${result.durationMs}`, '  ...')
  return lines.join('\n')
}

export { modelProfile }
