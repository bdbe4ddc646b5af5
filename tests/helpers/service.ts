/**
 * Test helpers that run the real firmware as child processes under Bun (the appliance
 * runtime) and the real `mailkeep` command, on 127.0.0.1 with their own data dirs.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'

export const repoRoot = resolve(import.meta.dirname, '..', '..')
export const bunPath = join(repoRoot, 'node_modules', '.bin', 'bun')
export const cliPath = join(repoRoot, 'bin', 'mailkeep.js')
export const mainPath = join(repoRoot, 'boot', 'main.ts')

/** A fresh directory under the system temp dir. */
export function tempDir(prefix = 'mailkeep-test-'): Promise<string> {
  return mkdtemp(join(tmpdir(), prefix))
}

export interface RunningService {
  process: ChildProcess
  configPath: string
  dataDir: string
  /** Every stdout line so far (JSON log records as text). */
  lines: string[]
  /** Parsed `ready` record. */
  ready: Record<string, unknown>
  /** stderr text so far. */
  stderr(): string
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
  exited: Promise<number | null>
}

/** Writes a config file into `dir` (ports 0 unless given) and returns its path. */
export async function writeConfig(dir: string, config: Record<string, unknown>): Promise<string> {
  const path = join(dir, 'config.json')
  const defaults = {
    dataDir: join(dir, 'data'),
    smtp: { port: 0 },
    http: { port: 0 },
    https: { port: 0 },
    mirror: { port: 0 },
  }
  const merged: Record<string, unknown> = { ...defaults }
  for (const [key, value] of Object.entries(config)) {
    const base = merged[key]
    merged[key] = base && typeof base === 'object' && value && typeof value === 'object' && !Array.isArray(value) ? { ...base, ...value } : value
  }
  await writeFile(path, JSON.stringify(merged, null, 2))
  return path
}

/**
 * Starts the firmware with the given config file and waits for its `ready` line.
 * Rejects (with the output) when the process exits first or `timeoutMs` passes.
 */
export async function startService(configPath: string, options: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunningService> {
  const child = spawn(bunPath, [mainPath, '--config', configPath], {
    cwd: options.cwd ?? repoRoot,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines: string[] = []
  let stderr = ''
  let pending = ''
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  child.stderr!.on('data', (chunk) => (stderr += chunk.toString()))
  const ready = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ready line within ${options.timeoutMs ?? 15000} ms\n${lines.join('\n')}\n${stderr}`)), options.timeoutMs ?? 15000)
    child.stdout!.on('data', (chunk) => {
      pending += chunk.toString()
      let newline = pending.indexOf('\n')
      while (newline >= 0) {
        const line = pending.slice(0, newline)
        pending = pending.slice(newline + 1)
        lines.push(line)
        try {
          const record = JSON.parse(line) as Record<string, unknown>
          if (record.msg === 'ready') {
            clearTimeout(timer)
            resolve(record)
          }
        } catch {
          // not JSON: kept in lines for the failure message
        }
        newline = pending.indexOf('\n')
      }
    })
    void exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`service exited with ${code} before ready\n${lines.join('\n')}\n${stderr}`))
    })
  })
  const dataDir = JSON.parse(lines.find((line) => line.includes('"booting"')) ?? '{}').dataDir as string
  return {
    process: child,
    configPath,
    dataDir,
    lines,
    ready,
    stderr: () => stderr,
    exited,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
      child.kill(signal)
      return exited
    },
  }
}

/** The bound port of one of a running service's listeners (`smtp`, `http`, `mirror`). */
export function portOf(service: RunningService, name: string): number {
  return Number((service.ready.listeners as Record<string, string>)[name]!.split(':').pop())
}

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs `mailkeep ARGS` (bin/mailkeep.js under Node, which runs the CLI on Bun). */
export function runCli(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], {
      cwd: options.cwd ?? repoRoot,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk) => (stderr += chunk.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`mailkeep ${args.join(' ')} did not finish\n${stdout}\n${stderr}`))
    }, options.timeoutMs ?? 20000)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
    child.stdin.end(options.input ?? '')
  })
}

/** Runs `mailkeep --config FILE ARGS --json` and parses stdout. */
export async function cliJson(configPath: string, args: string[], options: { input?: string } = {}): Promise<{ code: number | null; json: unknown; stderr: string }> {
  const result = await runCli(['--config', configPath, ...args, '--json'], options)
  let json: unknown
  try {
    json = JSON.parse(result.stdout)
  } catch {
    json = undefined
  }
  return { code: result.code, json, stderr: result.stderr }
}
