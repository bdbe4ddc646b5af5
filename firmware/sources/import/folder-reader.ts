import { createHash } from 'node:crypto'
import { open, readdir, stat } from 'node:fs/promises'
import type { Dirent } from 'node:fs'
import { basename, join } from 'node:path'
import { ImportError, importErrorFromFs } from './errors.js'

/**
 * Readers of the folder formats: a maildir (with Maildir++ `.Folder` subfolders, or
 * folders nested the file-system way) and a folder tree of .eml files. Listing is
 * separate from reading so a job can sort the list once, checkpoint a position in it and
 * read the files with several in flight.
 */

/** Deepest folder nesting walked below an import path; deeper folders are an error, not silently skipped. */
export const importFolderDepthMax = 64

/** Sub-folders of a maildir folder that are its own mail store, not sub-folders. */
const maildirStoreFolders = new Set(['cur', 'new', 'tmp'])
/** Maildir keeps message flags after this in the file name (`unique:2,FLAGS`); they change when a mail client reads the message. */
const maildirInfoSeparator = ':'

/** One message file found below an import path. */
export interface FoundMessageFile {
  /** Path relative to the import path, `/`-separated. */
  relativePath: string
  /**
   * The file's identity for the delivery key: the relative path for .eml files; for a
   * maildir, the folder and the unique name without `cur/`/`new/` and flags, so a message
   * a mail client moved or flagged between two runs keeps its key.
   */
  deliveryName: string
}

/** A listed message file with what was known of it when listed. */
export interface MessageFile extends FoundMessageFile {
  sizeBytes: number
  mtimeMs: number
}

/** The listing of a folder: message files sorted by relative path, their total size and a fingerprint of the whole list. */
export interface MessageFileList {
  files: MessageFile[]
  bytesTotal: number
  /** SHA-256 (hex) over every file's path, size and mtime: a changed folder gets a new fingerprint. */
  fingerprint: string
}

async function readFolder(root: string, relative: string): Promise<Dirent[]> {
  const path = relative === '' ? root : join(root, relative)
  try {
    return await readdir(path, { withFileTypes: true })
  } catch (error) {
    throw importErrorFromFs(error, path, 'folder')
  }
}

function joinRelative(folder: string, name: string): string {
  return folder === '' ? name : `${folder}/${name}`
}

function checkDepth(root: string, relative: string, depth: number): void {
  if (depth > importFolderDepthMax) {
    throw new ImportError('FORMAT_UNKNOWN', `${join(root, relative)} is nested more than ${importFolderDepthMax} folders deep below the import path`, {
      fields: { path: root, folder: relative, depthMax: importFolderDepthMax },
    })
  }
}

/** True when the entries of a folder include `cur/` and `new/` folders, i.e. it is a maildir folder. */
export function isMaildirFolder(entries: readonly Dirent[]): boolean {
  const folders = new Set(entries.filter((entry) => entry.isDirectory()).map((entry) => entry.name))
  return folders.has('cur') && folders.has('new')
}

/** Messages are regular files; names starting with a dot are editor, client or AppleDouble (`._x.eml`) side files. */
function isCandidateFile(entry: Dirent): boolean {
  return entry.isFile() && !entry.name.startsWith('.')
}

async function* walkMaildirFolder(root: string, relative: string, depth: number): AsyncGenerator<FoundMessageFile> {
  checkDepth(root, relative, depth)
  const entries = await readFolder(root, relative)
  if (isMaildirFolder(entries)) {
    // tmp/ holds messages still being delivered: never complete, never imported.
    for (const store of ['cur', 'new']) {
      for (const entry of await readFolder(root, joinRelative(relative, store))) {
        if (!isCandidateFile(entry)) continue
        const unique = entry.name.split(maildirInfoSeparator)[0] ?? entry.name
        yield { relativePath: joinRelative(joinRelative(relative, store), entry.name), deliveryName: joinRelative(relative, unique) }
      }
    }
  }
  // Sub-folders: Maildir++ `.Folder` beside cur/ (Courier, Dovecot's default) and
  // file-system layout `Folder/cur` alike; folders without cur/ and new/ are walked for
  // deeper mail folders but contribute no files themselves.
  for (const entry of entries) {
    if (entry.isDirectory() && !maildirStoreFolders.has(entry.name)) yield* walkMaildirFolder(root, joinRelative(relative, entry.name), depth + 1)
  }
}

/**
 * Every message file of a maildir, unsorted: files in `cur/` and `new/` of the root and of
 * every sub-folder that has both (Maildir++ `.Sent`, `.Archive.2020`, or nested
 * `Folder/cur`). Skips `tmp/`, dot-files and symbolic links.
 *
 * @throws ImportError PATH_NOT_FOUND / PATH_UNREADABLE for a folder that cannot be read;
 *   FORMAT_UNKNOWN when folders nest deeper than `importFolderDepthMax`
 */
export function walkMaildir(root: string): AsyncGenerator<FoundMessageFile> {
  return walkMaildirFolder(root, '', 0)
}

async function* walkEmlTree(root: string, relative: string, depth: number): AsyncGenerator<FoundMessageFile> {
  checkDepth(root, relative, depth)
  for (const entry of await readFolder(root, relative)) {
    const path = joinRelative(relative, entry.name)
    if (entry.isDirectory()) yield* walkEmlTree(root, path, depth + 1)
    else if (isCandidateFile(entry) && entry.name.toLowerCase().endsWith('.eml')) yield { relativePath: path, deliveryName: path }
  }
}

