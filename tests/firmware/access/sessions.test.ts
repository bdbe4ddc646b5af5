import t from 'tap'
import { createManualClock } from '../../../firmware/common/clock.js'
import { createSessionStore } from '../../../firmware/access/sessions.js'
import type { Principal } from '../../../firmware/access/roles.js'

const bob: Principal = { name: 'bob', role: 'user', addresses: ['bob@corp.example'], source: 'local' }

t.test('sessions end when idle, when too old, at sign-out, with their account, and past the bound', async (t) => {
  const clock = createManualClock(Date.parse('2026-12-01T08:00:00Z'))
  const sessions = createSessionStore({ clock }, { idleTimeoutMs: 60_000, absoluteTimeoutMs: 300_000, sessionsMax: 3 })
  const { id, session } = sessions.create(bob)
  t.match(session, { user: 'bob', role: 'user', expiresAt: '2026-12-01T08:05:00.000Z', idleExpiresAt: '2026-12-01T08:01:00.000Z' })
  for (let minute = 0; minute < 5; minute++) {
    clock.advance(59_000)
    t.ok(sessions.resume(id), `used within the idle timeout (${minute + 1})`)
  }
  clock.advance(59_000)
  t.notOk(sessions.resume(id), 'five minutes after sign-in it ends, however busy')

  const idle = sessions.create(bob)
  clock.advance(60_000)
  t.notOk(sessions.resume(idle.id), 'a minute idle ends it')

  const fresh = sessions.create(bob)
  const resumed = sessions.resume(fresh.id)!
  t.ok(resumed.csrfMatches(fresh.session.csrfToken))
  t.notOk(resumed.csrfMatches(undefined))
  t.notOk(resumed.csrfMatches(fresh.session.csrfToken.slice(1) + 'x'))
  t.notOk(sessions.resume('forged-id'), 'an unknown id is nobody')
  t.ok(sessions.end(fresh.id))
  t.notOk(sessions.resume(fresh.id), 'signed out')

  const a = sessions.create(bob)
  clock.advance(1_000)
  const b = sessions.create({ ...bob, name: 'carol' })
  clock.advance(1_000)
  sessions.resume(a.id)
  sessions.create(bob)
  sessions.create(bob)
  t.equal(sessions.size(), 3, 'at most sessionsMax')
  t.notOk(sessions.resume(b.id), 'the one idle longest was ended to make room')
  t.equal(sessions.endAllOf('bob'), 3, 'every session of an account ends with it')
  t.equal(sessions.size(), 0)
})
