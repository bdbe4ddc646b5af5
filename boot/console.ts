import { createInterface, type Interface } from 'node:readline'
import { Writable } from 'node:stream'
import { completeWords, resolveCommand, checkArguments, resolvePathArguments } from '../firmware/control/command-table.js'
import { connectControl, type ControlClient } from '../firmware/control/client.js'
import { ControlError } from '../firmware/control/errors.js'
import { completionNames, helpFor } from './console-commands.js'

export interface ConsoleOptions {
  socketPath: string
  configFile?: string
  runFactoryTest?: (argv: string[]) => Promise<number>
  input?: NodeJS.ReadableStream
  output?: NodeJS.WritableStream
}

type TerminalOutput = NodeJS.WritableStream & { isTTY?: boolean; columns?: number }

/** One console's terminal and its connection to the service. */
interface ConsoleSession {
  readonly options: ConsoleOptions
  readonly rl: Interface
  /** The real output; readline writes through a mutable copy of it (see createTerminal). */
  readonly output: TerminalOutput
  /** While true, what readline echoes is dropped (a password being typed). */
  readonly echo: { muted: boolean }
  client: ControlClient | undefined
  /** The technician password once `enable` succeeded, repeated on each new connection. */
  password: string | undefined
}

/**
 * The technician's serial console (`mailkeep console`): a readline prompt over stdin/stdout
 * (a serial line is a tty), `help`, `?` after a partial command, tab completion, and the
 * same command table as the one-shot CLI. The console keeps working when the service is
 * down: each command reconnects and says clearly that the service is not running.
 * `enable` asks for the technician password without echoing it.
 */
export async function runConsole(options: ConsoleOptions): Promise<number> {
  const session: ConsoleSession = { options, ...createTerminal(options), client: undefined, password: undefined }
  say(session, 'mailkeep console; type help or ? for commands, exit to leave')
  const lines = session.rl[Symbol.asyncIterator]()
  for (;;) {
    session.rl.setPrompt(await prompt(session))
    session.rl.prompt()
    const next = await lines.next()
    if (next.done) break
    if (!(await handle(session, next.value))) break
  }
  session.rl.close()
  session.client?.close()
  return 0
}

/** The readline interface over the console's streams, with tab completion and an echo that can be muted. */
function createTerminal(options: ConsoleOptions): Pick<ConsoleSession, 'rl' | 'output' | 'echo'> {
  const input = options.input ?? process.stdin
  const realOutput = (options.output ?? process.stdout) as TerminalOutput
  const echo = { muted: false }
  // readline echoes what is typed through its output; muting it hides the password.
  const output = new Writable({
    write(chunk, _encoding, callback) {
      if (!echo.muted) realOutput.write(chunk)
      callback()
    },
  }) as Writable & { isTTY?: boolean; columns?: number }
  output.isTTY = realOutput.isTTY
  output.columns = realOutput.columns ?? 80
  const terminal = Boolean((input as { isTTY?: boolean }).isTTY)
  // Node's readline drops line editing and completion when TERM is dumb or unset, which is
  // what a bare serial getty often gives; serial terminals understand VT100, so use that.
  if (terminal && (!process.env.TERM || process.env.TERM === 'dumb')) process.env.TERM = 'vt100'
  const rl = createInterface({
    input,
    output,
    terminal,
    historySize: 100,
    completer: (line: string) => {
      const candidates = completeWords(completionNames, line)
      const partial = /\s$/.test(line) ? '' : (line.split(/\s+/).pop() ?? '')
      // A single candidate completes with a trailing space so the next word can follow.
      return [candidates.length === 1 ? [candidates[0] + ' '] : candidates, partial]
    },
  })
  return { rl, output: realOutput, echo }
}

function say(session: ConsoleSession, text: string): void {
  session.output.write(text.endsWith('\n') ? text : text + '\n')
}

async function connection(session: ConsoleSession): Promise<ControlClient> {
  if (session.client) return session.client
  const client = await connectControl(session.options.socketPath)
  session.client = client
  // A new connection is not yet unlocked: repeat the technician login if one was given.
  if (session.password !== undefined) await client.call('auth', [], session.password).catch(() => undefined)
  return client
}

