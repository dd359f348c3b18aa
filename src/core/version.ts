import { readFileSync } from 'node:fs'

/** The package version, from the package.json above this file (in the source tree or beside the bundle). */
export const VERSION: string = (() => {
  for (const rel of ['../package.json', '../../package.json', '../../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version: string }
      if (pkg.name === 'loom-mesh') return pkg.version
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0'
})()
