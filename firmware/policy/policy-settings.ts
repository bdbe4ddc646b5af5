import type { Database, RootDatabase } from 'lmdb'
import type { Clock } from '../common/clock.js'
import type { AuditLog } from './audit-log.js'
import { PolicyError } from './errors.js'
import type { ExclusiveLock } from './exclusive.js'
import { validateHold, validatePolicy } from './rules.js'
import type { Hold, Policy } from './types.js'

/** Named database of policies and holds in the archive's environment. */
export const policyDatabaseName = 'policy/settings'

/** What the settings need: a clock for the records' times, the audit log and the lock shared with the purge. */
export interface PolicySettingsDeps {
  clock: Clock
  audit: AuditLog
  lock: ExclusiveLock
}

function byName<T extends { name: string }>(records: Iterable<T>): T[] {
  return [...records].sort((a, b) => (a.name < b.name ? -1 : 1))
}

/**
 * The retention policies and litigation holds: kept in their own named database of the
 * archive's environment, mirrored in memory for planning. Every change is written in the
 * same transaction as its audit entry, under the lock shared with the purge batches.
 */
export class PolicySettings {
  readonly #deps: PolicySettingsDeps
  readonly #policies = new Map<string, Policy>()
  readonly #holds = new Map<string, Hold>()
  #root: RootDatabase | undefined
  #settings: Database<unknown, string> | undefined

  constructor(deps: PolicySettingsDeps) {
    this.#deps = deps
  }

  /** Opens the settings database on the archive's root. */
  open(root: RootDatabase): void {
    this.#root = root
    this.#settings = root.openDB<unknown, string>(policyDatabaseName, {})
  }

  /** The archive's root and the settings database. @throws PolicyError UNAVAILABLE before open() */
  databases(): { root: RootDatabase; settings: Database<unknown, string> } {
    if (!this.#root || !this.#settings) throw new PolicyError('UNAVAILABLE', 'policies are not available until the archive is open')
    return { root: this.#root, settings: this.#settings }
  }

  /** Reads every policy and hold from the database. @throws PolicyError UNAVAILABLE */
  load(): void {
    const { settings } = this.databases()
    this.#policies.clear()
    this.#holds.clear()
    for (const { key, value } of settings.getRange({})) {
      if (key.startsWith('policy:')) this.#policies.set(key.slice(7), value as Policy)
      else if (key.startsWith('hold:')) this.#holds.set(key.slice(5), value as Hold)
    }
  }

  /** Policies by name. */
  policies(): Policy[] {
    return byName(this.#policies.values())
  }

  /** Holds by name, released ones included. */
  holds(): Hold[] {
    return byName(this.#holds.values())
  }

  get policyCount(): number {
    return this.#policies.size
  }

  get activeHoldCount(): number {
    return [...this.#holds.values()].filter((hold) => hold.active).length
  }

  /** Creates or replaces a policy; audited `policy.set` with the previous version. @throws PolicyError INVALID, UNAVAILABLE */
  setPolicy(input: unknown, actor: string): Promise<Policy> {
    const policy = validatePolicy(input, { nowMs: this.#deps.clock.now(), actor })
    return this.#change((database) => {
      const previous = this.#policies.get(policy.name) ?? null
      database.putSync(`policy:${policy.name}`, policy)
      this.#deps.audit.appendInTransaction({ actor, action: 'policy.set', details: { policy, previous } })
      return policy
    }).then((stored) => (this.#policies.set(stored.name, stored), stored))
  }

  /** Removes a policy; audited `policy.remove`. @throws PolicyError NOT_FOUND, UNAVAILABLE */
  removePolicy(name: string, actor: string): Promise<Policy> {
    return this.#change((database) => {
      const previous = this.#policies.get(name)
      if (!previous) throw new PolicyError('NOT_FOUND', `no policy named ${JSON.stringify(name)}`, { fields: { name } })
      database.removeSync(`policy:${name}`)
      this.#deps.audit.appendInTransaction({ actor, action: 'policy.remove', details: { policy: previous } })
      return previous
    }).then((removed) => (this.#policies.delete(name), removed))
  }

  /** Places a hold; audited `hold.place`. Names are never reused. @throws PolicyError INVALID, EXISTS, UNAVAILABLE */
  placeHold(input: unknown, actor: string): Promise<Hold> {
    const hold = validateHold(input, { nowMs: this.#deps.clock.now(), actor })
    return this.#change((database) => {
      const existing = this.#holds.get(hold.name)
      if (existing) throw new PolicyError('EXISTS', `a hold named ${hold.name} exists${existing.active ? '' : ' (released; hold names are not reused)'}`, { fields: { name: hold.name } })
      database.putSync(`hold:${hold.name}`, hold)
      this.#deps.audit.appendInTransaction({ actor, action: 'hold.place', details: { hold } })
      return hold
    }).then((stored) => (this.#holds.set(stored.name, stored), stored))
  }

  /** Releases an active hold, keeping its record; audited `hold.release`. @throws PolicyError NOT_FOUND (also when released), UNAVAILABLE */
  releaseHold(name: string, actor: string): Promise<Hold> {
    return this.#change((database) => {
      const existing = this.#holds.get(name)
      if (!existing?.active) throw new PolicyError('NOT_FOUND', `no active hold named ${JSON.stringify(name)}`, { fields: { name } })
      const released: Hold = { ...existing, active: false, releasedAtMs: this.#deps.clock.now(), releasedBy: actor }
      database.putSync(`hold:${name}`, released)
      this.#deps.audit.appendInTransaction({ actor, action: 'hold.release', details: { name, reason: existing.reason, placedBy: existing.placedBy } })
      return released
    }).then((stored) => (this.#holds.set(stored.name, stored), stored))
  }

  /** Runs `work` in one transaction of the archive's environment, under the lock. */
  #change<T>(work: (database: Database<unknown, string>) => T): Promise<T> {
    return this.#deps.lock.run(async () => {
      const { root, settings } = this.databases()
      return (await root.childTransaction(() => work(settings))) as T
    })
  }
}
