import { MailkeepError, type ErrorDetails } from '../../common/errors.js'

/**
 * Operating errors of the bulk import (mbox, maildir, .eml). Codes thrown by `startJob`
 * tell the technician why a path cannot be imported; codes recorded per message (in a
 * job's `errors`) say why that one message was not archived while the job went on.
 */
export type ImportErrorCode =
  /** The path given to startJob is relative: the service's working directory is not the technician's, so the CLI must send an absolute path. Not retryable. */
  | 'PATH_NOT_ABSOLUTE'
  /** The path does not exist. Not retryable. */
  | 'PATH_NOT_FOUND'
  /** The path exists but cannot be read (permissions, I/O error). Not retryable. */
  | 'PATH_UNREADABLE'
  /** The path is neither an mbox, an .eml file, a maildir nor a folder of .eml files. Not retryable. */
  | 'FORMAT_UNKNOWN'
  /** The path has the right shape but holds no message (empty file, empty maildir). Not retryable. */
  | 'SOURCE_EMPTY'
  /** A folder holds more message files than `folderFilesMax`. Not retryable. */
  | 'TOO_MANY_FILES'
  /** `jobsMax` jobs are running already. Retryable once one has finished. */
  | 'TOO_MANY_JOBS'
  /** No job with that id (never started, or forgotten after `finishedJobsKept` newer ones). Not retryable. */
  | 'JOB_NOT_FOUND'
  /** The service is not started, or is stopping. Retryable. */
  | 'NOT_RUNNING'
  /** The service options are invalid. Not retryable. */
  | 'INVALID_OPTIONS'
  /** The job was cancelled (cancelJob, or stop() of the service); its checkpoint is kept. Retryable: importing the path again resumes. */
  | 'CANCELLED'
  /** Reading the source failed in the middle of a job (file removed, I/O error); the checkpoint is kept. Retryable. */
  | 'READ_FAILED'
  /** `readMbox` was asked to start at an offset that is not the start of a `From ` separator line. Not retryable. */
  | 'OFFSET_NOT_AT_MESSAGE'
  /** One message is larger than `messageBytesMax` (recorded per message; the job goes on). Not retryable. */
  | 'MESSAGE_TOO_LARGE'
  /** One mbox entry has no bytes between its separator and the next (recorded per message). Not retryable. */
  | 'MESSAGE_EMPTY'
  /** One message file vanished or could not be read between listing and reading (recorded per message). Not retryable. */
  | 'MESSAGE_UNREADABLE'
  /** The pipeline failed on one message with an error that is not a typed MailkeepError (recorded per message; the job goes on). Not retryable. */
  | 'INGEST_FAILED'
  /** The job itself failed unexpectedly (a defect); the checkpoint is kept. Not retryable. */
  | 'INTERNAL'

const retryableCodes: ReadonlySet<ImportErrorCode> = new Set<ImportErrorCode>(['TOO_MANY_JOBS', 'NOT_RUNNING', 'CANCELLED', 'READ_FAILED'])

/** A typed import error; `retryable` follows from the code unless the caller overrides it. */
export class ImportError extends MailkeepError {
  declare readonly code: ImportErrorCode
  constructor(code: ImportErrorCode, message: string, details: ErrorDetails = {}) {
    super(code, message, { retryable: retryableCodes.has(code), ...details })
    this.name = 'ImportError'
  }
}

/**
 * Turns an fs error about `path` into a typed error for the technician: ENOENT becomes
 * PATH_NOT_FOUND, anything else PATH_UNREADABLE, both naming the path and the system code.
 */
export function importErrorFromFs(error: unknown, path: string, what = 'path'): ImportError {
  const code = (error as { code?: unknown } | null)?.code
  const systemCode = typeof code === 'string' ? code : 'unknown'
  if (systemCode === 'ENOENT' || systemCode === 'ENOTDIR') {
    return new ImportError('PATH_NOT_FOUND', `${what} ${path} does not exist`, { fields: { path, systemCode }, cause: error })
  }
  const reason = error instanceof Error ? error.message : String(error)
  return new ImportError('PATH_UNREADABLE', `cannot read ${what} ${path}: ${reason}`, { fields: { path, systemCode }, cause: error })
}

/** The message of an error, or the thrown value as text. */
export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
