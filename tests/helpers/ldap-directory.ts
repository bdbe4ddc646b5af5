import { startSlapd, type RunningSlapd } from './slapd.js'

/**
 * The test directory: people under ou=people, groups under ou=groups of dc=corp,dc=example.
 *   ann   admins and users (the highest role wins: admin)     ann@corp.example
 *   aud   auditors                                            aud@corp.example
 *   uma   users; an Active Directory style alias (proxyAddresses smtp:…)  uma@corp.example, uma.alias@corp.example
 *   dis   users, disabled (employeeType: disabled)
 *   nog   in no mapped group
 * Each one's password is `NAME-directory-pass`. proxyAddresses is defined by a small schema
 * of the test's own, as Active Directory has it.
 */
export const directorySuffix = 'dc=corp,dc=example'
export const directoryPassword = (name: string): string => `${name}-directory-pass`
export const directoryGroups = {
  admin: `cn=mailkeep-admins,ou=groups,${directorySuffix}`,
  auditor: `cn=mailkeep-auditors,ou=groups,${directorySuffix}`,
  user: `cn=mailkeep-users,ou=groups,${directorySuffix}`,
}

const schema = `attributetype ( 1.3.6.1.4.1.55555.1.1 NAME 'proxyAddresses' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 )
objectclass ( 1.3.6.1.4.1.55555.2.1 NAME 'mailAliases' AUXILIARY MAY ( proxyAddresses ) )
`

const person = (uid: string, extra: string[] = []) =>
  [
    `dn: uid=${uid},ou=people,${directorySuffix}`,
    'objectClass: inetOrgPerson',
    'objectClass: mailAliases',
    `uid: ${uid}`,
    `cn: ${uid}`,
    `sn: ${uid}`,
    `mail: ${uid}@corp.example`,
    `userPassword: ${directoryPassword(uid)}`,
    ...extra,
  ].join('\n')

const group = (dn: string, members: string[]) =>
  [`dn: ${dn}`, 'objectClass: groupOfNames', `cn: ${dn.split(',')[0]!.slice(3)}`, ...members.map((uid) => `member: uid=${uid},ou=people,${directorySuffix}`)].join('\n')

export function startTestDirectory(): Promise<RunningSlapd> {
  const ldif = [
    `dn: ou=people,${directorySuffix}\nobjectClass: organizationalUnit\nou: people`,
    `dn: ou=groups,${directorySuffix}\nobjectClass: organizationalUnit\nou: groups`,
    person('ann'),
    person('aud'),
    person('uma', ['proxyAddresses: SMTP:uma@corp.example', 'proxyAddresses: smtp:uma.alias@corp.example', 'proxyAddresses: x500:/o=corp/cn=uma']),
    person('dis', ['employeeType: disabled']),
    person('nog'),
    group(directoryGroups.admin, ['ann']),
    group(directoryGroups.auditor, ['aud']),
    group(directoryGroups.user, ['ann', 'uma', 'dis']),
  ].join('\n\n')
  return startSlapd({ suffix: directorySuffix, ldif, schema })
}

/** An `auth.ldap` block for the test directory (over LDAPS unless `startTls`). */
export function directoryConfig(slapd: RunningSlapd, caFile: string, startTls = false): Record<string, unknown> {
  return {
    url: startTls ? `ldap://127.0.0.1:${slapd.ports.ldap}` : `ldaps://127.0.0.1:${slapd.ports.ldaps}`,
    startTls,
    caFile,
    bindDn: slapd.rootDn,
    bindPassword: slapd.rootPassword,
    userBase: `ou=people,${directorySuffix}`,
    userFilter: '(&(objectClass=inetOrgPerson)(uid={user}))',
    disabledFilter: '(employeeType=disabled)',
    groupBase: `ou=groups,${directorySuffix}`,
    roleGroups: { admin: [directoryGroups.admin], auditor: [directoryGroups.auditor], user: [directoryGroups.user] },
    timeoutMs: 2000,
  }
}
