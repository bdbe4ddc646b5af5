import { isAbsolute } from 'node:path'
import type { CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'
import type { SearchIndex } from '../firmware/index/index.js'
import type { IndexMaintenanceRun } from '../firmware/index/index-maintenance-run.js'
import type { MirrorService } from '../firmware/mirror/mirror-service.js'
import type { PeerAddress } from '../firmware/mirror/types.js'
import { policyCommandHandlers, type AuditEvent, type PolicyService } from '../firmware/policy/index.js'
import type { ImportService } from '../firmware/sources/import/types.js'
import type { JournalSource } from '../firmware/sources/journal/journal-source.js'

/**
 * The control-socket handlers of the composed services, by command name (the names and
 * argument specs clients use are firmware/control/command-table.ts's), with the parsers of
 * the arguments they take: `searchArguments` and `peerArgument`.
 */

/** `search` words: `--limit N` and `--cursor C` anywhere, every other word is the query. */
export function searchArguments(args: readonly string[]): { query: string; limit: number | undefined; cursor: string | null } {
  const words: string[] = []
  let limit: number | undefined
  let cursor: string | null = null
  for (let position = 0; position < args.length; position += 1) {
    if (args[position] === '--limit') limit = Number(args[++position])
    else if (args[position] === '--cursor') cursor = args[++position] ?? null
    else words.push(args[position]!)
  }
  return { query: words.join(' '), limit, cursor }
}

/**
 * A mirror peer argument, `host:port`.
 * @throws ControlError USAGE when it is not one
 */
export function peerArgument(text: string | undefined): PeerAddress {
  const match = /^(.+):(\d{1,5})$/.exec(text ?? '')
  if (!match) throw new ControlError('USAGE', `a peer is host:port (got ${JSON.stringify(text)})`)
  return { host: match[1]!, port: Number(match[2]) }
}

/** What the mirror commands act on: the service, or why there is none. */
export interface MirrorCommandDeps {
  mirror: MirrorService | undefined
  disabledReason: string | null
  status(): unknown
  audit(event: AuditEvent): void
}

/** `show mirror` and `mirror add|remove|pause|resume|accept|verify HOST:PORT`. */
export function mirrorCommandHandlers(deps: MirrorCommandDeps): [string, CommandHandler][] {
  const needMirror = (): MirrorService => {
    if (!deps.mirror) throw new ControlError('UNAVAILABLE', `mirroring is off: ${deps.disabledReason}`)
    return deps.mirror
  }
  /** Mirror changes are audited once they succeeded (control socket: the technician). */
  const audited = <T>(action: string, peer: string | undefined, result: T): T => {
    deps.audit({ actor: 'technician', action, details: { peer } })
    return result
  }
  return [
    ['show mirror', () => deps.status()],
    ['mirror add', async ([peer]) => audited('mirror.add', peer, await needMirror().addPeer(peerArgument(peer)))],
    ['mirror remove', async ([peer]) => (await needMirror().removePeer(peerArgument(peer)), audited('mirror.remove', peer, { message: `removed ${peer}` }))],
    ['mirror pause', async ([peer]) => audited('mirror.pause', peer, await needMirror().pausePeer(peerArgument(peer)))],
    ['mirror resume', async ([peer]) => audited('mirror.resume', peer, await needMirror().resumePeer(peerArgument(peer)))],
    // Audited by the mirror service itself (mirror.identity-accepted / mirror.join-accepted, with both identities).
    ['mirror accept', ([peer]) => needMirror().acceptPeer(peerArgument(peer))],
    // Audited by the mirror service (mirror.verify with the signed report, or mirror.verify-failed).
    ['mirror verify', ([peer]) => needMirror().verifyPeer(peerArgument(peer))],
  ]
}

/** `import start PATH`, `import status [JOB]`, `import cancel JOB`, `journal pull NAME`. */
export function sourceCommandHandlers(imports: ImportService, journals: readonly JournalSource[]): [string, CommandHandler][] {
  const journalByName = new Map(journals.map((journal) => [journal.name.replace(/^journal:/, ''), journal]))
  return [
    [
      'import start',
      ([path]) => {
        if (!isAbsolute(path!)) throw new ControlError('USAGE', 'the import path must be absolute (the CLI resolves it)')
        return imports.startJob(path!)
      },
    ],
    ['import status', ([job]) => (job ? imports.jobStatus(job) : imports.jobs())],
    ['import cancel', ([job]) => imports.cancelJob(job!)],
    [
      'journal pull',
      ([name]) => {
        const journal = journalByName.get(name!)
        if (!journal) throw new ControlError('USAGE', `no journal source named ${name}; configured: ${[...journalByName.keys()].join(', ') || 'none'}`)
        return journal.pullOnce()
      },
    ],
  ]
}

/** Everything the service commands reach. */
export interface ServiceCommandDeps {
  storeStats(): unknown
  journals: readonly JournalSource[]
  imports: ImportService
  policy: PolicyService
  search: Pick<SearchIndex, 'search'>
  indexRun: Pick<IndexMaintenanceRun, 'verify' | 'rebuild'>
  mirror: MirrorCommandDeps
}

/** Every handler the composed services add to the control socket, in the order they were always registered. */
export function serviceCommandHandlers(deps: ServiceCommandDeps): Map<string, CommandHandler> {
  const [showMirror, ...mirrorChanges] = mirrorCommandHandlers(deps.mirror)
  return new Map<string, CommandHandler>([
    ['show store', () => deps.storeStats()],
    ['show journal', () => deps.journals.map((journal) => journal.status())],
    showMirror!,
    ...mirrorChanges,
    ...policyCommandHandlers(deps.policy),
    [
      'search',
      (args) => {
        const { query, limit, cursor } = searchArguments(args)
        return deps.search.search(query, { limit, cursor })
      },
    ],
    ['index verify', () => deps.indexRun.verify()],
    ['index rebuild', async () => ({ indexed: await deps.indexRun.rebuild('asked for by a technician') })],
    ...sourceCommandHandlers(deps.imports, deps.journals),
  ])
}
