import { createWriteStream } from 'node:fs'
import { open } from 'node:fs/promises'
import { isAbsolute } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { buildExport, type ExportDeps } from '../firmware/api/export-routes.js'
import type { Principal } from '../firmware/access/roles.js'
import type { CommandHandler } from '../firmware/control/server.js'
import { ControlError } from '../firmware/control/errors.js'

/** The technician at the console exports as an admin would: every message. */
const technician: Principal = Object.freeze({ name: 'technician', role: 'admin', addresses: [], source: 'local' })

/**
 * `export QUERY… --out FILE`: the zip the API's export streams (manifest, signature,
 * certificate, the .eml files), written by the service to FILE (absolute, resolved by the
 * CLI; an existing file is never overwritten). Audited as `mail.export` by `technician`.
 */
export function exportCommandHandlers(deps: ExportDeps): [string, CommandHandler][] {
  return [
    [
      'export',
      async (args) => {
        const at = args.indexOf('--out')
        const out = at >= 0 ? args[at + 1] : undefined
        if (!out) throw new ControlError('USAGE', 'export QUERY… --out FILE')
        if (!isAbsolute(out)) throw new ControlError('USAGE', `${out}: the path must be absolute (the CLI resolves it)`)
        const query = args.filter((_, index) => index !== at && index !== at + 1).join(' ')
        // Refuse an existing file before anything is read or audited.
        const handle = await open(out, 'wx', 0o600).catch((error: NodeJS.ErrnoException) => {
          throw new ControlError('COMMAND_FAILED', `${out}: ${error.code === 'EEXIST' ? 'exists; not overwritten' : (error.code ?? error.message)}`)
        })
        await handle.close()
        const built = await buildExport(deps, query, technician, 'technician')
        await pipeline(built.stream, createWriteStream(out, { flags: 'w' }))
        const written = await open(out, 'r+')
        await written.sync()
        const { size } = await written.stat()
        await written.close()
        return { message: `exported ${built.count} message(s) to ${out}`, path: out, count: built.count, bytes: size, manifestSha256: built.manifestSha256 }
      },
    ],
  ]
}