/** One command on the service; a lost connection is dropped, so that the next command reconnects. */
async function call(session: ConsoleSession, command: string, args: string[], secret?: string): Promise<unknown> {
  try {
    return await (await connection(session)).call(command, args, undefined, secret)
  } catch (error) {
    if (error instanceof ControlError && error.code === 'NOT_RUNNING') {
      session.client?.close()
      session.client = undefined
    }
    throw error
  }
}

function question(session: ConsoleSession, text: string, hidden: boolean): Promise<string> {
  return new Promise((resolve) => {
    if (hidden) session.output.write(text)
    session.rl.question(hidden ? '' : text, (answer) => {
      session.echo.muted = false
      if (hidden) session.output.write('\n')
      resolve(answer)
    })
    session.echo.muted = hidden
  })
}

/** `mailkeep MODEL SERIAL> `, or a prompt that says the service is not running. */
async function prompt(session: ConsoleSession): Promise<string> {
  try {
    const version = (await call(session, 'show version', [])) as { model: number; serial: string }
    return `mailkeep ${version.model} ${version.serial}> `
  } catch {
    return 'mailkeep (service not running)> '
  }
}

/** One typed line; false when the console should end. */
async function handle(session: ConsoleSession, line: string): Promise<boolean> {
  const trimmed = line.trim()
  if (!trimmed) return true
  if (trimmed.endsWith('?')) {
    say(session, helpFor(trimmed.slice(0, -1)))
    return true
  }
  const words = trimmed.split(/\s+/)
  const json = words.includes('--json')
  const command = words.filter((word) => word !== '--json')
  if (command[0] === 'exit' || command[0] === 'quit') return false
  if (await handleLocal(session, command)) return true
  await runTableCommand(session, command, json, trimmed)
  return true
}

/** `help`, `factory-test` and `enable`; false when the words are none of them. */
async function handleLocal(session: ConsoleSession, words: string[]): Promise<boolean> {
  const { options, rl } = session
  if (words[0] === 'help') {
    say(session, helpFor(words.slice(1).join(' ')))
    return true
  }
  if (words[0] === 'factory-test' && options.runFactoryTest) {
    rl.pause()
    const code = await options.runFactoryTest([...(options.configFile ? ['--config', options.configFile] : []), ...words.slice(1)])
    rl.resume()
    say(session, `factory test ${code === 0 ? 'passed' : `failed (exit ${code})`}`)
    return true
  }
  if (words[0] === 'enable') {
    const typed = await question(session, 'technician password: ', true)
    try {
      await (await connection(session)).call('auth', [], typed)
      session.password = typed
      say(session, 'technician commands unlocked')
    } catch (error) {
      say(session, `error ${(error as ControlError).code ?? ''}: ${(error as Error).message}`)
    }
    return true
  }
  return false
}

/** A command of the shared table: checked against its argument specs, sent, rendered (or as JSON). */
async function runTableCommand(session: ConsoleSession, words: string[], json: boolean, typed: string): Promise<void> {
  const resolved = resolveCommand(words)
  if (!resolved) return say(session, `unknown command "${typed}"; type help or ?`)
  const usage = checkArguments(resolved.spec, resolved.args)
  if (usage) return say(session, usage)
  try {
    let secret: string | undefined
    if (resolved.spec.secret) {
      secret = await question(session, `${resolved.spec.secret}: `, true)
      if ((await question(session, `${resolved.spec.secret} again: `, true)) !== secret) return say(session, 'the two entries differ; nothing changed')
    }
    const result = await call(session, resolved.spec.name, resolvePathArguments(resolved.spec, resolved.args, process.cwd()), secret)
    say(session, json ? JSON.stringify(result, null, 2) : resolved.spec.render(result))
  } catch (error) {
    const code = (error as ControlError).code
    say(session, `error ${code ?? ''}: ${(error as Error).message}${code === 'AUTH_REQUIRED' ? ' (type enable)' : ''}`)
  }
}
