/**
 * Gateway credentials: what Istio reads from a Kubernetes Secret named by a Gateway server's `tls.credentialName`,
 * read here from files in the control plane's data directory:
 *
 *     <data-dir>/credentials/<name>/tls.crt    certificate chain (PEM)       (or `cert`, as Istio's generic Secret)
 *     <data-dir>/credentials/<name>/tls.key    its private key (PEM)         (or `key`)
 *     <data-dir>/credentials/<name>/ca.crt     CA for client certificates    (or `cacert`), for MUTUAL servers
 *
 * A CA may also be its own credential named `<name>-cacert` (Istio's convention). The files never go through the
 * API or the store: only the gateways whose servers name a credential receive it, over SDS (translate/gateway-tls.ts).
 * The directory is watched: adding, replacing or removing files rebuilds the snapshots, so a renewed certificate
 * reaches the gateways' new connections without a restart.
 */
import { type FSWatcher, mkdirSync, readdirSync, readFileSync, watch } from 'node:fs'
import { join } from 'node:path'
import { log } from '../core/log.js'

/** One credential's PEM material (each part optional: a CA-only credential has only `ca`). */
export interface Credential {
  cert?: string
  key?: string
  ca?: string
}

export function credentialsDir(dataDir: string): string {
  return join(dataDir, 'credentials')
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/

function readFirst(dir: string, names: readonly string[]): string | undefined {
  for (const n of names) {
    try {
      return readFileSync(join(dir, n), 'utf8')
    } catch {
      // the next spelling
    }
  }
  return undefined
}

/** Every credential under `dir`, by name (a directory that does not exist has none). */
export function readCredentials(dir: string): Map<string, Credential> {
  const out = new Map<string, Credential>()
  let names: string[]
  try {
    names = readdirSync(dir, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
  } catch {
    return out
  }
  for (const name of names.sort()) {
    if (!NAME.test(name)) {
      log('warn', 'credentials', 'not a credential name (DNS label rules, as a Secret); skipped', { name })
      continue
    }
    const d = join(dir, name)
    const c: Credential = {}
    const cert = readFirst(d, ['tls.crt', 'cert'])
    const key = readFirst(d, ['tls.key', 'key'])
    const ca = readFirst(d, ['ca.crt', 'cacert'])
    if (cert !== undefined) c.cert = cert
    if (key !== undefined) c.key = key
    if (ca !== undefined) c.ca = ca
    if ((cert === undefined) !== (key === undefined)) {
      log('warn', 'credentials', 'a credential needs both tls.crt and tls.key; its certificate is left out', { name })
      delete c.cert
      delete c.key
    }
    if (Object.keys(c).length > 0) out.set(name, c)
  }
  return out
}

/** Watches `dir` (made when missing) and calls `changed` on any change below it. */
export function watchCredentials(dir: string, changed: () => void): FSWatcher | null {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const w = watch(dir, { recursive: true, persistent: false }, () => changed())
    w.on('error', (err) => log('warn', 'credentials', 'watch failed', { dir, error: err.message }))
    return w
  } catch (err) {
    log('warn', 'credentials', 'cannot watch the credentials directory', { dir, error: (err as Error).message })
    return null
  }
}
