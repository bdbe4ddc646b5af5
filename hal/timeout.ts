import assert from 'node:assert/strict'
import { HalError } from './errors.js'

/**
 * Resolves with `work`, or rejects with HalError HAL_TIMEOUT (retryable) when `work` has not
 * settled within `timeoutMs` milliseconds. The work itself is not cancelled (a statfs on a
 * hung mount or a systeminformation probe cannot be): the caller stops waiting, which is what
 * keeps a health check or a boot stage bounded. The timer is unref'ed so it never holds the
 * process open.
 *
 * @param what short description for the error message, e.g. `mdadm --detail /dev/md0`
 * @throws HalError HAL_TIMEOUT
 */
export async function withTimeout<T>(work: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  assert.ok(Number.isFinite(timeoutMs) && timeoutMs > 0, `timeoutMs must be positive, got ${timeoutMs}`)
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new HalError('HAL_TIMEOUT', `${what} did not answer within ${timeoutMs} ms`, { retryable: true, fields: { what, timeoutMs } }))
    }, timeoutMs)
    timer.unref()
  })
  try {
    return await Promise.race([work, expired])
  } finally {
    clearTimeout(timer)
  }
}
