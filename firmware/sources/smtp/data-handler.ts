import type { SMTPServerDataStream, SMTPServerSession } from 'smtp-server'
import type { IngestResult } from '../../archive/types.js'
import { SmtpError, formatReply, toHandlerError } from './errors.js'
import type { ListenerState } from './listener-state.js'
import { smtpDelivery, smtpErrorForSubmitFailure, snapshotEnvelope, submitWithTimeout, type EnvelopeSnapshot } from './message-submit.js'
import type { SmtpMessageRefusal } from './types.js'

/** The callback smtp-server hands onData: an error, or the text of the 250 reply. */
type DataCallback = (error?: Error | null, message?: string) => void

/** What the DATA handler uses of the listener. */
export type DataHandlerContext = Pick<ListenerState, 'logger' | 'clock' | 'pipeline' | 'options' | 'counters' | 'inFlight' | 'deadlines' | 'bufferedBytes' | 'bound' | 'lastArchiveFailure'>

/** Archive failures worth a warning and a mention in healthcheck; the other refusals are the sender's doing. */
const archiveFailures: ReadonlySet<SmtpMessageRefusal> = new Set<SmtpMessageRefusal>(['STORE_FULL', 'ARCHIVE_UNAVAILABLE', 'MESSAGE_REFUSED'])

function messageTooLarge(sizeBytesMax: number): SmtpError {
  return new SmtpError('MESSAGE_TOO_LARGE', `message over ${sizeBytesMax} bytes`, { replyText: `Message exceeds the size limit of ${sizeBytesMax} bytes` })
}

/** smtp-server's onData: each message is received by a MessageReception of its own. */
export function createDataHandler(context: DataHandlerContext) {
  return (stream: SMTPServerDataStream, session: SMTPServerSession, callback: DataCallback): void => {
    new MessageReception(context, stream, session, callback).begin()
  }
}

/**
 * One message from the DATA command to its reply. It holds the message's chunks within
 * `sizeBytesMax` and the listener-wide `bufferedBytesMax`, submits the bytes once the stream
 * ends and answers exactly once: 250 after the archive has the message (STYLE 8), an
 * explicit 4xx/5xx otherwise, 421 4.3.2 when stop() stops waiting for it. A client that
 * goes away mid-DATA, or is cut off by a deadline (cutOff), is counted as aborted and
 * nothing is submitted.
 */
export class MessageReception {
  readonly #context: DataHandlerContext
  readonly #stream: SMTPServerDataStream
  readonly #callback: DataCallback
  readonly #envelope: EnvelopeSnapshot
  readonly #sessionId: string
  readonly #startedAtMs: number
  readonly #chunks: Buffer[] = []
  #heldBytes = 0
  #refusal: SmtpError | null = null
  #ended = false
  #replied = false

  constructor(context: DataHandlerContext, stream: SMTPServerDataStream, session: SMTPServerSession, callback: DataCallback) {
    this.#context = context
    this.#stream = stream
    this.#callback = callback
    // Copied now: smtp-server resets session.envelope once the reply has been sent.
    this.#envelope = snapshotEnvelope(session)
    this.#sessionId = session.id
    this.#startedAtMs = context.clock.monotonicMs()
  }

