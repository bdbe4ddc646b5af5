import { access, mkdir, constants, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { createLogger, type Logger } from '../firmware/common/logger.js'
import { exitCodes } from '../firmware/common/errors.js'
import { systemClock, type Clock } from '../firmware/common/clock.js'
import { writeFileDurable } from '../firmware/common/durable-file.js'
import { createControlServer } from '../firmware/control/server.js'
import type { Config } from '../config/types.js'
import { createConfiguredHal } from './hal.js'
import { composeServices, type ComposedServices } from './services.js'
import type { SystemHealth } from './health.js'
import { firmwareVersion } from './version.js'
import { BootError } from './boot-error.js'
import type { ManagedService } from './managed-service.js'
import { halOf, type ApplianceState } from './appliance-state.js'
import { applianceHealth, applianceListeners, applianceStatus } from './appliance-status.js'
import { applianceCommandHandlers } from './appliance-commands.js'

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
  const logger = options.logger ?? createLogger('mailkeep', { level: config.logging.level, format: config.logging.format })
  const state: ApplianceState = {
    config,
    clock: options.clock ?? systemClock,
    logger,
    bootLog: logger.child('boot'),
    services: [],
    started: [],
    hal: undefined,
    bootedAtMs: 0,
    lastHealth: { state: 'ok', reasons: [] },
    stopping: undefined,
    extraStatus: async () => ({}),
  }
  return {
    logger,
    /** Runs the boot stages. @throws BootError (fatal problem; everything started was stopped) */
    boot: (): Promise<SystemHealth> => bootAppliance(state),
    /** Stops services in reverse order, bounded by shutdown.timeoutMs; idempotent. */
    stop(): Promise<void> {
      state.stopping ??= stopAll(state)
      return state.stopping
    },
    status: () => applianceStatus(state),
  }
}

export type Appliance = ReturnType<typeof createAppliance>

/**
 * Runs one boot stage, logging its outcome and duration.
 * @throws BootError wrapping whatever the stage threw
 */
async function stage<T>(state: ApplianceState, name: string, run: () => Promise<T>): Promise<T> {
  const { clock, bootLog } = state
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

/** The boot stages in order; on a fatal problem everything started is stopped. @throws BootError */
async function bootAppliance(state: ApplianceState): Promise<SystemHealth> {
  const { config, clock, bootLog } = state
  const bootStartMs = clock.monotonicMs()
  state.bootedAtMs = clock.now()
  bootLog.info('booting', { firmwareVersion, dataDir: config.dataDir, hal: config.hal.provider })
  try {
    await stage(state, 'data-dir', () => checkDataDir(config, clock, bootLog))
    await stage(state, 'identity', async () => {
      state.hal = createConfiguredHal(config, state.logger.child('hal'))
      await state.hal.start()
      const identity = await state.hal.identity()
      bootLog.info('identity', { model: identity.model, serial: identity.serial, firmwareVersion: identity.firmwareVersion })
    })
    await stage(state, 'storage-volume', async () => {
      const volume = await halOf(state).volume(config.dataDir)
      bootLog.info('data volume', { totalBytes: volume.totalBytes, freeBytes: volume.freeBytes })
    })
    const identity = await halOf(state).identity()
    const composed = await stage(state, 'compose', () => composeServices({ config, logger: state.logger, clock, hal: halOf(state), identity, applianceStatus: () => applianceStatus(state) }))
    state.extraStatus = composed.status
    // The control socket starts first: it refuses a second service on the same data dir
    // before anything opens the store, and technicians can reach a half-booted system.
    state.services.push(controlService(state, composed), ...composed.services)
    await stage(state, 'services', async () => {
      for (const service of state.services) await startService(state, service)
    })
    const result = await stage(state, 'health', () => applianceHealth(state))
    bootLog.info('ready', { state: result.state, reasons: result.reasons, listeners: applianceListeners(state), bootMs: Math.round(clock.monotonicMs() - bootStartMs) })
    return result
  } catch (error) {
    await stopAll(state)
    throw error
  }
}

/** The control socket with the appliance's handlers and the composed services' ones; failed technician logins are audited. */
function controlService(state: ApplianceState, composed: ComposedServices): ManagedService {
  const { config } = state
  const handlers = applianceCommandHandlers(state)
  for (const [name, handler] of composed.handlers) handlers.set(name, handler)
  const server = createControlServer(
    {
      logger: state.logger.child('control'),
      clock: state.clock,
      handlers,
      onAuthFailure: ({ failuresInWindow }) => composed.audit({ actor: 'control-socket', action: 'login.failed', details: { via: 'control', failuresInWindow } }),
    },
    { ...config.control, technicianPasswordHash: config.technician.passwordHash },
  )
  return Object.assign(server, { name: 'control' })
}

async function startService(state: ApplianceState, service: ManagedService): Promise<void> {
  await service.start()
  state.started.push(service)
}

/** Stops the started services in reverse order, then the HAL, within shutdown.timeoutMs (logged when it runs out). */
async function stopAll(state: ApplianceState): Promise<void> {
  const { bootLog } = state
  const timeoutMs = state.config.shutdown.timeoutMs
  const stopInOrder = async () => {
    for (const service of [...state.started].reverse()) {
      try {
        await service.stop()
        bootLog.info('service stopped', { service: service.name })
      } catch (error) {
        bootLog.error('service failed to stop', { service: service.name, error })
      }
    }
    state.started.length = 0
    await state.hal?.stop()
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
