import { join } from 'node:path'
import type { ArchiveStore } from '../firmware/archive/types.js'
import type { IdentityCertificate } from '../firmware/mirror/certificate.js'
import type { MirrorService } from '../firmware/mirror/mirror-service.js'
import type { IngestPipeline } from '../firmware/sources/types.js'
import { createSmtpSource } from '../firmware/sources/smtp/index.js'
import type { SmtpSource } from '../firmware/sources/smtp/types.js'
import { createJournalSource, type JournalSource } from '../firmware/sources/journal/journal-source.js'
import { createImportService } from '../firmware/sources/import/index.js'
import type { ImportService } from '../firmware/sources/import/types.js'
import type { ComposeContext } from './compose-context.js'
import { managed, type ManagedService } from './managed-service.js'

/** The mail sources besides mirroring: SMTP (when enabled), the journal sources, bulk import. */
export interface SourcesStage {
  smtp: SmtpSource | undefined
  journals: JournalSource[]
  imports: ImportService
  /** import, each journal source, smtp: in start order. */
  services: ManagedService[]
}

/**
 * The sources stage: every source hands mail to the one pipeline. `mirror` (undefined when
 * mirroring is off) decides when a journal source with `takeoverFor` is pulled here. Pure.
 */
export function composeSources(
  context: ComposeContext,
  deps: { pipeline: IngestPipeline; archive: ArchiveStore; certificate: IdentityCertificate; mirror: MirrorService | undefined },
): SourcesStage {
  const { config, logger, clock } = context
  const { pipeline, archive, certificate } = deps
  const smtp = config.smtp.enabled
    ? createSmtpSource(
        { logger: logger.child('smtp'), clock, pipeline, tls: { key: certificate.privateKeyPem, cert: certificate.certificatePem }, archiveReadOnly: () => archive.recheckSpace(false) },
        config.smtp,
      )
    : undefined
  const journals = config.journal.sources.map(({ takeoverFor: peerText, takeoverAfterMs, ...source }) =>
    createJournalSource(
      {
        logger: logger.child('journal'),
        clock,
        pipeline,
        archiveReadOnly: () => archive.readOnly()?.reason ?? null,
        ...(peerText ? { takeover: journalTakeover(context, deps.mirror, peerText, takeoverAfterMs) } : {}),
      },
      { ...source, stateDir: join(config.dataDir, 'journal'), stopTimeoutMs: config.shutdown.timeoutMs },
    ),
  )
  const imports = createImportService(
    { logger: logger.child('import'), clock, pipeline },
    {
      stateDir: join(config.dataDir, 'import'),
      concurrency: config.import.concurrency,
      messageBytesMax: config.storage.messageBytesMax,
      jobsMax: config.import.jobsMax,
      stopTimeoutMs: config.shutdown.timeoutMs,
    },
  )
  const services: ManagedService[] = [
    {
      name: 'import',
      start: () => imports.start(),
      stop: () => imports.stop(),
      healthcheck: () => ({ ok: true, detail: `${imports.jobs().filter((job) => job.state === 'running').length} running job(s)` }),
    },
  ]
  for (const journal of journals) services.push(managed(journal.name, journal))
  if (smtp) services.push(managed('smtp', smtp, () => smtp.listeners()))
  return { smtp, journals, imports, services }
}

/**
 * Mirror source takeover: a source with takeoverFor is pulled only while that mirror peer has
 * been unreachable for takeoverAfterMs (as the mirror service counts it; never while
 * mirroring is off).
 */
function journalTakeover(context: ComposeContext, mirror: MirrorService | undefined, peerText: string, afterMs: number) {
  const [, host, port] = /^(.+):(\d+)$/.exec(peerText)!
  if (!context.config.mirror.peers.some((peer) => peer.host === host && peer.port === Number(port))) {
    context.logger.warn('journal takeoverFor names no configured mirror peer: the source is pulled only once that peer is added and unreachable', { peer: peerText })
  }
  return { peer: peerText, shouldPull: () => (mirror?.peerUnreachableForMs({ host: host!, port: Number(port) }) ?? -1) >= afterMs }
}
