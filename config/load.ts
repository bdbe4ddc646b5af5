import { readFile } from 'node:fs/promises'
import { resolve, join } from 'node:path'
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv'
import { configSchema, secretConfigPaths } from './schema.js'
import { ConfigError, type ConfigProblem } from './errors.js'
import type { Config } from './types.js'

/** Largest configuration file accepted, in bytes: a config is small; a huge file is a mistake. */
export const configFileBytesMax = 1024 * 1024

let compiled: ValidateFunction | undefined
function validator() {
  if (!compiled) {
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true, allowUnionTypes: true })
    compiled = ajv.compile(configSchema)
  }
  return compiled
}

function dottedPath(instancePath: string): string {
  return instancePath
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .join('.')
}

function valueAt(root: unknown, path: string): unknown {
  let current: unknown = root
  for (const part of path ? path.split('.') : []) {
    if (current === null || typeof current !== 'object') return undefined
    current = (current as Record<string, unknown>)[part]
  }
  return current
}

function isSecretPath(path: string): boolean {
  return secretConfigPaths.some((pattern) => pattern.test(path))
}

function toProblem(error: ErrorObject, root: unknown): ConfigProblem {
  let path = dottedPath(error.instancePath)
  let reason = error.message ?? 'is invalid'
  if (error.keyword === 'additionalProperties') {
    const key = String((error.params as { additionalProperty: string }).additionalProperty)
    path = path ? `${path}.${key}` : key
    reason = 'unknown key'
  } else if (error.keyword === 'required') {
    const key = String((error.params as { missingProperty: string }).missingProperty)
    path = path ? `${path}.${key}` : key
    reason = 'is required'
  } else if (error.keyword === 'enum') {
    reason = `must be one of ${JSON.stringify((error.params as { allowedValues: unknown[] }).allowedValues)}`
  }
  const value = valueAt(root, path)
  return { path, reason, value: isSecretPath(path) && value !== undefined ? '[redacted]' : value }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const inner of Object.values(value)) deepFreeze(inner)
  }
  return value
}

/**
 * Validates a parsed configuration object (a partial file) and returns the full, frozen
 * configuration with defaults filled in and paths made absolute.
 *
 * @param raw the parsed JSON of a config file ({} for embedded defaults)
 * @param workingDirectory base of relative paths (dataDir, socketPath)
 * @throws ConfigError with every problem (not just the first)
 */
export function validateConfig(raw: unknown, workingDirectory = process.cwd()): Readonly<Config> {
  const candidate = structuredClone(raw ?? {})
  if (candidate === null || typeof candidate !== 'object' || Array.isArray(candidate)) {
    throw new ConfigError('configuration must be a JSON object', [{ path: '', reason: 'must be an object', value: raw }])
  }
  const validate = validator()
  if (!validate(candidate)) {
    // Report against the original input so filled-in defaults are not shown as "got".
    const problems = (validate.errors ?? []).map((error: ErrorObject) => toProblem(error, candidate))
    throw new ConfigError(`configuration has ${problems.length} problem(s)`, dedupe(problems))
  }
  const config = candidate as Config
  const crossProblems = crossCheck(config)
  if (crossProblems.length > 0) throw new ConfigError(`configuration has ${crossProblems.length} problem(s)`, crossProblems)
  config.dataDir = resolve(workingDirectory, config.dataDir)
  config.control.socketPath = config.control.socketPath ? resolve(workingDirectory, config.control.socketPath) : join(config.dataDir, 'run', 'mailkeep.sock')
  return deepFreeze(config)
}

function dedupe(problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>()
  return problems.filter((problem) => {
    const key = `${problem.path}\u0000${problem.reason}`
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/** Rules that a JSON Schema cannot say simply. */
function crossCheck(config: Config): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const names = new Set<string>()
  config.journal.sources.forEach((source, index) => {
    if (names.has(source.name)) problems.push({ path: `journal.sources.${index}.name`, reason: 'is used by another source', value: source.name })
    names.add(source.name)
  })
  if (config.smtp.trustedConnectionsReserved > config.smtp.connectionsMax) {
    problems.push({ path: 'smtp.trustedConnectionsReserved', reason: `must be at most smtp.connectionsMax (${config.smtp.connectionsMax})`, value: config.smtp.trustedConnectionsReserved })
  }
  const unixSocketPathBytesMax = 107
  if (config.control.socketPath && Buffer.byteLength(config.control.socketPath) > unixSocketPathBytesMax) {
    problems.push({ path: 'control.socketPath', reason: `must be at most ${unixSocketPathBytesMax} bytes`, value: config.control.socketPath })
  }
  return problems
}

/** Where the config comes from: `--config FILE`, else MAILKEEP_CONFIG, else embedded defaults. */
export function configPathFrom(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): string | undefined {
  const index = argv.findIndex((arg) => arg === '--config' || arg.startsWith('--config='))
  if (index >= 0) {
    const arg = argv[index]!
    return arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : argv[index + 1]
  }
  return env.MAILKEEP_CONFIG || undefined
}

/**
 * Reads, parses and validates a configuration file; with no file, the embedded defaults.
 * @throws ConfigError (unreadable, too large, not JSON, or invalid)
 */
export async function loadConfig(file?: string, workingDirectory = process.cwd()): Promise<Readonly<Config>> {
  if (!file) return validateConfig({}, workingDirectory)
  const path = resolve(workingDirectory, file)
  let text: string
  try {
    const bytes = await readFile(path)
    if (bytes.byteLength > configFileBytesMax) {
      throw new ConfigError('configuration file too large', [{ path: '', reason: `file must be at most ${configFileBytesMax} bytes`, value: bytes.byteLength }])
    }
    text = bytes.toString('utf8')
  } catch (error) {
    if (error instanceof ConfigError) throw error
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO'
    throw new ConfigError(`cannot read configuration file ${path}`, [{ path: '', reason: `cannot read file (${code})`, value: path }])
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (error) {
    throw new ConfigError(`configuration file ${path} is not JSON`, [{ path: '', reason: `not valid JSON: ${(error as Error).message}`, value: path }])
  }
  return validateConfig(raw, workingDirectory)
}
