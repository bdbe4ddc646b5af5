import { readdir, stat } from 'node:fs/promises'
import { ImportError, importErrorFromFs } from './errors.js'
import { walkEmlFolder, walkMaildir, isMaildirFolder } from './folder-reader.js'
import { mboxSeparatorAt } from './mbox-reader.js'
import type { ImportFormat } from './types.js'

/**
 * Tells what `path` holds, cheaply (one stat and a few bytes for a file; for a folder the
 * walk stops at the first message file):
 * - a file starting with `From ` is an mbox; else a file named `*.eml` is one message;
 * - a folder with `cur/` and `new/` is a maildir;
 * - any other folder with at least one `*.eml` file below it is a folder of .eml files.
 *
 * @throws ImportError PATH_NOT_FOUND, PATH_UNREADABLE; SOURCE_EMPTY for an empty file, an
 *   empty folder or a maildir without messages; FORMAT_UNKNOWN for anything else, saying
 *   what was looked for
 */
export async function detectImportFormat(path: string): Promise<ImportFormat> {
  let info
  try {
    info = await stat(path)
  } catch (error) {
    throw importErrorFromFs(error, path)
  }
  if (info.isFile()) {
    if (info.size === 0) throw new ImportError('SOURCE_EMPTY', `${path} is an empty file`, { fields: { path } })
    if (await mboxSeparatorAt(path, 0)) return 'mbox'
    if (path.toLowerCase().endsWith('.eml')) return 'eml'
    throw new ImportError('FORMAT_UNKNOWN', `${path} is neither an mbox (it does not start with a "From " line) nor an .eml file`, { fields: { path } })
  }
  if (!info.isDirectory()) {
    throw new ImportError('FORMAT_UNKNOWN', `${path} is neither a file nor a folder`, { fields: { path } })
  }
  let entries
  try {
    entries = await readdir(path, { withFileTypes: true })
  } catch (error) {
    throw importErrorFromFs(error, path, 'folder')
  }
  if (isMaildirFolder(entries)) {
    for await (const _file of walkMaildir(path)) return 'maildir'
    throw new ImportError('SOURCE_EMPTY', `${path} is a maildir without messages in cur/ or new/ of any folder`, { fields: { path } })
  }
  for await (const _file of walkEmlFolder(path)) return 'eml-folder'
  if (entries.length === 0) throw new ImportError('SOURCE_EMPTY', `${path} is an empty folder`, { fields: { path } })
  throw new ImportError('FORMAT_UNKNOWN', `${path} is neither a maildir (no cur/ and new/ folders) nor a folder of .eml files (none found below it)`, {
    fields: { path },
  })
}
