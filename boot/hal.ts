import type { Config } from '../config/types.js'
import type { Logger } from '../firmware/common/logger.js'
import type { Hal } from '../hal/types.js'
import { createSimHal, createLinuxHal } from '../hal/index.js'
import { firmwareVersion } from './version.js'

/** Default model of the simulated appliance (ARCHITECTURE: `npm start` boots a simulated 650). */
export const simulatedModelDefault = 650

/**
 * Picks and builds the HAL the configuration asks for (the composition root's choice,
 * shared by the service and the factory test). A simulated appliance boots with the
 * faults of `hal.sim.faults` already applied. Pure: nothing starts until `start()`.
 * @throws HalError when a configured fault names a disk or NIC the simulator lacks
 */
export function createConfiguredHal(config: Readonly<Config>, logger: Logger): Hal {
  if (config.hal.provider === 'linux') {
    return createLinuxHal({ logger }, { firmwareVersion, model: config.identity.model, serial: config.identity.serial, ...config.hal.linux })
  }
  const { faults, ...sim } = config.hal.sim
  const hal = createSimHal(
    { logger },
    {
      firmwareVersion,
      model: config.identity.model ?? simulatedModelDefault,
      serial: config.identity.serial,
      dataDir: config.dataDir,
      ...sim,
      ...(faults.diskCount === null ? {} : { diskCount: faults.diskCount }),
      ...(faults.nicCount === null ? {} : { nicCount: faults.nicCount }),
    },
  )
  for (const index of faults.failedDisks) hal.faults.failDisk(index)
  for (const index of faults.replacedDisks) hal.faults.replaceDisk(index)
  for (const name of faults.linksDown) hal.faults.setLink(name, false)
  return hal
}
