import t from 'tap'
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { createManualClock } from '../../../firmware/common/clock.js'
import { accountsFile, createAccountStore } from '../../../firmware/access/accounts.js'
import { signIn } from '../../../firmware/access/sign-in.js'

const store = (dataDir: string) => createAccountStore({ clock: createManualClock(Date.parse('2026-12-01T00:00:00Z')), logger: createMemoryLogger() }, { dataDir })

t.test('accounts persist (0600, hashes only), check passwords, and refuse bad input with the reason', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-accounts-'))
  const accounts = store(dataDir)
  await accounts.load()
  t.same(accounts.list(), [], 'no file yet: no accounts')
  await accounts.add({ name: 'bob', role: 'user', addresses: [' <Bob@Corp.Example> ', 'bob@corp.example', 'robert@corp.example'] }, 'bob-password-1')
  await accounts.add({ name: 'jane', role: 'auditor', addresses: [] }, 'jane-password-1')
  const text = await readFile(join(dataDir, accountsFile), 'utf8')
  t.equal((await stat(join(dataDir, accountsFile))).mode & 0o777, 0o600)
  t.notMatch(text, /bob-password-1|jane-password-1/, 'no password on disk')
  t.match(text, /scrypt\$/)

  const again = store(dataDir)
  await again.load()
  t.match(
    again.list(),
    [
      { name: 'bob', role: 'user', addresses: ['bob@corp.example', 'robert@corp.example'], disabled: false },
      { name: 'jane', role: 'auditor' },
    ],
    'reloaded, addresses normalized and de-duplicated',
  )
  t.match(await again.check('bob', 'bob-password-1'), { outcome: 'ok', principal: { name: 'bob', role: 'user', source: 'local' } })
  t.match(await again.check('bob', 'wrong-password'), { outcome: 'wrong-password' })
  t.match(await again.check('nobody', 'bob-password-1'), { outcome: 'unknown' })
  await again.setDisabled('bob', true)
  t.match(await again.check('bob', 'bob-password-1'), { outcome: 'disabled' }, 'a remembered password does not outlive a change')
  await again.setDisabled('bob', false)
  await again.setPassword('bob', 'bob-password-2')
  t.match(await again.check('bob', 'bob-password-1'), { outcome: 'wrong-password' }, 'the old password is forgotten at once')
  t.match(await again.check('bob', 'bob-password-2'), { outcome: 'ok' })

  for (const [input, password, message] of [
    [{ name: 'Bob', role: 'user', addresses: ['b@x.example'] }, 'long-password-1', /account name "Bob"/],
    [{ name: 'admin', role: 'admin', addresses: [] }, 'long-password-1', /reserved for the first admin/],
    [{ name: 'zoe', role: 'root', addresses: [] }, 'long-password-1', /role "root": one of admin, auditor, user/],
    [{ name: 'zoe', role: 'user', addresses: ['not an address'] }, 'long-password-1', /address "not an address": not an address/],
    [{ name: 'zoe', role: 'user', addresses: [] }, 'long-password-1', /needs at least one address/],
    [{ name: 'zoe', role: 'auditor', addresses: [] }, 'short', /shorter than 10/],
    [{ name: 'zoe', role: 'user', addresses: Array.from({ length: 101 }, (_, i) => `a${i}@x.example`) }, 'long-password-1', /at most 100/],
    [{ name: 'bob', role: 'user', addresses: ['b@x.example'] }, 'long-password-1', /exists/],
  ] as const) {
    await t.rejects(again.add({ ...input, addresses: [...input.addresses] }, password), { message }, String(message))
  }
  await t.rejects(again.remove('ghost'), { code: 'NOT_FOUND' })

  await writeFile(join(dataDir, accountsFile), '{"version":1,"accounts":[{"name":"x"}]}')
  await t.rejects(store(dataDir).load(), { code: 'ACCOUNTS_UNREADABLE', message: /accounts\.json: accounts\[0\]: not an account record/ })
  await writeFile(join(dataDir, accountsFile), 'not json')
  await t.rejects(store(dataDir).load(), { code: 'ACCOUNTS_UNREADABLE', message: /accounts\.json: not valid JSON/ })
})

t.test('sign-in: admin is the first admin only; a local name never reaches the directory; an unreachable directory is never a bypass', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'mailkeep-signin-'))
  const accounts = store(dataDir)
  await accounts.load()
  await accounts.add({ name: 'bob', role: 'user', addresses: ['bob@corp.example'] }, 'bob-password-1')
  const asked: string[] = []
  const firstAdmin = { verify: async (user: string, password: string) => user === 'admin' && password === 'first-admin-pass' }
  const directory = {
    check: async (name: string) => {
      asked.push(name)
      return name === 'down' ? { outcome: 'unavailable' as const, reason: 'connect ECONNREFUSED' } : { outcome: 'wrong-password' as const }
    },
  }
  const sources = { firstAdmin, accounts, directory }
  t.match(await signIn(sources, 'admin', 'first-admin-pass'), { outcome: 'ok', principal: { name: 'admin', role: 'admin', source: 'first-admin' } })
  t.match(await signIn(sources, 'admin', 'bob-password-1'), { outcome: 'failed', reason: 'wrong-password' })
  t.match(await signIn(sources, 'bob', 'bob-password-1'), { outcome: 'ok', principal: { role: 'user', addresses: ['bob@corp.example'] } })
  t.match(await signIn(sources, 'bob', 'wrong'), { outcome: 'failed', reason: 'wrong-password' })
  t.same(asked, [], 'neither admin nor a local account is asked of the directory')
  t.match(await signIn(sources, 'down', 'x'), { outcome: 'unavailable', reason: /ECONNREFUSED/ })
  t.match(await signIn({ firstAdmin, accounts }, 'carol', 'x'), { outcome: 'failed', reason: 'unknown' })
})
