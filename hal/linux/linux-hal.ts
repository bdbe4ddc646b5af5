import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { networkInterfaces as osNetworkInterfaces } from 'node:os'
import type { Logger } from '../../firmware/common/logger.js'
import { HalError } from '../errors.js'
import { withTimeout } from '../timeout.js'
import type { Hal, Identity, RaidArray, RaidStatus } from '../types.js'
import { statfsVolume } from '../volume.js'
import { faultyDiskNames, toDisks } from './disks.js'
import { applianceModelFromDmi, meaningfulDmiValue, serialFromMachineId, unknownModel } from './identity.js'
import { parseMdadmDetail } from './mdadm-detail.js'
import { parseMdstat } from './mdstat.js'
import { toNics } from './nics.js'

export interface LinuxHalDeps {
  logger: Logger
}

export interface LinuxHalOptions {
  /** Reported as is in identity(). */
  firmwareVersion: string
  /** `identity.model` override: used only when DMI does not name a mailkeep model. */
  model: number | null
  /** `identity.serial` override: wins over DMI and machine-id. */
  serial: string | null
  /** Normally /proc/mdstat; a missing file means the kernel has no md support loaded. */
  mdstatPath: string
  /** mdadm executable, a path or a name looked up on PATH (plus /usr/sbin and /sbin). */
  mdadmPath: string
  /** Bound on every probe: each systeminformation call, each mdadm run, each statfs. */
  commandTimeoutMs: number
}

type SystemInformation = typeof import('systeminformation')

/** mdadm --detail prints about 2 KiB per array; anything past this is not its output. */
const mdadmOutputBytesMax = 256 * 1024
const machineIdPaths = ['/etc/machine-id', '/var/lib/dbus/machine-id']

/**
 * The HAL of a real Linux machine (an appliance, or a VM running the firmware for tests).
 * Pure at creation: systeminformation is loaded on first use, nothing is read until a call.
 * Every probe is bounded by `commandTimeoutMs`; a probe that times out rejects with HalError
 * HAL_TIMEOUT (the underlying child process of systeminformation is not killed, mdadm is).
 *
 * Identity: see hal/linux/identity.ts (DMI model on an appliance, else the override, else 0
 * = unknown; serial from the override, else DMI serial, else DMI UUID, else a hash of
 * /etc/machine-id). Identity is read once and cached: it cannot change while running.
 * RAID: /proc/mdstat, refined per array by `mdadm --detail` when mdadm can be run (it needs
 * root); without mdadm, or when it fails or times out, the mdstat view is reported and the
 * first failure is logged. No /proc/mdstat, or no arrays in it: `{ present: false }`.
 *
 * Methods throw HalError HAL_TIMEOUT or HAL_PROBE_FAILED (retryable) when a probe fails;
 * identity() also HAL_IDENTITY_UNAVAILABLE, volume() HAL_VOLUME_UNAVAILABLE.
 */
