import type { ServiceHealth } from './health.js'

/**
 * A service the composition root starts in order and stops in reverse (boot/appliance.ts).
 * Its own file, so that the modules that build services (boot/services.ts and the
 * compose-* files) need not import the appliance that imports them.
 */
export interface ManagedService {
  name: string
  start(): Promise<void>
  stop(): Promise<void>
  healthcheck(): ServiceHealth
  /** Addresses this service listens on, for `show status` and the boot log. */
  listeners?(): Record<string, string>
}

/** The lifecycle every firmware service has (STYLE 2): what `managed` wraps. */
export interface Lifecycle {
  start(): Promise<void>
  stop(): Promise<void>
  healthcheck(): ServiceHealth
}

/** A firmware service as a ManagedService named `name`, with its listeners when it has any. */
export function managed(name: string, service: Lifecycle, listeners?: () => Record<string, string>): ManagedService {
  const entry: ManagedService = { name, start: () => service.start(), stop: () => service.stop(), healthcheck: () => service.healthcheck() }
  if (listeners) entry.listeners = listeners
  return entry
}
