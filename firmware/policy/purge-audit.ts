import type { AuditLog } from './audit-log.js'

/** Audit entries looked at after the first one at or past the purge's time, at most. */
export const purgeAuditScanEntriesMax = 256
/** Audit actions that name purged messages in `details.messages[].id`. */
const purgeActions: ReadonlySet<string> = new Set(['purge.batch', 'purge.recovered'])

/**
 * The sequence of the audit entry that names the purge of `id` done at `atMs` (a
 * `purge.batch`, or a `purge.recovered` written at the next start after an interruption),
 * or null when none is found. The log is in time order, so the first entry at or after
 * `atMs` is found by bisection and the next purgeAuditScanEntriesMax entries are read.
 * @throws PolicyError UNAVAILABLE, CORRUPT from the audit log
 */
export function findPurgeAuditEntry(audit: Pick<AuditLog, 'entries' | 'lastSeq'>, id: string, atMs: number): number | null {
  let low = 1
  let high = audit.lastSeq()
  if (high === 0) return null
  // First seq whose atMs >= atMs (high + 1 when none).
  let first = high + 1
  while (low <= high) {
    const middle = Math.floor((low + high) / 2)
    const entry = audit.entries(middle - 1, 1)[0]
    if (entry === undefined) break
    if (entry.atMs >= atMs) {
      first = middle
      high = middle - 1
    } else low = middle + 1
  }
  let after = first - 1
  let left = purgeAuditScanEntriesMax
  while (left > 0) {
    const page = audit.entries(after, Math.min(left, 100))
    if (page.length === 0) return null
    for (const entry of page) {
      if (!purgeActions.has(entry.action)) continue
      const messages = (entry.details as { messages?: unknown }).messages
      if (Array.isArray(messages) && messages.some((message) => (message as { id?: unknown } | null)?.id === id)) return entry.seq
    }
    after = page[page.length - 1]!.seq
    left -= page.length
  }
  return null
}
