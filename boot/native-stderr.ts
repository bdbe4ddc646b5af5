import { spawn } from 'node:child_process'
import type { Logger } from '../firmware/common/logger.js'

/**
 * Native code writes to file descriptor 2 on its own, where no JavaScript sees it: lmdb-js's
 * LMDB prints `Write error: No space left on device position P, size S` and
 * `mdb_page_spill error 28` with fprintf(stderr) when a commit meets a full disk (mdb.c),
 * and Bun prints its crash report there. For the log to stay one JSON object per line
 * (STYLE 17), the service points fd 2 at a pipe read by a small relay process, which writes
 * each line as a JSON record (`ns: <root>.stderr`, the text as a field) to the service's
 * stdout. A relay process rather than a reader in the service itself: what a crashing
 * service writes last (its crash report) still reaches the log, since the relay reads the
 * pipe until every writer is gone. Lines that start with `mailkeep: ` (the process entry's
 * own words when it cannot boot or dies: boot/main.ts) are passed to the original stderr
 * unchanged, where technicians, systemd and the tests look for them.
 *
 * The relay ignores SIGTERM and SIGINT (systemd and a terminal signal the whole group): it
 * ends when the pipe closes, after the service has written its last line.
 *
 * Bun only (bun:ffi calls pipe(2) and dup2(2) in glibc); elsewhere, or if any step fails,
 * stderr stays as it was and a warning says so. Not used with `logging.format: pretty`,
 * which is for a person at a terminal.
 */

/** The relay's program, run as `bun -e`: one JSON record per line read, `mailkeep: ` lines passed through. */
const relaySource = `
process.on('SIGTERM', () => {})
process.on('SIGINT', () => {})
const ns = process.argv[process.argv.length - 1]
require('node:readline').createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.startsWith('mailkeep: ')) return void process.stderr.write(line + '\\n')
  if (line.trim() === '') return
  process.stdout.write(JSON.stringify({ time: new Date().toISOString(), level: 'warn', ns, msg: 'native code wrote to stderr', text: line }) + '\\n')
})
`

/** The glibc calls used, through bun:ffi. */
interface Libc {
  pipe(fds: unknown): number
  dup2(from: number, to: number): number
  close(fd: number): number
}

async function openLibc(): Promise<{ libc: Libc; pointer: (array: Int32Array) => unknown }> {
  // A specifier in a variable: bun:ffi exists only under Bun, and TypeScript checks against Node.
  const specifier = 'bun:ffi'
  const ffi = (await import(specifier)) as {
    dlopen(path: string, symbols: Record<string, { args: string[]; returns: string }>): { symbols: Libc }
    ptr(array: Int32Array): unknown
  }
  const { symbols } = ffi.dlopen('libc.so.6', {
    pipe: { args: ['ptr'], returns: 'i32' },
    dup2: { args: ['i32', 'i32'], returns: 'i32' },
    close: { args: ['i32'], returns: 'i32' },
  })
  return { libc: symbols, pointer: ffi.ptr }
}

/**
 * Points fd 2 at the relay (see the module comment). Never throws.
 * @param logger the root logger: the relay's records use its namespace plus `.stderr`
 * @param namespace the root logger's namespace (`mailkeep`)
 */
export async function relayNativeStderr(logger: Logger, namespace: string): Promise<void> {
  if (typeof (globalThis as { Bun?: unknown }).Bun === 'undefined') return
  try {
    const { libc, pointer } = await openLibc()
    const fds = new Int32Array(2)
    if (libc.pipe(pointer(fds)) !== 0) throw new Error('pipe(2) failed')
    const [readFd, writeFd] = [fds[0]!, fds[1]!]
    const relay = spawn(process.execPath, ['-e', relaySource, `${namespace}.stderr`], { stdio: [readFd, 'inherit', 'inherit'] })
    relay.on('error', (error) => logger.warn('the stderr relay failed; native output may not be JSON', { error }))
    relay.unref()
    libc.close(readFd)
    if (libc.dup2(writeFd, 2) !== 2) throw new Error('dup2(2) failed')
    libc.close(writeFd)
  } catch (error) {
    logger.warn('native stderr is not relayed as JSON', { error })
  }
}
