import t from 'tap'
import { createManualClock } from '../../../firmware/common/clock.js'
import { validateConfig } from '../../../config/load.js'
import {
  addressKey,
  createLoginThrottle,
  loginAuditEntry,
  loginAuditEventsPerMinuteMax,
  loginThrottleDefaults,
  type LoginThrottleEvent,
  type LoginThrottleOptions,
} from '../../../firmware/api/login-throttle.js'

function throttleWith(options: Partial<LoginThrottleOptions> = {}) {
  const clock = createManualClock()
  const events: LoginThrottleEvent[] = []
  const throttle = createLoginThrottle({ clock, onEvent: (event) => events.push(event) }, { ...loginThrottleDefaults, ...options })
  return { clock, events, throttle }
}

t.test('the defaults are the config schema defaults', async (t) => {
  t.same(validateConfig({}).http.loginThrottle, loginThrottleDefaults)
})

t.test('after the free failures the delay doubles per failure up to the cap', async (t) => {
  const { throttle, clock } = throttleWith()
  const waits: number[] = []
  for (let failure = 1; failure <= 12; failure += 1) {
    throttle.recordFailure('192.0.2.7', 'admin')
    waits.push(throttle.waitMs('192.0.2.7', 'admin'))
  }
  t.same(waits, [0, 0, 0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000])
  clock.advance(10_000)
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 20_000, 'the wait runs from the last failure')
  clock.advance(20_000)
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 0, 'checked at once when the delay has passed')
  for (let failure = 0; failure < 200; failure += 1) throttle.recordFailure('192.0.2.7', 'admin')
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 30_000, 'still the cap after 212 failures')
})

t.test('failures touch only their own (address, user) pair', async (t) => {
  const { throttle } = throttleWith({ failuresBeforeDelay: 2 })
  for (let failure = 0; failure < 6; failure += 1) throttle.recordFailure('192.0.2.7', 'admin')
  for (let failure = 0; failure < 6; failure += 1) throttle.recordFailure('192.0.2.8', 'operator')
  t.ok(throttle.waitMs('192.0.2.7', 'admin') > 0)
  t.equal(throttle.waitMs('192.0.2.8', 'admin'), 0, 'another address')
  t.equal(throttle.waitMs('192.0.2.7', 'operator'), 0, 'another user name')
  t.equal(throttle.waitMs('192.0.2.9', 'admin'), 0)
  t.same(throttle.stats(), { pairs: 2, throttled: 2 })
})

t.test('a correct password clears the pending delay but not the failure count', async (t) => {
  const { throttle } = throttleWith()
  for (let failure = 0; failure < 6; failure += 1) throttle.recordFailure('192.0.2.7', 'admin')
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 2_000)
  throttle.recordSuccess('192.0.2.7', 'admin')
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 0, 'the admin is not slowed after logging in')
  throttle.recordFailure('192.0.2.7', 'admin')
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 4_000, 'no free failures given back: the next one waits as the 7th')
})

t.test('events: each free failure, one at the start, one summary with counts at the end', async (t) => {
  const { throttle, clock, events } = throttleWith({ failuresBeforeDelay: 3, forgetAfterMs: 60_000 })
  for (let failure = 0; failure < 10; failure += 1) {
    throttle.waitMs('192.0.2.7', 'admin')
    throttle.recordFailure('192.0.2.7', 'admin')
  }
  throttle.waitMs('192.0.2.7', 'admin')
  throttle.recordSuccess('192.0.2.7', 'admin')
  t.same(events, [
    { kind: 'failed', address: '192.0.2.7', user: 'admin', failures: 1 },
    { kind: 'failed', address: '192.0.2.7', user: 'admin', failures: 2 },
    { kind: 'throttled', address: '192.0.2.7', user: 'admin', failures: 3, delayMs: 1_000 },
  ])
  clock.advance(59_999)
  throttle.tick()
  t.equal(events.length, 3, 'not forgotten before forgetAfterMs')
  clock.advance(1)
  throttle.tick()
  t.same(events[3], { kind: 'throttle-ended', address: '192.0.2.7', user: 'admin', reason: 'quiet', failures: 10, delayedAttempts: 8, successes: 1, throttledMs: 60_000 })
  t.same(throttle.stats(), { pairs: 0, throttled: 0 })
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 0)
  t.same(loginAuditEntry(events[3]!), {
    actor: 'http@192.0.2.7',
    action: 'login.throttle-ended',
    details: { via: 'http', remoteAddress: '192.0.2.7', user: 'admin', reason: 'quiet', failures: 10, delayedAttempts: 8, successes: 1, throttledMs: 60_000 },
  })

  // close(): the service stops, and every throttled pair gets its summary.
  for (let failure = 0; failure < 4; failure += 1) throttle.recordFailure('192.0.2.9', 'admin')
  throttle.recordFailure('192.0.2.10', 'admin')
  throttle.close()
  t.match(events.at(-1), { kind: 'throttle-ended', address: '192.0.2.9', reason: 'stopped', failures: 4 })
  t.equal(events.filter((event) => event.kind === 'throttle-ended').length, 2, 'unthrottled pairs end without a summary')
  t.same(throttle.stats(), { pairs: 0, throttled: 0 })
})

