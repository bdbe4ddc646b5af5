import { readFile, rename } from 'node:fs/promises'
import { join } from 'node:path'
import type { Logger } from '../../common/logger.js'
import { writeFileDurable } from '../../common/durable-file.js'
import { JournalError } from './errors.js'
import { pop3ListingEntriesMax } from './pop3-client.js'

/**
 * POP3 has no flags, so 'flag' mode remembers which UIDLs were archived in a small state
 * file per source, written durably (tmp → fsync → rename → fsync dir). It is bounded: each
 * pass keeps only UIDLs the server still lists. The file names its host and user, so a
 * source re-pointed at another mailbox starts afresh instead of skipping its messages.
 */

const stateVersion = 1

interface StateFile {
  version: number
  source: string
  host: string
  user: string
  uidls: string[]
}

/** Path of the state file of source `name` under `stateDir`. */
export function pop3StatePath(stateDir: string, name: string): string {
  return join(stateDir, `${name}.pop3-archived.json`)
}

/** The archived-UIDL set of one POP3 source, loaded once and saved after each pass. */
export class Pop3ArchivedState {
  private uidls: Set<string> | null = null
  private dirty = false

  constructor(
    private readonly path: string,
    private readonly identity: { source: string; host: string; user: string },
    private readonly logger: Logger,
  ) {}

  /**
   * Reads the file (once). A missing file is an empty set; an unreadable or corrupt one is
   * renamed aside (`.corrupt-<ms>`) and replaced by an empty set: the messages are then
   * archived again, which dedup absorbs, rather than skipped.
   *
   * @throws JournalError STATE_FILE_FAILED when the file cannot be read or moved aside
   */
  async load(nowMs: number): Promise<Set<string>> {
    if (this.uidls) return this.uidls
    let text: string
    try {
      text = await readFile(this.path, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        this.uidls = new Set()
        return this.uidls
      }
      throw new JournalError('STATE_FILE_FAILED', `cannot read ${this.path}: ${(error as Error).message}`, { fields: { path: this.path } })
    }
    const parsed = parseState(text)
    if (parsed === null) {
      const aside = `${this.path}.corrupt-${nowMs}`
      try {
        await rename(this.path, aside)
      } catch (error) {
        throw new JournalError('STATE_FILE_FAILED', `cannot move the corrupt ${this.path} aside: ${(error as Error).message}`, { fields: { path: this.path } })
      }
      this.logger.error('POP3 state file was corrupt: moved aside, archived messages will be fetched again into dedup', { path: this.path, movedTo: aside })
      this.uidls = new Set()
      this.dirty = true
      return this.uidls
    }
    if (parsed.host !== this.identity.host || parsed.user !== this.identity.user) {
      this.logger.warn('POP3 state file belongs to another mailbox: starting afresh', { path: this.path, fileHost: parsed.host, fileUser: parsed.user })
      this.uidls = new Set()
      this.dirty = true
      return this.uidls
    }
    this.uidls = new Set(parsed.uidls)
    return this.uidls
  }

  /** Keeps only the UIDLs the server still lists (the bound on the file's size). */
  prune(serverUidls: ReadonlySet<string>): void {
    if (!this.uidls) return
    for (const uidl of this.uidls) {
      if (!serverUidls.has(uidl)) {
        this.uidls.delete(uidl)
        this.dirty = true
      }
    }
  }

  /** Records an archived UIDL in memory; `save` makes it durable. */
  add(uidl: string): void {
    if (!this.uidls || this.uidls.has(uidl)) return
    this.uidls.add(uidl)
    this.dirty = true
  }

  /**
   * Writes the set durably when it changed.
   *
   * @throws JournalError STATE_FILE_FAILED (ENOSPC, EACCES…)
   */
  async save(): Promise<void> {
    if (!this.uidls || !this.dirty) return
    const content: StateFile = { version: stateVersion, ...this.identity, uidls: [...this.uidls] }
    try {
      await writeFileDurable(this.path, JSON.stringify(content) + '\n', 0o600)
    } catch (error) {
      throw new JournalError('STATE_FILE_FAILED', `cannot write ${this.path}: ${(error as Error).message}`, { fields: { path: this.path } })
    }
    this.dirty = false
  }
}

function parseState(text: string): StateFile | null {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch {
    return null
  }
  if (value === null || typeof value !== 'object') return null
  const state = value as Partial<StateFile>
  if (state.version !== stateVersion || typeof state.host !== 'string' || typeof state.user !== 'string' || typeof state.source !== 'string') return null
  if (!Array.isArray(state.uidls) || state.uidls.length > pop3ListingEntriesMax || !state.uidls.every((uidl) => typeof uidl === 'string')) return null
  return state as StateFile
}
