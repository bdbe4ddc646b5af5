import type { Clock } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { IngestPipeline } from '../types.js'

/** Bytes read from an mbox file per read call; bounds the reader's buffer besides the message itself. */
export const importReadChunkBytesDefault = 1_048_576
/** How long `stop()` and `cancelJob()` wait for in-flight submits to become durable, in milliseconds. */
export const importStopTimeoutMsDefault = 10_000
/** Shortest interval between two checkpoint writes of one job, in milliseconds (each write costs two fsyncs). */
export const importCheckpointIntervalMsDefault = 1_000
/** Most message files one folder import lists (the sorted list is held in memory). */
export const importFolderFilesMaxDefault = 1_000_000
/** Finished jobs kept for `jobStatus`/`jobs()` after they end; the oldest are forgotten first. */
export const importFinishedJobsKeptDefault = 32
/** Per-message errors kept in a job's status (the count in `failed` is always exact). */
export const importErrorsKeptDefault = 10

/** What the import service is given by the composition root. */
export interface ImportServiceDeps {
  logger: Logger
  clock: Clock
  /** The one ingest path (parse, archive, durable) shared with every other source. */
  pipeline: IngestPipeline
}

/** Limits and places of the import service. Units are last in every name. */
export interface ImportServiceOptions {
  /** Directory for the jobs' checkpoint files, e.g. `<dataDir>/import`. Created by start(). */
  stateDir: string
  /** Messages submitted to the pipeline at once per job (e.g. 8); also bounds memory to this many messages. */
  concurrency: number
  /** Larger messages are not submitted; each is recorded as failed (MESSAGE_TOO_LARGE) and the job goes on. In bytes. */
  messageBytesMax: number
  /** Jobs running at once; one more is refused with TOO_MANY_JOBS. */
  jobsMax: number
  /** See `importStopTimeoutMsDefault`. */
  stopTimeoutMs?: number
  /** See `importCheckpointIntervalMsDefault`. */
  checkpointIntervalMs?: number
  /** See `importReadChunkBytesDefault`. */
  readChunkBytes?: number
  /** See `importFolderFilesMaxDefault`. */
  folderFilesMax?: number
  /** See `importFinishedJobsKeptDefault`. */
  finishedJobsKept?: number
  /** See `importErrorsKeptDefault`. */
  errorsKept?: number
}

/**
 * The formats an import path can have: one mbox file, one .eml file, a maildir (cur/ and
 * new/, with Maildir++ `.Folder` subfolders), or a folder tree of .eml files.
 */
export type ImportFormat = 'mbox' | 'eml' | 'maildir' | 'eml-folder'

export type ImportJobState = 'running' | 'done' | 'failed' | 'cancelled'

/** One message that was not archived, for the technician. */
export interface ImportMessageError {
  /** The message's file (folders), or the mbox path. */
  file: string
  /** Byte offset of the message's `From ` line in an mbox; null for files. */
  offset: number | null
  /** ImportError or ArchiveError code (MESSAGE_TOO_LARGE, MESSAGE_EMPTY, …). */
  code: string
  reason: string
}

/** What stopped a job that did not finish ('failed', or 'cancelled' with the reason). */
export interface ImportJobError {
  code: string
  message: string
  /** True when running the same path again later can succeed (STORE_FULL, READ_FAILED): the checkpoint is kept. */
  retryable: boolean
}

/**
 * The state of one import job, JSON-serializable for the control socket. A progress bar
 * is `bytesProcessed / bytesTotal`; both include what a resumed job skipped.
 */
export interface ImportJobStatus {
  id: string
  /** Absolute path being imported. */
  path: string
  format: ImportFormat
  state: ImportJobState
  /** Size of the source in `totalUnit`: messages for folders and .eml (known from the listing), bytes for mbox (the message count is only known at the end); null while the job prepares (lists a folder, reads the checkpoint). */
  total: number | null
  totalUnit: 'messages' | 'bytes'
  /** Messages finished in this run (imported + duplicates + failed). */
  processed: number
  /** Messages archived for the first time in this run. */
  imported: number
  /** Messages the archive already held (a re-import, or messages re-sent after a crash). */
  duplicates: number
  /** Messages (new or duplicate) the pipeline reported with at least one parser flag. */
  flagged: number
  /** Messages not archived: too large, empty, unreadable, or refused by the pipeline for good. */
  failed: number
  /** The first `errorsKept` of the failed messages. */
  errors: ImportMessageError[]
  /** Source bytes finished, including the part a resumed run skipped. */
  bytesProcessed: number
  /** Source size in bytes at the start of the job; null while the job prepares. */
  bytesTotal: number | null
  startedAtMs: number
  /** When the job reached done/failed/cancelled; null while running. */
  finishedAtMs: number | null
  /** Where this run resumed: the mbox byte offset or the position in the sorted file list; 0 for a fresh run. Known once `total` is set. */
  resumedFrom: number
  /** Why the job failed or was cancelled; null otherwise. */
  error: ImportJobError | null
}

/** The bulk import service; runs inside the firmware so every message takes the common ingest path. */
export interface ImportService {
  /**
   * Prepares the state directory. @throws ImportError INVALID_OPTIONS; the fs error when
   * stateDir cannot be created
   */
  start(): Promise<void>
  /**
   * Cancels every running job at a message boundary, waits up to `stopTimeoutMs` for their
   * in-flight messages and keeps their checkpoints. Idempotent.
   */
  stop(): Promise<void>
  /**
   * Detects the format of `path` and starts importing it in the background. The same path
   * while its job runs returns that job. A path with a checkpoint from an interrupted run
   * (crash, cancel, STORE_FULL) resumes from it.
   *
   * Resolves once the format is known (the status then has `total: null` until the job has
   * listed its source and read its checkpoint). `path` must be absolute: the CLI resolves
   * it against its own working directory before sending it.
   *
   * @throws ImportError PATH_NOT_ABSOLUTE, PATH_NOT_FOUND, PATH_UNREADABLE, FORMAT_UNKNOWN,
   *   SOURCE_EMPTY, TOO_MANY_JOBS, NOT_RUNNING
   */
  startJob(path: string): Promise<ImportJobStatus>
  /** A snapshot of one job. @throws ImportError JOB_NOT_FOUND */
  jobStatus(id: string): ImportJobStatus
  /** Snapshots of the running jobs and the last finished ones, oldest first. */
  jobs(): ImportJobStatus[]
  /**
   * Cancels a running job at a message boundary: no new message is started, the in-flight
   * ones get up to `stopTimeoutMs` to become durable, the checkpoint is written and kept.
   * Resolves with the final status; a finished job is returned unchanged.
   *
   * @throws ImportError JOB_NOT_FOUND
   */
  cancelJob(id: string): Promise<ImportJobStatus>
}
