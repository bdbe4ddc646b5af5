import {
  importCheckpointIntervalMsDefault,
  importErrorsKeptDefault,
  importFinishedJobsKeptDefault,
  importFolderFilesMaxDefault,
  importReadChunkBytesDefault,
  importStopTimeoutMsDefault,
  type ImportServiceOptions,
} from './types.js'

/** Most submits one job keeps in flight; more only adds memory (each holds a whole message). */
export const importConcurrencyMax = 256

/** The import service's options with every default applied. */
export type ResolvedImportOptions = Required<ImportServiceOptions>

/** Options with every default applied. */
export function resolveImportOptions(options: ImportServiceOptions): ResolvedImportOptions {
  return {
    stateDir: options.stateDir,
    concurrency: options.concurrency,
    messageBytesMax: options.messageBytesMax,
    jobsMax: options.jobsMax,
    stopTimeoutMs: options.stopTimeoutMs ?? importStopTimeoutMsDefault,
    checkpointIntervalMs: options.checkpointIntervalMs ?? importCheckpointIntervalMsDefault,
    readChunkBytes: options.readChunkBytes ?? importReadChunkBytesDefault,
    folderFilesMax: options.folderFilesMax ?? importFolderFilesMaxDefault,
    finishedJobsKept: options.finishedJobsKept ?? importFinishedJobsKeptDefault,
    errorsKept: options.errorsKept ?? importErrorsKeptDefault,
  }
}

/** Every problem with the options, each as `import.key: reason (got value)`; empty when valid. */
export function validateImportOptions(options: ResolvedImportOptions): string[] {
  const problems: string[] = []
  const positive = ['concurrency', 'messageBytesMax', 'jobsMax', 'stopTimeoutMs', 'readChunkBytes', 'folderFilesMax'] as const
  for (const key of positive) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 1) problems.push(`import.${key}: must be a positive integer (got ${JSON.stringify(value)})`)
  }
  const nonNegative = ['checkpointIntervalMs', 'finishedJobsKept', 'errorsKept'] as const
  for (const key of nonNegative) {
    const value = options[key]
    if (!Number.isSafeInteger(value) || value < 0) problems.push(`import.${key}: must be a non-negative integer (got ${JSON.stringify(value)})`)
  }
  if (options.concurrency > importConcurrencyMax) problems.push(`import.concurrency: must be at most ${importConcurrencyMax} (got ${options.concurrency})`)
  if (typeof options.stateDir !== 'string' || options.stateDir.trim() === '') problems.push(`import.stateDir: must be a directory path (got ${JSON.stringify(options.stateDir)})`)
  return problems
}
