import { access, mkdir, constants, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { createLogger, type Logger } from '../firmware/common/logger.js'
import { MailkeepError, exitCodes } from '../firmware/common/errors.js'
import { systemClock, type Clock } from '../firmware/common/clock.js'
import { writeFileDurable } from '../firmware/common/durable-file.js'
import { createControlServer, type CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'
import { modelProfile } from '../config/models.js'
import { secretConfigPaths } from '../config/schema.js'
import type { Config } from '../config/types.js'
import type { Hal, SimHal } from '../hal/types.js'
import { createConfiguredHal } from './hal.js'
import { composeServices } from './services.js'
import { evaluateHealth, type SystemHealth } from './health.js'
import { firmwareVersion } from './version.js'
import type { ManagedService } from './managed-service.js'

/** A boot that cannot go on: the process exits with `exitCode` and starts nothing more. */
export class BootError extends MailkeepError {
  readonly exitCode: number
  constructor(message: string, exitCode: number, cause?: unknown) {
    super('BOOT_FATAL', message, { cause })
    this.name = 'BootError'
    this.exitCode = exitCode
  }
}

export interface ApplianceOptions {
  config: Readonly<Config>
  logger?: Logger
  clock?: Clock
}

/**
 * The composition root (STYLE 3): the only place that picks concrete implementations.
 * `boot()` runs the ordered stages — data dir → identity/HAL → storage volume → services →
 * ready — logging one line per stage with its duration. Fatal problems (data dir not
 * writable, a service that cannot start) stop everything already started and throw
 * BootError; non-fatal ones (RAID degraded, a link down, a full data volume: the archive
 * starts read-only) boot degraded with the reason
 * shown in `show status`.
 */
export function createAppliance(options: ApplianceOptions) {
  const { config } = options
  const clock = options.clock ?? systemClock
  const logger = options.logger ?? createLogger('mailkeep', { level: config.logging.level, format: config.logging.format })
  const bootLog = logger.child('boot')
  const started: ManagedService[] = []
  const services: ManagedService[] = []
  let hal: Hal | undefined
  let bootedAtMs = 0
  let lastHealth: SystemHealth = { state: 'ok', reasons: [] }
  let stopping: Promise<void> | undefined
  let extraStatus: () => Promise<Record<string, unknown>> = async () => ({})

  async function stage<T>(name: string, run: () => Promise<T>): Promise<T> {
    const startedMs = clock.monotonicMs()
    try {
      const result = await run()
      bootLog.info(`stage ${name} done`, { stage: name, durationMs: Math.round(clock.monotonicMs() - startedMs) })
      return result
    } catch (error) {
      bootLog.error(`stage ${name} failed`, { stage: name, durationMs: Math.round(clock.monotonicMs() - startedMs), error })
      throw error instanceof BootError ? error : new BootError(`boot stage ${name} failed: ${(error as Error).message}`, exitCodes.failure, error)
    }
  }

  async function health(): Promise<SystemHealth> {
    const theHal = hal!
    const identity = await theHal.identity()
    const [disks, raid, nics, volume] = await Promise.all([theHal.disks(), theHal.raid(), theHal.nics(), theHal.volume(config.dataDir)])
    const serviceHealth = Object.fromEntries(services.map((service) => [service.name, service.healthcheck()]))
    const result = evaluateHealth(
      { identity, profile: modelProfile(identity.model), disks, raid, nics, volume, freeBytesMin: config.storage.freeBytesMin, enforceProfile: theHal.provider === 'sim' },
      serviceHealth,
    )
    if (result.state !== lastHealth.state || result.reasons.join() !== lastHealth.reasons.join()) {
      const log = result.state === 'ok' ? bootLog.info : bootLog.warn
      log(`system ${result.state}`, { reasons: result.reasons })
    }
    lastHealth = result
    return result
  }

  function listeners(): Record<string, string> {
    return Object.assign({}, ...services.map((service) => service.listeners?.() ?? {}))
  }

  async function status() {
    const identity = await hal!.identity()
    const systemHealth = await health()
    return {
      model: identity.model,
      serial: identity.serial,
      firmwareVersion: identity.firmwareVersion,
      hal: identity.provider,
      state: systemHealth.state,
      reasons: systemHealth.reasons,
      uptimeSeconds: Math.round((clock.now() - bootedAtMs) / 1000),
      bootedAt: new Date(bootedAtMs).toISOString(),
      dataDir: config.dataDir,
      services: Object.fromEntries(services.map((service) => [service.name, service.healthcheck().ok ? 'ok' : service.healthcheck().detail])),
      listeners: listeners(),
      ...(await extraStatus()),
    }
  }

  function redactedConfig(): unknown {
    const walk = (value: unknown, path: string): unknown => {
      if (value !== null && typeof value === 'object') {
        if (Array.isArray(value)) return value.map((item, index) => walk(item, path ? `${path}.${index}` : String(index)))
        return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, walk(inner, path ? `${path}.${key}` : key)]))
      }
      return value !== null && secretConfigPaths.some((pattern) => pattern.test(path)) ? '[redacted]' : value
    }
    return walk(config, '')
  }

  function simFaults(): SimHal['faults'] {
    if (!hal || hal.provider !== 'sim') throw new ControlError('UNAVAILABLE', 'sim commands need hal.provider "sim"')
    return (hal as SimHal).faults
  }

  function commandHandlers(): Map<string, CommandHandler> {
    const done = (message: string) => ({ message })
    const handlers = new Map<string, CommandHandler>([
      ['show version', async () => {
        const identity = await hal!.identity()
        return { firmwareVersion: identity.firmwareVersion, model: identity.model, serial: identity.serial, hal: identity.provider }
      }],
      ['show status', () => status()],
      ['show disks', () => hal!.disks()],
      ['show raid', () => hal!.raid()],
      ['show nics', () => hal!.nics()],
      ['show config', () => redactedConfig()],
      ['sim fail-disk', ([index]) => (simFaults().failDisk(Number(index)), done(`disk ${index} failed`))],
      ['sim replace-disk', ([index]) => (simFaults().replaceDisk(Number(index)), done(`disk ${index} replaced`))],
      ['sim link', ([nic, state]) => (simFaults().setLink(nic!, state === 'up'), done(`${nic} link ${state}`))],
      ['sim remove-nic', ([nic]) => (simFaults().removeNic(nic!), done(`${nic} removed`))],
      ['sim volume-free', ([bytes]) => {
        if (bytes !== 'real' && !/^\d+$/.test(bytes!)) throw new ControlError('USAGE', 'bytes must be a number or "real"')
        simFaults().setVolumeFreeBytes(bytes === 'real' ? null : Number(bytes))
        return done(`volume free ${bytes}`)
      }],
      ['sim tick', () => (simFaults().tick(), done('ticked'))],
    ])
    return handlers
  }

  async function startService(service: ManagedService): Promise<void> {
    await service.start()
    started.push(service)
  }

  async function stopAll(): Promise<void> {
    const timeoutMs = config.shutdown.timeoutMs
    const stopInOrder = async () => {
      for (const service of [...started].reverse()) {
        try {
          await service.stop()
          bootLog.info('service stopped', { service: service.name })
        } catch (error) {
          bootLog.error('service failed to stop', { service: service.name, error })
        }
      }
      started.length = 0
      await hal?.stop()
    }
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), timeoutMs)
      timer.unref()
    })
    const outcome = await Promise.race([stopInOrder().then(() => 'stopped' as const), deadline])
    clearTimeout(timer)
    if (outcome === 'timeout') bootLog.error('shutdown timed out; exiting with work unfinished', { timeoutMs })
  }

  return {
    logger,
    /** Runs the boot stages. @throws BootError (fatal problem; everything started was stopped) */
    async boot(): Promise<SystemHealth> {
      const bootStartMs = clock.monotonicMs()
      bootedAtMs = clock.now()
      bootLog.info('booting', { firmwareVersion, dataDir: config.dataDir, hal: config.hal.provider })
      try {
        await stage('data-dir', () => checkDataDir(config, clock, bootLog))
        await stage('identity', async () => {
          hal = createConfiguredHal(config, logger.child('hal'))
          await hal.start()
          const identity = await hal.identity()
          bootLog.info('identity', { model: identity.model, serial: identity.serial, firmwareVersion: identity.firmwareVersion })
        })
        await stage('storage-volume', async () => {
          const volume = await hal!.volume(config.dataDir)
          bootLog.info('data volume', { totalBytes: volume.totalBytes, freeBytes: volume.freeBytes })
        })
        const identity = await hal!.identity()
        const composed = await stage('compose', () => composeServices({ config, logger, clock, hal: hal!, identity, applianceStatus: status }))
        extraStatus = composed.status
        const handlers = commandHandlers()
        for (const [name, handler] of composed.handlers) handlers.set(name, handler)
        // The control socket starts first: it refuses a second service on the same data dir
        // before anything opens the store, and technicians can reach a half-booted system.
        services.push(
          Object.assign(
            createControlServer(
              {
                logger: logger.child('control'),
                clock,
                handlers,
                onAuthFailure: ({ failuresInWindow }) => composed.audit({ actor: 'control-socket', action: 'login.failed', details: { via: 'control', failuresInWindow } }),
              },
              { ...config.control, technicianPasswordHash: config.technician.passwordHash },
            ),
            { name: 'control' },
          ),
          ...composed.services,
        )
        await stage('services', async () => {
          for (const service of services) await startService(service)
        })
        const result = await stage('health', health)
        bootLog.info('ready', {
          state: result.state,
          reasons: result.reasons,
          listeners: listeners(),
          bootMs: Math.round(clock.monotonicMs() - bootStartMs),
        })
        return result
      } catch (error) {
        await stopAll()
        throw error
      }
    },
    /** Stops services in reverse order, bounded by shutdown.timeoutMs; idempotent. */
    stop(): Promise<void> {
      stopping ??= stopAll()
      return stopping
    },
    status,
  }
}

/**
 * The data dir exists and can be written. A full volume (ENOSPC, EDQUOT) is not fatal: the
 * archive starts read-only (firmware/archive/store-read-only.ts), so that search, reads,
 * export and copies to peers go on and mail is taken again once there is room. Anything
 * else (a read-only mount, permissions, a file in the way) is.
 * @throws BootError when the data dir cannot be written for another reason
 */
async function checkDataDir(config: Readonly<Config>, clock: Clock, bootLog: Logger): Promise<void> {
  const probe = join(config.dataDir, '.write-probe')
  try {
    await mkdir(config.dataDir, { recursive: true })
    await access(config.dataDir, constants.W_OK)
    await writeFileDurable(probe, String(clock.now()))
    await unlink(probe)
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'ENOSPC' || code === 'EDQUOT') {
      await unlink(probe).catch(() => undefined)
      bootLog.warn('data volume full: booting read-only (search, reads and export work; mail is refused until there is room)', { dataDir: config.dataDir, errno: code })
      return
    }
    throw new BootError(`data dir ${config.dataDir} is not writable (${code ?? 'error'})`, exitCodes.failure, error)
  }
}

export type Appliance = ReturnType<typeof createAppliance>
