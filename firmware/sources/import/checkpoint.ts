import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readFile, unlink } from 'node:fs/promises'
import { join } from 'node:path'
import { fsyncDirectory, writeFileDurable } from '../../common/durable-file.js'
import type { ImportFormat } from './types.js'

/**
 * Checkpoints of import jobs: one small JSON file per import path in the state directory,
 * written durably (tmp, fsync, rename, fsync the directory). A checkpoint says how far the
 * source is archived for sure: every message before `position` is durable in the archive.
 * It is valid only for the same source: the same format and fingerprint (an mbox's size
 * and mtime; a folder's hash over its sorted file list with sizes and mtimes). A source
 * that changed is imported again from its start, and dedup absorbs what was archived.
 */

/** Version of the checkpoint file layout; a file of another version is ignored. */
export const importCheckpointVersion = 1

export interface ImportCheckpoint {
  version: typeof importCheckpointVersion
  /** Absolute path of the source. */
  path: string
  format: ImportFormat
  /** Identity of the source's content when the job began (see above). */
  fingerprint: string
  /** mbox: byte offset of the first message not known durable; folders: index in the sorted file list. */
  position: number
  /** Source bytes before `position` (for the progress of a resumed job). */
  bytesBefore: number
  /** When it was written, milliseconds since the epoch. */
  updatedAtMs: number
}

/** File name of the checkpoint of one source: a hash of its absolute path, so any path maps to a safe name. */
export function checkpointFileName(absolutePath: string): string {
  return `${createHash('sha256').update(absolutePath).digest('hex').slice(0, 32)}.checkpoint.json`
}

function isCheckpoint(value: unknown): value is ImportCheckpoint {
  if (value === null || typeof value !== 'object') return false
  const record = value as Record<string, unknown>
  return (
    record.version === importCheckpointVersion &&
    typeof record.path === 'string' &&
    typeof record.format === 'string' &&
    typeof record.fingerprint === 'string' &&
    Number.isSafeInteger(record.position) &&
    (record.position as number) >= 0 &&
    Number.isSafeInteger(record.bytesBefore) &&
    typeof record.updatedAtMs === 'number'
  )
}

/** What loading a checkpoint found: none, a usable one, or a file that could not be used (with why). */
export type LoadedCheckpoint = { kind: 'none' } | { kind: 'found'; checkpoint: ImportCheckpoint } | { kind: 'unusable'; reason: string }

/**
 * Reads the checkpoint of `absolutePath` from `stateDir`. Never throws for a missing,
 * corrupt or foreign file (the import then starts from the beginning, which dedup makes
 * safe); other read errors are reported as unusable too, with the system's reason.
 */
export async function loadCheckpoint(stateDir: string, absolutePath: string): Promise<LoadedCheckpoint> {
  let text: string
  try {
    text = await readFile(join(stateDir, checkpointFileName(absolutePath)), 'utf8')
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return { kind: 'none' }
    return { kind: 'unusable', reason: error instanceof Error ? error.message : String(error) }
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch {
    return { kind: 'unusable', reason: 'not JSON' }
  }
  if (!isCheckpoint(parsed)) return { kind: 'unusable', reason: 'not a checkpoint of this version' }
  if (parsed.path !== absolutePath) return { kind: 'unusable', reason: `belongs to ${parsed.path}` }
  return { kind: 'found', checkpoint: parsed }
}

/** Writes a checkpoint durably. @throws the fs error (ENOSPC, EACCES…) */
export async function saveCheckpoint(stateDir: string, checkpoint: ImportCheckpoint): Promise<void> {
  await writeFileDurable(join(stateDir, checkpointFileName(checkpoint.path)), JSON.stringify(checkpoint) + '\n', 0o600)
}

/** Removes the checkpoint of a finished source, durably, so importing it again runs in full. @throws the fs error except ENOENT */
export async function removeCheckpoint(stateDir: string, absolutePath: string): Promise<void> {
  try {
    await unlink(join(stateDir, checkpointFileName(absolutePath)))
  } catch (error) {
    if ((error as { code?: unknown }).code === 'ENOENT') return
    throw error
  }
  await fsyncDirectory(stateDir)
}

/**
 * Tracks which messages of a job are finished when several are in flight, and so how far
 * a checkpoint may go: only up to the first message that is not finished, whatever
 * finished after it. Pure (no I/O).
 */
export interface ImportFrontier {
  /**
   * Registers the next message in source order, ending at `endPosition` (the next
   * message's position) and covering `sizeBytes` of the source. Returns its ticket.
   */
  add(endPosition: number, sizeBytes: number): number
  /** Marks a message finished (durable, or failed for good); advances the frontier past every finished message at its head. */
  finish(ticket: number): void
  /** Every message before this position is finished. */
  readonly position: number
  /** Source bytes before `position`. */
  readonly bytesBefore: number
  /** Messages registered and not finished. */
  readonly open: number
}

/** Creates a frontier that starts at `position` with `bytesBefore` source bytes already done. */
export function createImportFrontier(position: number, bytesBefore: number): ImportFrontier {
  const queue: { ticket: number; endPosition: number; sizeBytes: number; finished: boolean }[] = []
  let head = 0
  let nextTicket = 0
  let current = position
  let bytes = bytesBefore
  return {
    add(endPosition, sizeBytes) {
      const last = queue.length > head ? queue[queue.length - 1]!.endPosition : current
      assert.ok(endPosition >= last, 'messages are registered in source order')
      queue.push({ ticket: nextTicket, endPosition, sizeBytes, finished: false })
      return nextTicket++
    },
    finish(ticket) {
      const item = queue[head + (ticket - (queue[head]?.ticket ?? 0))]
      assert.ok(item !== undefined && item.ticket === ticket && !item.finished, 'each open message is finished once')
      item.finished = true
      while (head < queue.length && queue[head]!.finished) {
        current = queue[head]!.endPosition
        bytes += queue[head]!.sizeBytes
        head++
      }
      // Drop the finished head now and then, so the queue stays as short as the window.
      if (head > 1024 && head * 2 > queue.length) {
        queue.splice(0, head)
        head = 0
      }
    },
    get position() {
      return current
    },
    get bytesBefore() {
      return bytes
    },
    get open() {
      return queue.length - head
    },
  }
}
