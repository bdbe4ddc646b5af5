import type { CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'
import type { SimHal } from '../hal/types.js'
import { halOf, type ApplianceState } from './appliance-state.js'
import { applianceStatus, redactedConfig } from './appliance-status.js'

/**
 * The simulator's fault knobs.
 * @throws ControlError UNAVAILABLE unless hal.provider is "sim"
 */
function simFaults(state: ApplianceState): SimHal['faults'] {
  const hal = state.hal
  if (!hal || hal.provider !== 'sim') throw new ControlError('UNAVAILABLE', 'sim commands need hal.provider "sim"')
  return (hal as SimHal).faults
}

/** The appliance's own control-socket handlers: `show version|status|disks|raid|nics|config` and the `sim` fault knobs. */
export function applianceCommandHandlers(state: ApplianceState): Map<string, CommandHandler> {
  const done = (message: string) => ({ message })
  return new Map<string, CommandHandler>([
    [
      'show version',
      async () => {
        const identity = await halOf(state).identity()
        return { firmwareVersion: identity.firmwareVersion, model: identity.model, serial: identity.serial, hal: identity.provider }
      },
    ],
    ['show status', () => applianceStatus(state)],
    ['show disks', () => halOf(state).disks()],
    ['show raid', () => halOf(state).raid()],
    ['show nics', () => halOf(state).nics()],
    ['show config', () => redactedConfig(state.config)],
    ['sim fail-disk', ([index]) => (simFaults(state).failDisk(Number(index)), done(`disk ${index} failed`))],
    ['sim replace-disk', ([index]) => (simFaults(state).replaceDisk(Number(index)), done(`disk ${index} replaced`))],
    ['sim link', ([nic, linkState]) => (simFaults(state).setLink(nic!, linkState === 'up'), done(`${nic} link ${linkState}`))],
    ['sim remove-nic', ([nic]) => (simFaults(state).removeNic(nic!), done(`${nic} removed`))],
    [
      'sim volume-free',
      ([bytes]) => {
        if (bytes !== 'real' && !/^\d+$/.test(bytes!)) throw new ControlError('USAGE', 'bytes must be a number or "real"')
        simFaults(state).setVolumeFreeBytes(bytes === 'real' ? null : Number(bytes))
        return done(`volume free ${bytes}`)
      },
    ],
    ['sim tick', () => (simFaults(state).tick(), done('ticked'))],
  ])
}
