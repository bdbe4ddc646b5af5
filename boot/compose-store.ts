import { join } from 'node:path'
import type { AuditEvent } from '../firmware/policy/index.js'
import { createAuditLog, createPolicyService, type AuditLog, type PolicyService } from '../firmware/policy/index.js'
import { createMimeParser, defaultMimeParserOptions, type MimeParser } from '../firmware/mime/parser.js'
import { createArchiveStore } from '../firmware/archive/store.js'
import type { ArchiveStore } from '../firmware/archive/types.js'
import { createIndex, createArchiveIndexer, type SearchIndex } from '../firmware/index/index.js'
import { defaultIndexOptions } from '../firmware/index/search-index.js'
import { allMatches } from './policy-query.js'
import { createIndexMaintenanceRun, type IndexMaintenanceRun } from '../firmware/index/index-maintenance-run.js'
import type * as PreparedDocumentModule from '../firmware/index/prepared-document.js'
import { createIngestPipeline } from '../firmware/sources/pipeline.js'
import { createPrepareJob } from '../firmware/sources/parse-job.js'
import { createParsePool, indexPreparePlugin, parsePoolDefaults, type ParsePool } from '../firmware/sources/parse-pool.js'
import type { ComposeContext } from './compose-context.js'
import { managed, type ManagedService } from './managed-service.js'

/**
 * The index's pure analysis that the parse workers run, `prepareDocument(parsed, limits)` of
 * firmware/index/prepared-document.ts (what ArchiveIndexer.prepare does on the event loop), with the
 * index's limits (composeStore's createIndex uses the defaults too); a firmware without it has
 * the index analyse each message in its write transaction instead. The descriptor is checked
 * against the module's type: a renamed export or other options fail the typecheck.
 */
export const indexPrepareModule = indexPreparePlugin<typeof PreparedDocumentModule, 'prepareDocument'>(
  new URL('../firmware/index/prepared-document.js', import.meta.url),
  'prepareDocument',
  { ...defaultIndexOptions },
)

/** The archive and what writes into it, in one LMDB environment: what the later stages build on. */
export interface StoreStage {
  parser: MimeParser
  index: SearchIndex
  indexRun: IndexMaintenanceRun
  auditLog: AuditLog
  /** Appends to the audit log (queued until the archive is open); never rejects. */
  audit(event: AuditEvent): void
  policy: PolicyService
  archive: ArchiveStore
  parsePool: ParsePool
  pipeline: ReturnType<typeof createIngestPipeline>
  /** archive, retention, parse-pool, index: in start order. */
  services: ManagedService[]
}

/** What the store stage needs from outside it: the audit key, and the mirror's low watermark (read at purge time). */
export interface StoreStageInputs {
  auditKey: Buffer
  mirrorLowWatermark(): number | null
}

/**
 * The store and index stage: the search index, retention with the audit log, the archive
 * store (the index on its indexer hook, retention's databases on a named hook, all in the
 * archive's LMDB transactions), the parse pool and the one ingest pipeline. Pure: no I/O.
 */
export function composeStore(context: ComposeContext, inputs: StoreStageInputs): StoreStage {
  const { config, logger, clock } = context
  const parser = createMimeParser({ logger: logger.child('mime'), clock }, { ...defaultMimeParserOptions })
  const index = createIndex(
    { logger: logger.child('index'), clock },
    { queryTimeMsMax: config.search.queryTimeMsMax, searchSliceMs: config.search.sliceMs, searchesWaitingMax: config.search.waitingMax },
  )
  const auditLog = createAuditLog({ logger: logger.child('audit'), clock, key: inputs.auditKey })
  const audit = (event: AuditEvent): void => {
    auditLog.append(event).catch((error: unknown) => logger.child('audit').error('cannot write an audit entry', { action: event.action, error }))
  }
  const archiveSlot: { store?: ArchiveStore } = {}
  const policy = composeRetention(context, { archive: () => archiveSlot.store!, auditLog, index, ...inputs })
  const archive = composeArchive(context, index, policy)
  archiveSlot.store = archive
  const indexRun = createIndexMaintenanceRun({ index, archive, parser, logger })
  const { parsePool, pipeline } = composeIngest(context, parser, archive)
  const services = [managed('archive', archive), managed('retention', policy), managed('parse-pool', parsePool), managed('index', indexRun)]
  return { parser, index, indexRun, auditLog, audit, policy, archive, parsePool, pipeline, services }
}

/**
 * Retention, holds and the audit log (firmware/policy). Created before the archive, whose
 * named hook opens its databases: it reaches the archive through `archive()` at run time.
 */
function composeRetention(context: ComposeContext, deps: StoreStageInputs & { archive: () => ArchiveStore; auditLog: AuditLog; index: SearchIndex }): PolicyService {
  const { config, logger, clock } = context
  return createPolicyService(
    {
      logger: logger.child('policy'),
      clock,
      archive: {
        listIds: (afterId, limit) => deps.archive().listIds(afterId, limit),
        getMeta: (id) => deps.archive().getMeta(id),
        delete: (id) => deps.archive().delete(id),
        changes: (afterSequence, limit) => deps.archive().changes(afterSequence, limit),
        lastSequence: () => deps.archive().lastSequence(),
      },
      audit: deps.auditLog,
      matchQuery: (query) => allMatches(deps.index, query),
      mirrorLowWatermark: deps.mirrorLowWatermark,
      digestKey: deps.auditKey,
    },
    { purgeIntervalMs: config.retention.purgeIntervalMs, batchMessagesMax: config.retention.batchMessagesMax, stopTimeoutMs: config.shutdown.timeoutMs, config },
  )
}

/** The archive store, with the search index on its indexer hook and retention's (and the audit log's) databases on a named hook. */
function composeArchive(context: ComposeContext, index: SearchIndex, policy: PolicyService): ArchiveStore {
  const { config, logger, clock, hal } = context
  return createArchiveStore(
    { logger: logger.child('archive'), clock, volume: () => hal.volume(config.dataDir) },
    {
      path: join(config.dataDir, 'archive'),
      mapSizeBytes: config.storage.mapSizeBytes,
      freeBytesMin: config.storage.freeBytesMin,
      readOnlyMarginBytes: config.storage.readOnlyMarginBytes,
      readOnlyRecheckMs: config.storage.readOnlyRecheckMs,
      messageBytesMax: config.storage.messageBytesMax,
      indexer: createArchiveIndexer(index, { logger: logger.child('index') }),
      databaseHooks: [{ name: 'retention', databasesNeeded: policy.databasesNeeded, open: (root) => policy.open(root) }],
    },
  )
}

/**
 * The parse pool and the one ingest pipeline. Parse, compression and the index's analysis
 * run on worker threads, off the event loop (firmware/sources/parse-pool.ts); the same job
 * runs on the event loop when they cannot.
 */
function composeIngest(context: ComposeContext, parser: MimeParser, archive: ArchiveStore): { parsePool: ParsePool; pipeline: StoreStage['pipeline'] } {
  const { config, logger } = context
  const parsePool = createParsePool(
    { logger: logger.child('parse-pool'), inProcess: createPrepareJob({ logger: logger.child('pipeline'), parser }) },
    { ...parsePoolDefaults, mime: { ...defaultMimeParserOptions }, indexPrepare: indexPrepareModule },
  )
  const pipeline = createIngestPipeline({ logger: logger.child('pipeline'), parser, archive, prepare: parsePool.prepare }, { messageBytesMax: config.storage.messageBytesMax })
  return { parsePool, pipeline }
}
