/**
 * Test helper: a real OpenLDAP server (slapd from Debian) of our own, on 127.0.0.1 and free
 * ports, configured from scratch in a temp dir (slapd.conf, an mdb database loaded with
 * slapadd, no /etc/ldap configuration used): plain LDAP (StartTLS offered) and LDAPS with a
 * CA and a server certificate made with the openssl CLI. Fails with a clear message when
 * slapd is not installed: CI's .ci/run installs it.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { access, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { constants } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { freePort } from './mirror-appliances.js'
import { waitUntil } from './wait.js'
import { portAccepts } from './dovecot.js'

const execFileAsync = promisify(execFile)

export const slapdStartTimeoutMs = 15_000

export interface RunningSlapd {
  dir: string
  suffix: string
  /** ldap://127.0.0.1:PORT (StartTLS offered) and ldaps://127.0.0.1:PORT. */
  ports: { ldap: number; ldaps: number }
  /** The CA that issued the server's certificate (PEM). */
  caPem: string
  /** The rootdn and its password (writes in tests). */
  rootDn: string
  rootPassword: string
  /** Stops slapd (SIGTERM, SIGKILL after 5 s); the data stays until remove(). */
  stop(): Promise<void>
  /** Starts it again on the same ports with the same data. */
  start(): Promise<void>
  /** Stops and removes the temp dir. */
  remove(): Promise<void>
}

async function executable(name: string): Promise<string> {
  for (const directory of ['/usr/sbin', '/usr/bin', ...(process.env.PATH ?? '').split(':').filter(Boolean)]) {
    const candidate = join(directory, name)
    try {
      await access(candidate, constants.X_OK)
      return candidate
    } catch {
      // the next directory
    }
  }
  throw new Error(`${name} is not installed: apt-get install slapd ldap-utils (.ci/run does)`)
}

/**
 * Starts slapd with `ldif` (entries under `suffix`, which the helper creates) loaded.
 * Users' `userPassword` values may be clear text: slapd compares them on bind.
 */
export async function startSlapd(options: { suffix: string; ldif: string; schema?: string }): Promise<RunningSlapd> {
  const slapd = await executable('slapd')
  const slapadd = await executable('slapadd')
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-slapd-'))
  await mkdir(join(dir, 'data'))
  const run = (...args: string[]) => execFileAsync('openssl', args, { cwd: dir })
  await run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=ldap test authority')
  await run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=127.0.0.1')
  await writeFile(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n')
  await run('x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', '-days', '2', '-extfile', 'server.ext')
  if (options.schema) await writeFile(join(dir, 'extra.schema'), options.schema)
  const rootDn = `cn=root,${options.suffix}`
  const rootPassword = 'slapd-root-secret'
  const conf = [
    'include /etc/ldap/schema/core.schema',
    'include /etc/ldap/schema/cosine.schema',
    'include /etc/ldap/schema/inetorgperson.schema',
    'include /etc/ldap/schema/nis.schema',
    ...(options.schema ? [`include ${join(dir, 'extra.schema')}`] : []),
    `pidfile ${join(dir, 'slapd.pid')}`,
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    `TLSCACertificateFile ${join(dir, 'ca.pem')}`,
    `TLSCertificateFile ${join(dir, 'server.pem')}`,
    `TLSCertificateKeyFile ${join(dir, 'server.key')}`,
    'database mdb',
    'maxsize 10485760',
    `suffix "${options.suffix}"`,
    `rootdn "${rootDn}"`,
    `rootpw ${rootPassword}`,
    `directory ${join(dir, 'data')}`,
    'access to attrs=userPassword by self write by anonymous auth by * none',
    'access to * by * read',
    '',
  ].join('\n')
  await writeFile(join(dir, 'slapd.conf'), conf)
  const top = options.suffix.split(',')[0]!.split('=')[1]!
  await writeFile(join(dir, 'data.ldif'), `dn: ${options.suffix}\nobjectClass: dcObject\nobjectClass: organization\no: ${top}\ndc: ${top}\n\n${options.ldif.trim()}\n`)
  await execFileAsync(slapadd, ['-f', join(dir, 'slapd.conf'), '-l', join(dir, 'data.ldif')])
  const ports = { ldap: await freePort(), ldaps: await freePort() }
  let child: ChildProcess | undefined
  let output = ''
  const start = async (): Promise<void> => {
    // -d 0: stay in the foreground (a child the test owns); -h: only our two listeners.
    child = spawn(slapd, ['-d', '0', '-f', join(dir, 'slapd.conf'), '-h', `ldap://127.0.0.1:${ports.ldap}/ ldaps://127.0.0.1:${ports.ldaps}/`], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout?.on('data', (chunk) => (output += chunk))
    child.stderr?.on('data', (chunk) => (output += chunk))
    const started = child
    await waitUntil(
      async () => {
        if (started.exitCode !== null) throw new Error(`slapd exited ${started.exitCode}: ${output.slice(-2000)}`)
        return (await portAccepts(ports.ldap)) && (await portAccepts(ports.ldaps))
      },
      { what: 'slapd listening', timeoutMs: slapdStartTimeoutMs, intervalMs: 50 },
    )
  }
  const stop = async (): Promise<void> => {
    const running = child
    child = undefined
    if (!running || running.exitCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGTERM')
    const timer = setTimeout(() => running.kill('SIGKILL'), 5_000)
    await exited
    clearTimeout(timer)
  }
  await start()
  return {
    dir,
    suffix: options.suffix,
    ports,
    caPem: await readFile(join(dir, 'ca.pem'), 'utf8'),
    rootDn,
    rootPassword,
    start,
    stop,
    async remove() {
      await stop()
      await rm(dir, { recursive: true, force: true })
    },
  }
}