t.test('at most pairsMax pairs; a flood of new pairs forgets quiet ones before throttled ones', async (t) => {
  const { throttle, events } = throttleWith({ pairsMax: 100, failuresBeforeDelay: 2 })
  throttle.recordFailure('192.0.2.7', 'admin')
  throttle.recordFailure('192.0.2.7', 'admin')
  const delay = throttle.waitMs('192.0.2.7', 'admin')
  t.ok(delay > 0)
  for (let pair = 0; pair < 5_000; pair += 1) throttle.recordFailure(`10.${(pair >> 8) & 255}.${pair & 255}.1`, `user-${pair}`)
  t.same(throttle.stats(), { pairs: 100, throttled: 1 })
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), delay, 'the throttled pair survived 5,000 new pairs')
  // Throttled pairs alone fill the table: the one with the oldest failure goes, with its summary.
  for (let pair = 0; pair < 100; pair += 1) {
    throttle.recordFailure(`10.9.9.${pair}`, 'admin')
    throttle.recordFailure(`10.9.9.${pair}`, 'admin')
  }
  t.same(throttle.stats(), { pairs: 100, throttled: 100 })
  t.equal(throttle.waitMs('192.0.2.7', 'admin'), 0, 'forgotten')
  t.equal(events.length, loginAuditEventsPerMinuteMax, 'the flood was not passed on event by event')

  // An evicted throttled pair gets its summary.
  const small = throttleWith({ pairsMax: 3, failuresBeforeDelay: 1 })
  for (const address of ['192.0.2.1', '192.0.2.2', '192.0.2.3', '192.0.2.4']) small.throttle.recordFailure(address, 'admin')
  t.same(
    small.events.map((event) => event.kind),
    ['throttled', 'throttled', 'throttled', 'throttle-ended', 'throttled'],
  )
  t.match(small.events[3], { address: '192.0.2.1', reason: 'evicted', failures: 1 })
  t.same(small.throttle.stats(), { pairs: 3, throttled: 3 })
})

t.test('audit events are bounded per minute; the rest are counted in one event', async (t) => {
  const { throttle, clock, events } = throttleWith()
  for (let pair = 0; pair < 500; pair += 1) throttle.recordFailure(`10.0.${pair >> 8}.${pair & 255}`, 'admin')
  t.equal(events.length, loginAuditEventsPerMinuteMax)
  clock.advance(60_000)
  throttle.tick()
  t.same(events.at(-1), { kind: 'audit-suppressed', events: 500 - loginAuditEventsPerMinuteMax })
  throttle.tick()
  t.equal(events.length, loginAuditEventsPerMinuteMax + 1, 'one summary, not one per tick')
  t.same(loginAuditEntry(events.at(-1)!), { actor: 'http', action: 'login.audit-suppressed', details: { via: 'http', events: 470 } })
})

t.test('address keys: IPv4-mapped as IPv4, IPv6 by /64, long user names cut', async (t) => {
  t.equal(addressKey('192.0.2.7'), '192.0.2.7')
  t.equal(addressKey('::ffff:192.0.2.7'), '192.0.2.7')
  t.equal(addressKey('2001:db8:1:2:3:4:5:6'), '2001:db8:1:2::/64')
  t.equal(addressKey('2001:0db8:0001:0002::9'), '2001:db8:1:2::/64')
  t.equal(addressKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.equal(addressKey('::1'), '0:0:0:0::/64')
  t.equal(addressKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.equal(addressKey('64:ff9b::192.0.2.7'), '64:ff9b:0:0::/64')
  const { throttle } = throttleWith({ failuresBeforeDelay: 1 })
  throttle.recordFailure('2001:db8:1:2::a', 'admin')
  t.ok(throttle.waitMs('2001:db8:1:2:ffff::b', 'admin') > 0, 'another address of the same /64 shares the pair')
  t.equal(throttle.waitMs('2001:db8:1:3::a', 'admin'), 0, 'another /64 does not')
  throttle.recordFailure('192.0.2.7', 'x'.repeat(70))
  t.ok(throttle.waitMs('192.0.2.7', 'x'.repeat(64) + 'other') > 0, 'user names are cut at 64 characters')
})
