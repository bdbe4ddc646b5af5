import { open, readFile, rename, mkdir, unlink } from 'node:fs/promises'
import { dirname, basename, join } from 'node:path'
import { randomBytes } from 'node:crypto'

/**
 * Writes a state file outside LMDB durably (STYLE 9): write a temporary file beside the
 * target, fsync it, rename it over the target, then fsync the directory so the rename
 * itself survives a power cut. Readers see either the old or the new content, never a mix.
 *
 * @param path target file
 * @param data content
 * @param modeOctal file mode, e.g. 0o600 for keys and passwords
 * @throws the underlying fs error (ENOSPC, EACCES…); the temporary file is removed
 */
export async function writeFileDurable(path: string, data: string | Uint8Array, modeOctal = 0o644): Promise<void> {
  const directory = dirname(path)
  await mkdir(directory, { recursive: true })
  const temporary = join(directory, `.${basename(path)}.${randomBytes(4).toString('hex')}.tmp`)
  const handle = await open(temporary, 'wx', modeOctal)
  try {
    await handle.writeFile(data)
    await handle.chmod(modeOctal)
    await handle.sync()
  } catch (error) {
    await handle.close()
    await unlink(temporary).catch(() => undefined)
    throw error
  }
  await handle.close()
  await rename(temporary, path)
  await fsyncDirectory(directory)
}

/** fsyncs a directory so that entries created or renamed in it are durable. */
export async function fsyncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** A file's text, or undefined when it does not exist. @throws fs errors other than ENOENT */
export async function readTextIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  }
}
