import type { LogFields, LogLevel } from '../common/logger.js'
import type { MimeParserOptions } from '../mime/parser-options.js'
import type { ParsedMessage } from '../mime/types.js'
import type { PreparedMessage, PrepareMessage } from './parse-job.js'

/**
 * The parse pool's public shapes (parse-pool.ts re-exports all of them): its options and
 * defaults, its API and figures, and the messages between the pool and a worker thread.
 */

/** What the pool tells a worker at start (structured-cloneable). */
export interface ParseWorkerData {
  workerNumber: number
  mime: MimeParserOptions
  /** The index plug-in as it crosses to the thread: its module URL as text (a URL object cannot be cloned). */
  indexPrepare?: { moduleUrl: string; exportName: string; options?: unknown }
}

/**
 * The index's prepare step as a plug-in the workers load: the function `exportName` of the
 * module at `moduleUrl`, called as `fn(parsed, options)` for every message. Build it with
 * indexPreparePlugin, which checks the export and the options against the module's type.
 */
export interface IndexPreparePlugin<Options = unknown> {
  /** The module (a file: URL beside the firmware's other files). */
  readonly moduleUrl: URL
  readonly exportName: string
  /** The second argument of every call; structured-cloneable (limits). None when the step takes none. */
  readonly options?: Options
}

/** The options a prepare function takes as its second argument. */
export type PrepareOptionsOf<Prepare> = Prepare extends (parsed: ParsedMessage, options: infer Options) => unknown ? Options : never

/**
 * An IndexPreparePlugin whose export and options the typecheck verifies: `Module` is the
 * module's type (`typeof import(...)`), `Name` an export of it taking `(parsed, options)`.
 */
export function indexPreparePlugin<Module, Name extends keyof Module & string>(
  moduleUrl: URL,
  exportName: Name,
  options: PrepareOptionsOf<Module[Name]>,
): IndexPreparePlugin<PrepareOptionsOf<Module[Name]>> {
  return { moduleUrl, exportName, options }
}

export type ToWorker = { kind: 'job'; jobId: number; raw: Uint8Array }
export type ToPool =
  | { kind: 'ready'; indexPrepare: boolean }
  | { kind: 'done'; jobId: number; result: PreparedMessage }
  | { kind: 'failed'; jobId: number; reason: string }
  | { kind: 'log'; level: LogLevel; message: string; fields: LogFields }

export interface ParsePoolOptions {
  /** Worker threads. Default: the cores less one for the event loop, at least 1. 0 runs everything on the event loop. */
  workers?: number
  /** Messages waiting for a worker, at most; beyond it `prepare` is refused (retryable). */
  queueDepthMax: number
  /** Messages handed to one worker at once (more hides the message round trip; a crash sends more back to the queue). */
  jobsPerWorkerMax: number
  /**
   * Time a message may spend on a worker without the worker returning any result, in ms
   * (counted from when it was handed over, or from the worker's last result if later); then
   * the worker is terminated and the message archived with headers only.
   */
  jobTimeoutMs: number
  /** First delay before restarting a crashed worker, in ms; doubles on each crash in a row up to 32 times. */
  restartDelayMs: number
  /** Starts in a row that fail before a worker is ready, after which that worker is given up. */
  startFailuresMax: number
  /** Heap of one worker, in MiB: a message built to exhaust memory ends its worker (a crash, see above), not the appliance. */
  heapMbMax: number
  mime: MimeParserOptions
  indexPrepare?: IndexPreparePlugin
  /** The worker entry; parse-worker.ts beside this file by default (parse-worker.js in a firmware image). */
  workerUrl?: URL
}

/** Defaults for the composition root. */
export const parsePoolDefaults = Object.freeze({
  queueDepthMax: 4096,
  // Measured (corpus through the pipeline, 1 worker): with 2 the worker waited on the event
  // loop between messages; 8 took ingest with the index from 595–668 to 745–790 msg/s.
  jobsPerWorkerMax: 8,
  jobTimeoutMs: 60_000,
  restartDelayMs: 100,
  startFailuresMax: 3,
  // Parsing is bounded by parseBytesMax (32 MiB) and the text limits; this leaves room for that.
  heapMbMax: 1024,
})

export interface ParsePoolStats {
  /** Worker threads configured. */
  workers: number
  /** Workers ready now. */
  ready: number
  /** Whether the workers run the index's prepare step. */
  indexPrepare: boolean
  queued: number
  inFlight: number
  /** Messages prepared on workers since start. */
  completed: number
  /** Messages prepared on the event loop because no worker could run. */
  inProcess: number
  /** Messages archived with headers only after crashing or outliving a worker. */
  poisoned: number
  crashes: number
}

export interface ParsePool {
  start(): Promise<void>
  /** Finishes what is queued (on the event loop if need be), then ends the workers. Idempotent. */
  stop(): Promise<void>
  /** @throws ArchiveError STORE_UNAVAILABLE (retryable) when the queue is full or the pool is stopped */
  prepare: PrepareMessage
  stats(): ParsePoolStats
  healthcheck(): { ok: boolean; detail: string }
}
