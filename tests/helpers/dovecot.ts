/**
 * Test helper: a real Dovecot (IMAP + POP3, plain and TLS) of our own, on 127.0.0.1 and
 * free ports, configured from scratch in a temp dir (no /etc/dovecot, no system
 * instance): passwd-file users, maildirs, a self-signed certificate made with the openssl
 * CLI (a dependency of dovecot-core). Tests fail with a clear message when Dovecot is not
 * installed instead of skipping: CI's .ci/run installs it.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process'
import { access, chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { constants } from 'node:fs'
import { createServer, connect } from 'node:net'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { ImapFlow } from 'imapflow'
import { waitUntil } from './wait.js'

const execFileAsync = promisify(execFile)

/** How long Dovecot may take to listen on its ports, in milliseconds. */
export const dovecotStartTimeoutMs = 15_000
/** How long Dovecot may take to exit after SIGTERM before it is killed, in milliseconds. */
export const dovecotStopTimeoutMs = 5_000

export interface DovecotUser {
  name: string
  password: string
}

export interface DovecotOptions {
  users: DovecotUser[]
  /** Extra lines appended to dovecot.conf (e.g. `imap_capability = …`). */
  extraConfig?: string
}

export interface RunningDovecot {
  dir: string
  host: '127.0.0.1'
  ports: { imap: number; imaps: number; pop3: number; pop3s: number }
  /** The server's self-signed certificate (PEM). */
  certificatePem: string
  /** Dovecot's own log so far. */
  log(): Promise<string>
  /** Successful login lines of `user` through the listener on `port` (each ends in `, TLS` when encrypted). */
  logins(user: string, port: number): Promise<string[]>
  /** SIGTERM, wait for exit (SIGKILL after dovecotStopTimeoutMs), remove the temp dir. */
  stop(): Promise<void>
}

async function findDovecot(): Promise<string> {
  const directories = [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/usr/local/sbin']
  for (const directory of directories) {
    const candidate = join(directory, 'dovecot')
    try {
      await access(candidate, constants.X_OK)
      return candidate
    } catch {
      // try the next directory
    }
  }
  throw new Error(
    'dovecot is not installed, and the journal tests need a real IMAP/POP3 server: ' +
      "run `apt-get update && apt-get install -y --no-install-recommends dovecot-imapd dovecot-pop3d` (CI's .ci/run does this)",
  )
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** Whether something accepts TCP connections on 127.0.0.1:port. */
export function portAccepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port })
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

/** uid/gid of a system account from /etc/passwd, or null. */
async function systemAccount(name: string): Promise<{ uid: number; gid: number } | null> {
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '')
  for (const line of passwd.split('\n')) {
    const fields = line.split(':')
    if (fields[0] === name && fields.length >= 4) return { uid: Number(fields[2]), gid: Number(fields[3]) }
  }
  return null
}

/** A login service with a cleartext (STARTTLS-capable) and an implicit-TLS listener; no chroot, so it runs unprivileged too. */
function loginService(protocol: 'imap' | 'pop3', plainPort: number, tlsPort: number): string {
  return [
    `service ${protocol}-login {`,
    '  chroot =',
    `  inet_listener ${protocol} {`,
    `    port = ${plainPort}`,
    '  }',
    `  inet_listener ${protocol}s {`,
    `    port = ${tlsPort}`,
    '    ssl = yes',
    '  }',
    '}',
  ].join('\n')
}

/** Name of a group from /etc/group, or null. */
async function groupName(gid: number): Promise<string | null> {
  const groups = await readFile('/etc/group', 'utf8').catch(() => '')
  for (const line of groups.split('\n')) {
    const fields = line.split(':')
    if (fields.length >= 3 && Number(fields[2]) === gid) return fields[0]!
  }
  return null
}

/**
 * Starts Dovecot and waits until its four ports accept connections.
 *
 * @throws Error when dovecot is not installed, or it exits or does not listen in time (with its log)
 */
