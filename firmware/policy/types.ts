import type { Delivery } from '../archive/types.js'

/** Where a message came from, as a policy criterion. */
export type SourceKind = Delivery['source']

/**
 * What a named policy selects, besides age. Every facet given must match (AND); within a
 * list any entry may match (OR). An address entry is `user@domain` (exact, case-insensitive)
 * or `@domain` / `domain` (that domain and its subdomains).
 */
export interface PolicyCriteria {
  /** Header From addresses or the envelope sender of any delivery. */
  senders?: string[]
  /** To, Cc, Bcc headers or envelope recipients (incl. BCC) of any delivery. */
  recipients?: string[]
  /** Any delivery came from one of these sources. */
  sources?: SourceKind[]
  /** A search query (README's query language); the message must be among its hits. */
  query?: string
}

/**
 * A retention policy. Age counts from the message's archive time (first arrival on this
 * system), never from its Date header, which the sender controls (see README).
 */
export interface Policy {
  name: string
  /** Days after archive time before a message may be purged; null: kept forever (default policy only). */
  retentionDays: number | null
  criteria: PolicyCriteria
  createdAtMs: number
  createdBy: string
}

/** A litigation hold. Every facet given must match (AND); at least one is given. */
export interface Hold {
  name: string
  query?: string
  /** Addresses or domains (same forms as policy criteria), as sender or recipient. */
  custodians?: string[]
  /** Inclusive start, ms since the epoch; matched against the Date header OR the archive time. */
  fromMs?: number
  /** Exclusive end, ms since the epoch. */
  untilMs?: number
  reason: string
  placedBy: string
  placedAtMs: number
  active: boolean
  releasedAtMs?: number
  releasedBy?: string
}

/** The facts of one archived message that retention and holds look at. */
export interface MessageFacts {
  id: string
  sizeBytes: number
  /** First arrival on this system, ms. */
  archivedAtMs: number
  /** Date header, ms; null when missing or unparseable. */
  dateMs: number | null
  /** Lower-cased header From addresses and envelope senders. */
  senders: string[]
  /** Lower-cased To/Cc/Bcc and envelope recipients. */
  recipients: string[]
  sources: SourceKind[]
  /** False when the search index failed on this message (flag `index-failed`): queries cannot see it. */
  indexed: boolean
}

/** One message the plan would purge. */
export interface DueItem {
  id: string
  /** SHA-256 of the raw message (the archive id is the content hash). */
  sha256: string
  sizeBytes: number
  policy: string
  retentionDays: number
  archivedAtMs: number
  expiredAtMs: number
  reason: string
}

/** A message past its retention that is kept anyway. */
export interface KeptItem {
  id: string
  policy: string
  /**
   * held: active holds match; mirror-pending: a mirror peer has not acknowledged it yet;
   * unindexed: the search index does not hold it, so no query (of a hold or a policy) can be
   * judged: kept until `index rebuild`.
   */
  reason: 'held' | 'mirror-pending' | 'unindexed'
  holds?: string[]
}

/** A purge plan: pure data, computed by planPurge, shown by `policy preview`, executed by the purge job. */
export interface PurgePlan {
  nowMs: number
  scanned: number
  /** Messages that are not yet due (or kept forever). */
  retained: number
  due: DueItem[]
  kept: KeptItem[]
  dueBytes: number
}

/** What audit entries are made of before they are chained. */
export interface AuditEvent {
  /** Who: `technician` (control socket), `NAME@ADDRESS` (an account over HTTP), `system` (scheduled job, boot). */
  actor: string
  /** Dotted name, e.g. `policy.add`, `hold.release`, `purge.batch`, `config.changed`, `login.failed`. */
  action: string
  details: Record<string, unknown>
}

/** One entry of the hash-chained audit log. */
export interface AuditEntry extends AuditEvent {
  seq: number
  atMs: number
  /** `hash` of the entry before (64 zeros for the first). */
  prevHash: string
  /** SHA-256 (hex) of canonicalJson({seq, atMs, actor, action, details, prevHash}). */
  hash: string
  /** HMAC-SHA-256 (hex) of `hash` under the appliance's audit key; absent without a key. */
  mac?: string
}

/** Result of verifying the audit chain. */
export interface AuditVerifyReport {
  ok: boolean
  entries: number
  lastSeq: number
  headSeq: number | null
  /** Whether entries carried MACs that were checked against the key. */
  macChecked: boolean
  /** First problems found (at most auditProblemsMax), in log order. */
  problems: { seq: number | null; code: string; message: string }[]
}

/** Settings exchanged with mirror peers to report differences (describePolicySettings). */
export interface PolicySettingsDescription {
  fingerprint: string
  policies: { name: string; retentionDays: number | null; criteria: PolicyCriteria }[]
  holds: { name: string; active: boolean }[]
}
