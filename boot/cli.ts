/**
 * The `mailkeep` command (package bin). One-shot commands go to the running service over
 * its control socket, found through the same configuration the service uses
 * (`--config FILE` or MAILKEEP_CONFIG, else the embedded defaults). Exit codes: 0 ok,
 * 1 failure (service not running, command failed), 2 usage, 78 configuration error.
 */
import { createInterface } from 'node:readline'
import { loadConfig, configPathFrom, validateConfig } from '../config/load.js'
import { ConfigError, formatProblem } from '../config/errors.js'
import { configSchema } from '../config/schema.js'
import { exitCodes } from '../firmware/common/errors.js'
import { hashPassword } from '../firmware/common/password.js'
import { commandTable, resolveCommand, checkArguments, usageOf, resolvePathArguments, type CommandSpec } from '../firmware/control/command-table.js'
import { connectControl } from '../firmware/control/client.js'
import { ControlError } from '../firmware/control/errors.js'
import { runConsole } from './console.js'
import { helpFor } from './console-commands.js'
import { firmwareVersion } from './version.js'
import { readFile } from 'node:fs/promises'
import { resolve as resolvePath, join } from 'node:path'

const usageText = `usage: mailkeep [--config FILE] [--json] COMMAND

local commands:
  config check FILE        validate a configuration file without booting (exit 78 if invalid)
  config schema            print the configuration's JSON Schema
  hash-password            read a password on stdin, print its scrypt hash for the config
  mirror generate-secret   print a new random shared secret for mirror.sharedSecret (160 bits)
  console                  the technician's interactive console
  factory-test [--burn-in MINUTES] [--report FILE]
                           run the factory checks (TAP on stdout, JSON report)
  import PATH              import an mbox, maildir, .eml file or folder of .eml, with progress
                           (resumable: run it again after an interruption) [technician]
  version                  this CLI's firmware version

commands sent to the running service:
${commandTable.map((spec) => `  ${usageOf(spec).padEnd(24)} ${spec.summary}${spec.technician ? ' [technician]' : ''}`).join('\n')}

options:
  --config FILE            configuration file (default: MAILKEEP_CONFIG, else embedded defaults)
  --json                   print the result as JSON
  --password-stdin         read the technician password from stdin (for technician commands)
`

interface ParsedArgs {
  words: string[]
  json: boolean
  passwordStdin: boolean
  configFile: string | undefined
}

function parseArgs(argv: string[]): ParsedArgs {
  const words: string[] = []
  let json = false
  let passwordStdin = false
  for (let index = 0; index < argv.length; index += 1) {
    const arg = argv[index]!
    if (arg === '--json') json = true
    else if (arg === '--password-stdin') passwordStdin = true
    else if (arg === '--config') index += 1
    else if (arg.startsWith('--config=')) continue
    else words.push(arg)
  }
  return { words, json, passwordStdin, configFile: configPathFrom(argv) }
}

/** The first `count` lines of stdin (missing ones empty), read through one reader so none is lost in its buffer. */
async function readStdinLines(count: number): Promise<string[]> {
  const lines: string[] = []
  if (count === 0) return lines
  const rl = createInterface({ input: process.stdin, terminal: false })
  for await (const line of rl) {
    lines.push(line)
    if (lines.length === count) break
  }
  rl.close()
  while (lines.length < count) lines.push('')
  return lines
}

async function readStdinLine(): Promise<string> {
  return (await readStdinLines(1))[0]!
}

/**
 * The technician password of a technician command and the secret of a command that takes
 * one: from stdin (one line each, in that order) with --password-stdin, else asked on the
 * terminal (the secret twice). A sentence instead when they cannot be read.
 */
async function readCredentials(spec: CommandSpec, passwordStdin: boolean): Promise<{ password?: string; secret?: string } | string> {
  const secretName = spec.secret
  if (passwordStdin) {
    const lines = await readStdinLines((spec.technician ? 1 : 0) + (secretName ? 1 : 0))
    return { ...(spec.technician ? { password: lines[0] } : {}), ...(secretName ? { secret: lines[spec.technician ? 1 : 0] } : {}) }
  }
  if (!process.stdin.isTTY) {
    if (secretName) return `${spec.name} reads the ${secretName} from a terminal, or with --password-stdin (technician password, then the ${secretName}, one line each)`
    return {}
  }
  const password = spec.technician ? await readHidden('technician password: ') : undefined
  if (!secretName) return password === undefined ? {} : { password }
  const secret = await readHidden(`${secretName}: `)
  if ((await readHidden(`${secretName} again: `)) !== secret) return 'the two entries differ; nothing changed'
  return { ...(password === undefined ? {} : { password }), secret }
}

