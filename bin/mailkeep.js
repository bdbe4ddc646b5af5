#!/usr/bin/env node
// The `mailkeep` command: runs boot/cli.ts on Bun, the appliance runtime, which the
// package installs (node_modules/bun). stdio is inherited so the console gets the tty.
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { existsSync } from 'node:fs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const require = createRequire(import.meta.url)
let bun
try {
  bun = join(dirname(require.resolve('bun/package.json')), 'bin', 'bun.exe')
} catch {
  bun = 'bun'
}
// A built image ships dist/cli.js; a source checkout runs the TypeScript directly.
const entry = existsSync(join(root, 'dist', 'cli.js')) && !existsSync(join(root, 'boot', 'cli.ts')) ? join(root, 'dist', 'cli.js') : join(root, 'boot', 'cli.ts')
const child = spawn(bun, [entry, ...process.argv.slice(2)], { stdio: 'inherit' })
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal))
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)))
child.on('error', (error) => {
  process.stderr.write(`mailkeep: cannot run bun (${error.message})\n`)
  process.exit(1)
})
