import { createInterface, type Interface } from 'node:readline'
import { Writable } from 'node:stream'
import { commandTable, completeWords, resolveCommand, checkArguments, usageOf } from '../firmware/control/command-table.js'
import { connectControl, type ControlClient } from '../firmware/control/client.js'
import { ControlError } from '../firmware/control/errors.js'

/** Words the console handles itself, beside the shared command table. */
const localCommands = [
  { name: 'help', summary: 'list commands (also: `?`, or `show ?` after a partial command)' },
  { name: 'enable', summary: 'enter the technician password to unlock state-changing commands' },
  { name: 'factory-test', summary: 'run the factory checks (TAP and a JSON report); factory-test --burn-in MINUTES' },
  { name: 'exit', summary: 'leave the console' },
]

/** Every name tab completion knows: local words and the command table. */
const completionNames = [...localCommands.map((command) => command.name), ...commandTable.map((spec) => spec.name)]

/** The help for a partial command: each possible next word, with the summary of what it completes. */
export function helpFor(partial: string): string {
  const words = partial.split(/\s+/).filter(Boolean)
  const lines: string[] = []
  const all = [...localCommands.map((command) => ({ ...command, usage: command.name })), ...commandTable.map((spec) => ({ name: spec.name, summary: spec.summary + (spec.technician ? ' [technician]' : ''), usage: usageOf(spec) }))]
  for (const command of all) {
    const nameWords = command.name.split(' ')
    const prefixMatches = words.every((word, index) => index < nameWords.length - 1 ? nameWords[index] === word : (nameWords[index] ?? '').startsWith(word))
    if (words.length <= nameWords.length && prefixMatches) lines.push(`  ${command.usage.padEnd(34)} ${command.summary}`)
  }
  return lines.length ? lines.join('\n') : `  no command starts with "${partial.trim()}"`
}

/**
 * The technician's serial console (`mailkeep console`): a readline prompt over stdin/stdout
 * (a serial line is a tty), `help`, `?` after a partial command, tab completion, and the
 * same command table as the one-shot CLI. The console keeps working when the service is
 * down: each command reconnects and says clearly that the service is not running.
 * `enable` asks for the technician password without echoing it.
 */
export async function runConsole(options: { socketPath: string; configFile?: string; runFactoryTest?: (argv: string[]) => Promise<number>; input?: NodeJS.ReadableStream; output?: NodeJS.WritableStream }): Promise<number> {
  const input = options.input ?? process.stdin
  const realOutput = (options.output ?? process.stdout) as NodeJS.WritableStream & { isTTY?: boolean; columns?: number }
  let muted = false
  // readline echoes what is typed through its output; muting it hides the password.
  const output = new Writable({
    write(chunk, _encoding, callback) {
      if (!muted) realOutput.write(chunk)
      callback()
    },
  }) as Writable & { isTTY?: boolean; columns?: number }
  output.isTTY = realOutput.isTTY
  output.columns = realOutput.columns ?? 80
  const terminal = Boolean((input as { isTTY?: boolean }).isTTY)
  // Node's readline drops line editing and completion when TERM is dumb or unset, which is
  // what a bare serial getty often gives; serial terminals understand VT100, so use that.
  if (terminal && (!process.env.TERM || process.env.TERM === 'dumb')) process.env.TERM = 'vt100'
  const rl: Interface = createInterface({
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
  let client: ControlClient | undefined
  let password: string | undefined
  const say = (text: string) => realOutput.write(text.endsWith('\n') ? text : text + '\n')

  async function connection(): Promise<ControlClient> {
    if (client) return client
    client = await connectControl(options.socketPath)
    // A new connection is not yet unlocked: repeat the technician login if one was given.
    if (password !== undefined) await client.call('auth', [], password).catch(() => undefined)
    return client
  }

  async function call(command: string, args: string[]): Promise<unknown> {
    try {
      return await (await connection()).call(command, args)
    } catch (error) {
      if (error instanceof ControlError && error.code === 'NOT_RUNNING') {
        client?.close()
        client = undefined
      }
      throw error
    }
  }

  function question(prompt: string, hidden: boolean): Promise<string> {
    return new Promise((resolve) => {
      if (hidden) realOutput.write(prompt)
      rl.question(hidden ? '' : prompt, (answer) => {
        muted = false
        if (hidden) realOutput.write('\n')
        resolve(answer)
      })
      muted = hidden
    })
  }

  async function prompt(): Promise<string> {
    try {
      const version = (await call('show version', [])) as { model: number; serial: string }
      return `mailkeep ${version.model} ${version.serial}> `
    } catch {
      return 'mailkeep (service not running)> '
    }
  }

  async function handle(line: string): Promise<boolean> {
    const trimmed = line.trim()
    if (!trimmed) return true
    if (trimmed.endsWith('?')) {
      say(helpFor(trimmed.slice(0, -1)))
      return true
    }
    let words = trimmed.split(/\s+/)
    const json = words.includes('--json')
    words = words.filter((word) => word !== '--json')
    if (words[0] === 'exit' || words[0] === 'quit') return false
    if (words[0] === 'help') {
      say(helpFor(words.slice(1).join(' ')))
      return true
    }
    if (words[0] === 'factory-test' && options.runFactoryTest) {
      rl.pause()
      const code = await options.runFactoryTest([...(options.configFile ? ['--config', options.configFile] : []), ...words.slice(1)])
      rl.resume()
      say(`factory test ${code === 0 ? 'passed' : `failed (exit ${code})`}`)
      return true
    }
    if (words[0] === 'enable') {
      const typed = await question('technician password: ', true)
      try {
        await (await connection()).call('auth', [], typed)
        password = typed
        say('technician commands unlocked')
      } catch (error) {
        say(`error ${(error as ControlError).code ?? ''}: ${(error as Error).message}`)
      }
      return true
    }
    const resolved = resolveCommand(words)
    if (!resolved) {
      say(`unknown command "${trimmed}"; type help or ?`)
      return true
    }
    const usage = checkArguments(resolved.spec, resolved.args)
    if (usage) {
      say(usage)
      return true
    }
    try {
      const result = await call(resolved.spec.name, resolved.args)
      say(json ? JSON.stringify(result, null, 2) : resolved.spec.render(result))
    } catch (error) {
      const code = (error as ControlError).code
      say(`error ${code ?? ''}: ${(error as Error).message}${code === 'AUTH_REQUIRED' ? ' (type enable)' : ''}`)
    }
    return true
  }

  say('mailkeep console; type help or ? for commands, exit to leave')
  const lines = rl[Symbol.asyncIterator]()
  for (;;) {
    rl.setPrompt(await prompt())
    rl.prompt()
    const next = await lines.next()
    if (next.done) break
    if (!(await handle(next.value))) break
  }
  rl.close()
  client?.close()
  return 0
}
