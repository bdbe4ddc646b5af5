import {
  differenceClasses,
  differenceDetail,
  reportDifferencesListedMax,
  type DifferenceClass,
  type MissingFacts,
  type PresentFacts,
  type VerifyDifference,
  type VerifyReport,
  type VerifySide,
} from './verify-protocol.js'

/**
 * Pure decisions of `mirror verify` (STYLE 7): why an id is held by one side only, and the
 * report. An id present on P and missing on M is, in this order:
 * 1. queued — P had not had M's acknowledgement for it at the cut (or re-queued it): on its way;
 * 2. held — M's retention purged it and P keeps it past its own retention under a hold;
 * 3. purged — M's retention purged it (the audit entry cited) and P simply keeps it longer;
 * 4. refused — M refused P's copy for good (e.g. over M's size limit);
 * 5. other-origin — P got it from a third appliance, which copies it to M itself;
 * 6. unexplained — none of these: a copy went missing; P puts it back in its queue for M.
 */
export function classifyDifference(present: PresentFacts, missing: MissingFacts, missingSerial: string): { class: DifferenceClass; detail: string } {
  if (present.queued) return { class: 'queued', detail: 'not yet acknowledged at the cut: in the copy queue' }
  if (missing.purged) {
    const cited = missing.purged.auditSeq === null ? 'audit entry not found' : `audit entry ${missing.purged.auditSeq}`
    const when = new Date(missing.purged.atMs).toISOString()
    if (present.held.length > 0) return { class: 'held', detail: differenceDetail(`purged by policy on the other side ${when} (${cited}); kept here by hold ${present.held.join(', ')}`) }
    return { class: 'purged', detail: differenceDetail(`purged by policy on the other side ${when} (${cited})`) }
  }
  if (present.refused !== null) return { class: 'refused', detail: differenceDetail(`the other side refused the copy: ${present.refused}`) }
  if (present.origin !== null && present.origin !== missingSerial)
    return { class: 'other-origin', detail: differenceDetail(`copied here by ${present.origin}, which copies it to the other side itself`) }
  return { class: 'unexplained', detail: 'no copy queued, no purge, no hold, no refusal: missing' }
}

/** Facts of both sides for the ids one side holds alone, as gathered by the run. */
export interface DifferenceFacts {
  /** Ids the initiator holds alone, with the initiator's present facts and the responder's missing facts. */
  onlyInitiator: Array<{ present: PresentFacts; missing: MissingFacts }>
  onlyResponder: Array<{ present: PresentFacts; missing: MissingFacts }>
}

/** Every difference classified, in id order per side. */
export function classifyAll(facts: DifferenceFacts, sides: { initiator: VerifySide; responder: VerifySide }): VerifyDifference[] {
  const differences: VerifyDifference[] = []
  for (const { present, missing } of facts.onlyInitiator) differences.push({ id: present.id, presentOn: 'initiator', ...classifyDifference(present, missing, sides.responder.serial) })
  for (const { present, missing } of facts.onlyResponder) differences.push({ id: present.id, presentOn: 'responder', ...classifyDifference(present, missing, sides.initiator.serial) })
  return differences
}

/** Ids a side must put back in its queue: the unexplained ones it holds. */
export function unexplainedOn(differences: readonly VerifyDifference[], side: 'initiator' | 'responder'): string[] {
  return differences.filter((difference) => difference.presentOn === side && difference.class === 'unexplained').map((difference) => difference.id)
}

/** The report of a run (before requeue figures are known, `requeued` is what the caller passes). */
export function buildReport(input: {
  verifyId: string
  startedAtMs: number
  finishedAtMs: number
  initiator: VerifySide
  responder: VerifySide
  truncated: boolean
  roundTrips: number
  bytesExchanged: number
  differences: readonly VerifyDifference[]
  requeued: { initiator: number; responder: number }
}): VerifyReport {
  const counts = Object.fromEntries(differenceClasses.map((name) => [name, 0])) as Record<DifferenceClass, number>
  for (const difference of input.differences) counts[difference.class]++
  const rootsAgree = input.initiator.root === input.responder.root && input.initiator.messages === input.responder.messages && input.initiator.bytes === input.responder.bytes
  // Unexplained first: a cut list must never hide the ones that matter.
  const ordered = [...input.differences].sort((a, b) => Number(b.class === 'unexplained') - Number(a.class === 'unexplained') || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
  const outcome: VerifyReport['outcome'] = counts.unexplained > 0 ? 'unexplained' : input.truncated ? 'incomplete' : rootsAgree ? 'agree' : 'explained'
  return {
    version: 1,
    verifyId: input.verifyId,
    startedAtMs: input.startedAtMs,
    finishedAtMs: input.finishedAtMs,
    initiator: input.initiator,
    responder: input.responder,
    rootsAgree,
    truncated: input.truncated,
    roundTrips: input.roundTrips,
    bytesExchanged: input.bytesExchanged,
    counts,
    differences: ordered.slice(0, reportDifferencesListedMax),
    policyAgree: input.initiator.policyFingerprint === input.responder.policyFingerprint,
    outcome,
    requeued: input.requeued,
  }
}
