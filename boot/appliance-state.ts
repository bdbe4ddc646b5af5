import type { Config } from '../config/types.js'
import type { Logger } from '../firmware/common/logger.js'
import type { Clock } from '../firmware/common/clock.js'
import type { Hal } from '../hal/types.js'
import type { SystemHealth } from './health.js'
import type { ManagedService } from './managed-service.js'

/**
 * What one appliance holds between boot, status requests and stop (boot/appliance.ts makes
 * it; the stages, status and commands read it). Nothing in it does work by itself.
 */
export interface ApplianceState {
  readonly config: Readonly<Config>
  readonly clock: Clock
  readonly logger: Logger
  /** The `boot` child logger: stages, health changes, stops. */
  readonly bootLog: Logger
  /** Every service, in start order (the control socket first). */
  readonly services: ManagedService[]
  /** The services started so far, which stop() stops in reverse. */
  readonly started: ManagedService[]
  /** Set by the identity stage. */
  hal: Hal | undefined
  /** Wall-clock ms when boot() began. */
  bootedAtMs: number
  /** The last health evaluated, to log changes only. */
  lastHealth: SystemHealth
  /** The stop in progress, which a second stop() joins. */
  stopping: Promise<void> | undefined
  /** The composed services' status fields (boot/services.ts), once composed. */
  extraStatus: () => Promise<Record<string, unknown>>
}

/**
 * The HAL once the identity stage has made it.
 * @throws Error (a programmer error) before that stage
 */
export function halOf(state: ApplianceState): Hal {
  if (!state.hal) throw new Error('the HAL is not made before the identity stage')
  return state.hal
}
