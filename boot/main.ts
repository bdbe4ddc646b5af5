/**
 * Process entry of the mailkeep service (`npm start`, systemd's ExecStart). Loads the
 * configuration (`--config FILE` or MAILKEEP_CONFIG, else embedded defaults), boots the
 * appliance and handles signals. Exit codes: 0 after a clean stop, 1 on a fatal boot
 * problem, 78 on a configuration error (systemd's RestartPreventExitStatus keeps a bad
 * config from crash-looping).
 */
import { spawn } from 'node:child_process'
import { loadConfig, configPathFrom } from '../config/load.js'
import { ConfigError, formatProblem } from '../config/errors.js'
import { exitCodes } from '../firmware/common/errors.js'
import { createAppliance } from './appliance.js'
import { BootError } from './boot-error.js'
import { routeConsoleToLogger } from './library-console.js'
import { relayNativeStderr } from './native-stderr.js'

async function main(argv: string[]): Promise<number> {
  let config
  try {
    config = await loadConfig(configPathFrom(argv))
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`mailkeep: configuration error, not starting:\n${error.problems.map(formatProblem).join('\n')}\n`)
      return exitCodes.config
    }
    throw error
  }
  const appliance = createAppliance({ config })
  // Libraries that print (lmdb-js on a failed commit, its native LMDB) must not break the
  // JSON log: their console calls and what native code writes to fd 2 become JSON records.
  routeConsoleToLogger(appliance.logger)
  if (config.logging.format === 'json') await relayNativeStderr(appliance.logger, 'mailkeep')
  const log = appliance.logger.child('main')
  let signalled = 0
  const onSignal = (signal: NodeJS.Signals) => {
    signalled += 1
    if (signalled > 1) {
      log.warn('second signal: exiting at once', { signal })
      process.exit(exitCodes.failure)
    }
    log.info('shutting down', { signal })
    void appliance.stop().then(() => {
      log.info('stopped')
      process.exit(exitCodes.ok)
    })
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  try {
    await appliance.boot()
  } catch (error) {
    if (error instanceof BootError) {
      process.stderr.write(`mailkeep: not starting: ${error.message}\n`)
      return error.exitCode
    }
    throw error
  }
  // Under systemd (Type=notify) tell it the boot is good; the unit sets NotifyAccess=all.
  if (process.env.NOTIFY_SOCKET) spawn('systemd-notify', ['--ready'], { stdio: 'ignore' }).on('error', () => undefined)
  return -1
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code)
  },
  (error: unknown) => {
    process.stderr.write(`mailkeep: fatal: ${error instanceof Error ? error.stack : String(error)}\n`)
    process.exit(exitCodes.failure)
  },
)
