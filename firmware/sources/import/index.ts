/**
 * Bulk import of mbox files, maildirs and .eml files into the archive. Named exports
 * only; the composition root calls createImportService and the control socket maps
 * `import start|status|cancel|list` onto its methods.
 */
export { createImportService } from './import-service.js'
export { resolveImportOptions, validateImportOptions, importConcurrencyMax } from './import-options.js'
export { ImportError, importErrorFromFs, type ImportErrorCode } from './errors.js'
export { readMbox, mboxSeparatorAt, type MboxEntry, type ReadMboxOptions } from './mbox-reader.js'
export {
  walkMaildir,
  walkEmlFolder,
  listMessageFiles,
  listSingleFile,
  readMessageFile,
  findRenamedMaildirFile,
  isMaildirFolder,
  importFolderDepthMax,
  type FoundMessageFile,
  type MessageFile,
  type MessageFileList,
  type MessageFileContent,
} from './folder-reader.js'
export { detectImportFormat } from './detect.js'
export {
  createImportFrontier,
  loadCheckpoint,
  saveCheckpoint,
  removeCheckpoint,
  checkpointFileName,
  importCheckpointVersion,
  type ImportCheckpoint,
  type ImportFrontier,
  type LoadedCheckpoint,
} from './checkpoint.js'
export {
  importReadChunkBytesDefault,
  importStopTimeoutMsDefault,
  importCheckpointIntervalMsDefault,
  importFolderFilesMaxDefault,
  importFinishedJobsKeptDefault,
  importErrorsKeptDefault,
  type ImportService,
  type ImportServiceDeps,
  type ImportServiceOptions,
  type ImportFormat,
  type ImportJobState,
  type ImportJobStatus,
  type ImportJobError,
  type ImportMessageError,
} from './types.js'
