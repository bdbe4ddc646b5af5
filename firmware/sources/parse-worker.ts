/**
 * Entry of a parse-pool worker thread (parse-pool.ts starts it; nothing else imports it).
 * It builds the same job as the event loop would (parse-job.ts) from `workerData`, then
 * answers `job` messages one by one. Log lines go back to the pool's logger as messages.
 */
import { parentPort, workerData } from 'node:worker_threads'
import { redact, type LogFields, type Logger, type LogLevel } from '../common/logger.js'
import { createMimeParser } from '../mime/parser.js'
import { createPrepareJob, type IndexPrepare, type PreparedMessage } from './parse-job.js'
import type { ParseWorkerData, ToPool, ToWorker } from './parse-pool-types.js'

function transferable(bytes: Uint8Array): Uint8Array {
  // A view on part of a larger buffer (Node's Buffer pool) must not be transferred: the
  // whole buffer would go, and other views with it. Such bytes are copied first.
  if (bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer) return bytes
  return new Uint8Array(bytes)
}

async function main(): Promise<void> {
  const port = parentPort
  if (!port) throw new Error('parse-worker.ts runs as a worker thread only')
  const data = workerData as ParseWorkerData
  const post = (message: ToPool, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer)
  const logger = (namespace: string): Logger => {
    const emit = (level: LogLevel) => (message: string, fields?: LogFields) => post({ kind: 'log', level, message, fields: { worker: namespace, ...(redact(fields ?? {}) as LogFields) } })
    return { debug: emit('debug'), info: emit('info'), warn: emit('warn'), error: emit('error'), child: (child) => logger(`${namespace}.${child}`) }
  }
  const log = logger(`parse-worker-${data.workerNumber}`)

  let prepareIndex: IndexPrepare | undefined
  if (data.indexPrepare) {
    const { moduleUrl, exportName, options } = data.indexPrepare
    try {
      const module = (await import(moduleUrl)) as Record<string, unknown>
      const exported = module[exportName]
      if (typeof exported === 'function') prepareIndex = (parsed) => (exported as (parsed: unknown, options: unknown) => unknown)(parsed, options)
      else log.info('the index prepare step is not available in this firmware; the index analyses messages in the write transaction', { moduleUrl, exportName })
    } catch (error) {
      log.warn('cannot load the index prepare step; the index analyses messages in the write transaction', { moduleUrl, exportName, error })
    }
  }
  const job = createPrepareJob({ logger: log, parser: createMimeParser({ logger: log.child('mime') }, data.mime), prepareIndex })

  port.on('message', (message: ToWorker) => {
    void job(message.raw).then(
      (prepared: PreparedMessage) => {
        const bytes = transferable(prepared.bytes)
        const encodedBytes = prepared.encoded && prepared.encoded.bytes === prepared.bytes ? bytes : prepared.encoded ? transferable(prepared.encoded.bytes) : undefined
        const result: PreparedMessage = { ...prepared, bytes, encoded: prepared.encoded && encodedBytes ? { ...prepared.encoded, bytes: encodedBytes } : undefined }
        const transfer = [...new Set([bytes.buffer, encodedBytes?.buffer].filter((buffer): buffer is ArrayBuffer => buffer instanceof ArrayBuffer))]
        try {
          post({ kind: 'done', jobId: message.jobId, result }, transfer)
        } catch (error) {
          // An index prepare result that cannot be cloned: send the rest.
          log.warn('the index prepare result cannot be sent to the event loop; the index analyses the message in the write transaction', { error })
          post({ kind: 'done', jobId: message.jobId, result: { ...result, indexPrepared: undefined } })
        }
      },
      (error: unknown) => post({ kind: 'failed', jobId: message.jobId, reason: error instanceof Error ? error.message : String(error) }),
    )
  })
  post({ kind: 'ready', indexPrepare: prepareIndex !== undefined })
}

void main()