async function readHidden(prompt: string): Promise<string> {
  process.stderr.write(prompt)
  const stdin = process.stdin
  stdin.setRawMode?.(true)
  return new Promise((resolve) => {
    let typed = ''
    const onData = (chunk: Buffer) => {
      for (const char of chunk.toString('utf8')) {
        if (char === '\r' || char === '\n') {
          stdin.setRawMode?.(false)
          stdin.off('data', onData)
          stdin.pause()
          process.stderr.write('\n')
          resolve(typed)
          return
        }
        if (char === '\u0003') process.exit(exitCodes.failure)
        if (char === '\u007f') typed = typed.slice(0, -1)
        else typed += char
      }
    }
    stdin.on('data', onData)
    stdin.resume()
  })
}

async function configCheck(file: string | undefined): Promise<number> {
  if (!file) {
    process.stderr.write('usage: mailkeep config check FILE\n')
    return exitCodes.usage
  }
  try {
    const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => {
      throw new ConfigError('unreadable', [{ path: '', reason: `cannot read file (${error.code ?? 'error'})`, value: file }])
    })
    let raw: unknown
    try {
      raw = JSON.parse(text)
    } catch (error) {
      throw new ConfigError('not JSON', [{ path: '', reason: `not valid JSON: ${(error as Error).message}`, value: file }])
    }
    validateConfig(raw)
    process.stdout.write(`${file}: ok\n`)
    return exitCodes.ok
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    process.stdout.write(error.problems.map(formatProblem).join('\n') + '\n')
    return exitCodes.config
  }
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv)
  const [first, second] = args.words
  if (!first || first === 'help' || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(first === 'help' && args.words.length > 1 ? helpFor(args.words.slice(1).join(' ')) + '\n' : usageText)
    return first || argv.includes('--help') || argv.includes('-h') ? exitCodes.ok : exitCodes.usage
  }
  if (first === 'version' || first === '--version') {
    process.stdout.write(args.json ? JSON.stringify({ firmwareVersion }) + '\n' : `${firmwareVersion}\n`)
    return exitCodes.ok
  }
  if (first === 'config' && second === 'check') return configCheck(args.words[2])
  if (first === 'config' && second === 'schema') {
    process.stdout.write(JSON.stringify(configSchema, null, 2) + '\n')
    return exitCodes.ok
  }
  if (first === 'factory-test') return runFactoryTest(argv.filter((arg) => arg !== 'factory-test'))
  if (first === 'mirror' && second === 'generate-secret') {
    const { generateSharedSecret } = await import('../firmware/mirror/secret.js')
    process.stdout.write(generateSharedSecret() + '\n')
    return exitCodes.ok
  }
  if (first === 'hash-password') {
    const password = process.stdin.isTTY ? await readHidden('password: ') : await readStdinLine()
    if (!password) {
      process.stderr.write('mailkeep: empty password\n')
      return exitCodes.usage
    }
    process.stdout.write((await hashPassword(password)) + '\n')
    return exitCodes.ok
  }

  let config
  try {
    config = await loadConfig(args.configFile)
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`mailkeep: configuration error:\n${error.problems.map(formatProblem).join('\n')}\n`)
      return exitCodes.config
    }
    throw error
  }
  if (first === 'console') return runConsole({ socketPath: config.control.socketPath, configFile: args.configFile, runFactoryTest })
  if (first === 'import' && args.words.length === 2) return runImport(config.control.socketPath, resolvePath(second!), args)

  const resolved = resolveCommand(args.words)
  if (!resolved) {
    process.stderr.write(`mailkeep: unknown command "${args.words.join(' ')}"\n${helpFor(args.words.join(' '))}\n`)
    return exitCodes.usage
  }
  const usage = checkArguments(resolved.spec, resolved.args)
  if (usage) {
    process.stderr.write(`mailkeep: ${usage}\n`)
    return exitCodes.usage
  }
  const credentials = await readCredentials(resolved.spec, args.passwordStdin)
  if (typeof credentials === 'string') {
    process.stderr.write(`mailkeep: ${credentials}\n`)
    return exitCodes.usage
  }
  const { password, secret } = credentials
  try {
    const client = await connectControl(config.control.socketPath, config.control.requestTimeoutMs + 5000)
    try {
      const result = await client.call(resolved.spec.name, resolvePathArguments(resolved.spec, resolved.args, process.cwd()), password, secret)
      process.stdout.write((args.json ? JSON.stringify(result, null, 2) : resolved.spec.render(result)) + '\n')
      return exitCodes.ok
    } finally {
      client.close()
    }
  } catch (error) {
    if (!(error instanceof ControlError)) throw error
    if (args.json) process.stdout.write(JSON.stringify({ error: { code: error.code, message: error.message } }) + '\n')
    process.stderr.write(`mailkeep: ${error.message}\n`)
    return error.code === 'USAGE' || error.code === 'UNKNOWN_COMMAND' ? exitCodes.usage : exitCodes.failure
  }
}

