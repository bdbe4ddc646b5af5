import type { CommandHandler } from '../firmware/control/server.js'
import type { ArchiveStore, ReadOnlyStatus } from '../firmware/archive/types.js'
import { loadOrCreateIdentityCertificate } from '../firmware/mirror/certificate.js'
import type { MirrorService } from '../firmware/mirror/mirror-service.js'
import { loadAdminCredential } from '../firmware/api/auth.js'
import { loadOrCreateHttpsCertificate, TlsCertificateError, type HttpsCertificate } from '../firmware/api/tls-certificate.js'
import { loadOrCreateAuditKey, type AuditEvent } from '../firmware/policy/index.js'
import type { SearchIndex } from '../firmware/index/index.js'
import type { ComposeContext } from './compose-context.js'
import { composeStore, type StoreStage } from './compose-store.js'
import { composeSources } from './compose-sources.js'
import { composeMirror, type MirrorStage } from './compose-mirror.js'
import { composeHttp } from './compose-http.js'
import { tlsCommandHandlers, type HttpsState } from './tls-commands.js'
import { createAccountStore } from '../firmware/access/accounts.js'
import { accountCommandHandlers, tokenCommandHandlers } from './account-commands.js'
import { exportCommandHandlers } from './export-command.js'
import type { ExportDeps } from '../firmware/api/export-routes.js'
import { createTokenStore } from '../firmware/access/tokens.js'
import { createSessionStore } from '../firmware/access/sessions.js'
import { checkDirectoryConfig, createDirectory, DirectoryConfigError } from '../firmware/access/directory.js'
import { BootError } from './boot-error.js'
import { exitCodes } from '../firmware/common/errors.js'
import type { LdapConfig } from '../config/types.js'
import { serviceCommandHandlers } from './service-commands.js'
import type { ManagedService } from './managed-service.js'

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
 * Read-only while the data volume is full (firmware/archive/store-read-only.ts): `mode` and
 * the reason are top-level fields of `show status` and /api/v1/status.
 */
export function storageMode(archive: Pick<ArchiveStore, 'readOnly'>): { mode: 'read-only' | 'read-write'; readOnly: ReadOnlyStatus | null } {
  const readOnly = archive.readOnly()
  return { mode: readOnly ? 'read-only' : 'read-write', readOnly }
}

/**
 * Builds the archiver's services from the configuration, in stages: store and index
 * (compose-store.ts), mirror (compose-mirror.ts), mail sources (compose-sources.ts), HTTP
 * (compose-http.ts), then the control-socket handlers (service-commands.ts). Part of the
 * composition root: the one place that picks implementations.
 *
 * Creating the services is pure (their I/O happens in start()); this function itself does
 * I/O in five places only, all under `dataDir`: it reads (or at first boot creates) the
 * appliance's identity certificate, the audit log's key, the HTTP admin credential
 * (`initial-admin-password` when no hash is configured), the HTTPS certificate, and reads
 * the local accounts.
 */
