import { commandTable, usageOf } from '../firmware/control/command-table.js'

/**
 * The serial console's command table: the words it handles itself, beside the shared
 * command table (firmware/control/command-table.ts, with every command's argument specs),
 * and the help and completion built from both.
 */

/** A word the console handles itself; `usage` is its argument spec as help shows it (the name when it takes none). */
export interface LocalCommand {
  name: string
  summary: string
  usage?: string
}

/** Words the console handles itself, beside the shared command table. */
export const localCommands: readonly LocalCommand[] = [
  { name: 'help', summary: 'list commands (also: `?`, or `show ?` after a partial command)' },
  { name: 'enable', summary: 'enter the technician password to unlock state-changing commands' },
  { name: 'factory-test', summary: 'run the factory checks (TAP and a JSON report); factory-test --burn-in MINUTES' },
  { name: 'exit', summary: 'leave the console' },
]

/** Every name tab completion knows: local words and the command table. */
export const completionNames = [...localCommands.map((command) => command.name), ...commandTable.map((spec) => spec.name)]

/** The help for a partial command: each possible next word, with the summary of what it completes. */
export function helpFor(partial: string): string {
  const words = partial.split(/\s+/).filter(Boolean)
  const lines: string[] = []
  const all = [
    ...localCommands.map((command) => ({ ...command, usage: command.usage ?? command.name })),
    ...commandTable.map((spec) => ({ name: spec.name, summary: spec.summary + (spec.technician ? ' [technician]' : ''), usage: usageOf(spec) })),
  ]
  for (const command of all) {
    const nameWords = command.name.split(' ')
    const prefixMatches = words.every((word, index) => (index < nameWords.length - 1 ? nameWords[index] === word : (nameWords[index] ?? '').startsWith(word)))
    if (words.length <= nameWords.length && prefixMatches) lines.push(`  ${command.usage.padEnd(34)} ${command.summary}`)
  }
  return lines.length ? lines.join('\n') : `  no command starts with "${partial.trim()}"`
}
