import type { ArchiveStore } from '../archive/types.js'
import type { Clock } from '../common/clock.js'
import type { Logger } from '../common/logger.js'
import { forEachChangeAfter } from './change-log.js'
import { factsOf, planPurge, queriesOf, type QueryMatches } from './rules.js'
import type { DueItem, Hold, KeptItem, MessageFacts, Policy, PurgePlan } from './types.js'

/** Items of each list a preview shows (the counts cover all). */
export const previewItemsMax = 1_000
/** Ids read per page while scanning the archive. */
const scanPageIds = 1_000

/** A preview: the plan's figures with the first `previewItemsMax` items of each list. */
export interface PurgePreview {
  nowMs: number
  scanned: number
  retained: number
  dueMessages: number
  dueBytes: number
  duePerPolicy: Record<string, number>
  heldMessages: number
  mirrorPendingMessages: number
  /** Past retention but not in the search index while queries are in use: kept until `index rebuild`. */
  unindexedMessages: number
  due: DueItem[]
  kept: KeptItem[]
  truncated: boolean
}

/** What planning reads: the archive, the search index, the mirror peers' progress and the current rules. */
export interface PlannerDeps {
  logger: Logger
  clock: Clock
  archive: Pick<ArchiveStore, 'listIds' | 'getMeta' | 'changes'>
  /** Ids of the archived messages a search query matches (the search index, all pages). */
  matchQuery: (query: string) => Promise<ReadonlySet<string>> | ReadonlySet<string>
  /** Lowest change-log sequence every mirror peer has acknowledged; null or absent without peers. */
  mirrorLowWatermark?: () => number | null
  policies(): Policy[]
  holds(): Hold[]
}

async function matchesFor(deps: PlannerDeps, queries: string[]): Promise<QueryMatches> {
  const matches = new Map<string, ReadonlySet<string>>()
  for (const query of queries) matches.set(query, await deps.matchQuery(query))
  return matches
}

/** Ids with a change a mirror peer has not acknowledged yet; null when there are no peers. */
function mirrorPending(deps: PlannerDeps): Set<string> | null {
  const watermark = deps.mirrorLowWatermark?.() ?? null
  if (watermark === null) return null
  const ids = new Set<string>()
  forEachChangeAfter(deps.archive, Math.max(0, Math.floor(watermark)), (change) => {
    if (change.kind !== 'purge') ids.add(change.id)
  })
  return ids
}

function factsFor(deps: PlannerDeps, ids: readonly string[]): MessageFacts[] {
  const list: MessageFacts[] = []
  for (const id of ids) {
    let meta
    try {
      meta = deps.archive.getMeta(id)
    } catch (error) {
      // A corrupt record is reported by archive verify and kept: never purged blindly.
      deps.logger.warn('a message record is unreadable; it is kept and not planned', { id, error })
      continue
    }
    if (meta) list.push(factsOf(meta))
  }
  return list
}

/**
 * The purge plan over the given ids, or over the whole archive page by page (yielding to
 * the event loop between pages, so SMTP and the API keep running during a long scan).
 * Messages are planned independently, so the pages' plans add up to the plan of the whole.
 */
export async function planArchivePurge(deps: PlannerDeps, ids: readonly string[] | null): Promise<PurgePlan> {
  const policies = deps.policies()
  const holds = deps.holds()
  const matches = await matchesFor(deps, queriesOf(policies, holds))
  const pending = mirrorPending(deps)
  const nowMs = deps.clock.now()
  const total: PurgePlan = { nowMs, scanned: 0, retained: 0, due: [], kept: [], dueBytes: 0 }
  const add = (page: readonly string[]) => {
    const part = planPurge({ messages: factsFor(deps, page), policies, holds, nowMs, matches, mirrorPending: pending })
    total.scanned += part.scanned
    total.retained += part.retained
    total.dueBytes += part.dueBytes
    for (const item of part.due) total.due.push(item)
    for (const item of part.kept) total.kept.push(item)
  }
  if (ids) {
    add(ids)
    return total
  }
  let after: string | null = null
  for (;;) {
    const page = deps.archive.listIds(after, scanPageIds)
    add(page)
    if (page.length < scanPageIds) return total
    after = page[page.length - 1]!
    await new Promise((resolve) => setImmediate(resolve))
  }
}

/** The preview of a plan: its figures, counts per policy and per reason kept, the first items of each list. Pure. */
export function previewOf(plan: PurgePlan): PurgePreview {
  const duePerPolicy: Record<string, number> = {}
  for (const item of plan.due) duePerPolicy[item.policy] = (duePerPolicy[item.policy] ?? 0) + 1
  return {
    nowMs: plan.nowMs,
    scanned: plan.scanned,
    retained: plan.retained,
    dueMessages: plan.due.length,
    dueBytes: plan.dueBytes,
    duePerPolicy,
    heldMessages: plan.kept.filter((item) => item.reason === 'held').length,
    mirrorPendingMessages: plan.kept.filter((item) => item.reason === 'mirror-pending').length,
    unindexedMessages: plan.kept.filter((item) => item.reason === 'unindexed').length,
    due: plan.due.slice(0, previewItemsMax),
    kept: plan.kept.slice(0, previewItemsMax),
    truncated: plan.due.length > previewItemsMax || plan.kept.length > previewItemsMax,
  }
}
