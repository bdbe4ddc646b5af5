import { join, isAbsolute } from 'node:path'
import type { Config } from '../config/types.js'
import type { Logger } from '../firmware/common/logger.js'
import type { Clock } from '../firmware/common/clock.js'
import type { Hal, Identity } from '../hal/types.js'
import type { CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'
import { createMimeParser, defaultMimeParserOptions } from '../firmware/mime/parser.js'
import { createArchiveStore } from '../firmware/archive/store.js'
import type { ArchiveStore, ReadOnlyStatus } from '../firmware/archive/types.js'
import { createIndex, createArchiveIndexer, createSearchRoute, createIndexMaintenance } from '../firmware/index/index.js'
import { defaultIndexOptions } from '../firmware/index/search-index.js'
import { createIngestPipeline } from '../firmware/sources/pipeline.js'
import { createPrepareJob } from '../firmware/sources/parse-job.js'
import { createParsePool, parsePoolDefaults } from '../firmware/sources/parse-pool.js'
import { createSmtpSource } from '../firmware/sources/smtp/index.js'
import { createJournalSource } from '../firmware/sources/journal/journal-source.js'
import { createImportService } from '../firmware/sources/import/index.js'
import { loadOrCreateIdentityCertificate } from '../firmware/mirror/certificate.js'
import { createMirrorService } from '../firmware/mirror/mirror-service.js'
import { modelProfile } from '../config/models.js'
import { createRandom } from '../firmware/common/clock.js'
import { randomInt } from 'node:crypto'
import { createHttpApi } from '../firmware/api/http-api.js'
import { loadAdminCredential } from '../firmware/api/auth.js'
import { loginAuditEntry } from '../firmware/api/login-throttle.js'
import type { ManagedService } from './appliance.js'
import { canonicalJson, createAuditLog, createPolicyService, loadOrCreateAuditKey, policyApiRoutes, policyCommandHandlers, withArchiveDatabases, PolicyError, type AuditEvent } from '../firmware/policy/index.js'

/** Parallel submits of one import job: enough to fill group commits, bounded in memory. */
const importConcurrency = 8
const importJobsMax = 4
/**
 * The index's pure analysis that the parse workers run, `prepareDocument(parsed, limits)` of
 * firmware/index/prepared-document.ts (what ArchiveIndexer.prepare does on the event loop), with the
 * index's limits (createIndex below uses the defaults too); a firmware without it has the index analyse each message in its write
 * transaction instead.
 */
export const indexPrepareModule = { moduleUrl: new URL('../firmware/index/prepared-document.js', import.meta.url).href, exportName: 'prepareDocument', options: { ...defaultIndexOptions } }

export interface ComposedServices {
  /** In start order; stopped in reverse. */
  services: ManagedService[]
  handlers: Map<string, CommandHandler>
  /** Extra fields for `show status` and /api/v1/status. */
  status(): Promise<Record<string, unknown>>
  /** Appends to the audit log (queued until the archive is open); never rejects. */
  audit(event: AuditEvent): void
}

/**
 * Budget of one page of a retention or hold query, in ms: these walk the whole archive page
 * by page (each page is one paced search), and a hold that cannot be evaluated stops purges.
 */
const policyQueryTimeMsMax = 60_000

/**
 * Read-only while the data volume is full (firmware/archive/store-read-only.ts): `mode` and
 * the reason are top-level fields of `show status` and /api/v1/status.
 */
export function storageMode(archive: Pick<ArchiveStore, 'readOnly'>): { mode: 'read-only' | 'read-write'; readOnly: ReadOnlyStatus | null } {
  const readOnly = archive.readOnly()
  return { mode: readOnly ? 'read-only' : 'read-write', readOnly }
}

/** Ids of every archived message a query matches, page by page through the search index. */
export async function allMatches(index: ReturnType<typeof createIndex>, query: string): Promise<Set<string>> {
  // An index of another layout indexes nothing new, and one being rebuilt (or left half
  // rebuilt) lacks messages: a query would miss mail, and a hold by query would not protect
  // it. Retention waits for the rebuild instead.
  if (!index.layoutCurrent()) throw new PolicyError('UNAVAILABLE', 'the search index has another layout: purges that use a query wait for the index rebuild')
  if (!index.complete()) throw new PolicyError('UNAVAILABLE', 'the search index is being rebuilt: purges that use a query wait until it holds every message')
  const ids = new Set<string>()
  let cursor: string | null = null
  do {
    const page = await index.search(query, { limit: index.options.searchLimitMax, cursor, timeMsMax: policyQueryTimeMsMax })
    for (const hit of page.hits) ids.add(hit.id)
    cursor = page.nextCursor
    await new Promise((resolve) => setImmediate(resolve))
  } while (cursor)
  return ids
}

/**
 * Builds the archiver's services from the configuration: store (with the search index in
 * the same LMDB transaction), MIME parser, the one ingest pipeline, the mail sources
 * (SMTP, journal pull, bulk import) and the HTTP API. Part of the composition root: the
 * one place that picks implementations. Creating is pure; I/O happens in start().
 */
export async function composeServices(context: { config: Readonly<Config>; logger: Logger; clock: Clock; hal: Hal; identity: Identity; applianceStatus: () => Promise<unknown> }): Promise<ComposedServices> {
  const { config, logger, clock, hal } = context
  const certificate = await loadOrCreateIdentityCertificate({ logger: logger.child('certificate'), clock }, { dataDir: config.dataDir, serial: context.identity.serial })
  const parser = createMimeParser({ logger: logger.child('mime'), clock }, { ...defaultMimeParserOptions })
  const index = createIndex({ logger: logger.child('index'), clock }, { queryTimeMsMax: config.search.queryTimeMsMax, searchSliceMs: config.search.sliceMs, searchesWaitingMax: config.search.waitingMax })
  const auditKey = await loadOrCreateAuditKey(config.dataDir)
  const auditLog = createAuditLog({ logger: logger.child('audit'), clock, key: auditKey })
  const audit = (event: AuditEvent): void => {
    auditLog.append(event).catch((error: unknown) => logger.child('audit').error('cannot write an audit entry', { action: event.action, error }))
  }
  // The mirror service is made below; its low watermark is read at purge time. Typed loosely:
  // `lowestAcknowledgedSequence` is the mirror service's, and older builds lack it.
  let mirrorForRetention: { lowestAcknowledgedSequence?: () => number | null } | undefined
  const policy = createPolicyService(
    {
      logger: logger.child('policy'),
      clock,
      archive: {
        listIds: (afterId, limit) => archive.listIds(afterId, limit),
        getMeta: (id) => archive.getMeta(id),
        delete: (id) => archive.delete(id),
        changes: (afterSequence, limit) => archive.changes(afterSequence, limit),
        lastSequence: () => archive.lastSequence(),
      },
      audit: auditLog,
      matchQuery: (query) => allMatches(index, query),
      mirrorLowWatermark: () => mirrorForRetention?.lowestAcknowledgedSequence?.() ?? null,
      digestKey: auditKey,
    },
    { purgeIntervalMs: config.retention.purgeIntervalMs, batchMessagesMax: config.retention.batchMessagesMax, stopTimeoutMs: config.shutdown.timeoutMs, config },
  )
  const archive = createArchiveStore(
    { logger: logger.child('archive'), clock, volume: () => hal.volume(config.dataDir) },
    {
      path: join(config.dataDir, 'archive'),
      mapSizeBytes: config.storage.mapSizeBytes,
      freeBytesMin: config.storage.freeBytesMin,
      readOnlyMarginBytes: config.storage.readOnlyMarginBytes,
      readOnlyRecheckMs: config.storage.readOnlyRecheckMs,
      messageBytesMax: config.storage.messageBytesMax,
      indexer: withArchiveDatabases(createArchiveIndexer(index, { logger: logger.child('index') }), [policy]),
    },
  )
  const indexMaintenance = createIndexMaintenance({ index, archive, parser })
  // One rebuild at a time: the technician's `index rebuild` joins one already running. At
  // start, an index of another layout (a firmware update) or one whose rebuild was cut short
  // is rebuilt in the background; mail is archived meanwhile, and retention's query-based
  // purges wait for it (allMatches).
  const indexRebuild: { running?: Promise<number>; stop?: AbortController; indexed: number } = { indexed: 0 }
  const rebuildIndex = (reason: string): Promise<number> => {
    if (indexRebuild.running) return indexRebuild.running
    const stop = new AbortController()
    indexRebuild.stop = stop
    indexRebuild.indexed = 0
    logger.info('search index rebuild started', { reason })
    const running = indexMaintenance
      .rebuild((indexed) => {
        indexRebuild.indexed = indexed
        if (indexed % 10_000 < index.options.rebuildBatchMessages) logger.info('search index rebuild progress', { indexed })
      }, stop.signal)
      .finally(() => {
        indexRebuild.running = undefined
        indexRebuild.stop = undefined
      })
    indexRebuild.running = running
    return running
  }
  const indexService: ManagedService = {
    name: 'index',
    start: async () => {
      if (index.complete()) {
        // A tail an unplanned stop left (a planned one flushes it): written in the background
        // now rather than loaded whole by the first search.
        const documents = index.flushPendingInBackground()
        if (documents > 0) logger.info('search index tail left by an unplanned stop: flushing it in the background', { documents })
        return
      }
      const reason = index.layoutCurrent() ? 'a rebuild was cut short' : 'the index has another layout'
      rebuildIndex(reason).then(
        (indexed) => logger.info('search index rebuilt', { indexed }),
        (error: unknown) => logger.warn('search index rebuild did not finish; it runs again at the next start', { error: String(error) }),
      )
    },
    stop: async () => {
      indexRebuild.stop?.abort()
      await indexRebuild.running?.catch(() => undefined)
      // The sources have stopped (services stop in reverse order): the pending tail's postings
      // are written now, so that the first search after a planned restart does not load the
      // tail again from its forward records (~0.25 ms a message, up to twice
      // pendingDocumentsMax). After a crash that load still happens, once.
      try {
        const startedMs = performance.now()
        const pending = index.layoutCurrent() ? index.stats().pending : 0
        if (pending > 0) {
          index.flush()
          logger.info('search index tail flushed at stop', { documents: pending, elapsedMs: Math.round(performance.now() - startedMs) })
        }
      } catch (error) {
        logger.warn('search index tail not flushed at stop; the first search after start loads it', { error: String(error) })
      }
    },
    healthcheck: () => ({ ok: true, detail: indexRebuild.running ? `rebuilding (${indexRebuild.indexed} indexed)` : index.complete() ? 'complete' : 'incomplete: run `mailkeep index rebuild`' }),
  }
  // Parse, compression and the index's analysis run on worker threads, off the event loop
  // (firmware/sources/parse-pool.ts); the same job runs on the event loop when they cannot.
  const parsePool = createParsePool(
    { logger: logger.child('parse-pool'), inProcess: createPrepareJob({ logger: logger.child('pipeline'), parser }) },
    { ...parsePoolDefaults, mime: { ...defaultMimeParserOptions }, indexPrepare: indexPrepareModule },
  )
  const pipeline = createIngestPipeline({ logger: logger.child('pipeline'), parser, archive, prepare: parsePool.prepare }, { messageBytesMax: config.storage.messageBytesMax })
  const services: ManagedService[] = [
    { name: 'archive', start: () => archive.start(), stop: () => archive.stop(), healthcheck: () => archive.healthcheck() },
    { name: 'retention', start: () => policy.start(), stop: () => policy.stop(), healthcheck: () => policy.healthcheck() },
    { name: 'parse-pool', start: () => parsePool.start(), stop: () => parsePool.stop(), healthcheck: () => parsePool.healthcheck() },
    indexService,
  ]
  const smtp = config.smtp.enabled
    ? createSmtpSource({ logger: logger.child('smtp'), clock, pipeline, tls: { key: certificate.privateKeyPem, cert: certificate.certificatePem }, archiveReadOnly: () => archive.recheckSpace(false) }, config.smtp)
    : undefined
  // Mirror source takeover: a source with takeoverFor is pulled only while that mirror peer has
  // been unreachable for takeoverAfterMs (read from the mirror service, created further down).
  const takeoverFor = (peerText: string, afterMs: number) => {
    const [, host, port] = /^(.+):(\d+)$/.exec(peerText)!
    if (!config.mirror.peers.some((peer) => peer.host === host && peer.port === Number(port))) {
      logger.warn('journal takeoverFor names no configured mirror peer: the source is pulled only once that peer is added and unreachable', { peer: peerText })
    }
    return { peer: peerText, shouldPull: () => (mirror?.peerUnreachableForMs({ host: host!, port: Number(port) }) ?? -1) >= afterMs }
  }
  const journals = config.journal.sources.map(({ takeoverFor: peerText, takeoverAfterMs, ...source }) =>
    createJournalSource(
      { logger: logger.child('journal'), clock, pipeline, archiveReadOnly: () => archive.readOnly()?.reason ?? null, ...(peerText ? { takeover: takeoverFor(peerText, takeoverAfterMs) } : {}) },
      { ...source, stateDir: join(config.dataDir, 'journal'), stopTimeoutMs: config.shutdown.timeoutMs },
    ),
  )
  const imports = createImportService(
    { logger: logger.child('import'), clock, pipeline },
    { stateDir: join(config.dataDir, 'import'), concurrency: importConcurrency, messageBytesMax: config.storage.messageBytesMax, jobsMax: importJobsMax, stopTimeoutMs: config.shutdown.timeoutMs },
  )
  const credential = await loadAdminCredential({ clock }, { dataDir: config.dataDir, adminPasswordHash: config.http.adminPasswordHash })
  const storeStats = () => archive.stats()
  // The index's figures, or null while its databases are not open (the archive is not started).
  const indexStats = () => {
    try {
      return { ...index.stats(), rebuildIndexed: indexRebuild.running ? indexRebuild.indexed : null, searches: index.searchCounters() }
    } catch {
      return null
    }
  }
  const status = async () => ({ ...storageMode(archive), store: await storeStats(), index: indexStats(), mirror: mirrorStatus(), completeness: completeness(), retention: { fingerprint: policy.describe().fingerprint, lastPurge: policy.lastRun() ?? null }, parsePool: parsePool.stats() })
  // Every search answer says whether this system holds everything its mirror peers archived
  // (they tell it what they still have queued for it); the mirror service is made further down.
  const completeness = () => mirror?.completeness() ?? { complete: true, peers: [] }
  const searchWithCompleteness = {
    search: async (query: string, options: Parameters<typeof index.search>[1]) => ({ ...(await index.search(query, options)), completeness: completeness() }),
  }
  const http = config.http.enabled
    ? createHttpApi(
        {
          logger: logger.child('http'),
          clock,
          credential,
          archive,
          status: async () => ({ ...((await context.applianceStatus()) as object), ...(await status()) }),
          routes: new Map([['/api/v1/search', createSearchRoute(searchWithCompleteness)]]),
          methodRoutes: policyApiRoutes(policy),
          onLoginEvent: (event) => audit(loginAuditEntry(event)),
        },
        { host: config.http.host, port: config.http.port, stopTimeoutMs: config.shutdown.timeoutMs, loginThrottle: config.http.loginThrottle },
      )
    : undefined

  services.push({ name: 'import', start: () => imports.start(), stop: () => imports.stop(), healthcheck: () => ({ ok: true, detail: `${imports.jobs().filter((job) => job.state === 'running').length} running job(s)` }) })
  for (const journal of journals) services.push({ name: journal.name, start: () => journal.start(), stop: () => journal.stop(), healthcheck: () => journal.healthcheck() })
  if (smtp) services.push({ name: 'smtp', start: () => smtp.start(), stop: () => smtp.stop(), healthcheck: () => smtp.healthcheck(), listeners: () => smtp.listeners() })
  if (http) {
    services.push({
      name: 'http',
      start: () => http.start(),
      stop: () => http.stop(),
      healthcheck: () => http.healthcheck(),
      listeners: () => {
        const address = http.address()
        return { http: `${address.host}:${address.port}` }
      },
    })
  }

  // Mirroring needs a model that may mirror and a shared secret; otherwise status says why.
  const profile = modelProfile(context.identity.model)
  const mirrorDisabledReason = !config.mirror.enabled
    ? 'disabled in config (mirror.enabled)'
    : !profile?.mirroringAllowed && config.mirror.peers.length === 0
      ? `model ${context.identity.model} does not mirror (models 450 and up do)`
      : !config.mirror.sharedSecret
        ? 'no mirror.sharedSecret configured (generate one with `mailkeep mirror generate-secret`)'
        : null
  const localSourcesEnabled = config.smtp.enabled || config.journal.sources.some((source) => source.enabled)
  const mirror = mirrorDisabledReason
    ? undefined
    : createMirrorService(
        {
          logger,
          clock,
          random: createRandom(randomInt(2 ** 31)),
          archive,
          pipeline,
          identity: { model: context.identity.model, serial: context.identity.serial, firmwareVersion: context.identity.firmwareVersion },
          certificate,
          onHandshake: (event) => logger.child('audit').info('mirror handshake', { ...event }),
          audit: (entry) => audit(entry),
          retention: { auditHead: () => policy.auditHead(), holdsKeeping: (ids) => policy.holdsKeeping(ids), purgeAuditSeq: (id, atMs) => policy.purgeAuditSeq(id, atMs) },
          // Peers compare retention and hold settings (ARCHITECTURE: independent per system,
          // differences reported). Criteria travel as canonical JSON text.
          policySettings: () => {
            const settings = policy.describe()
            return { ...settings, policies: settings.policies.map((entry) => ({ name: entry.name, retentionDays: entry.retentionDays, criteria: canonicalJson(entry.criteria) })) }
          },
        },
        {
          host: config.mirror.host,
          port: config.mirror.port,
          sharedSecret: config.mirror.sharedSecret!,
          peers: config.mirror.peers,
          stateDir: join(config.dataDir, 'mirror', 'peers'),
          localSourcesEnabled,
          acceptJoins: config.mirror.acceptJoins,
          unreachableAlertMs: config.mirror.unreachableAlertMs,
          verifyIntervalMs: config.mirror.verifyIntervalMs,
          batchMessagesMax: 1_000,
          batchBytesMax: 16 * 1024 * 1024,
          inflightBatchesMax: 4,
          retryDelayMsMin: Math.min(config.mirror.retryDelayMsMin, config.mirror.retryDelayMsMax),
          retryDelayMsMax: config.mirror.retryDelayMsMax,
          handshakeTimeoutMs: 10_000,
          ackTimeoutMs: config.mirror.ackTimeoutMs,
          idleTimeoutMs: config.mirror.idleTimeoutMs,
        },
      )
  mirrorForRetention = mirror as typeof mirrorForRetention
  if (mirror) {
    pipeline.addListener((result, delivery) => mirror.notify(result, delivery))
    services.push({
      name: 'mirror',
      start: () => mirror.start(),
      stop: () => mirror.stop(),
      healthcheck: () => mirror.healthcheck(),
      listeners: (): Record<string, string> => {
        const address = mirror.address()
        return address ? { mirror: `${address.host}:${address.port}` } : {}
      },
    })
  }
  const mirrorStatus = () => (mirror ? mirror.status() : { enabled: false, reason: mirrorDisabledReason, peers: [] })
  const peerArgument = (text: string | undefined) => {
    const match = /^(.+):(\d{1,5})$/.exec(text ?? '')
    if (!match) throw new ControlError('USAGE', `a peer is host:port (got ${JSON.stringify(text)})`)
    return { host: match[1]!, port: Number(match[2]) }
  }
  const needMirror = () => {
    if (!mirror) throw new ControlError('UNAVAILABLE', `mirroring is off: ${mirrorDisabledReason}`)
    return mirror
  }

  /** Mirror changes are audited once they succeeded (control socket: the technician). */
  const audited = <T,>(action: string, peer: string | undefined, result: T): T => {
    audit({ actor: 'technician', action, details: { peer } })
    return result
  }

  const journalByName = new Map(journals.map((journal) => [journal.name.replace(/^journal:/, ''), journal]))
  const searchArgs = (args: string[]) => {
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
  const handlers = new Map<string, CommandHandler>([
    ['show store', () => storeStats()],
    ['show journal', () => journals.map((journal) => journal.status())],
    ['show mirror', () => mirrorStatus()],
    ['mirror add', async ([peer]) => audited('mirror.add', peer, await needMirror().addPeer(peerArgument(peer)))],
    ['mirror remove', async ([peer]) => (await needMirror().removePeer(peerArgument(peer)), audited('mirror.remove', peer, { message: `removed ${peer}` }))],
    ['mirror pause', async ([peer]) => audited('mirror.pause', peer, await needMirror().pausePeer(peerArgument(peer)))],
    ['mirror resume', async ([peer]) => audited('mirror.resume', peer, await needMirror().resumePeer(peerArgument(peer)))],
    // Audited by the mirror service itself (mirror.identity-accepted / mirror.join-accepted, with both identities).
    ['mirror accept', ([peer]) => needMirror().acceptPeer(peerArgument(peer))],
    // Audited by the mirror service (mirror.verify with the signed report, or mirror.verify-failed).
    ['mirror verify', ([peer]) => needMirror().verifyPeer(peerArgument(peer))],
    ...policyCommandHandlers(policy),
    ['search', (args) => {
      const { query, limit, cursor } = searchArgs(args)
      return searchWithCompleteness.search(query, { limit, cursor })
    }],
    ['index verify', () => indexMaintenance.verify()],
    ['index rebuild', async () => ({ indexed: await rebuildIndex('asked for by a technician') })],
    ['import start', ([path]) => {
      if (!isAbsolute(path!)) throw new ControlError('USAGE', 'the import path must be absolute (the CLI resolves it)')
      return imports.startJob(path!)
    }],
    ['import status', ([job]) => (job ? imports.jobStatus(job) : imports.jobs())],
    ['import cancel', ([job]) => imports.cancelJob(job!)],
    ['journal pull', ([name]) => {
      const journal = journalByName.get(name!)
      if (!journal) throw new ControlError('USAGE', `no journal source named ${name}; configured: ${[...journalByName.keys()].join(', ') || 'none'}`)
      return journal.pullOnce()
    }],
  ])
  return { services, handlers, status, audit }
}
