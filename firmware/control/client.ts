import { createConnection, type Socket } from 'node:net'
import { ControlError } from './errors.js'
import { createLineSplitter, type ControlResponse } from './protocol.js'

/** Largest response line accepted by the client, in bytes. */
export const responseBytesMax = 64 * 1024 * 1024

/**
 * A connection to the service's control socket. `call` sends one command and resolves
 * with its JSON result or rejects with a ControlError carrying the service's code.
 */
export interface ControlClient {
  call(command: string, args?: string[], password?: string, secret?: string): Promise<unknown>
  close(): void
}

/**
 * Connects to the control socket.
 * @throws ControlError NOT_RUNNING when nothing listens there (no file, refused, or no permission)
 */
export async function connectControl(socketPath: string, timeoutMs = 30_000): Promise<ControlClient> {
  const socket: Socket = await new Promise((resolve, reject) => {
    const connection = createConnection(socketPath)
    connection.once('connect', () => resolve(connection))
    connection.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new ControlError('NOT_RUNNING', `mailkeep is not running (no service on ${socketPath}: ${error.code ?? error.message})`, {
          fields: { socketPath },
        }),
      ),
    )
  })
  const waiting = new Map<number, { resolve: (value: unknown) => void; reject: (error: Error) => void; timer: NodeJS.Timeout }>()
  let nextId = 1
  const failAll = (error: Error) => {
    for (const { reject, timer } of waiting.values()) {
      clearTimeout(timer)
      reject(error)
    }
    waiting.clear()
  }
  socket.on(
    'data',
    createLineSplitter(
      responseBytesMax,
      (line) => {
        const response = JSON.parse(line) as ControlResponse
        const entry = waiting.get(response.id) ?? (response.id === 0 ? waiting.values().next().value : undefined)
        if (!entry) return
        waiting.delete(response.id === 0 ? [...waiting.keys()][0]! : response.id)
        clearTimeout(entry.timer)
        if (response.ok) entry.resolve(response.result)
        else entry.reject(new ControlError(response.error.code as never, response.error.message, { fields: response.error.fields ?? {} }))
      },
      () => failAll(new ControlError('PROTOCOL', 'response too large')),
    ),
  )
  socket.on('error', (error) => failAll(new ControlError('NOT_RUNNING', `control connection failed: ${error.message}`)))
  let closed = false
  socket.on('close', () => {
    closed = true
    failAll(new ControlError('NOT_RUNNING', 'mailkeep is not running (the service closed the control connection)'))
  })
  return {
    call(command, args = [], password, secret) {
      const id = nextId++
      if (closed) return Promise.reject(new ControlError('NOT_RUNNING', 'mailkeep is not running (the control connection is closed)'))
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(id)
          reject(new ControlError('TIMEOUT', `no answer to ${command} within ${timeoutMs} ms`))
        }, timeoutMs)
        waiting.set(id, { resolve, reject, timer })
        socket.write(JSON.stringify({ id, command, args, ...(password === undefined ? {} : { password }), ...(secret === undefined ? {} : { secret }) }) + '\n')
      })
    },
    close() {
      socket.end()
    },
  }
}