export function createLinuxHal(deps: LinuxHalDeps, options: LinuxHalOptions): Hal {
  assert.ok(Number.isInteger(options.commandTimeoutMs) && options.commandTimeoutMs > 0, 'commandTimeoutMs must be a positive integer')
  assert.ok(options.model === null || (Number.isInteger(options.model) && options.model >= 0), 'model must be a non-negative integer or null')
  const logger = deps.logger
  let loaded: Promise<SystemInformation> | undefined
  let identityCached: Identity | undefined
  let mdadmMissing = false
  let mdadmFailureLogged = false
  let started = false

  // Loaded lazily so that importing hal/ (which the simulator path does too) costs nothing.
  const systemInformation = (): Promise<SystemInformation> => (loaded ??= import('systeminformation').then((module) => module.default))

  async function probe<T>(what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await withTimeout(work(), options.commandTimeoutMs, what)
    } catch (error) {
      if (error instanceof HalError) throw error
      throw new HalError('HAL_PROBE_FAILED', `${what} failed: ${(error as Error).message}`, { retryable: true, fields: { what }, cause: error })
    }
  }

  /** The arrays of /proc/mdstat, or null when the file does not exist (no md at all). */
  async function readMdstat(): Promise<RaidArray[] | null> {
    try {
      return parseMdstat(await probe(`read ${options.mdstatPath}`, () => readFile(options.mdstatPath, 'utf8')))
    } catch (error) {
      if ((error as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT') return null
      throw error
    }
  }

  function runMdadmDetail(device: string): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(
        options.mdadmPath,
        ['--detail', device],
        {
          timeout: options.commandTimeoutMs,
          killSignal: 'SIGKILL',
          maxBuffer: mdadmOutputBytesMax,
          // mdadm lives in sbin, which is not on a service user's PATH on Debian; LC_ALL=C
          // keeps its output in the English the parser knows.
          env: { PATH: `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`, LC_ALL: 'C' },
        },
        (error, stdout, stderr) => {
          if (!error) return resolve(stdout)
          const reason = error.killed ? `timed out after ${options.commandTimeoutMs} ms` : (stderr.trim() || error.message).slice(0, 200)
          reject(Object.assign(error, { reason }))
        },
      )
    })
  }

  /** `array` refined by mdadm --detail, or `array` itself when mdadm cannot say more. */
  async function detailed(array: RaidArray): Promise<RaidArray> {
    if (mdadmMissing || !/^md[\w.-]+$/.test(array.name)) return array
    try {
      const detail = parseMdadmDetail(await runMdadmDetail(`/dev/${array.name}`))
      return { ...detail, name: array.name }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        mdadmMissing = true
        logger.info('mdadm not found: RAID state comes from mdstat alone', { mdadmPath: options.mdadmPath })
        return array
      }
      // Logged once at warn (typically: not root), then at debug, so health polling does not flood the log.
      const log = mdadmFailureLogged ? logger.debug : logger.warn
      mdadmFailureLogged = true
      log('mdadm --detail failed: using the mdstat view of the array', { array: array.name, reason: (error as { reason?: string }).reason ?? String(error) })
      return array
    }
  }

  async function machineIdSerial(): Promise<string> {
    for (const path of machineIdPaths) {
      try {
        const machineId = (await probe(`read ${path}`, () => readFile(path, 'utf8'))).trim()
        if (machineId) return serialFromMachineId(machineId)
      } catch {
        // Try the next location; none found is reported below.
      }
    }
    throw new HalError('HAL_IDENTITY_UNAVAILABLE', 'no serial: no identity.serial override, no DMI serial or UUID, no machine-id', {
      fields: { machineIdPaths },
    })
  }

  const hal = {
    provider: 'linux' as const,

    async start(): Promise<void> {
      // Nothing runs in the background on real hardware; start only marks the lifecycle.
      if (started) return
      started = true
      logger.debug('linux hal started', { mdstatPath: options.mdstatPath, mdadmPath: options.mdadmPath, commandTimeoutMs: options.commandTimeoutMs })
    },

    async stop(): Promise<void> {
      started = false
    },

    async identity(): Promise<Identity> {
      if (identityCached) return identityCached
      const si = await systemInformation()
      const system = await probe('systeminformation.system', () => si.system())
      const dmiModel = applianceModelFromDmi(system.manufacturer, system.model)
      if (dmiModel !== null && options.model !== null && options.model !== dmiModel) {
        logger.warn('identity.model override ignored: this appliance says otherwise', { configured: options.model, dmi: dmiModel })
      }
      const model = dmiModel ?? options.model ?? unknownModel
      const serial = options.serial ?? meaningfulDmiValue(system.serial) ?? meaningfulDmiValue(system.uuid) ?? (await machineIdSerial())
      identityCached = Object.freeze({ model, serial, firmwareVersion: options.firmwareVersion, provider: 'linux' as const })
      return identityCached
    },

    async disks() {
      const si = await systemInformation()
      const [layout, blockDevices, arrays] = await Promise.all([
        probe('systeminformation.diskLayout', () => si.diskLayout()),
        probe('systeminformation.blockDevices', () => si.blockDevices()),
        // Disk health only borrows md's faulty marks: an unreadable mdstat must not hide the disks.
        readMdstat().catch((error: unknown) => {
          logger.debug('mdstat unreadable while listing disks', { error })
          return null
        }),
      ])
      return toDisks(layout, blockDevices, faultyDiskNames(arrays ?? []))
    },

    async raid(): Promise<RaidStatus> {
      const arrays = await readMdstat()
      if (arrays === null || arrays.length === 0) return { present: false, arrays: [] }
      return { present: true, arrays: await Promise.all(arrays.map(detailed)) }
    },

    async nics() {
      const si = await systemInformation()
      const interfaces = await probe('systeminformation.networkInterfaces', () => si.networkInterfaces())
      return toNics(Array.isArray(interfaces) ? interfaces : [interfaces], osNetworkInterfaces())
    },

    volume(path: string) {
      return statfsVolume(path, options.commandTimeoutMs)
    },
  } satisfies Hal
  return hal
}
