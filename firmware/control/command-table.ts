import { resolve as resolvePath } from 'node:path'
import { renderVerify } from './render-verify.js'

/**
 * The one command table shared by the one-shot CLI (`mailkeep show status`), the serial
 * console (`mailkeep console`) and the control socket server. It is pure data plus pure
 * renderers, so the client can complete, validate and render without the service; the
 * service registers a handler for each name.
 */

export interface ArgumentSpec {
  name: string
  /** `path`: a file the service reads; clients resolve it against their working directory (resolvePathArguments). */
  kind: 'integer' | 'string' | 'choice' | 'path'
  choices?: readonly string[]
  optional?: boolean
  /** The last argument may take every remaining word (a search query). */
  rest?: boolean
  /** Among the rest words: flags whose value is a file path (resolved like a `path` argument). */
  pathFlags?: readonly string[]
}

export interface CommandSpec {
  /** Words that name the command, e.g. `show status`. */
  name: string
  summary: string
  args: readonly ArgumentSpec[]
  /** Changes state: needs the technician password. */
  technician: boolean
  /**
   * The command takes a secret (a new account's password), asked for by the client — hidden
   * on a terminal, or the line after the technician password with `--password-stdin` — and
   * sent apart from the arguments, so it is never logged. The text names it.
   */
  secret?: string
  /** Human-readable rendering of the handler's JSON result. */
  render(result: unknown): string
}

type Row = Record<string, unknown>

function table(rows: Row[], columns: string[]): string {
  if (rows.length === 0) return '(none)'
  const cells = rows.map((row) => columns.map((column) => formatCell(row[column])))
  const widths = columns.map((column, index) => Math.max(column.length, ...cells.map((line) => line[index]!.length)))
  const line = (values: string[]) =>
    values
      .map((value, index) => value.padEnd(widths[index]!))
      .join('  ')
      .trimEnd()
  return [line(columns), ...cells.map(line)].join('\n')
}

function formatCell(value: unknown): string {
  if (value === null || value === undefined) return '-'
  if (Array.isArray(value)) return value.map(formatCell).join(',')
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value)
}

function keyValues(object: Row): string {
  const width = Math.max(...Object.keys(object).map((key) => key.length))
  return Object.entries(object)
    .map(([key, value]) => `${key.padEnd(width)}  ${formatCell(value)}`)
    .join('\n')
}

