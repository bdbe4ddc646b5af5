import { readFile } from 'node:fs/promises'
import { HalError } from '../errors.js'
import { withTimeout } from '../timeout.js'
import type { RaidArray } from '../types.js'
import { parseMdstat } from './mdstat.js'

/**
 * Runs one probe of the machine bounded by the HAL's command timeout.
 * @param what short description for errors and logs, e.g. `systeminformation.system`
 * @throws HalError HAL_TIMEOUT; HAL_PROBE_FAILED (retryable, the original error as `cause`)
 *   for any other failure
 */
export type Probe = <T>(what: string, work: () => Promise<T>) => Promise<T>

export type SystemInformation = typeof import('systeminformation')

/** A Probe bounded by `timeoutMs` milliseconds. */
export function createProbe(timeoutMs: number): Probe {
  return async function probe<T>(what: string, work: () => Promise<T>): Promise<T> {
    try {
      return await withTimeout(work(), timeoutMs, what)
    } catch (error) {
      if (error instanceof HalError) throw error
      throw new HalError('HAL_PROBE_FAILED', `${what} failed: ${(error as Error).message}`, { retryable: true, fields: { what }, cause: error })
    }
  }
}

/**
 * systeminformation, imported on the first call and kept. Loaded lazily so that importing
 * hal/ (which the simulator path does too) costs nothing.
 */
export function lazySystemInformation(): () => Promise<SystemInformation> {
  let loaded: Promise<SystemInformation> | undefined
  return () => (loaded ??= import('systeminformation').then((module) => module.default))
}

/**
 * The arrays of the mdstat file at `mdstatPath`, or null when the file does not exist (no md
 * at all). @throws HalError HAL_TIMEOUT, HAL_PROBE_FAILED
 */
export async function readMdstatArrays(probe: Probe, mdstatPath: string): Promise<RaidArray[] | null> {
  try {
    return parseMdstat(await probe(`read ${mdstatPath}`, () => readFile(mdstatPath, 'utf8')))
  } catch (error) {
    if ((error as { cause?: NodeJS.ErrnoException }).cause?.code === 'ENOENT') return null
    throw error
  }
}
