import packageJson from '../package.json' with { type: 'json' }

/**
 * The firmware version, from package.json. `bun build` inlines this import, so the
 * built image carries the version it was built from (build.ts also stamps the manifest).
 */
export const firmwareVersion: string = packageJson.version
