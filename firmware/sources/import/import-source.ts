import { stat } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { ImportError, errorText, importErrorFromFs } from './errors.js'
import { findRenamedMaildirFile, listMessageFiles, listSingleFile, readMessageFile, type MessageFile, type MessageFileContent } from './folder-reader.js'
import type { ResolvedImportOptions } from './import-options.js'
import { mboxSeparatorAt, readMbox } from './mbox-reader.js'
import type { ImportFormat } from './types.js'

/*
 * Walking an import source: every format becomes one PreparedSource, a sequence of work
 * items in source order that can start at any checkpoint position.
 */

/** One message of a source, in source order, read lazily so reads overlap with submits. */
export interface WorkItem {
  /** Its identity at the source: the mbox offset, or the file's delivery name. */
  keySuffix: string
  /** Where it is, for the technician: the mbox path or the message file. */
  file: string
  offset: number | null
  /** Checkpoint position after this message (next mbox offset, next list index). */
  endPosition: number
  /** Source bytes it covers. */
  sizeBytes: number
  /** @throws ImportError MESSAGE_UNREADABLE (files) */
  load(): Promise<MessageFileContent>
}

/** A source prepared for a run: its size, fingerprint and a reader from any position. */
export interface PreparedSource {
  fingerprint: string
  total: number
  totalUnit: 'messages' | 'bytes'
  bytesTotal: number
  /** True when a checkpoint position is a place this source can resume from. */
  canResumeAt(position: number): Promise<boolean>
  /** Source bytes before a position. */
  bytesBefore(position: number): number
  items(fromPosition: number): AsyncIterable<WorkItem>
}

/** The limits the readers apply. */
export type SourceOptions = Pick<ResolvedImportOptions, 'messageBytesMax' | 'readChunkBytes' | 'folderFilesMax'>

/**
 * Lists or measures the source at `path` for a run.
 *
 * @throws ImportError PATH_NOT_FOUND, PATH_UNREADABLE, TOO_MANY_FILES (from the listing)
 */
export async function prepareSource(path: string, format: ImportFormat, options: SourceOptions): Promise<PreparedSource> {
  if (format === 'mbox') return prepareMbox(path, options)
  const list = format === 'eml' ? await listSingleFile(path) : await listMessageFiles(path, format, { filesMax: options.folderFilesMax })
  const root = format === 'eml' ? dirname(path) : path
  return prepareFiles(root, format, list.files, list.bytesTotal, list.fingerprint, options)
}

/** An mbox: positions are byte offsets of `From ` lines; only the bytes present now are read. */
export async function prepareMbox(path: string, options: SourceOptions): Promise<PreparedSource> {
  let info
  try {
    info = await stat(path)
  } catch (error) {
    throw importErrorFromFs(error, path, 'mbox')
  }
  // Only the bytes present when the job began are read, so a message being appended is not half-read.
  const sizeBytes = info.size
  return {
    fingerprint: `mbox:${sizeBytes}:${Math.trunc(info.mtimeMs)}`,
    total: sizeBytes,
    totalUnit: 'bytes',
    bytesTotal: sizeBytes,
    canResumeAt: async (position) => position === sizeBytes || (position < sizeBytes && (await mboxSeparatorAt(path, position))),
    bytesBefore: (position) => position,
    items: async function* (fromPosition) {
      const entries = readMbox(path, { fromOffset: fromPosition, toOffset: sizeBytes, messageBytesMax: options.messageBytesMax, chunkBytes: options.readChunkBytes })
      for await (const entry of entries) {
        const content: MessageFileContent = entry.kind === 'message' ? { kind: 'message', raw: entry.raw } : { kind: 'oversize', sizeBytes: entry.sizeBytes }
        yield {
          keySuffix: String(entry.startOffset),
          file: path,
          offset: entry.startOffset,
          endPosition: entry.endOffset,
          sizeBytes: entry.endOffset - entry.startOffset,
          load: async () => content,
        }
      }
    },
  }
}

/**
 * Reads one listed message file. A maildir file a mail client renamed (flags) or moved
 * from new/ to cur/ since the listing is found again under its new name.
 *
 * @throws ImportError MESSAGE_UNREADABLE naming the file
 */
export async function loadMessageFile(root: string, format: ImportFormat, file: MessageFile, messageBytesMax: number): Promise<MessageFileContent> {
  const read = (relativePath: string): Promise<MessageFileContent> => readMessageFile(join(root, relativePath), messageBytesMax)
  let failure: unknown
  try {
    return await read(file.relativePath)
  } catch (error) {
    failure = error
  }
  // A mail client may have renamed the maildir file (flags) or moved it from new/ to cur/.
  if (format === 'maildir' && failure instanceof ImportError && failure.code === 'PATH_NOT_FOUND') {
    const renamed = await findRenamedMaildirFile(root, file.relativePath)
    if (renamed !== null) {
      try {
        return await read(renamed)
      } catch (error) {
        failure = error
      }
    }
  }
  if (failure instanceof ImportError && failure.code === 'MESSAGE_UNREADABLE') throw failure
  throw new ImportError('MESSAGE_UNREADABLE', errorText(failure), { fields: { path: join(root, file.relativePath) }, cause: failure })
}

/** A listed folder (or one .eml file): positions are indexes in the sorted file list. */
export function prepareFiles(root: string, format: ImportFormat, files: MessageFile[], bytesTotal: number, fingerprint: string, options: SourceOptions): PreparedSource {
  return {
    fingerprint: `${format}:${fingerprint}`,
    total: files.length,
    totalUnit: 'messages',
    bytesTotal,
    canResumeAt: async (position) => position <= files.length,
    bytesBefore: (position) => files.slice(0, position).reduce((sum, file) => sum + file.sizeBytes, 0),
    items: async function* (fromPosition) {
      for (let index = fromPosition; index < files.length; index++) {
        const file = files[index]!
        yield {
          keySuffix: file.deliveryName,
          file: join(root, file.relativePath),
          offset: null,
          endPosition: index + 1,
          sizeBytes: file.sizeBytes,
          load: () => loadMessageFile(root, format, file, options.messageBytesMax),
        }
      }
    },
  }
}
