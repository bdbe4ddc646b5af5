import type { ServerResponse } from 'node:http'
import type { Logger } from '../common/logger.js'
import { MailkeepError } from '../common/errors.js'

/** An error answered with its own HTTP status (401, 404, 405, 413 …) and a stable `code`. */
export class HttpError extends MailkeepError {
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message)
  }
}

/** Answers `body` as JSON with `status`; never cached (answers carry archive data). */
export function sendJson(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  response.end(text)
}

/** The status of a typed error from a handler: its code decides, then whether a retry can help. */
export function statusOfError(error: MailkeepError): number {
  if (error instanceof HttpError) return error.status
  if (error.code === 'NOT_FOUND') return 404
  if (error.code === 'EXISTS') return 409
  return error.retryable ? 503 : 400
}

/**
 * Answers a failed request: a typed error with its status, code, message (and fields), a
 * 401 with the Basic challenge; anything else is logged and answered 500 without detail.
 * A response already under way is cut off, since its status line is gone.
 */
export function sendError(response: ServerResponse, error: unknown, logger: Logger, path: string | undefined): void {
  if (response.headersSent) {
    response.destroy()
    return
  }
  if (error instanceof HttpError) {
    if (error.status === 401) response.setHeader('www-authenticate', 'Basic realm="mailkeep", charset="UTF-8"')
    return sendJson(response, error.status, { error: { code: error.code, message: error.message } })
  }
  if (error instanceof MailkeepError) {
    return sendJson(response, statusOfError(error), { error: { code: error.code, message: error.message, ...error.fields } })
  }
  logger.error('request failed', { error, path: path?.slice(0, 200) })
  sendJson(response, 500, { error: { code: 'INTERNAL', message: 'internal error' } })
}
