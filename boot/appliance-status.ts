import { modelProfile } from '../config/models.js'
import { secretConfigPaths } from '../config/schema.js'
import type { Config } from '../config/types.js'
import { evaluateHealth, type SystemHealth } from './health.js'
import { halOf, type ApplianceState } from './appliance-state.js'

/**
 * The system's health now: hardware facts from the HAL and each service's healthcheck,
 * evaluated by boot/health.ts; a change of state or reasons is logged.
 */
export async function applianceHealth(state: ApplianceState): Promise<SystemHealth> {
  const { config } = state
  const hal = halOf(state)
  const identity = await hal.identity()
  const [disks, raid, nics, volume] = await Promise.all([hal.disks(), hal.raid(), hal.nics(), hal.volume(config.dataDir)])
  const serviceHealth = Object.fromEntries(state.services.map((service) => [service.name, service.healthcheck()]))
  const result = evaluateHealth(
    { identity, profile: modelProfile(identity.model), disks, raid, nics, volume, freeBytesMin: config.storage.freeBytesMin, enforceProfile: hal.provider === 'sim' },
    serviceHealth,
  )
  if (result.state !== state.lastHealth.state || result.reasons.join() !== state.lastHealth.reasons.join()) {
    const log = result.state === 'ok' ? state.bootLog.info : state.bootLog.warn
    log(`system ${result.state}`, { reasons: result.reasons })
  }
  state.lastHealth = result
  return result
}

/** Every address the services listen on, by name (`smtp`, `http`, `mirror`). */
export function applianceListeners(state: Pick<ApplianceState, 'services'>): Record<string, string> {
  return Object.assign({}, ...state.services.map((service) => service.listeners?.() ?? {}))
}

/** `show status` and /api/v1/status: identity, health, uptime, services, listeners and the composed services' fields. */
export async function applianceStatus(state: ApplianceState) {
  const identity = await halOf(state).identity()
  const systemHealth = await applianceHealth(state)
  return {
    model: identity.model,
    serial: identity.serial,
    firmwareVersion: identity.firmwareVersion,
    hal: identity.provider,
    state: systemHealth.state,
    reasons: systemHealth.reasons,
    uptimeSeconds: Math.round((state.clock.now() - state.bootedAtMs) / 1000),
    bootedAt: new Date(state.bootedAtMs).toISOString(),
    dataDir: state.config.dataDir,
    services: Object.fromEntries(state.services.map((service) => [service.name, service.healthcheck().ok ? 'ok' : service.healthcheck().detail])),
    listeners: applianceListeners(state),
    ...(await state.extraStatus()),
  }
}

/** The configuration for `show config`, every secret (config/schema.ts's secretConfigPaths) as `[redacted]`. */
export function redactedConfig(config: Readonly<Config>): unknown {
  const walk = (value: unknown, path: string): unknown => {
    if (value !== null && typeof value === 'object') {
      if (Array.isArray(value)) return value.map((item, index) => walk(item, path ? `${path}.${index}` : String(index)))
      return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, walk(inner, path ? `${path}.${key}` : key)]))
    }
    return value !== null && secretConfigPaths.some((pattern) => pattern.test(path)) ? '[redacted]' : value
  }
  return walk(config, '')
}
