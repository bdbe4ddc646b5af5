import type { Logger } from '../common/logger.js'
import { idKeyPrefix, type Databases } from './index-databases.js'
import type { IndexOptions, Source, VerifyReport } from './index-types.js'
import type { IndexInput } from './index-input.js'
import { getForward, readPhraseStream } from './record-io.js'
import { samePhraseStream } from './phrase-stream.js'
import { analyzeSequential } from './document-analysis.js'
import { sameForward } from './document-writes.js'

/**
 * Checks the index against the archive: messages the archive has and the index lacks
 * (missing), documents for messages the archive no longer has (extra) and, when
 * `getInput` is given, documents whose indexed content (forward record, phrase stream)
 * differs from a fresh analysis of the stored message (stale; e.g. indexed by an older tokenizer). Reads only. Memory: one
 * set of the archive's ids (~100 bytes per message).
 *
 * @param listIds every archive id
 * @param getInput the index input of a stored message (undefined when it is gone)
 * @throws IndexError INDEX_CORRUPT on an unreadable forward record
 */
export async function verifyIndex(
  db: Databases,
  deps: { logger: Logger; limits: IndexOptions },
  listIds: Source<string>,
  getInput?: (id: string) => Promise<IndexInput | undefined> | IndexInput | undefined,
): Promise<VerifyReport> {
  const { logger, limits } = deps
  const archived = new Set<string>()
  for await (const id of listIds) archived.add(id)
  const report: VerifyReport = { archived: archived.size, indexed: 0, missingCount: 0, extraCount: 0, staleCount: 0, missing: [], extra: [], stale: [], ok: true }
  const note = (list: string[], id: string): void => {
    if (list.length < limits.verifyListedIdsMax) list.push(id)
  }
  for (const { key, value } of db.keys.getRange({ start: idKeyPrefix, end: idKeyPrefix + '\uffff' })) {
    const id = key.slice(idKeyPrefix.length)
    report.indexed++
    if (!archived.has(id)) {
      report.extraCount++
      note(report.extra, id)
      continue
    }
    archived.delete(id)
    if (getInput) {
      const input = await getInput(id)
      const forward = getForward(db, value as number)
      const analyzed = input ? analyzeSequential(input, limits) : undefined
      // A document without a phrase stream (indexed before they were kept) is not stale: its text answers.
      const stream = readPhraseStream(db, value as number)
      if (analyzed && (!forward || !sameForward(forward, analyzed.forward) || (stream !== undefined && !samePhraseStream(stream, analyzed.phraseStream)))) {
        report.staleCount++
        note(report.stale, id)
      }
    }
  }
  for (const id of archived) {
    report.missingCount++
    note(report.missing, id)
  }
  report.ok = report.missingCount === 0 && report.extraCount === 0 && report.staleCount === 0
  logger.info('index verified', { archived: report.archived, indexed: report.indexed, missing: report.missingCount, extra: report.extraCount, stale: report.staleCount })
  return report
}
