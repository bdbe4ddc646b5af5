import type { SMTPServerSession } from 'smtp-server'
import type { Delivery, IngestResult } from '../../archive/types.js'
import type { Logger } from '../../common/logger.js'
import type { IngestPipeline } from '../types.js'
import { SmtpError, smtpErrorForIngestFailure } from './errors.js'

/** The envelope as it was when DATA began (smtp-server resets the session's copy after the reply). */
export interface EnvelopeSnapshot {
  from: string | null
  to: string[]
  remoteAddress: string
}

/** Copies the session's envelope: MAIL FROM (null for `<>`) and the distinct RCPT TO addresses, lower-cased. */
export function snapshotEnvelope(session: SMTPServerSession): EnvelopeSnapshot {
  const mailFrom = session.envelope.mailFrom
  const to = [...new Set(session.envelope.rcptTo.map((recipient) => recipient.address.toLowerCase()))]
  return { from: mailFrom && mailFrom.address !== '' ? mailFrom.address : null, to, remoteAddress: session.remoteAddress }
}

/**
 * The Delivery of one message received over SMTP.
 *
 * @param sourceName the listener's `host:port`, null when not bound
 * @param receivedAtMs when the end of DATA arrived, milliseconds since the epoch
 */
export function smtpDelivery(envelope: EnvelopeSnapshot, sourceName: string | null, receivedAtMs: number): Delivery {
  return {
    source: 'smtp',
    sourceName,
    receivedAtMs,
    envelopeFrom: envelope.from,
    envelopeTo: envelope.to,
    // SMTP cannot tell BCC from To/Cc recipients: every RCPT TO is in envelopeTo.
    envelopeBcc: [],
    remoteAddress: envelope.remoteAddress,
    journalEnvelopeText: null,
    deliveryKey: null,
  }
}

/** The rejection of submitWithTimeout when the pipeline did not answer in time. */
export class SubmitTimeout extends Error {}

/**
 * `pipeline.submit`, rejected with SubmitTimeout after `timeoutMs` milliseconds (the timer
 * is unref'd). A pipeline that throws instead of rejecting gives a rejection too. A submit
 * that resolves after the timeout is logged: the sender retries and dedup absorbs the copy.
 */
export function submitWithTimeout(deps: { pipeline: IngestPipeline; logger: Logger }, raw: Uint8Array, delivery: Delivery, timeoutMs: number): Promise<IngestResult> {
  // A pipeline that throws instead of rejecting must not throw inside smtp-server's stream events.
  const submitted = new Promise<IngestResult>((resolve) => resolve(deps.pipeline.submit(raw, delivery)))
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => {
      reject(new SubmitTimeout())
      submitted.then(
        (result) => deps.logger.info('message archived after the submit timeout; the sender retries and dedup absorbs the copy', { id: result.id }),
        () => undefined,
      )
    }, timeoutMs)
    timer.unref()
  })
  return Promise.race([submitted, timeout]).finally(() => clearTimeout(timer))
}

/**
 * The reply to a failed submit: 451 4.3.0 when the archive did not answer within
 * `submitTimeoutMs`, else the reply of smtpErrorForIngestFailure.
 */
export function smtpErrorForSubmitFailure(error: unknown, submitTimeoutMs: number): SmtpError {
  if (error instanceof SubmitTimeout) {
    return new SmtpError('ARCHIVE_UNAVAILABLE', `archive did not answer within ${submitTimeoutMs} ms`, { replyText: 'Archive did not answer in time, try again later' })
  }
  return smtpErrorForIngestFailure(error)
}
