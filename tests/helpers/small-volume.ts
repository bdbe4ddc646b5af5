/**
 * A real, small file system for tests of a full data volume: an ext4 image made with
 * mkfs.ext4 and loop-mounted (as root), unmounted in teardown. ext4 because it is what
 * appliances run and because it fails a full volume's commits with EIO rather than ENOSPC
 * (delayed allocation), the case the archive must recognise. Needs root, mkfs.ext4 and
 * mount (e2fsprogs, util-linux); `smallVolumeUnavailable()` says why a test must skip.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { appendFile, mkdir, rm, statfs, truncate, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { tempDir } from './service.js'

/** What tap's `t` offers that the helper uses. */
interface Teardown {
  teardown(fn: () => unknown): void
}

export interface SmallVolume {
  /** Where the file system is mounted. */
  path: string
  /** Free bytes for an unprivileged process (statfs bavail), as the appliance reads them. */
  freeBytes(): Promise<number>
  /** Writes a filler file until at most `leaveBytes` are free (0: until the file system refuses). */
  fill(leaveBytes: number): Promise<void>
  /** Removes the filler: the space comes back. */
  unfill(): Promise<void>
}

/**
 * Why a small volume cannot be made here, or null when it can: not root, no mkfs.ext4, or a
 * loop mount refused (a container without loop devices) — tried once with a 4 MiB image.
 */
export async function smallVolumeUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'needs root to mount a loop device'
  if (spawnSync('mkfs.ext4', ['-V']).error) return 'mkfs.ext4 not installed (e2fsprogs)'
  const teardowns: (() => unknown)[] = []
  try {
    await mountSmallVolume({ teardown: (fn) => teardowns.push(fn) }, 4 * 1024 * 1024)
    return null
  } catch (error) {
    return `cannot loop-mount an ext4 image here: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`
  } finally {
    for (const teardown of teardowns) await teardown()
  }
}

/** Bound on mkfs, mount and umount, in ms. */
const commandTimeoutMs = 20_000
const fillChunkBytes = 64 * 1024

/**
 * Makes and mounts an ext4 of `sizeBytes` (no blocks reserved for root, so that what statfs
 * reports free is what a write can use), unmounted and removed in `t`'s teardown.
 */
export async function mountSmallVolume(t: Teardown, sizeBytes: number): Promise<SmallVolume> {
  const dir = await tempDir('mailkeep-volume-')
  const image = join(dir, 'volume.ext4')
  const path = join(dir, 'mnt')
  await mkdir(path)
  await appendFile(image, '')
  await truncate(image, sizeBytes)
  try {
    execFileSync('mkfs.ext4', ['-q', '-F', '-m', '0', image], { timeout: commandTimeoutMs, stdio: 'ignore' })
    execFileSync('mount', ['-o', 'loop', image, path], { timeout: commandTimeoutMs, stdio: 'ignore' })
  } catch (error) {
    await rm(dir, { recursive: true, force: true })
    throw error
  }
  t.teardown(async () => {
    // A process that still holds a file there (a service that did not exit) makes a plain
    // umount fail: detach lazily then, so the test run never leaves a mount behind.
    if (spawnSync('umount', [path], { timeout: commandTimeoutMs }).status !== 0) spawnSync('umount', ['-l', path], { timeout: commandTimeoutMs })
    await rm(dir, { recursive: true, force: true })
  })
  const filler = join(path, 'filler')
  const freeBytes = async () => {
    const stats = await statfs(path)
    return stats.bavail * stats.bsize
  }
  return {
    path,
    freeBytes,
    async fill(leaveBytes) {
      // Most of it at once with fallocate, the rest in chunks until the file system refuses.
      const bulk = (await freeBytes()) - leaveBytes - 4 * fillChunkBytes
      // While mail is being written the free space shrinks meanwhile, and fallocate of what
      // was free a moment ago may fail with ENOSPC: the chunks below then fill the volume.
      if (bulk > 0) {
        try {
          execFileSync('fallocate', ['-l', String(bulk), `${filler}-bulk`], { timeout: commandTimeoutMs, stdio: 'ignore' })
        } catch {
          await unlink(`${filler}-bulk`).catch(() => undefined)
        }
      }
      const chunk = Buffer.alloc(fillChunkBytes, 0x5a)
      for (let size = fillChunkBytes; size >= 512; size /= 8) {
        while ((await freeBytes()) > leaveBytes) {
          try {
            await appendFile(filler, chunk.subarray(0, size))
          } catch {
            break
          }
        }
      }
    },
    async unfill() {
      await unlink(`${filler}-bulk`).catch(() => undefined)
      await unlink(filler).catch(() => undefined)
    },
  }
}