export async function composeServices(context: ComposeContext & { applianceStatus: () => Promise<unknown> }): Promise<ComposedServices> {
  const { config, logger, clock } = context
  const certificate = await loadOrCreateIdentityCertificate({ logger: logger.child('certificate'), clock }, { dataDir: config.dataDir, serial: context.identity.serial })
  const auditKey = await loadOrCreateAuditKey(config.dataDir)
  // Retention reads the mirror's low watermark at purge time; the mirror is made after the store.
  const mirrorLink: { mirror?: MirrorService } = {}
  const store = composeStore(context, { auditKey, mirrorLowWatermark: () => mirrorLink.mirror?.lowestAcknowledgedSequence() ?? null })
  const mirrorStage = composeMirror(context, store, certificate)
  mirrorLink.mirror = mirrorStage.mirror
  const sources = composeSources(context, { pipeline: store.pipeline, archive: store.archive, certificate, mirror: mirrorStage.mirror })
  const credential = await loadAdminCredential({ clock }, { dataDir: config.dataDir, adminPasswordHash: config.http.adminPasswordHash })
  const accounts = createAccountStore({ clock, logger: logger.child('accounts') }, { dataDir: config.dataDir })
  await accounts.load()
  const sessions = createSessionStore({ clock }, config.auth.session)
  const ldap = config.auth.ldap
  const directory = ldap ? createDirectory({ clock, logger: logger.child('directory') }, ldap, await directoryTls(ldap)) : undefined
  const tokens = createTokenStore({ clock, logger: logger.child('tokens') }, { dataDir: config.dataDir })
  await tokens.load()
  const https = config.https.enabled ? await httpsCertificate(context) : undefined
  const httpsState: HttpsState = { enabled: config.https.enabled, ...https }
  const search = searchWithCompleteness(store.index, mirrorStage)
  const status = (): Promise<Record<string, unknown>> => servicesStatus(store, mirrorStage)
  const exporter: ExportDeps = {
    archive: store.archive,
    search: (query, options) => search.search(query, options),
    signer: { privateKeyPem: certificate.privateKeyPem, certificatePem: certificate.certificatePem, serial: context.identity.serial },
    clock,
    audit: store.audit,
  }
  const http = composeHttp(context, {
    credential,
    exporter,
    accounts,
    tokens,
    sessions,
    ...(directory ? { directory } : {}),
    ...(https ? { https } : {}),
    archive: store.archive,
    status: async () => ({ ...((await context.applianceStatus()) as object), ...(await status()) }),
    search,
    policy: store.policy,
    audit: store.audit,
  })
  const tlsHandlers = tlsCommandHandlers({
    logger: logger.child('https'),
    clock,
    dataDir: config.dataDir,
    state: httpsState,
    ...(http.replaceTls ? { replaceTls: http.replaceTls } : {}),
    audit: store.audit,
  })
  const handlers = serviceCommandHandlers({
    storeStats: () => store.archive.stats(),
    journals: sources.journals,
    imports: sources.imports,
    policy: store.policy,
    search,
    indexRun: store.indexRun,
    mirror: { mirror: mirrorStage.mirror, disabledReason: mirrorStage.disabledReason, status: () => mirrorStatus(mirrorStage), audit: store.audit },
  })
  for (const [name, handler] of [
    ...exportCommandHandlers(exporter),
    ...tlsHandlers,
    ...accountCommandHandlers({ accounts, sessions, audit: store.audit }),
    ...tokenCommandHandlers({ tokens, audit: store.audit }),
  ])
    handlers.set(name, handler)
  const services = [...store.services, ...sources.services, ...http.services, ...mirrorStage.services]
  return { services, handlers, status, audit: store.audit }
}

/**
 * The HTTPS certificate (generated at first boot). An installed one that cannot be used
 * does not stop the appliance archiving: HTTPS stays down, the http service reports why
 * (degraded), and a technician installs a good one. @throws fs errors other than that
 */
async function httpsCertificate(context: ComposeContext): Promise<{ certificate: HttpsCertificate } | { unavailableReason: string }> {
  const { config, logger, clock } = context
  const httpsLogger = logger.child('https')
  try {
    return { certificate: await loadOrCreateHttpsCertificate({ logger: httpsLogger, clock }, { dataDir: config.dataDir, serial: context.identity.serial, altNames: [config.https.host] }) }
  } catch (error) {
    if (!(error instanceof TlsCertificateError)) throw error
    httpsLogger.error('installed https certificate unusable', { code: error.code, reason: error.message })
    return { unavailableReason: `installed certificate unusable (${error.code}): ${error.message}` }
  }
}

/** The directory's TLS material once its configuration checks out. @throws BootError exit 78 naming each problem as `path: reason` */
async function directoryTls(ldap: LdapConfig): Promise<{ caPem: string | undefined }> {
  try {
    return await checkDirectoryConfig(ldap)
  } catch (error) {
    if (error instanceof DirectoryConfigError) throw new BootError(error.message, exitCodes.config, error)
    throw error
  }
}

/** `show mirror`: the mirror service's status, or why mirroring is off. */
function mirrorStatus(stage: MirrorStage): unknown {
  return stage.mirror ? stage.mirror.status() : { enabled: false, reason: stage.disabledReason, peers: [] }
}

/**
 * Every search answer says whether this system holds everything its mirror peers archived
 * (they tell it what they still have queued for it).
 */
function completeness(stage: MirrorStage) {
  return stage.mirror?.completeness() ?? { complete: true, peers: [] }
}

/** The index's search with the mirror completeness added to every answer (CLI and API). */
function searchWithCompleteness(index: SearchIndex, stage: MirrorStage): Pick<SearchIndex, 'search'> {
  return { search: async (query, options) => ({ ...(await index.search(query, options)), completeness: completeness(stage) }) }
}

/** The composed services' fields of `show status` and /api/v1/status. */
async function servicesStatus(store: StoreStage, stage: MirrorStage): Promise<Record<string, unknown>> {
  const { archive, policy, parsePool, indexRun } = store
  return {
    ...storageMode(archive),
    store: await archive.stats(),
    index: indexRun.stats(),
    mirror: mirrorStatus(stage),
    completeness: completeness(stage),
    retention: { fingerprint: policy.describe().fingerprint, lastPurge: policy.lastRun() ?? null },
    parsePool: parsePool.stats(),
  }
}
