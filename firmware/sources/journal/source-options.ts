import { isAbsolute } from 'node:path'
import type { Clock, Random } from '../../common/clock.js'
import type { Logger } from '../../common/logger.js'
import type { IngestPipeline } from '../types.js'
import { JournalError } from './errors.js'
import {
  journalCommandTimeoutMsDefault,
  journalConnectTimeoutMsDefault,
  journalFirstPullDelayMsMaxDefault,
  journalMessageBytesMaxDefault,
  journalRetryDelayMsMaxDefault,
  journalStopTimeoutMsDefault,
  type JournalSourceOptions,
  type ResolvedJournalOptions,
} from './types.js'

/** What createJournalSource needs from the rest of the firmware. */
export interface JournalSourceDeps {
  logger: Logger
  clock: Clock
  pipeline: IngestPipeline
  /** Jitter of retry and first-pull delays; seeded from the OS when absent. */
  random?: Random
  /**
   * Source takeover: this source belongs to the mirror peer `peer` and is pulled here only
   * while `shouldPull()` says so (the peer has been unreachable long enough). Asked before each
   * scheduled pass; otherwise the source waits (state `standby`) and asks again after
   * `intervalMs`. A pass in flight when the peer returns finishes; dedup absorbs the overlap.
   * A manual `pullOnce()` is the technician's call and runs regardless.
   */
  takeover?: { peer: string; shouldPull: () => boolean }
  /**
   * Why the archive is read-only (its data volume is full), or null while it takes mail.
   * Asked before each scheduled pass: while read-only the source fetches and deletes nothing
   * (state `read-only`) and asks again after `intervalMs`, since every message would only be
   * refused. A manual `pullOnce()` runs regardless (the archive refuses, nothing is deleted).
   */
  archiveReadOnly?: () => string | null
}

function defaultPort(protocol: 'imap' | 'pop3', tls: 'implicit' | 'starttls' | 'none'): number {
  if (protocol === 'imap') return tls === 'implicit' ? 993 : 143
  return tls === 'implicit' ? 995 : 110
}

/** Applies defaults. Pure: validation happens in `validateJournalOptions`, called by start() and pullOnce(). */
export function resolveJournalOptions(options: JournalSourceOptions): ResolvedJournalOptions {
  return {
    ...options,
    port: options.port ?? defaultPort(options.protocol, options.tls),
    messageBytesMax: options.messageBytesMax ?? journalMessageBytesMaxDefault,
    connectTimeoutMs: options.connectTimeoutMs ?? journalConnectTimeoutMsDefault,
    commandTimeoutMs: options.commandTimeoutMs ?? journalCommandTimeoutMsDefault,
    stopTimeoutMs: options.stopTimeoutMs ?? journalStopTimeoutMsDefault,
    retryDelayMsMax: options.retryDelayMsMax ?? journalRetryDelayMsMaxDefault,
    firstPullDelayMsMax: options.firstPullDelayMsMax ?? journalFirstPullDelayMsMaxDefault,
  }
}

/**
 * Checks resolved options (the config schema checks most of them already; the composition
 * root may build options by other means). Returns every problem, empty when valid.
 */
export function validateJournalOptions(options: ResolvedJournalOptions): string[] {
  const problems: string[] = []
  const positiveInteger = (value: number, name: string, minimum = 1): void => {
    if (!Number.isInteger(value) || value < minimum) problems.push(`${name}: must be an integer ≥ ${minimum} (got ${value})`)
  }
  if (!/^[a-z0-9][a-z0-9-]{0,63}$/.test(options.name)) problems.push(`name: must match ^[a-z0-9][a-z0-9-]{0,63}$ (got ${JSON.stringify(options.name)})`)
  if (options.protocol !== 'imap' && options.protocol !== 'pop3') problems.push(`protocol: must be imap or pop3 (got ${JSON.stringify(options.protocol)})`)
  if (!['implicit', 'starttls', 'none'].includes(options.tls)) problems.push(`tls: must be implicit, starttls or none (got ${JSON.stringify(options.tls)})`)
  if (!['delete', 'flag'].includes(options.afterArchive)) problems.push(`afterArchive: must be delete or flag (got ${JSON.stringify(options.afterArchive)})`)
  if (!options.host || /[\s/]/.test(options.host)) problems.push(`host: must be a host name or address (got ${JSON.stringify(options.host)})`)
  if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) problems.push(`port: must be 1–65535 (got ${options.port})`)
  // Line breaks in credentials would smuggle extra protocol commands.
  if (!options.user || /[\r\n\0]/.test(options.user)) problems.push('user: must be non-empty without line breaks')
  if (!options.password || /[\r\n\0]/.test(options.password)) problems.push('password: must be non-empty without line breaks (value not shown)')
  if (options.protocol === 'imap' && (!options.mailbox || /[\r\n\0]/.test(options.mailbox)))
    problems.push(`mailbox: must be non-empty without line breaks (got ${JSON.stringify(options.mailbox)})`)
  positiveInteger(options.intervalMs, 'intervalMs', 1000)
  positiveInteger(options.batchMessagesMax, 'batchMessagesMax')
  positiveInteger(options.messageBytesMax, 'messageBytesMax')
  positiveInteger(options.connectTimeoutMs, 'connectTimeoutMs')
  positiveInteger(options.commandTimeoutMs, 'commandTimeoutMs')
  positiveInteger(options.stopTimeoutMs, 'stopTimeoutMs')
  positiveInteger(options.retryDelayMsMax, 'retryDelayMsMax')
  positiveInteger(options.firstPullDelayMsMax, 'firstPullDelayMsMax', 0)
  if (!options.stateDir || !isAbsolute(options.stateDir)) problems.push(`stateDir: must be an absolute path (got ${JSON.stringify(options.stateDir)})`)
  return problems
}

/**
 * Throws when `validateJournalOptions` finds problems.
 *
 * @throws JournalError INVALID_OPTIONS, every problem listed
 */
export function assertValidJournalOptions(options: ResolvedJournalOptions): void {
  const problems = validateJournalOptions(options)
  if (problems.length > 0) {
    throw new JournalError('INVALID_OPTIONS', `journal source ${JSON.stringify(options.name)} is misconfigured: ${problems.join('; ')}`, { fields: { problems } })
  }
}
