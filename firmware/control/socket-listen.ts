import { createServer, createConnection, type Server, type Socket } from 'node:net'
import { mkdir, chmod, unlink, stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import { MailkeepError } from '../common/errors.js'

/**
 * Removes a socket file left by a service that is gone; leaves nothing to do when there is
 * no file. @throws MailkeepError ADDRESS_IN_USE when a service still answers on it
 */
async function removeStaleSocket(socketPath: string): Promise<void> {
  try {
    await stat(socketPath)
  } catch {
    return
  }
  const alive = await new Promise<boolean>((resolve) => {
    const probe = createConnection(socketPath)
    probe.once('connect', () => {
      probe.destroy()
      resolve(true)
    })
    probe.once('error', () => resolve(false))
  })
  if (alive) {
    throw new MailkeepError('ADDRESS_IN_USE', `another mailkeep service answers on ${socketPath}`, {
      fields: { socketPath },
    })
  }
  await unlink(socketPath)
}

/**
 * Listens on the unix socket `socketPath`: its directory made 0700, a stale socket file
 * removed, the socket 0600 from the moment it exists.
 * @throws MailkeepError ADDRESS_IN_USE when another service answers there; listen errors
 */
export async function listenOnUnixSocket(socketPath: string, onConnection: (socket: Socket) => void): Promise<Server> {
  await mkdir(dirname(socketPath), { recursive: true, mode: 0o700 })
  await chmod(dirname(socketPath), 0o700)
  await removeStaleSocket(socketPath)
  const listening = createServer(onConnection)
  // The umask makes the socket 0600 from the moment it exists; the chmod makes sure.
  const previousUmask = process.umask(0o177)
  try {
    await new Promise<void>((resolve, reject) => {
      listening.once('error', reject)
      listening.listen(socketPath, () => resolve())
    })
  } finally {
    process.umask(previousUmask)
  }
  await chmod(socketPath, 0o600)
  return listening
}