export async function startDovecot(options: DovecotOptions): Promise<RunningDovecot> {
  const binary = await findDovecot()
  const dir = await mkdtemp(join(tmpdir(), 'mailkeep-dovecot-'))
  // Dovecot's login and mail processes run as other users when we are root: let them in.
  await chmod(dir, 0o755)
  const mailDir = join(dir, 'mail')
  await mkdir(mailDir)
  await mkdir(join(dir, 'run'))
  await mkdir(join(dir, 'state'))

  const keyPath = join(dir, 'key.pem')
  const certificatePath = join(dir, 'cert.pem')
  await execFileAsync('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    keyPath,
    '-out',
    certificatePath,
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    'subjectAltName=DNS:localhost,IP:127.0.0.1',
  ])

  await writeFile(join(dir, 'passwd'), options.users.map((user) => `${user.name}:{PLAIN}${user.password}\n`).join(''), { mode: 0o644 })

  const isRoot = process.getuid?.() === 0
  let mailUser: string
  let loginUser: string
  let internalUser: string
  let internalGroupLine = ''
  if (isRoot) {
    // Dovecot refuses to run mail processes as root: use nobody, and the package's own accounts.
    const nobody = (await systemAccount('nobody')) ?? { uid: 65534, gid: 65534 }
    await chown(mailDir, nobody.uid, nobody.gid)
    mailUser = `uid=${nobody.uid} gid=${nobody.gid}`
    loginUser = (await systemAccount('dovenull')) ? 'dovenull' : 'nobody'
    internalUser = (await systemAccount('dovecot')) ? 'dovecot' : 'nobody'
  } else {
    const me = userInfo()
    mailUser = `uid=${me.uid} gid=${me.gid}`
    loginUser = me.username
    internalUser = me.username
    // Dovecot's unix sockets belong to its internal group; an unprivileged master can only use its own.
    const group = await groupName(me.gid)
    if (group) internalGroupLine = `default_internal_group = ${group}`
  }

  const ports = { imap: await freePort(), imaps: await freePort(), pop3: await freePort(), pop3s: await freePort() }
  const configPath = join(dir, 'dovecot.conf')
  await writeFile(
    configPath,
    `# generated by tests/helpers/dovecot.ts
base_dir = ${dir}/run
state_dir = ${dir}/state
log_path = ${dir}/dovecot.log
listen = 127.0.0.1
protocols = imap pop3
ssl = yes
ssl_cert = <${certificatePath}
ssl_key = <${keyPath}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_login_user = ${loginUser}
default_internal_user = ${internalUser}
${internalGroupLine}
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u ${dir}/passwd
}
userdb {
  driver = static
  args = ${mailUser} home=${mailDir}/%u
}
mail_location = maildir:${mailDir}/%u/Maildir
${loginService('imap', ports.imap, ports.imaps)}
${loginService('pop3', ports.pop3, ports.pop3s)}
service anvil {
  chroot =
  # No brute-force delays: tests log in with wrong passwords on purpose.
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
# The local port tells which listener (and so which client) a session came through.
login_log_format_elements = user=<%u> method=%m rip=%r lip=%l lport=%{lport} mpid=%e %c session=<%{session}>
${options.extraConfig ?? ''}
`,
  )

  const child: ChildProcess = spawn(binary, ['-F', '-c', configPath], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout!.on('data', (chunk) => (output += chunk.toString()))
  child.stderr!.on('data', (chunk) => (output += chunk.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const log = (): Promise<string> => readFile(join(dir, 'dovecot.log'), 'utf8').catch(() => '')

  const hasExited = (): boolean => child.exitCode !== null || child.signalCode !== null
  try {
    await waitUntil(
      async () => {
        if (hasExited()) throw new Error(`dovecot exited during start-up (${child.exitCode ?? child.signalCode})`)
        return (await Promise.all(Object.values(ports).map(portAccepts))).every(Boolean)
      },
      { what: `dovecot listening on ${JSON.stringify(ports)}`, timeoutMs: dovecotStartTimeoutMs, intervalMs: 50 },
    )
  } catch (error) {
    if (!hasExited()) {
      child.kill('SIGKILL')
      await exited
    }
    const details = `${output}\n${await log()}`
    await rm(dir, { recursive: true, force: true })
    throw new Error(`${(error as Error).message}\n${details}`)
  }

  let stopped = false
  return {
    dir,
    host: '127.0.0.1',
    ports,
    certificatePem: await readFile(certificatePath, 'utf8'),
    log,
    async logins(user, port) {
      return (await log()).split('\n').filter((line) => line.includes('-login: Info: Login:') && line.includes(`user=<${user}>`) && line.includes(` lport=${port},`))
    },
    async stop() {
      if (stopped) return
      stopped = true
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM')
        const timer = setTimeout(() => child.kill('SIGKILL'), dovecotStopTimeoutMs)
        await exited
        clearTimeout(timer)
      }
      await rm(dir, { recursive: true, force: true })
    },
  }
}

/**
 * An IMAP client of the test itself, to seed and inspect mailboxes. It uses the imaps port
 * only, so that logins on the other ports come from the code under test.
 */
export async function withImap<T>(dovecot: RunningDovecot, user: DovecotUser, use: (client: ImapFlow) => Promise<T>): Promise<T> {
  const client = new ImapFlow({
    host: dovecot.host,
    port: dovecot.ports.imaps,
    secure: true,
    tls: { rejectUnauthorized: false },
    auth: { user: user.name, pass: user.password },
    logger: false,
    disableAutoIdle: true,
  })
  client.on('error', () => undefined)
  await client.connect()
  try {
    return await use(client)
  } finally {
    await client.logout().catch(() => client.close())
  }
}

/** Appends messages to a mailbox (created when missing), in order. */
export async function seedMailbox(dovecot: RunningDovecot, user: DovecotUser, messages: readonly Uint8Array[], mailbox = 'INBOX'): Promise<void> {
  await withImap(dovecot, user, async (client) => {
    if (mailbox !== 'INBOX') await client.mailboxCreate(mailbox).catch(() => undefined)
    for (const message of messages) {
      const appended = await client.append(mailbox, Buffer.from(message))
      if (!appended) throw new Error(`APPEND to ${mailbox} failed`)
    }
  })
}

/** What a mailbox holds now: each message's UID, flags and raw bytes. */
export async function readMailbox(dovecot: RunningDovecot, user: DovecotUser, mailbox = 'INBOX'): Promise<{ uid: number; flags: string[]; source: Buffer }[]> {
  return withImap(dovecot, user, async (client) => {
    const opened = await client.mailboxOpen(mailbox, { readOnly: true })
    if (opened.exists === 0) return []
    const messages = await client.fetchAll('1:*', { uid: true, flags: true, source: true })
    return messages.map((message) => ({ uid: message.uid, flags: [...(message.flags ?? [])].sort(), source: message.source ?? Buffer.alloc(0) }))
  })
}
