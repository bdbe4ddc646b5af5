import { join } from 'node:path'
import { MailkeepError } from '../common/errors.js'
import { readTextIfPresent, writeFileDurable } from '../common/durable-file.js'

/**
 * Saved searches, per account (local, directory or token name): a label and a query each,
 * kept in `<dataDir>/saved-searches.json` (0600: queries can name people), rewritten whole
 * and durably on each change. Running one is an ordinary search, within the account's scope.
 */

export const savedSearchesFile = 'saved-searches.json'
/** Most saved searches of one account. */
export const savedPerAccountMax = 100
/** Longest label, in characters. */
export const savedLabelCharsMax = 100
/** Longest query, in characters (the query language's own limit). */
export const savedQueryCharsMax = 1_024

export interface SavedSearch {
  label: string
  query: string
  savedAtMs: number
}

export class SavedSearchError extends MailkeepError {
  constructor(code: 'INVALID' | 'TOO_MANY' | 'NOT_FOUND', message: string) {
    super(code, message)
    this.name = 'SavedSearchError'
  }
}

export function createSavedSearches(deps: { clock: { now(): number } }, options: { dataDir: string }) {
  const path = join(options.dataDir, savedSearchesFile)
  let byAccount = new Map<string, SavedSearch[]>()
  let loaded = false

  async function load(): Promise<void> {
    if (loaded) return
    const text = await readTextIfPresent(path)
    if (text !== undefined) {
      const parsed = JSON.parse(text) as { version: number; accounts: Record<string, SavedSearch[]> }
      if (parsed.version !== 1 || typeof parsed.accounts !== 'object') throw new SavedSearchError('INVALID', `${path}: not a saved-searches file of version 1`)
      byAccount = new Map(Object.entries(parsed.accounts))
    }
    loaded = true
  }

  async function save(next: Map<string, SavedSearch[]>): Promise<void> {
    await writeFileDurable(path, JSON.stringify({ version: 1, accounts: Object.fromEntries(next) }, null, 1) + '\n', 0o600)
    byAccount = next
  }

  return {
    async list(account: string): Promise<SavedSearch[]> {
      await load()
      return [...(byAccount.get(account) ?? [])]
    },
    /** @throws SavedSearchError INVALID, TOO_MANY */
    async add(account: string, label: string, query: string): Promise<void> {
      await load()
      const cleanLabel = label.trim()
      if (!cleanLabel || cleanLabel.length > savedLabelCharsMax) throw new SavedSearchError('INVALID', `a saved search needs a name of 1–${savedLabelCharsMax} characters`)
      if (!query.trim() || query.length > savedQueryCharsMax) throw new SavedSearchError('INVALID', `only a query of 1–${savedQueryCharsMax} characters can be saved`)
      const mine = byAccount.get(account) ?? []
      if (mine.length >= savedPerAccountMax) throw new SavedSearchError('TOO_MANY', `at most ${savedPerAccountMax} saved searches per account: delete one first`)
      const next = new Map(byAccount)
      next.set(account, [...mine.filter((saved) => saved.label !== cleanLabel), { label: cleanLabel, query, savedAtMs: deps.clock.now() }])
      await save(next)
    },
    /** @throws SavedSearchError NOT_FOUND */
    async remove(account: string, label: string): Promise<void> {
      await load()
      const mine = byAccount.get(account) ?? []
      if (!mine.some((saved) => saved.label === label)) throw new SavedSearchError('NOT_FOUND', `no saved search named ${JSON.stringify(label.slice(0, 100))}`)
      const next = new Map(byAccount)
      next.set(
        account,
        mine.filter((saved) => saved.label !== label),
      )
      await save(next)
    },
  }
}

export type SavedSearches = ReturnType<typeof createSavedSearches>
