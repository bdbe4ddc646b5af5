import type { SignedVerifyReport, VerifySide } from '../mirror/verify-protocol.js'

/** Unexplained differences printed by id, at most (the report in the audit log lists more). */
const unexplainedShownMax = 20

const short = (hex: string): string => `${hex.slice(0, 16)}…`

function sideLine(label: string, side: VerifySide): string {
  return `  ${label}: serial ${side.serial}, store ${short(side.storeId)}, sequence ${side.lastSequence}, ${side.messages} messages, ${side.bytes} bytes, root ${short(side.root)}, audit head ${side.auditHead.seq} ${short(side.auditHead.hash || '-')}`
}

/** `mirror verify` as a technician reads it: the verdict first, then the cut, the differences and the proof. */
export function renderVerify(result: unknown): string {
  const { report, signatures } = result as SignedVerifyReport
  const verdict = {
    agree: 'AGREE: both archives hold the same messages',
    explained: 'EXPLAINED: the archives differ, and every difference has a reason',
    unexplained: 'UNEXPLAINED differences found: re-queued for copying; verify again once the queue is empty',
    incomplete: 'INCOMPLETE: more differences than one verify compares; the copy queues repair them, verify again later',
  }[report.outcome]
  const counts = Object.entries(report.counts)
    .map(([name, count]) => `${name} ${count}`)
    .join(', ')
  const lines = [
    `mirror verify with ${report.responder.serial}: ${verdict}`,
    sideLine('here', report.initiator),
    sideLine('peer', report.responder),
    `  differences: ${counts}`,
    `  re-queued: ${report.requeued.initiator} here, ${report.requeued.responder} on the peer`,
    report.policyAgree
      ? '  retention and holds: same settings'
      : `  retention and holds: DIFFERENT (fingerprints ${short(report.initiator.policyFingerprint)} here, ${short(report.responder.policyFingerprint)} on the peer)`,
    `  exchanged: ${report.roundTrips} round trips, ${report.bytesExchanged} bytes`,
    `  signed by both (${signatures.initiator.length > 0 && signatures.responder.length > 0 ? 'here and peer' : 'incomplete'}); kept in both audit logs as mirror.verify`,
  ]
  const unexplained = report.differences.filter((difference) => difference.class === 'unexplained')
  for (const difference of unexplained.slice(0, unexplainedShownMax)) {
    lines.push(`  unexplained ${difference.id} only ${difference.presentOn === 'initiator' ? 'here' : 'on the peer'}`)
  }
  if (report.counts.unexplained > unexplainedShownMax) lines.push(`  … ${report.counts.unexplained - unexplainedShownMax} more (mailkeep --json mirror verify, or the audit log)`)
  return lines.join('\n')
}