/**
 * Every `.eml` file (any case) below `root`, recursively, unsorted. Skips other files,
 * dot-files and symbolic links.
 *
 * @throws ImportError PATH_NOT_FOUND / PATH_UNREADABLE for a folder that cannot be read;
 *   FORMAT_UNKNOWN when folders nest deeper than `importFolderDepthMax`
 */
export function walkEmlFolder(root: string): AsyncGenerator<FoundMessageFile> {
  return walkEmlTree(root, '', 0)
}

/**
 * Lists the message files of a maildir or .eml folder, sorted by relative path (so a
 * position in the list means the same after a restart), with their sizes and a
 * fingerprint of the whole list.
 *
 * @throws ImportError TOO_MANY_FILES over `filesMax`; SOURCE_EMPTY when no message file
 *   is found; PATH_NOT_FOUND / PATH_UNREADABLE / FORMAT_UNKNOWN from the walk
 */
export async function listMessageFiles(root: string, format: 'maildir' | 'eml-folder', options: { filesMax: number }): Promise<MessageFileList> {
  const found: FoundMessageFile[] = []
  for await (const file of format === 'maildir' ? walkMaildir(root) : walkEmlFolder(root)) {
    if (found.length >= options.filesMax) {
      throw new ImportError('TOO_MANY_FILES', `${root} holds more than ${options.filesMax} message files; import its sub-folders one by one`, {
        fields: { path: root, filesMax: options.filesMax },
      })
    }
    found.push(file)
  }
  if (found.length === 0) {
    const what = format === 'maildir' ? 'no message in cur/ or new/ of any maildir folder' : 'no .eml file'
    throw new ImportError('SOURCE_EMPTY', `${root} holds ${what}`, { fields: { path: root, format } })
  }
  found.sort((left, right) => (left.relativePath < right.relativePath ? -1 : left.relativePath > right.relativePath ? 1 : 0))
  const files: MessageFile[] = []
  const hash = createHash('sha256')
  let bytesTotal = 0
  for (const file of found) {
    let sizeBytes = 0
    let mtimeMs = 0
    try {
      const info = await stat(join(root, file.relativePath))
      sizeBytes = info.size
      mtimeMs = Math.trunc(info.mtimeMs)
    } catch {
      // A file that went away since the walk (a mail client expunged or renamed it) is
      // kept in the list; reading it reports it, or finds its renamed maildir file.
    }
    files.push({ ...file, sizeBytes, mtimeMs })
    bytesTotal += sizeBytes
    hash.update(`${file.relativePath}\0${sizeBytes}\0${mtimeMs}\n`)
  }
  return { files, bytesTotal, fingerprint: hash.digest('hex') }
}

/** What reading one message file gave: its bytes, or only its size when over the limit. */
export type MessageFileContent = { kind: 'message'; raw: Uint8Array } | { kind: 'oversize'; sizeBytes: number }

/**
 * Reads one message file whole, unless it is larger than `messageBytesMax` (then only
 * its size is returned, for the caller to report).
 *
 * @throws ImportError PATH_NOT_FOUND when the file is gone; PATH_UNREADABLE when it cannot
 *   be read; MESSAGE_UNREADABLE when it grew while it was read (it is being written)
 */
export async function readMessageFile(path: string, messageBytesMax: number): Promise<MessageFileContent> {
  let handle
  try {
    handle = await open(path, 'r')
    const { size } = await handle.stat()
    if (size > messageBytesMax) return { kind: 'oversize', sizeBytes: size }
    // One byte more than stat() said, so a file that grows while it is read is noticed
    // instead of being cut short or read without bound.
    const buffer = Buffer.allocUnsafe(size + 1)
    let length = 0
    while (length < buffer.length) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, length)
      if (bytesRead === 0) break
      length += bytesRead
    }
    if (length > size) {
      throw new ImportError('MESSAGE_UNREADABLE', `${path} grew while it was read; it is still being written`, { fields: { path, sizeBytes: size } })
    }
    return { kind: 'message', raw: buffer.subarray(0, length) }
  } catch (error) {
    if (error instanceof ImportError) throw error
    throw importErrorFromFs(error, path, 'message file')
  } finally {
    await handle?.close()
  }
}

/**
 * Finds where a maildir message went after it was listed: mail clients rename a file when
 * its flags change (`cur/unique:2,S` → `cur/unique:2,RS`) and move it from `new/` to `cur/`
 * when it is first seen. Returns the new relative path, or null when it is gone.
 */
export async function findRenamedMaildirFile(root: string, relativePath: string): Promise<string | null> {
  const parts = relativePath.split('/')
  const name = parts.pop() ?? ''
  parts.pop()
  const folder = parts.join('/')
  const unique = name.split(maildirInfoSeparator)[0] ?? name
  for (const store of ['cur', 'new']) {
    const storePath = joinRelative(folder, store)
    let entries: string[]
    try {
      entries = await readdir(join(root, storePath))
    } catch {
      continue
    }
    const match = entries.find((entry) => entry === unique || entry.startsWith(unique + maildirInfoSeparator))
    if (match !== undefined) return joinRelative(storePath, match)
  }
  return null
}

/** The single-file "list" of one .eml import: the file itself, named by its base name. */
export async function listSingleFile(path: string): Promise<MessageFileList> {
  let info
  try {
    info = await stat(path)
  } catch (error) {
    throw importErrorFromFs(error, path, 'message file')
  }
  const name = basename(path)
  const mtimeMs = Math.trunc(info.mtimeMs)
  const fingerprint = createHash('sha256').update(`${name}\0${info.size}\0${mtimeMs}\n`).digest('hex')
  return { files: [{ relativePath: name, deliveryName: name, sizeBytes: info.size, mtimeMs }], bytesTotal: info.size, fingerprint }
}
