import { execFile } from 'node:child_process'
import type { Logger } from '../../firmware/common/logger.js'
import type { RaidArray } from '../types.js'
import { parseMdadmDetail } from './mdadm-detail.js'

/** mdadm --detail prints about 2 KiB per array; anything past this is not its output. */
const mdadmOutputBytesMax = 256 * 1024

export interface MdadmRefinerOptions {
  /** mdadm executable, a path or a name looked up on PATH (plus /usr/sbin and /sbin). */
  mdadmPath: string
  /** Bound on one mdadm run; mdadm is killed (SIGKILL) past it. */
  commandTimeoutMs: number
}

/** Runs `mdadm --detail device`; rejects with the exec error carrying a short `reason`. */
function runMdadmDetail(options: MdadmRefinerOptions, device: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      options.mdadmPath,
      ['--detail', device],
      {
        timeout: options.commandTimeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: mdadmOutputBytesMax,
        // mdadm lives in sbin, which is not on a service user's PATH on Debian; LC_ALL=C
        // keeps its output in the English the parser knows.
        env: { PATH: `${process.env.PATH ?? '/usr/bin:/bin'}:/usr/sbin:/sbin`, LC_ALL: 'C' },
      },
      (error, stdout, stderr) => {
        if (!error) return resolve(stdout)
        const reason = error.killed ? `timed out after ${options.commandTimeoutMs} ms` : (stderr.trim() || error.message).slice(0, 200)
        reject(Object.assign(error, { reason }))
      },
    )
  })
}

/**
 * Refines an mdstat array with `mdadm --detail` when mdadm can be run (it needs root). Never
 * throws: without mdadm (remembered, logged once at info), or when it fails or times out
 * (logged once at warn, then at debug), the returned function gives the mdstat view back.
 */
export function createMdadmRefiner(deps: { logger: Logger }, options: MdadmRefinerOptions): (array: RaidArray) => Promise<RaidArray> {
  const { logger } = deps
  let mdadmMissing = false
  let mdadmFailureLogged = false

  return async function detailed(array: RaidArray): Promise<RaidArray> {
    if (mdadmMissing || !/^md[\w.-]+$/.test(array.name)) return array
    try {
      const detail = parseMdadmDetail(await runMdadmDetail(options, `/dev/${array.name}`))
      return { ...detail, name: array.name }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        mdadmMissing = true
        logger.info('mdadm not found: RAID state comes from mdstat alone', { mdadmPath: options.mdadmPath })
        return array
      }
      // Logged once at warn (typically: not root), then at debug, so health polling does not flood the log.
      const log = mdadmFailureLogged ? logger.debug : logger.warn
      mdadmFailureLogged = true
      log('mdadm --detail failed: using the mdstat view of the array', { array: array.name, reason: (error as { reason?: string }).reason ?? String(error) })
      return array
    }
  }
}
