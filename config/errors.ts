import { MailkeepError } from '../firmware/common/errors.js'

/** One problem in a configuration: the JSON path (dotted), the reason, and the offending value (redacted if secret). */
export interface ConfigProblem {
  path: string
  reason: string
  value: unknown
}

/** Thrown when a configuration cannot be read or is invalid. Exit code 78 (EX_CONFIG). */
export class ConfigError extends MailkeepError {
  readonly problems: ConfigProblem[]
  constructor(message: string, problems: ConfigProblem[]) {
    super('CONFIG_INVALID', message, { fields: { problems } })
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** `path: reason (got value)`, one line per problem: the format of `mailkeep config check`. */
export function formatProblem(problem: ConfigProblem): string {
  const shown = problem.value === undefined ? 'nothing' : JSON.stringify(problem.value)
  return `${problem.path || '(root)'}: ${problem.reason} (got ${shown})`
}