  /** Registers the message as in flight and with the session's deadlines, and starts reading its stream. */
  begin(): void {
    const { inFlight, deadlines } = this.#context
    inFlight.add(this.#sessionId, () => this.#reply(new SmtpError('SHUTTING_DOWN', 'listener stopped before the message was archived')))
    deadlines.dataStarted(this.#sessionId, this)
    this.#stream.on('data', (chunk: Buffer) => {
      deadlines.dataReceived(this.#sessionId, chunk.length)
      this.#hold(chunk)
    })
    // An 'error' listener makes smtp-server destroy the stream with an error, not silently,
    // when the client goes away mid-DATA; 'close' below handles both.
    this.#stream.on('error', () => undefined)
    this.#stream.on('close', () => this.#streamClosed())
    this.#stream.on('end', () => this.#endOfData())
  }

  /** Keeps a chunk, or decides the refusal once a limit is passed and holds nothing more. */
  #hold(chunk: Buffer): void {
    const context = this.#context
    if (this.#refusal || this.#replied) return
    if (this.#stream.sizeExceeded) {
      // Keep reading (smtp-server needs the stream drained) but hold nothing more.
      this.#refusal = messageTooLarge(context.options.sizeBytesMax)
      this.#release()
      return
    }
    if (context.bufferedBytes + chunk.length > context.options.bufferedBytesMax) {
      this.#refusal = new SmtpError('BUFFER_FULL', `message buffers over ${context.options.bufferedBytesMax} bytes`, { replyText: 'Insufficient system resources, try again later' })
      this.#release()
      return
    }
    this.#chunks.push(chunk)
    this.#heldBytes += chunk.length
    context.bufferedBytes += chunk.length
  }

  /** The stream closed: before its end, the client went away mid-DATA. */
  #streamClosed(): void {
    if (this.#ended || this.#replied) return
    this.#context.counters.messagesAborted++
    this.#context.logger.info('message aborted: client went away during DATA', {
      session: this.#sessionId,
      remoteAddress: this.#envelope.remoteAddress,
      receivedBytes: this.#stream.byteLength,
    })
    this.#reply(new SmtpError('ARCHIVE_UNAVAILABLE', 'client went away during DATA', { replyText: 'Message incomplete' }))
  }

  /**
   * A deadline passed before the final dot (session-deadlines.ts, which sends the 421 and
   * closes the connection): nothing is submitted, whatever still arrives.
   */
  cutOff(error: SmtpError): void {
    if (this.#ended || this.#replied) return
    this.#context.counters.messagesAborted++
    this.#reply(error)
  }

  /** The end of DATA arrived: refuse what a limit stopped, else submit the message. */
  #endOfData(): void {
    this.#ended = true
    this.#context.deadlines.dataEnded(this.#sessionId)
    if (this.#replied) return
    if (!this.#refusal && this.#stream.sizeExceeded) this.#refusal = messageTooLarge(this.#context.options.sizeBytesMax)
    if (this.#refusal) {
      this.#refuse(this.#refusal)
      return
    }
    this.#submit()
  }

  #submit(): void {
    const context = this.#context
    const raw = this.#chunks.length === 1 && this.#chunks[0] ? this.#chunks[0] : Buffer.concat(this.#chunks, this.#heldBytes)
    const bound = context.bound
    const delivery = smtpDelivery(this.#envelope, bound ? `${bound.host}:${bound.port}` : null, context.clock.now())
    submitWithTimeout(context, raw, delivery, context.options.submitTimeoutMs).then(
      (result) => this.#archived(raw, result),
      (error: unknown) => {
        if (this.#replied) return // stop() already answered this session.
        this.#refuse(smtpErrorForSubmitFailure(error, context.options.submitTimeoutMs))
      },
    )
  }

  /** The archive holds the message durably: count it and send the 250. */
  #archived(raw: Uint8Array, result: IngestResult): void {
    const { counters, logger } = this.#context
    if (this.#replied) {
      // stop() gave up on this session; the sender retries and dedup absorbs the copy.
      logger.info('message archived after its session was closed', { session: this.#sessionId, id: result.id })
      return
    }
    counters.messagesAccepted++
    if (result.duplicate) counters.messagesDuplicate++
    counters.bytesAccepted += raw.byteLength
    logger.info('message archived', {
      session: this.#sessionId,
      id: result.id,
      duplicate: result.duplicate,
      sizeBytes: raw.byteLength,
      recipients: this.#envelope.to.length,
      remoteAddress: this.#envelope.remoteAddress,
      durationMs: Math.round(this.#context.clock.monotonicMs() - this.#startedAtMs),
    })
    this.#reply(null, `2.0.0 Ok: archived ${result.id}`)
  }

  /** Counts and logs a refused message (an archive failure is remembered for healthcheck), then replies. */
  #refuse(error: SmtpError): void {
    const context = this.#context
    const code = error.code as SmtpMessageRefusal
    context.counters.messagesRefused[code]++
    if (archiveFailures.has(code)) {
      context.lastArchiveFailure = { code: error.code, atMs: context.clock.now() }
      context.logger.warn('message not archived', { session: this.#sessionId, reply: error.reply && formatReply(error.reply), error })
    } else {
      context.logger.info('message refused', { session: this.#sessionId, reply: error.reply && formatReply(error.reply), sizeBytes: this.#stream.byteLength })
    }
    this.#reply(error)
  }

  /** Sends the one reply: frees the held bytes, leaves the in-flight set, calls smtp-server back. */
  #reply(error: SmtpError | null, text?: string): void {
    if (this.#replied) return
    this.#replied = true
    this.#release()
    this.#context.inFlight.finish(this.#sessionId)
    if (error) this.#callback(toHandlerError(error))
    else this.#callback(null, text)
  }

  #release(): void {
    this.#context.bufferedBytes -= this.#heldBytes
    this.#heldBytes = 0
    this.#chunks.length = 0
  }
}
