import { statfs } from 'node:fs/promises'
import { HalError } from './errors.js'
import { withTimeout } from './timeout.js'
import type { VolumeUsage } from './types.js'

/**
 * Capacity and free space, in bytes, of the file system that holds `path`, from statfs(2).
 * Free space is the space available to an unprivileged process (`bavail`), not the raw free
 * block count: the blocks reserved for root are not space the archive can count on.
 * Shared by hal/linux and hal/sim (statfs is a plain file system call, not a hardware fact).
 *
 * @param timeoutMs bound on the call (a hung network mount would otherwise block forever)
 * @throws HalError HAL_VOLUME_UNAVAILABLE (path missing, permission denied), HAL_TIMEOUT
 */
export async function statfsVolume(path: string, timeoutMs: number): Promise<VolumeUsage> {
  try {
    const stats = await withTimeout(statfs(path), timeoutMs, `statfs ${path}`)
    return { totalBytes: stats.blocks * stats.bsize, freeBytes: stats.bavail * stats.bsize }
  } catch (error) {
    if (error instanceof HalError) throw error
    const errno = (error as NodeJS.ErrnoException).code ?? 'error'
    throw new HalError('HAL_VOLUME_UNAVAILABLE', `cannot stat the volume of ${path} (${errno})`, {
      retryable: errno !== 'ENOENT',
      fields: { path, errno },
      cause: error,
    })
  }
}