/** Formats bytes as decimal units (disk vendors' convention). */
export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit += 1
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`
}

type CompletenessView = { complete: boolean; peers: { serial: string; queuedMessages: number; queueEstimated: boolean; asOfMs: number }[] }

/** `results may be incomplete: N messages from SERIAL not yet received (as of TIME)`, one line per peer behind. */
export function completenessLines(completeness: CompletenessView | undefined): string[] {
  if (!completeness || completeness.complete) return []
  return completeness.peers
    .filter((peer) => peer.queuedMessages > 0)
    .map(
      (peer) =>
        `results may be incomplete: ${peer.queueEstimated ? 'about ' : ''}${peer.queuedMessages} message(s) from ${peer.serial} not yet received (as of ${new Date(peer.asOfMs).toISOString().replace('T', ' ').slice(0, 19)} UTC)`,
    )
}

const renderStatus = (result: unknown): string => {
  const status = result as Row & { reasons: string[]; services: Row; listeners: Row; completeness?: CompletenessView }
  const { reasons, services, listeners, completeness, ...rest } = status
  const lines = [keyValues(rest), ...completenessLines(completeness)]
  lines.push(`reasons     ${reasons.length ? reasons.join('; ') : '-'}`)
  lines.push(
    'services    ' +
      Object.entries(services)
        .map(([name, state]) => `${name}=${formatCell(state)}`)
        .join(' '),
  )
  lines.push(
    'listeners   ' +
      Object.entries(listeners)
        .map(([name, address]) => `${name}=${formatCell(address)}`)
        .join(' '),
  )
  return lines.join('\n')
}

const renderDisks = (result: unknown): string =>
  table(
    (result as Row[]).map((disk) => ({ ...disk, size: formatBytes(disk.sizeBytes as number) })),
    ['id', 'device', 'size', 'health', 'smart', 'vendorModel'],
  )

const renderRaid = (result: unknown): string => {
  const raid = result as { present: boolean; arrays: Row[] }
  if (!raid.present) return 'no software RAID on this system'
  return raid.arrays
    .map((array) => {
      const members = (array.members as Row[]).map((member) => `${member.device}(${member.state})`).join(' ')
      const progress = array.rebuildPercent === null ? '' : ` rebuild ${array.rebuildPercent}%`
      return `${array.name} ${array.level} ${array.state}${progress} members ${(array.members as Row[]).length}/${array.memberCountExpected}: ${members}`
    })
    .join('\n')
}

const renderNics = (result: unknown): string => table(result as Row[], ['name', 'mac', 'link', 'speedMbps', 'addresses'])
const renderMessage = (result: unknown): string => {
  if (typeof result === 'string') return result
  const message = (result as { message?: unknown }).message
  return typeof message === 'string' ? message : JSON.stringify(result, null, 2)
}
const renderObject = (result: unknown): string => keyValues(result as Row)

/** `show tls` / `tls install`: the message, whether HTTPS is on, then the certificate line by line. */
const renderTls = (result: unknown): string => {
  const { message, certificate, ...rest } = result as Row & { message?: string; certificate?: Row }
  return [message, keyValues(rest), certificate ? keyValues(certificate) : 'certificate  (none)'].filter((part) => part !== undefined).join('\n')
}

const renderSearch = (result: unknown): string => {
  const search = result as {
    total: number
    hits: { id: string; dateMs: number; from: string; subject: string; snippet: string }[]
    nextCursor: string | null
    completeness?: CompletenessView
  }
  const lines = search.hits.map((hit) => {
    const snippet = hit.snippet
      .replace(/<\/?mark>/g, '*')
      .replace(/&lt;/g, '<')
      .replace(/&gt;/g, '>')
      .replace(/&quot;/g, '"')
      .replace(/&#39;/g, "'")
      .replace(/&amp;/g, '&')
    return `${new Date(hit.dateMs).toISOString().slice(0, 16).replace('T', ' ')}  ${hit.from.slice(0, 30).padEnd(30)}  ${hit.subject.slice(0, 60)}\n    ${hit.id}\n    ${snippet}`
  })
  lines.push(`${search.total} message(s)${search.nextCursor ? `; more with --cursor ${search.nextCursor}` : ''}`)
  lines.push(...completenessLines(search.completeness))
  return lines.join('\n')
}

/** A mirror identity in one line, as the technician compares it: serial, full store id, full certificate fingerprint. */
const identityLine = (identity: { serial?: unknown; storeId?: unknown; fingerprint?: unknown }): string =>
  `serial ${String(identity.serial ?? 'none')}  store ${String(identity.storeId ?? 'none')}  certificate sha256 ${String(identity.fingerprint ?? 'none')}`

/** `agree 2026-12-05T06:00:00.000Z`, `unexplained 3 …`: a peer's last verify in one cell. */
const verifyCell = (summary: Row | null | undefined): string => {
  if (!summary) return ''
  const when = new Date(Number(summary.atMs)).toISOString()
  const unexplained = (summary.counts as Row | null)?.unexplained
  return summary.outcome === 'unexplained' ? `unexplained ${String(unexplained)} ${when}` : `${String(summary.outcome)} ${when}`
}

/** A peer's backlog lanes, requeued and refused copies in one line; null when there is nothing to say. */
const copyLanesLine = (peer: Row): string | null => {
  const parts: string[] = []
  if (typeof peer.backfillThroughSequence === 'number') {
    parts.push(`backlog copied beside new mail: change log (${String(peer.cursor)}, ${peer.backfillThroughSequence}] to go, new mail acknowledged through ${String(peer.liveCursor)}`)
  }
  if (typeof peer.requeuedMessages === 'number' && peer.requeuedMessages > 0) parts.push(`${peer.requeuedMessages} message(s) requeued`)
  if (typeof peer.rejectedCopies === 'number' && peer.rejectedCopies > 0) parts.push(`${peer.rejectedCopies} copy(ies) refused by the peer`)
  return parts.length > 0 ? `${String(peer.host)}:${String(peer.port)}: ${parts.join('; ')}` : null
}

const renderMirror = (result: unknown): string => {
  const mirror = result as { enabled?: boolean; reason?: string | null; warning?: string | null; peers: Row[]; pendingJoins?: Row[] }
  const lines: string[] = []
  if (mirror.enabled === false) lines.push(`mirroring off: ${mirror.reason}`)
  if (mirror.warning) lines.push(`warning: ${mirror.warning}`)
  const rows = mirror.peers.map((peer) => ({
    ...peer,
    policyMismatch: Array.isArray(peer.policyMismatch) && peer.policyMismatch.length > 0 ? peer.policyMismatch.join('; ') : '',
    lastVerify: verifyCell(peer.lastVerify as Row | null | undefined),
  }))
  lines.push(table(rows, ['host', 'port', 'serial', 'state', 'reasonCode', 'queueMessages', 'queueBytes', 'lastSuccessAtMs', 'lastError', 'policyMismatch', 'lastVerify']))
  for (const peer of mirror.peers) {
    const lanes = copyLanesLine(peer)
    if (lanes) lines.push(lanes)
  }
  for (const peer of mirror.peers) {
    const pending = peer.pendingIdentity as Row | null | undefined
    if (!pending) continue
    lines.push(`IDENTITY CHANGED at ${String(peer.host)}:${String(peer.port)}: nothing is copied until accepted (mirror accept ${String(peer.host)}:${String(peer.port)})`)
    lines.push(`  pinned:    ${identityLine(peer)}`)
    lines.push(`  presented: ${identityLine(pending)} from ${String(pending.address)}`)
  }
  for (const join of mirror.pendingJoins ?? []) {
    lines.push(`pending join from ${String(join.address)}:${String(join.listenPort)} (model ${String(join.model)}, firmware ${String(join.firmwareVersion)}): ${identityLine(join)}`)
    lines.push(
      `  first seen ${new Date(Number(join.firstSeenAtMs)).toISOString()}, last seen ${new Date(Number(join.lastSeenAtMs)).toISOString()}; accept with: mirror accept ${String(join.address)}:${String(join.listenPort)}`,
    )
  }
  return lines.join('\n')
}

const renderAccept = (result: unknown): string => {
  const accepted = result as { kind: 'identity' | 'join'; previous: Row; accepted: Row; backfill: boolean; peer: Row }
  const where = `${String(accepted.peer.host)}:${String(accepted.peer.port)}`
  return [
    accepted.kind === 'join' ? `accepted the join of ${where}: it is a peer now` : `accepted the new identity of ${where}`,
    `  before: ${identityLine(accepted.previous)}`,
    `  now:    ${identityLine(accepted.accepted)}`,
    accepted.backfill ? '  its archive is new to this system: everything held here is copied to it (backfill)' : '  same archive (store id): copying resumes where it stopped',
  ].join('\n')
}

const renderImport = (result: unknown): string => {
  const jobs = (Array.isArray(result) ? result : [result]) as Row[]
  return table(jobs, ['id', 'state', 'format', 'processed', 'imported', 'duplicates', 'flagged', 'failed', 'path'])
}

const renderPolicies = (result: unknown): string => {
  const list = result as { fingerprint: string; policies: Row[] }
  const rows = list.policies.map((policy) => ({ ...policy, retentionDays: policy.retentionDays ?? 'forever', criteria: JSON.stringify(policy.criteria) }))
  return `${table(rows, ['name', 'retentionDays', 'criteria', 'createdBy'])}\nfingerprint ${list.fingerprint}`
}

const renderPreview = (result: unknown): string => {
  const preview = result as { scanned: number; retained: number; dueMessages: number; dueBytes: number; heldMessages: number; mirrorPendingMessages: number; due: Row[]; truncated: boolean }
  const lines = [
    `scanned ${preview.scanned}, retained ${preview.retained}, due ${preview.dueMessages} (${formatBytes(preview.dueBytes)}), held ${preview.heldMessages}, waiting for mirror peers ${preview.mirrorPendingMessages}`,
    table(preview.due, ['id', 'policy', 'retentionDays', 'sizeBytes']),
  ]
  if (preview.truncated) lines.push('(lists cut; use --json or the API for the figures)')
  return lines.join('\n')
}

const renderPurge = (result: unknown): string => {
  const run = result as { batches: number; purged: number; purgedBytes: number; keptAtExecution: number; failed: Row[] }
  const failed = run.failed.length > 0 ? `; ${run.failed.length} failed: ${run.failed.map((item) => `${item.id} ${item.code}`).join(', ')}` : ''
  return `purged ${run.purged} message(s), ${formatBytes(run.purgedBytes)}, in ${run.batches} audited batch(es); ${run.keptAtExecution} kept when re-checked${failed}`
}

const renderHolds = (result: unknown): string => table(result as Row[], ['name', 'active', 'query', 'custodians', 'reason', 'placedBy'])

const renderAuditVerify = (result: unknown): string => {
  const report = result as { ok: boolean; entries: number; problems: { seq: number | null; code: string; message: string }[] }
  if (report.ok) return `audit log ok: ${report.entries} entries, chain and head intact`
  return [`audit log DAMAGED (${report.entries} entries):`, ...report.problems.map((problem) => `  ${problem.code} at ${problem.seq ?? '-'}: ${problem.message}`)].join('\n')
}

const renderAudit = (result: unknown): string =>
  (result as Row[])
    .map((entry) => `${entry.seq}  ${new Date(entry.atMs as number).toISOString()}  ${entry.actor}  ${entry.action}  ${JSON.stringify(entry.details).slice(0, 200)}`)
    .join('\n') || '(none)'

export const commandTable: readonly CommandSpec[] = [
  { name: 'show version', summary: 'firmware version, model and serial', args: [], technician: false, render: renderObject },
  { name: 'show status', summary: 'system state, degraded reasons, services, listeners', args: [], technician: false, render: renderStatus },
  { name: 'show disks', summary: 'disks with size, health and SMART status', args: [], technician: false, render: renderDisks },
  { name: 'show raid', summary: 'RAID arrays, state, members and rebuild progress', args: [], technician: false, render: renderRaid },
  { name: 'show nics', summary: 'network interfaces, link, speed and addresses', args: [], technician: false, render: renderNics },
  { name: 'show config', summary: 'effective configuration (secrets redacted)', args: [], technician: false, render: (result) => JSON.stringify(result, null, 2) },
  { name: 'show store', summary: 'archive figures: messages, deliveries, bytes, last sequence', args: [], technician: false, render: renderObject },
  {
    name: 'user list',
    summary: 'local accounts: name, role, addresses, disabled',
    args: [],
    technician: false,
    render: (result) => table(result as Row[], ['name', 'role', 'disabled', 'addresses']),
  },
  {
    name: 'user add',
    summary: 'add a local account: NAME --role admin|auditor|user [--address ADDR]... (asks for its password)',
    args: [{ name: 'name-and-options', kind: 'string', rest: true }],
    technician: true,
    secret: 'new account password',
    render: (result) => `added ${keyValues(result as Row)}`,
  },
  { name: 'user remove', summary: 'remove a local account', args: [{ name: 'name', kind: 'string' }], technician: true, render: (result) => `removed ${(result as Row).name}` },
  {
    name: 'user passwd',
    summary: "set a local account's password (asks for it)",
    args: [{ name: 'name', kind: 'string' }],
    technician: true,
    secret: 'new account password',
    render: (result) => `password set for ${(result as Row).name}`,
  },
  {
    name: 'user disable',
    summary: 'disable a local account (it cannot sign in)',
    args: [{ name: 'name', kind: 'string' }],
    technician: true,
    render: (result) => `disabled ${(result as Row).name}`,
  },
  { name: 'user enable', summary: 'enable a disabled local account', args: [{ name: 'name', kind: 'string' }], technician: true, render: (result) => `enabled ${(result as Row).name}` },
  {
    name: 'token list',
    summary: 'API tokens: name, role, created, last used',
    args: [],
    technician: false,
    render: (result) => table(result as Row[], ['name', 'role', 'createdAt', 'lastUsedAt', 'addresses']),
  },
  {
    name: 'token create',
    summary: 'create an API token: --name NAME --role admin|auditor|user [--address ADDR]... (shown once)',
    args: [{ name: 'options', kind: 'string', rest: true }],
    technician: true,
    render: (result) => `token ${(result as Row).name} (${(result as Row).role}); shown this once, keep it secret:\n${(result as Row).token}`,
  },
  {
    name: 'token revoke',
    summary: 'revoke an API token (it stops working at once)',
    args: [{ name: 'name', kind: 'string' }],
    technician: true,
    render: (result) => `revoked ${(result as Row).name}`,
  },
  {
    name: 'export',
    summary: 'export QUERY… --out FILE: a zip of the messages with a signed manifest, written by the service',
    args: [{ name: 'query-and-out', kind: 'string', rest: true, pathFlags: ['--out'] }],
    technician: true,
    render: renderMessage,
  },
  { name: 'show tls', summary: 'the HTTPS certificate: source, subject, names, validity, fingerprint', args: [], technician: false, render: renderTls },
  {
    name: 'tls install',
    summary: 'install a certificate chain (PEM, leaf first) and its key for HTTPS; checked first, served at once',
    args: [
      { name: 'cert', kind: 'path' },
      { name: 'key', kind: 'path' },
    ],
    technician: true,
    render: renderTls,
  },
  { name: 'show mirror', summary: 'mirror peers: state, reason code, queue depth, last success and error', args: [], technician: false, render: renderMirror },
  { name: 'mirror add', summary: 'add a mirror peer (backfills it with the whole archive)', args: [{ name: 'host:port', kind: 'string' }], technician: true, render: renderMessage },
  { name: 'mirror remove', summary: 'remove a mirror peer', args: [{ name: 'host:port', kind: 'string' }], technician: true, render: renderMessage },
  { name: 'mirror pause', summary: 'pause copying to a peer (its queue keeps growing)', args: [{ name: 'host:port', kind: 'string' }], technician: true, render: renderMessage },
  { name: 'mirror resume', summary: 'resume copying to a peer', args: [{ name: 'host:port', kind: 'string' }], technician: true, render: renderMessage },
  {
    name: 'mirror accept',
    summary: "accept a peer's changed identity (a new store id is backfilled) or a pending join",
    args: [{ name: 'host:port', kind: 'string' }],
    technician: true,
    render: renderAccept,
  },
  {
    name: 'mirror verify',
    summary: 'prove agreement with a peer: compare both archives, classify differences, re-queue missing copies (signed report in the audit log)',
    args: [{ name: 'host:port', kind: 'string' }],
    technician: false,
    render: renderVerify,
  },
  { name: 'show journal', summary: 'journal sources: state, last pull, held messages', args: [], technician: false, render: (result) => JSON.stringify(result, null, 2) },
  { name: 'search', summary: 'search the archive (query language: see README)', args: [{ name: 'query', kind: 'string', rest: true }], technician: false, render: renderSearch },
  { name: 'import start', summary: 'import an mbox, maildir, .eml file or folder of .eml (absolute path)', args: [{ name: 'path', kind: 'string' }], technician: true, render: renderImport },
  { name: 'import status', summary: 'progress of import jobs', args: [{ name: 'job', kind: 'string', optional: true }], technician: false, render: renderImport },
  { name: 'import cancel', summary: 'cancel an import job (it resumes when started again)', args: [{ name: 'job', kind: 'string' }], technician: true, render: renderImport },
  { name: 'journal pull', summary: 'pull a journal source now', args: [{ name: 'source', kind: 'string' }], technician: false, render: (result) => JSON.stringify(result, null, 2) },
  { name: 'index verify', summary: 'check the search index against the archive', args: [], technician: false, render: renderObject },
  { name: 'index rebuild', summary: 'rebuild the search index from the archive (archive untouched)', args: [], technician: true, render: renderObject },
  { name: 'policy list', summary: 'retention policies and the settings fingerprint', args: [], technician: false, render: renderPolicies },
  {
    name: 'policy add',
    summary: 'set a retention policy: NAME --days N|forever [--sender|--recipient ADDR|DOMAIN] [--source S] [--query Q]',
    args: [{ name: 'name-and-options', kind: 'string', rest: true }],
    technician: true,
    render: renderObject,
  },
  { name: 'policy remove', summary: 'remove a retention policy', args: [{ name: 'name', kind: 'string' }], technician: true, render: renderObject },
  { name: 'policy preview', summary: 'what a purge would remove now, and what holds and mirror peers keep', args: [], technician: false, render: renderPreview },
  { name: 'hold list', summary: 'litigation holds (released ones included)', args: [], technician: false, render: renderHolds },
  {
    name: 'hold add',
    summary: 'place a hold: NAME --reason TEXT [--by WHO] [--query Q] [--custodian ADDR] [--from DATE] [--until DATE]',
    args: [{ name: 'name-and-options', kind: 'string', rest: true }],
    technician: true,
    render: renderObject,
  },
  { name: 'hold release', summary: 'release a hold (its mail is subject to retention again)', args: [{ name: 'name', kind: 'string' }], technician: true, render: renderObject },
  { name: 'purge run', summary: 'run the retention purge now (in audited batches)', args: [], technician: true, render: renderPurge },
  { name: 'audit verify', summary: "check the audit log's hash chain", args: [], technician: false, render: renderAuditVerify },
  {
    name: 'audit show',
    summary: 'audit entries: [--limit N] [--after SEQ] [--actor NAME]',
    args: [{ name: 'options', kind: 'string', optional: true, rest: true }],
    technician: false,
    render: renderAudit,
  },
  { name: 'auth', summary: 'unlock technician commands on this connection', args: [], technician: false, render: renderMessage },
  { name: 'sim fail-disk', summary: 'simulator: fail a disk', args: [{ name: 'index', kind: 'integer' }], technician: true, render: renderMessage },
  { name: 'sim replace-disk', summary: 'simulator: replace a disk (starts a rebuild)', args: [{ name: 'index', kind: 'integer' }], technician: true, render: renderMessage },
  {
    name: 'sim link',
    summary: 'simulator: set a NIC link up or down',
    args: [
      { name: 'nic', kind: 'string' },
      { name: 'state', kind: 'choice', choices: ['up', 'down'] },
    ],
    technician: true,
    render: renderMessage,
  },
  { name: 'sim remove-nic', summary: 'simulator: remove a NIC', args: [{ name: 'nic', kind: 'string' }], technician: true, render: renderMessage },
  {
    name: 'sim volume-free',
    summary: 'simulator: report this many free bytes on the data volume (or "real")',
    args: [{ name: 'bytes', kind: 'string' }],
    technician: true,
    render: renderMessage,
  },
  { name: 'sim tick', summary: 'simulator: advance simulated time one step', args: [], technician: true, render: renderMessage },
]

/** Finds the command whose name is the longest prefix of `words`; the rest are its arguments. */
export function resolveCommand(words: readonly string[]): { spec: CommandSpec; args: string[] } | undefined {
  let best: { spec: CommandSpec; args: string[] } | undefined
  for (const spec of commandTable) {
    const nameWords = spec.name.split(' ')
    if (nameWords.length > words.length) continue
    if (nameWords.every((word, index) => word === words[index]) && (!best || nameWords.length > best.spec.name.split(' ').length)) {
      best = { spec, args: words.slice(nameWords.length) }
    }
  }
  return best
}

/** Checks arguments against the spec. Returns a usage message, or undefined when they fit. */
export function checkArguments(spec: CommandSpec, args: readonly string[]): string | undefined {
  const required = spec.args.filter((arg) => !arg.optional).length
  const usage = `usage: ${usageOf(spec)}`
  const takesRest = spec.args[spec.args.length - 1]?.rest === true
  if (args.length < required || (args.length > spec.args.length && !takesRest)) return usage
  for (const [index, arg] of spec.args.entries()) {
    const value = args[index]
    if (value === undefined) continue
    if (arg.kind === 'integer' && !/^-?\d+$/.test(value)) return `${arg.name} must be an integer (got ${JSON.stringify(value)}); ${usage}`
    if (arg.kind === 'choice' && !arg.choices!.includes(value)) {
      return `${arg.name} must be one of ${arg.choices!.join('|')} (got ${JSON.stringify(value)}); ${usage}`
    }
  }
  return undefined
}

/** The arguments with each `path` one made absolute against `cwd` (the service only takes absolute paths). */
export function resolvePathArguments(spec: CommandSpec, args: readonly string[], cwd: string): string[] {
  const last = spec.args[spec.args.length - 1]
  const flags = last?.rest ? (last.pathFlags ?? []) : []
  return args.map((value, index) => {
    if (spec.args[index]?.kind === 'path' || (index > 0 && flags.includes(args[index - 1]!))) return resolvePath(cwd, value)
    return value
  })
}

/** `sim link <nic> <up|down>` */
export function usageOf(spec: CommandSpec): string {
  const args = spec.args.map((arg) => {
    const text = arg.kind === 'choice' ? arg.choices!.join('|') : arg.name
    const shown = arg.rest ? `${text}…` : text
    return arg.optional ? `[${shown}]` : `<${shown}>`
  })
  return [spec.name, ...args].join(' ')
}

/**
 * Completions for a partial command line (tab completion and `?`). Returns the candidate
 * next words for the last (possibly empty) word, given the words before it.
 */
export function completeWords(names: readonly string[], line: string): string[] {
  const words = line.split(/\s+/).filter(Boolean)
  const endsWithSpace = /\s$/.test(line) || line.length === 0
  const before = endsWithSpace ? words : words.slice(0, -1)
  const partial = endsWithSpace ? '' : (words[words.length - 1] ?? '')
  const candidates = new Set<string>()
  for (const name of names) {
    const nameWords = name.split(' ')
    if (nameWords.length <= before.length) continue
    if (!before.every((word, index) => nameWords[index] === word)) continue
    const next = nameWords[before.length]!
    if (next.startsWith(partial)) candidates.add(next)
  }
  return [...candidates].sort()
}
