import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { networkInterfaces as osNetworkInterfaces } from 'node:os'
import type { Logger } from '../../firmware/common/logger.js'
import { HalError } from '../errors.js'
import type { Hal, Identity, RaidStatus } from '../types.js'
import { statfsVolume } from '../volume.js'
import { faultyDiskNames, toDisks } from './disks.js'
import { applianceModelFromDmi, meaningfulDmiValue, serialFromMachineId, unknownModel } from './identity.js'
import { createMdadmRefiner } from './mdadm-refiner.js'
import { toNics } from './nics.js'
import { createProbe, lazySystemInformation, readMdstatArrays, type Probe, type SystemInformation } from './probe.js'

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

const machineIdPaths = ['/etc/machine-id', '/var/lib/dbus/machine-id']

/** The serial derived from the first machine-id found. @throws HalError HAL_IDENTITY_UNAVAILABLE */
async function machineIdSerial(probe: Probe): Promise<string> {
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

/**
 * The identity of this machine (see hal/linux/identity.ts for the rules); an override of the
 * model that DMI contradicts is logged and ignored.
 * @throws HalError HAL_TIMEOUT, HAL_PROBE_FAILED, HAL_IDENTITY_UNAVAILABLE
 */
async function readIdentity(deps: { logger: Logger; probe: Probe; si: SystemInformation }, options: LinuxHalOptions): Promise<Identity> {
  const system = await deps.probe('systeminformation.system', () => deps.si.system())
  const dmiModel = applianceModelFromDmi(system.manufacturer, system.model)
  if (dmiModel !== null && options.model !== null && options.model !== dmiModel) {
    deps.logger.warn('identity.model override ignored: this appliance says otherwise', { configured: options.model, dmi: dmiModel })
  }
  const model = dmiModel ?? options.model ?? unknownModel
  const serial = options.serial ?? meaningfulDmiValue(system.serial) ?? meaningfulDmiValue(system.uuid) ?? (await machineIdSerial(deps.probe))
  return Object.freeze({ model, serial, firmwareVersion: options.firmwareVersion, provider: 'linux' as const })
}

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
  const probe = createProbe(options.commandTimeoutMs)
  const systemInformation = lazySystemInformation()
  const readMdstat = () => readMdstatArrays(probe, options.mdstatPath)
  const detailed = createMdadmRefiner({ logger }, options)
  let identityCached: Identity | undefined
  let started = false

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
      identityCached ??= await readIdentity({ logger, probe, si: await systemInformation() }, options)
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
