import assert from 'node:assert/strict'
import { createDataHandler } from './data-handler.js'
import { startListener, stopListener } from './listener-lifecycle.js'
import { createListenerState, type ListenerState } from './listener-state.js'
import { createCloseHandler, createConnectHandler, createMailFromHandler, createRcptHandler } from './session-handlers.js'
import { smtpStatsOf } from './smtp-counters.js'
import { resolveSmtpOptions } from './smtp-options.js'
import type { SmtpHealth, SmtpSource, SmtpSourceDeps, SmtpSourceOptions } from './types.js'

/*
 * The listener is a façade over named units, each testable alone:
 * - smtp-options.ts: defaults and validation of the options;
 * - session-handlers.ts: admission, trust and recipient policy (onConnect, onMailFrom, onRcptTo, onClose);
 * - connection-admission.ts: who gets a connection slot (per address, slots kept for trusted networks);
 * - session-timeline.ts, session-deadlines.ts: the absolute deadlines of each session and their timers;
 * - data-handler.ts: one message from DATA to its reply, within the size and memory limits;
 * - message-submit.ts: the delivery, the submit with its timeout, the reply to a failed submit;
 * - listener-lifecycle.ts: start (validate, bind) and stop (421s, drain, close);
 * - listener-state.ts, in-flight.ts, smtp-counters.ts: the state those share.
 */

/** healthcheck(): ok while listening; the detail names the address, the load and the last archive failure. */
function listenerHealth(listener: ListenerState): SmtpHealth {
  const { phase, bound, lastArchiveFailure } = listener
  if (phase !== 'listening' || !bound) return { ok: false, detail: phase === 'created' || phase === 'starting' ? 'not started' : 'stopped' }
  const failure = lastArchiveFailure ? `; last archive failure ${lastArchiveFailure.code} at ${new Date(lastArchiveFailure.atMs).toISOString()}` : ''
  return {
    ok: true,
    detail: `listening on ${bound.host}:${bound.port}; ${listener.sessions.size} sessions (${listener.untrusted.total} untrusted), ${listener.inFlight.size} in DATA, ${listener.counters.messagesAccepted} accepted${failure}`,
  }
}

/**
 * Creates the SMTP listener: the push source of the appliance. Pure: opens nothing until
 * start().
 *
 * Each message's envelope (MAIL FROM and every RCPT TO, BCC recipients included) becomes
 * the Delivery, and the DATA bytes, as received with only the transparency dots removed,
 * go to `pipeline.submit`. `250 2.0.0 Ok: archived <id>` is sent only after submit
 * resolved, i.e. after the message is durable (STYLE 8); every failure is answered with
 * an explicit 4xx/5xx and enhanced code (errors.ts), never with silence. No AUTH: trust
 * comes from the recipient (archive recipients) or the client network (trustedNetworks).
 */
export function createSmtpSource(deps: SmtpSourceDeps, options: SmtpSourceOptions): SmtpSource {
  const listener = createListenerState({ logger: deps.logger.child('smtp'), clock: deps.clock, pipeline: deps.pipeline, archiveReadOnly: deps.archiveReadOnly }, resolveSmtpOptions(options))
  const handlers = {
    onConnect: createConnectHandler(listener),
    onMailFrom: createMailFromHandler(listener),
    onRcptTo: createRcptHandler(listener),
    onData: createDataHandler(listener),
    onClose: createCloseHandler(listener),
  }
  return {
    name: 'smtp',
    start: () => startListener(listener, deps.tls, handlers),
    stop: () => stopListener(listener),
    address() {
      assert.ok(listener.bound, 'address() called before start() resolved')
      return { ...listener.bound }
    },
    listeners(): Record<string, string> {
      return listener.phase === 'listening' && listener.bound ? { smtp: `${listener.bound.host}:${listener.bound.port}` } : {}
    },
    healthcheck: () => listenerHealth(listener),
    stats: () =>
      smtpStatsOf(listener.counters, {
        sessionsActive: listener.sessions.size,
        sessionsUntrusted: listener.untrusted.total,
        messagesInFlight: listener.inFlight.size,
        bufferedBytes: listener.bufferedBytes,
      }),
  }
}
