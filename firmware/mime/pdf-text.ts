import { Worker } from 'node:worker_threads'
import { cutToChars } from '../common/text.js'

/**
 * Text of PDF attachments, for the index. The parser (parser.ts) calls `extract` for an
 * attachment that `looksLikePdf` and puts the text in `ParsedAttachment.text`, so a PDF's
 * words find its message like those of a text attachment.
 *
 * A PDF is hostile input in a complex format, so every extraction is bounded:
 * - input over `bytesMax` is not read;
 * - the text is cut at `textCharsMax` characters (in the worker, before it is copied back);
 * - extraction runs in a worker thread terminated after `timeoutMs`: a timer cannot
 *   interrupt work on the main thread, terminating a worker can; the worker's heap is
 *   capped (`heapMbMax`) so a document built to allocate cannot take the appliance's memory;
 * - at most `concurrentMax` workers run at once; further PDFs wait their turn (a burst of
 *   PDF mail cannot start a worker per message).
 *
 * Extraction uses the `unpdf` package (pdf.js built for servers; runs on Node 20 and Bun),
 * loaded in the worker only. Its worker program is plain JavaScript evaluated from a string,
 * so it runs the same under Node and Bun without a TypeScript loader.
 */

export interface PdfTextLimits {
  /** Largest PDF read, in bytes. */
  bytesMax: number
  /** Characters of text kept. */
  textCharsMax: number
  /** Time allowed for one document, in ms, waiting for a worker not included. */
  timeoutMs: number
  /** Heap of one extraction worker, in MiB. */
  heapMbMax: number
  /** Extraction workers running at once. */
  concurrentMax: number
}

/** Defaults: 16 MiB documents, 256 Ki characters (as the parser keeps per attachment), 5 s, 256 MiB, 2 workers (the appliance's cores). */
export const defaultPdfTextLimits: Readonly<PdfTextLimits> = Object.freeze({
  bytesMax: 16 * 1024 * 1024,
  textCharsMax: 256 * 1024,
  timeoutMs: 5_000,
  heapMbMax: 256,
  concurrentMax: 2,
})

export type PdfTextOutcome =
  | 'ok'
  /** Over `bytesMax`. */
  | 'too-large'
  /** Over `timeoutMs`; the worker was terminated. */
  | 'timeout'
  /** pdf.js failed on this input (damaged or encrypted document), or the worker died. */
  | 'failed'
  /** The `unpdf` package could not be loaded. */
  | 'unavailable'

export interface PdfTextResult {
  /** The text, cut at `textCharsMax`; null unless outcome is `ok`. */
  text: string | null
  outcome: PdfTextOutcome
  /** Why, for the log, when not `ok`. */
  detail?: string
}

const pdfMagic = [0x25, 0x50, 0x44, 0x46, 0x2d] // "%PDF-"

/**
 * True for `application/pdf`, and for a generic type (`application/octet-stream`, or none)
 * whose content starts with the PDF magic bytes: mailers often send PDFs as octet-stream.
 */
export function looksLikePdf(mediaType: string, bytes: Uint8Array): boolean {
  const type = mediaType.toLowerCase()
  if (type === 'application/pdf' || type === 'application/x-pdf') return true
  if (type !== 'application/octet-stream' && type !== 'application/binary' && type !== '') return false
  return bytes.byteLength >= pdfMagic.length && pdfMagic.every((byte, index) => bytes[index] === byte)
}

const workerSource = `
const { parentPort, workerData } = require('node:worker_threads')
;(async () => {
  let unpdf
  try {
    unpdf = await import('unpdf')
  } catch (error) {
    parentPort.postMessage({ outcome: 'unavailable', detail: String((error && error.message) || error) })
    return
  }
  try {
    const pdf = await unpdf.getDocumentProxy(new Uint8Array(workerData.bytes), { verbosity: 0 })
    const { text } = await unpdf.extractText(pdf, { mergePages: true })
    parentPort.postMessage({ outcome: 'ok', text: String(text).slice(0, workerData.textCharsMax) })
  } catch (error) {
    parentPort.postMessage({ outcome: 'failed', detail: String((error && error.message) || error) })
  }
})()
`

function runWorker(bytes: Uint8Array, limits: PdfTextLimits): Promise<PdfTextResult> {
  return new Promise((resolve) => {
    let settled = false
    const worker = new Worker(workerSource, {
      eval: true,
      workerData: { bytes, textCharsMax: limits.textCharsMax },
      resourceLimits: { maxOldGenerationSizeMb: limits.heapMbMax },
    })
    const finish = (result: PdfTextResult): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      void worker.terminate()
      resolve(result)
    }
    const timer = setTimeout(() => finish({ text: null, outcome: 'timeout', detail: `over ${limits.timeoutMs} ms` }), limits.timeoutMs)
    timer.unref()
    worker.on('message', (message: { outcome: PdfTextOutcome; text?: string; detail?: string }) =>
      finish(message.outcome === 'ok' ? { text: cutToChars(message.text ?? '', limits.textCharsMax), outcome: 'ok' } : { text: null, outcome: message.outcome, detail: message.detail }),
    )
    worker.on('error', (error) => finish({ text: null, outcome: 'failed', detail: error.message }))
    worker.on('exit', (code) => finish({ text: null, outcome: 'failed', detail: `worker exited with code ${code}` }))
  })
}

export interface PdfTextExtractor {
  /**
   * Extracts the text of one PDF. Never throws: what could not be read is an outcome.
   * @param timeoutMs a shorter time limit than the extractor's `timeoutMs` for this document
   */
  extract(bytes: Uint8Array, timeoutMs?: number): Promise<PdfTextResult>
  /** Extractions running and waiting, for tests and status. */
  load(): { running: number; waiting: number }
}

/** An extractor with its own bound on concurrent workers. */
export function createPdfTextExtractor(limits: PdfTextLimits = defaultPdfTextLimits): PdfTextExtractor {
  let running = 0
  const waiting: Array<() => void> = []
  const acquire = async (): Promise<void> => {
    if (running < limits.concurrentMax) {
      running++
      return
    }
    await new Promise<void>((resolve) => waiting.push(resolve))
  }
  const release = (): void => {
    const next = waiting.shift()
    // The slot passes straight to the next waiter; `running` stays the same.
    if (next) next()
    else running--
  }
  return {
    async extract(bytes, timeoutMs) {
      if (bytes.byteLength > limits.bytesMax) return { text: null, outcome: 'too-large', detail: `${bytes.byteLength} bytes over ${limits.bytesMax}` }
      await acquire()
      try {
        return await runWorker(bytes, timeoutMs === undefined ? limits : { ...limits, timeoutMs: Math.min(limits.timeoutMs, timeoutMs) })
      } finally {
        release()
      }
    },
    load() {
      return { running, waiting: waiting.length }
    },
  }
}
