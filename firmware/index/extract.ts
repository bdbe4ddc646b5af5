import { Worker } from 'node:worker_threads'
import { compile as compileHtmlToText } from 'html-to-text'
import { cutToChars } from './tokenize.js'

/**
 * Text of attachments, for the index. firmware/mime calls this while parsing (it already
 * extracts text/* and HTML itself; this adds binary document formats, PDF first) and puts
 * the result in `ParsedAttachment.text`, so the index sees every attachment's text the
 * same way and a hostile attachment is dealt with before the archive transaction starts.
 *
 * Bounds: input over `bytesMax` is not read; output is cut at `textCharsMax`; PDF text
 * is extracted in a worker thread that is terminated after `timeoutMs`, so a PDF built
 * to make pdf.js spin cannot stall ingest (a timer cannot interrupt work on the main
 * thread; terminating a worker can). PDF extraction uses the `unpdf` package (pdf.js
 * packaged for servers; works on Node 20 and Bun), loaded in the worker only, and
 * reports `unavailable` if the package is missing.
 */

export interface ExtractLimits {
  /** Largest attachment read, in bytes. */
  bytesMax: number
  /** Characters of text kept. */
  textCharsMax: number
  /** Time allowed for one binary document (PDF), in ms. */
  timeoutMs: number
}

/** Defaults: 16 MiB documents, 256 Ki characters of text (as firmware/mime keeps), 5 s per PDF. */
export const defaultExtractLimits: Readonly<ExtractLimits> = Object.freeze({
  bytesMax: 16 * 1024 * 1024,
  textCharsMax: 256 * 1024,
  timeoutMs: 5_000,
})

export type ExtractOutcome =
  | 'ok'
  /** No extractor for this content type. */
  | 'unsupported'
  /** Over `bytesMax`. */
  | 'too-large'
  /** Over `timeoutMs`; the worker was terminated. */
  | 'timeout'
  /** The extractor failed on this input (damaged or encrypted document). */
  | 'failed'
  /** The extractor's package is not installed (PDF without `unpdf`). */
  | 'unavailable'

export interface ExtractResult {
  /** Extracted text, cut at `textCharsMax`; null unless outcome is `ok`. */
  text: string | null
  outcome: ExtractOutcome
  /** Why, for the log, when not `ok`. */
  detail?: string
}

function mediaTypeOf(contentType: string): { type: string; charset: string | null } {
  const [type = '', ...parameters] = contentType.split(';')
  let charset: string | null = null
  for (const parameter of parameters) {
    const match = /^\s*charset\s*=\s*"?([^";\s]+)"?/i.exec(parameter)
    if (match) charset = match[1]!.toLowerCase()
  }
  return { type: type.trim().toLowerCase(), charset }
}

function decodeText(bytes: Uint8Array, charset: string | null): string {
  try {
    return new TextDecoder(charset ?? 'utf-8').decode(bytes)
  } catch {
    // An unknown charset label: UTF-8 with replacement characters still finds most words.
    return new TextDecoder('utf-8').decode(bytes)
  }
}

let htmlToText: ((html: string) => string) | undefined

/**
 * The worker's program (plain JavaScript, evaluated, so it runs the same under Node and
 * Bun without a TypeScript loader). It answers one request and exits.
 */
const pdfWorkerSource = `
const { parentPort, workerData } = require('node:worker_threads')
;(async () => {
  let unpdf
  try {
    unpdf = await import('unpdf')
  } catch (error) {
    parentPort.postMessage({ outcome: 'unavailable', detail: String(error && error.message || error) })
    return
  }
  try {
    const pdf = await unpdf.getDocumentProxy(new Uint8Array(workerData.bytes), { verbosity: 0 })
    const { text } = await unpdf.extractText(pdf, { mergePages: true })
    parentPort.postMessage({ outcome: 'ok', text: String(text).slice(0, workerData.textCharsMax) })
  } catch (error) {
    parentPort.postMessage({ outcome: 'failed', detail: String(error && error.message || error) })
  }
})()
`

function extractPdf(bytes: Uint8Array, limits: ExtractLimits): Promise<ExtractResult> {
  return new Promise((resolve) => {
    let settled = false
    const worker = new Worker(pdfWorkerSource, {
      eval: true,
      workerData: { bytes, textCharsMax: limits.textCharsMax },
      // pdf.js on a hostile document can allocate a lot; keep it from taking the appliance's memory.
      resourceLimits: { maxOldGenerationSizeMb: 256 },
    })
    const finish = (result: ExtractResult): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      void worker.terminate()
      resolve(result)
    }
    const timer = setTimeout(() => finish({ text: null, outcome: 'timeout', detail: `over ${limits.timeoutMs} ms` }), limits.timeoutMs)
    timer.unref()
    worker.on('message', (message: { outcome: ExtractOutcome; text?: string; detail?: string }) =>
      finish(message.outcome === 'ok' ? { text: cutToChars(message.text ?? '', limits.textCharsMax), outcome: 'ok' } : { text: null, outcome: message.outcome, detail: message.detail }),
    )
    worker.on('error', (error) => finish({ text: null, outcome: 'failed', detail: error.message }))
    worker.on('exit', (code) => finish({ text: null, outcome: 'failed', detail: `worker exited with code ${code}` }))
  })
}

/**
 * Extracts searchable text from one attachment. Never throws: what could not be read is
 * an outcome, and the attachment is archived and indexed by its name regardless.
 *
 * @param contentType the part's Content-Type (parameters allowed: `text/plain; charset=latin1`)
 * @param bytes the decoded content
 * @param limits bounds on input size, output length and time
 */
export async function extractAttachmentText(contentType: string, bytes: Uint8Array, limits: ExtractLimits = defaultExtractLimits): Promise<ExtractResult> {
  const { type, charset } = mediaTypeOf(contentType)
  if (bytes.byteLength > limits.bytesMax) return { text: null, outcome: 'too-large', detail: `${bytes.byteLength} bytes over ${limits.bytesMax}` }
  if (type === 'text/html' || type === 'application/xhtml+xml') {
    htmlToText ??= compileHtmlToText({ wordwrap: false, selectors: [{ selector: 'img', format: 'skip' }, { selector: 'a', options: { ignoreHref: true } }] })
    // html-to-text's time is linear in its input: bound the input, not only the output.
    return { text: cutToChars(htmlToText(cutToChars(decodeText(bytes, charset), limits.textCharsMax * 4)), limits.textCharsMax), outcome: 'ok' }
  }
  if (type.startsWith('text/')) return { text: cutToChars(decodeText(bytes, charset), limits.textCharsMax), outcome: 'ok' }
  if (type === 'application/pdf' || (type === 'application/octet-stream' && Buffer.from(bytes.subarray(0, 5)).toString('latin1') === '%PDF-')) {
    return extractPdf(bytes, limits)
  }
  return { text: null, outcome: 'unsupported' }
}
