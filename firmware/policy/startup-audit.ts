import type { RootDatabase } from 'lmdb'
import type { ArchiveStore } from '../archive/types.js'
import type { Logger } from '../common/logger.js'
import type { AuditLog } from './audit-log.js'
import { canonicalJson, hmacHex, sha256Hex } from '../common/canonical.js'
import { forEachChangeAfter, purgeCursorKey } from './change-log.js'

/*
 * What start() audits before retention runs: purges an interruption left unaudited, and a
 * change of the effective configuration since the last boot.
 */

/** Key in the audit state database: the digests of the configuration last audited. */
const configStateKey = 'config'

/**
 * Audits purges the change log shows past the last audited point (a crash between a
 * batch's deletions and its audit entry) as one `purge.recovered` entry (policy unknown),
 * and moves the purge cursor to the end of the change log.
 */
export async function recoverUnauditedPurges(deps: { logger: Logger; archive: Pick<ArchiveStore, 'changes' | 'lastSequence'>; audit: AuditLog; root: RootDatabase }): Promise<void> {
  const { archive, audit, root } = deps
  const stateDb = audit.state()
  const cursor = stateDb.get(purgeCursorKey) as number | undefined
  const last = archive.lastSequence()
  if (cursor === undefined) {
    // First start with retention: no purge ever ran (delete is this module's alone).
    await root.childTransaction(() => stateDb.putSync(purgeCursorKey, last))
    return
  }
  const orphans: { id: string; sequence: number; atMs: number }[] = []
  forEachChangeAfter(archive, cursor, (change) => {
    if (change.kind === 'purge') orphans.push({ id: change.id, sequence: change.sequence, atMs: change.atMs })
  })
  await root.childTransaction(() => {
    if (orphans.length > 0) {
      audit.appendInTransaction({
        actor: 'system',
        action: 'purge.recovered',
        details: { reason: 'purged before an interruption, before the batch was audited; policy not recorded', messages: orphans },
      })
    }
    stateDb.putSync(purgeCursorKey, last)
  })
  if (orphans.length > 0) deps.logger.warn('audited purges that an interruption left unaudited', { messages: orphans.length })
}

/** A digest per leaf path of `config` (`smtp.port`), of its canonical JSON; values never leave this function. Pure. */
export function configDigests(config: unknown, digest: (text: string) => string): Record<string, string> {
  const digests: Record<string, string> = {}
  const walk = (value: unknown, path: string): void => {
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [key, inner] of Object.entries(value)) walk(inner, path ? `${path}.${key}` : key)
    } else digests[path] = digest(canonicalJson(value ?? null))
  }
  walk(config, '')
  return digests
}

/** The paths whose digest differs between two digest sets, a path in only one of them included, sorted. Pure. */
export function changedConfigPaths(previous: Record<string, string>, current: Record<string, string>): string[] {
  return [...new Set([...Object.keys(current), ...Object.keys(previous)])].filter((path) => current[path] !== previous[path]).sort()
}

/**
 * Audits a change of the effective configuration since the last boot: `config.initial`
 * the first time, `config.changed` with the changed paths after (paths only, never values).
 * Digests are HMACs under `digestKey` when there is one, else plain SHA-256.
 */
export async function recordConfigChange(deps: { audit: AuditLog; root: RootDatabase; digestKey?: Uint8Array | null }, config: unknown): Promise<void> {
  const { audit, digestKey } = deps
  const digest = (text: string) => (digestKey ? hmacHex(digestKey, text) : sha256Hex(text))
  const digests = configDigests(config, digest)
  const hash = digest(canonicalJson(digests))
  const stateDb = audit.state()
  const previous = stateDb.get(configStateKey) as { hash: string; digests: Record<string, string> } | undefined
  if (previous?.hash === hash) return
  const changed = previous ? changedConfigPaths(previous.digests, digests) : []
  await deps.root.childTransaction(() => {
    audit.appendInTransaction({
      actor: 'system',
      action: previous ? 'config.changed' : 'config.initial',
      details: previous ? { previousHash: previous.hash, hash, changedPaths: changed } : { hash },
    })
    stateDb.putSync(configStateKey, { hash, digests })
  })
}
