#!/usr/bin/env node
// Runs the tap suite and ends with one plain line `N passed, N failed, N skipped`, taken
// from tap's own closing summary (`# { total, pass, fail, skip, todo }`, counted over
// every assertion of every file), so that a reader that does not know tap's summary still
// gets exact figures. The exit code is tap's; if tap printed no summary, the run failed.
import { spawn } from 'node:child_process'

let tail = ''
const tap = spawn('npx', ['tap', ...process.argv.slice(2)], { stdio: ['ignore', 'pipe', 'inherit'] })
tap.stdout.on('data', (chunk) => {
  process.stdout.write(chunk)
  tail = (tail + chunk.toString('utf8')).slice(-4096)
})
tap.on('close', (code) => {
  const summary = /# \{([^}]*)\}\s*\n[^{]*$/.exec(tail)
  const count = (name) => Number((summary?.[1].match(new RegExp(`${name}: (\\d+)`)) ?? [])[1] ?? 0)
  if (!summary) {
    process.stdout.write('\ntap printed no summary\n0 passed, 1 failed, 0 skipped\n')
    process.exit(code || 1)
  }
  process.stdout.write(`\n${count('pass')} passed, ${count('fail')} failed, ${count('skip') + count('todo')} skipped\n`)
  process.exit(code ?? 1)
})