/**
 * `mailkeep factory-test`: runs the factory test script (the built image's
 * dist/factory-test.js, or scripts/factory-test.ts in a source checkout) on this runtime
 * with the same arguments; its exit code is ours.
 */
export async function runFactoryTest(argv: string[]): Promise<number> {
  const { spawn } = await import('node:child_process')
  const { existsSync } = await import('node:fs')
  const here = import.meta.dirname
  const built = join(here, 'factory-test.js')
  const script = existsSync(built) ? built : join(here, '..', 'scripts', 'factory-test.ts')
  const child = spawn(process.execPath, [script, ...argv], { stdio: 'inherit' })
  return new Promise((resolve) => {
    child.on('exit', (code) => resolve(code ?? exitCodes.failure))
    child.on('error', () => resolve(exitCodes.failure))
  })
}

interface ImportProgress {
  id: string
  state: string
  format: string
  processed: number
  imported: number
  duplicates: number
  flagged: number
  failed: number
  bytesProcessed: number
  bytesTotal: number | null
  resumedFrom: number
  errors: { file?: string; offset?: number; code: string; reason: string }[]
  error: { code: string; message: string; retryable: boolean } | null
}

/** How often `mailkeep import` asks the service for progress, in ms. */
const importPollMs = 250

function progressLine(job: ImportProgress): string {
  const fraction = job.bytesTotal ? Math.min(1, job.bytesProcessed / job.bytesTotal) : 0
  const width = 30
  const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '.')
  return `[${bar}] ${(fraction * 100).toFixed(0).padStart(3)}%  ${job.processed} messages: ${job.imported} imported, ${job.duplicates} duplicates, ${job.flagged} flagged, ${job.failed} failed`
}

/**
 * `mailkeep import PATH`: starts an import job in the service (so every message takes the
 * common ingest path), draws a progress bar on a terminal, and prints a summary. Ctrl-C
 * cancels the job; running the same command again resumes from its checkpoint.
 * Exit 0 when every message was archived or already held, 1 otherwise.
 */
async function runImport(socketPath: string, path: string, args: ParsedArgs): Promise<number> {
  let password: string | undefined
  if (args.passwordStdin) password = await readStdinLine()
  else if (process.stdin.isTTY) password = await readHidden('technician password: ')
  let client
  try {
    client = await connectControl(socketPath)
  } catch (error) {
    process.stderr.write(`mailkeep: ${(error as Error).message}\n`)
    return exitCodes.failure
  }
  try {
    let job = (await client.call('import start', [path], password)) as ImportProgress
    let interrupted = false
    process.once('SIGINT', () => {
      interrupted = true
      void client.call('import cancel', [job.id], password).catch(() => undefined)
    })
    const tty = Boolean(process.stderr.isTTY) && !args.json
    let lastPrintMs = 0
    while (job.state === 'running') {
      await new Promise((resolve) => setTimeout(resolve, importPollMs))
      job = (await client.call('import status', [job.id])) as ImportProgress
      if (tty) process.stderr.write(`\r${progressLine(job)}`)
      else if (!args.json && Date.now() - lastPrintMs > 5000) {
        lastPrintMs = Date.now()
        process.stderr.write(progressLine(job) + '\n')
      }
    }
    if (tty) process.stderr.write('\n')
    if (args.json) process.stdout.write(JSON.stringify(job, null, 2) + '\n')
    else {
      const resumed = job.resumedFrom > 0 ? ` (resumed from ${job.resumedFrom})` : ''
      process.stdout.write(`import ${job.state}: ${job.imported} imported, ${job.duplicates} duplicates, ${job.flagged} flagged, ${job.failed} failed${resumed}\n`)
      for (const failure of job.errors)
        process.stdout.write(`  failed: ${failure.file ?? ''}${failure.offset === undefined ? '' : `@${failure.offset}`} ${failure.code}: ${failure.reason}\n`)
      if (job.error) process.stdout.write(`  ${job.error.code}: ${job.error.message}${job.error.retryable ? ' (run the same command again to resume)' : ''}\n`)
      if (interrupted) process.stdout.write('  cancelled; run the same command again to resume\n')
    }
    return job.state === 'done' && job.failed === 0 ? exitCodes.ok : exitCodes.failure
  } catch (error) {
    if (!(error instanceof ControlError)) throw error
    if (args.json) process.stdout.write(JSON.stringify({ error: { code: error.code, message: error.message } }) + '\n')
    process.stderr.write(`mailkeep: ${error.message}\n`)
    return error.code === 'USAGE' ? exitCodes.usage : exitCodes.failure
  } finally {
    client.close()
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`mailkeep: ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(exitCodes.failure)
  },
)
