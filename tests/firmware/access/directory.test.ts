import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createMemoryLogger } from '../../../firmware/common/logger.js'
import { systemClock } from '../../../firmware/common/clock.js'
import { validateConfig } from '../../../config/load.js'
import type { LdapConfig } from '../../../config/types.js'
import { checkDirectoryConfig, createDirectory, escapeFilterValue, roleOfGroups } from '../../../firmware/access/directory.js'
import { directoryConfig, directoryGroups, directoryPassword, startTestDirectory } from '../../helpers/ldap-directory.js'
import { opensslChain } from '../../helpers/tls.js'

const ldapOf = (block: Record<string, unknown>): LdapConfig => validateConfig({ auth: { ldap: block } }).auth.ldap!

t.test('filter escaping and group-to-role mapping', async (t) => {
  t.equal(escapeFilterValue('a*b(c)d\\e\u0000'), 'a\\2ab\\28c\\29d\\5ce\\00')
  const groups = { admin: ['CN=Admins, OU=Groups,DC=x'], auditor: ['cn=auditors,ou=groups,dc=x'], user: ['cn=users,ou=groups,dc=x'] }
  t.equal(roleOfGroups(['cn=users,ou=groups,dc=x', 'cn=admins,ou=groups,dc=x'], groups), 'admin', 'the highest role; DNs compare without case or spaces')
  t.equal(roleOfGroups(['cn=users,ou=groups,dc=x'], groups), 'user')
  t.equal(roleOfGroups(['cn=other,dc=x'], groups), undefined)
})

t.test('a directory against a real slapd: roles, aliases, disabled, wrong password, injection, TLS, outage', async (t) => {
  const slapd = await startTestDirectory()
  t.teardown(() => slapd.remove())
  const caFile = join(slapd.dir, 'ca.pem')
  for (const startTls of [false, true]) {
    const config = ldapOf(directoryConfig(slapd, caFile, startTls))
    const directory = createDirectory({ clock: systemClock, logger: createMemoryLogger() }, config, await checkDirectoryConfig(config))
    const via = startTls ? 'StartTLS' : 'LDAPS'
    t.match(
      await directory.check('ann', directoryPassword('ann')),
      { outcome: 'ok', principal: { name: 'ann', role: 'admin', addresses: ['ann@corp.example'], source: 'directory' } },
      `${via}: ann is an admin (admins and users)`,
    )
    t.match(await directory.check('aud', directoryPassword('aud')), { outcome: 'ok', principal: { role: 'auditor' } }, `${via}: aud`)
    t.match(
      await directory.check('uma', directoryPassword('uma')),
      { outcome: 'ok', principal: { role: 'user', addresses: ['uma@corp.example', 'uma.alias@corp.example'] } },
      `${via}: uma with her alias; x500 skipped`,
    )
    t.match(await directory.check('dis', directoryPassword('dis')), { outcome: 'disabled' }, `${via}: dis is disabled`)
    t.match(await directory.check('nog', directoryPassword('nog')), { outcome: 'no-role' }, `${via}: nog has no role`)
    t.match(await directory.check('uma', 'not-her-password'), { outcome: 'wrong-password' }, `${via}: wrong password`)
    t.match(await directory.check('uma', ''), { outcome: 'wrong-password' }, `${via}: an empty password is never an anonymous bind`)
    t.match(await directory.check('nobody', 'x-password'), { outcome: 'unknown' })
    for (const injection of ['*', 'ann)(uid=*', 'a*']) t.match(await directory.check(injection, directoryPassword('ann')), { outcome: 'unknown' }, `${via}: ${injection} finds nobody`)
  }

  const other = await opensslChain(await (await import('node:fs/promises')).mkdtemp(join(slapd.dir, 'other-')))
  const otherCa = join(slapd.dir, 'other-ca.pem')
  await writeFile(otherCa, other.otherCaPem)
  const untrusted = ldapOf(directoryConfig(slapd, otherCa))
  const refused = createDirectory({ clock: systemClock, logger: createMemoryLogger() }, untrusted, await checkDirectoryConfig(untrusted))
  t.match(await refused.check('ann', directoryPassword('ann')), { outcome: 'unavailable', reason: /certificate/i }, 'a directory whose certificate the CA did not issue is not talked to')

  const config = ldapOf(directoryConfig(slapd, caFile))
  const logger = createMemoryLogger()
  const directory = createDirectory({ clock: systemClock, logger }, config, await checkDirectoryConfig(config))
  await slapd.stop()
  const down = await directory.check('aud', directoryPassword('aud'))
  t.match(down, { outcome: 'unavailable', reason: /ECONNREFUSED/ }, 'slapd stopped: unavailable, with the reason')
  await slapd.start()
  t.match(await directory.check('aud', directoryPassword('aud')), { outcome: 'ok' }, 'back when slapd is back')
  t.notMatch(JSON.stringify(logger.records), new RegExp(`${slapd.rootPassword}|${directoryPassword('aud')}`), 'no password in the log')
})

t.test('configuration the schema cannot check is refused with path: reason', async (t) => {
  const base = { url: 'ldaps://127.0.0.1:1', userBase: 'dc=x', roleGroups: { user: [directoryGroups.user] } }
  await t.rejects(checkDirectoryConfig(ldapOf({ ...base, userFilter: '(uid={user}' })), { message: /auth\.ldap\.userFilter: not an LDAP filter/ })
  await t.rejects(checkDirectoryConfig(ldapOf({ ...base, bindDn: 'cn=x' })), { message: /auth\.ldap\.bindPassword: bindDn and bindPassword go together/ })
  await t.rejects(checkDirectoryConfig(ldapOf({ ...base, url: 'ldap://127.0.0.1:1' })), { message: /auth\.ldap\.url: ldap:\/\/ without startTls would send passwords in clear/ })
  await t.rejects(checkDirectoryConfig(ldapOf({ ...base, caFile: '/nonexistent/ca.pem' })), { message: /auth\.ldap\.caFile: \/nonexistent\/ca\.pem: ENOENT/ })
  await t.rejects(checkDirectoryConfig(ldapOf({ ...base, roleGroups: {} })), { message: /auth\.ldap\.roleGroups: no group is mapped/ })
  const problemsOf = (block: Record<string, unknown>): unknown => {
    try {
      ldapOf(block)
      return undefined
    } catch (error) {
      return (error as { problems: unknown }).problems
    }
  }
  t.match(problemsOf({ ...base, url: 'http://x' }), [{ path: 'auth.ldap.url' }])
  t.match(problemsOf({ ...base, bindPassword: 'x'.repeat(2000) }), [{ path: 'auth.ldap.bindPassword', value: '[redacted]' }], 'a bad bindPassword value is redacted')
})
