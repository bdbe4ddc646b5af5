/**
 * Builds the firmware image with Bun: `npm run build` → dist/
 *   mailkeep.js    the service (bundle of boot/main.ts)
 *   cli.js         the `mailkeep` command and serial console (bundle of boot/cli.ts)
 *   factory-test.js  the factory test (`mailkeep factory-test`)
 *   start.sh       starts the service from dist/ with the packaged Bun
 *   manifest.json  name, firmware version, compatible models, SHA-256 of every file
 * lmdb (a native addon) stays external and is resolved from node_modules beside dist/, as
 * NOTES.md found: a plain bundle with lmdb external runs on both Bun and Node. Signing and
 * the update mechanism come later.
 */
import { createHash } from 'node:crypto'
import { mkdir, readFile, rm, writeFile, chmod, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { knownModels, modelProfile } from './config/models.js'
import packageJson from './package.json' with { type: 'json' }

const root = import.meta.dirname
const outdir = join(root, 'dist')
const external = ['lmdb', 'msgpackr-extract', 'bun']

interface BunBuildResult {
  success: boolean
  logs: unknown[]
}
declare const Bun: { build(options: Record<string, unknown>): Promise<BunBuildResult> }

async function main(): Promise<void> {
  await rm(outdir, { recursive: true, force: true })
  await mkdir(outdir, { recursive: true })
  // parse-worker.js: the parse pool's worker thread entry (firmware/sources/parse-pool.ts loads it beside mailkeep.js).
  const entries = { 'mailkeep.js': 'boot/main.ts', 'cli.js': 'boot/cli.ts', 'factory-test.js': 'scripts/factory-test.ts', 'parse-worker.js': 'firmware/sources/parse-worker.ts' }
  for (const [name, entry] of Object.entries(entries)) {
    const result = await Bun.build({
      entrypoints: [join(root, entry)],
      outdir,
      target: 'bun',
      format: 'esm',
      external,
      naming: name,
      define: { 'process.env.MAILKEEP_BUILD': JSON.stringify('1') },
    })
    if (!result.success) {
      for (const log of result.logs) process.stderr.write(`${String(log)}\n`)
      throw new Error(`build of ${entry} failed`)
    }
  }
  const startScript =
    '#!/bin/sh\n# Starts the mailkeep service from this image with the packaged Bun.\nhere=$(cd "$(dirname "$0")" && pwd)\nexec "$here/../node_modules/.bin/bun" "$here/mailkeep.js" "$@"\n'
  await writeFile(join(outdir, 'start.sh'), startScript)
  await chmod(join(outdir, 'start.sh'), 0o755)

  const files: Record<string, string> = {}
  for (const name of (await readdir(outdir)).sort()) {
    files[name] = createHash('sha256')
      .update(await readFile(join(outdir, name)))
      .digest('hex')
  }
  const manifest = {
    name: packageJson.name,
    firmwareVersion: packageJson.version,
    builtAt: new Date().toISOString(),
    runtime: 'bun',
    compatibleModels: knownModels(),
    mirroringModels: knownModels().filter((model) => modelProfile(model)!.mirroringAllowed),
    external,
    files,
  }
  await writeFile(join(outdir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n')
  process.stdout.write(`built firmware ${manifest.firmwareVersion} into ${outdir}: ${Object.keys(files).join(', ')}\n`)
}

await main()
