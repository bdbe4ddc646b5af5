import assert from 'node:assert/strict'
import { timingSafeEqual } from 'node:crypto'
import { canonicalJson, hmacHex, sha256Hex } from '../common/canonical.js'
import type { AuditEntry, AuditEvent, AuditVerifyReport } from './types.js'

/*
 * The audit log's hash chain, without storage: how an entry is chained onto the head, and
 * how a stored chain and its head are verified. Pure (the HMAC key is given).
 */

/** prevHash of the first entry. */
export const genesisHash = '0'.repeat(64)
/** Most problems one verify() lists. */
export const auditProblemsMax = 100
/** Longest text of one entry's details, in characters; longer details are refused (programmer error). */
export const detailsCharsMax = 4 * 1024 * 1024

/** The head record: the last entry's sequence and hash, with an HMAC under the audit key. */
export interface HeadRecord {
  seq: number
  hash: string
  mac?: string
}

/** The chained fields; the hash covers exactly these. */
function hashOf(entry: Omit<AuditEntry, 'hash' | 'mac'>): string {
  const { seq, atMs, actor, action, details, prevHash } = entry
  return sha256Hex(canonicalJson({ seq, atMs, actor, action, details, prevHash }))
}

function sameHex(a: string | undefined, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false
  return timingSafeEqual(Buffer.from(a, 'latin1'), Buffer.from(b, 'latin1'))
}

const entryMacOf = (key: Uint8Array | null, hash: string) => (key ? hmacHex(key, `entry:${hash}`) : undefined)
const headMacOf = (key: Uint8Array | null, seq: number, hash: string) => (key ? hmacHex(key, `head:${seq}:${hash}`) : undefined)

/**
 * The entry that follows `head` for `event`, its canonical text to store, and the new head.
 * @throws AssertionError when the entry's text is over detailsCharsMax (a programmer error)
 */
export function chainEntry(head: HeadRecord, event: AuditEvent, atMs: number, key: Uint8Array | null): { entry: AuditEntry; text: string; head: HeadRecord } {
  const base = { seq: head.seq + 1, atMs, actor: event.actor, action: event.action, details: JSON.parse(JSON.stringify(event.details ?? {})) as Record<string, unknown>, prevHash: head.hash }
  const hash = hashOf(base)
  const entry: AuditEntry = { ...base, hash }
  const mac = entryMacOf(key, hash)
  if (mac) entry.mac = mac
  const text = canonicalJson(entry)
  assert.ok(text.length <= detailsCharsMax, `audit entry of ${text.length} characters is over ${detailsCharsMax}`)
  const newHead: HeadRecord = { seq: entry.seq, hash }
  const headMac = headMacOf(key, entry.seq, hash)
  if (headMac) newHead.mac = headMac
  return { entry, text, head: newHead }
}

/**
 * Walks a stored chain (entries by sequence, as stored) and its head record and reports
 * (does not throw) every kind of damage: undecodable, missing, moved, altered or re-linked
 * entries, a truncated tail, a missing head and, with the key, entries or a head rewritten
 * without it. At most auditProblemsMax problems are listed.
 */
export function verifyAuditChain(stored: Iterable<{ key: number; value: string }>, head: HeadRecord | undefined, key: Uint8Array | null): AuditVerifyReport {
  const report: AuditVerifyReport = { ok: true, entries: 0, lastSeq: 0, headSeq: null, macChecked: key !== null, problems: [] }
  const problem = (seq: number | null, code: string, message: string) => {
    report.ok = false
    if (report.problems.length < auditProblemsMax) report.problems.push({ seq, code, message })
  }
  let expectedSeq = 1
  let prevHash = genesisHash
  for (const { key: storedSeq, value } of stored) {
    report.entries++
    let entry: AuditEntry
    try {
      entry = JSON.parse(value) as AuditEntry
    } catch {
      problem(storedSeq, 'UNDECODABLE', `entry at key ${storedSeq} is not JSON`)
      expectedSeq = storedSeq + 1
      prevHash = ''
      continue
    }
    if (storedSeq !== expectedSeq) problem(storedSeq, 'SEQUENCE_GAP', `expected entry ${expectedSeq}, found key ${storedSeq} (entries removed)`)
    if (entry.seq !== storedSeq) problem(storedSeq, 'OUT_OF_ORDER', `entry stored at key ${storedSeq} says seq ${entry.seq} (moved or reordered)`)
    const hash = hashOf(entry)
    if (hash !== entry.hash) problem(storedSeq, 'HASH_MISMATCH', `entry ${storedSeq} does not hash to its recorded hash (altered)`)
    if (entry.prevHash !== prevHash) problem(storedSeq, 'CHAIN_BROKEN', `entry ${storedSeq} does not follow the entry before it (prevHash differs: removed, inserted or reordered)`)
    if (key && !sameHex(entry.mac, hmacHex(key, `entry:${entry.hash}`)))
      problem(storedSeq, 'MAC_MISMATCH', `entry ${storedSeq} has no valid HMAC under this appliance's audit key (rewritten)`)
    prevHash = entry.hash
    expectedSeq = storedSeq + 1
    report.lastSeq = storedSeq
  }
  report.headSeq = head?.seq ?? null
  if (!head) {
    if (report.entries > 0) problem(null, 'HEAD_MISSING', `the log has ${report.entries} entries but no head record`)
  } else {
    if (head.seq !== report.lastSeq || head.hash !== prevHash)
      problem(head.seq, 'TRUNCATED', `the head record names entry ${head.seq}, the log ends at ${report.lastSeq} (entries removed from the end, or the head altered)`)
    if (key && !sameHex(head.mac, hmacHex(key, `head:${head.seq}:${head.hash}`))) problem(head.seq, 'HEAD_MAC_MISMATCH', "the head record has no valid HMAC under this appliance's audit key")
  }
  return report
}
