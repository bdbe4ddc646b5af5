import type { Config } from '../config/types.js'
import type { Logger } from '../firmware/common/logger.js'
import type { Clock } from '../firmware/common/clock.js'
import type { Hal, Identity } from '../hal/types.js'

/** What every composition stage (boot/services.ts and the compose-* files) builds from. */
export interface ComposeContext {
  config: Readonly<Config>
  /** The root logger (`mailkeep`); each service gets a child of it. */
  logger: Logger
  clock: Clock
  hal: Hal
  identity: Identity
}
