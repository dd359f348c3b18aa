/**
 * The original destination of a connection that iptables redirected to this proxy (nat REDIRECT, as `loom up
 * --transparent` and Istio's istio-iptables set up): getsockopt(SOL_IP, SO_ORIGINAL_DST) on the socket's file
 * descriptor. Node has no API for it, so it comes from a small native addon (native/original_dst.c, built by
 * `npm ci` through node-gyp into build/Release/original_dst.node). It is loaded on first use: only a listener with
 * `use_original_dst` and the ORIGINAL_DST cluster type need it, and a proxy without them never loads it.
 */
import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import type * as net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { ErrorCodes, LoomError } from '../../core/errors.js'

export interface OriginalDst {
  address: string
  port: number
}

type Addon = { originalDst(fd: number): [string, number] }

let addon: Addon | null = null
const ADDON = join('build', 'Release', 'original_dst.node')

/** Where the addon is: build/Release under the package root (found upwards from this module, bundled or not). */
function addonPath(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 8; i++) {
    const p = join(dir, ADDON)
    if (existsSync(p)) return p
    const up = dirname(dir)
    if (up === dir) break
    dir = up
  }
  return null
}

/** Loads the addon, or throws saying how to build it. */
export function loadOriginalDst(): Addon {
  if (addon !== null) return addon
  if (process.platform !== 'linux')
    throw new LoomError(ErrorCodes.CONFIG_INVALID, 'use_original_dst and ORIGINAL_DST clusters need Linux (iptables)')
  const path = addonPath()
  if (path === null)
    throw new LoomError(
      ErrorCodes.CONFIG_INVALID,
      `use_original_dst and ORIGINAL_DST clusters need the native addon ${ADDON}, which is missing: ` +
        'build it with `npx node-gyp rebuild` in the package directory (it needs python3, make, a C compiler and ' +
        "Node's headers)",
    )
  addon = createRequire(import.meta.url)(path) as Addon
  return addon
}

const known = new WeakMap<net.Socket, OriginalDst | null>()

/**
 * The socket's original destination, read once per socket; null when the connection was not redirected (then the
 * kernel answers ENOENT) or the socket has no descriptor.
 */
export function originalDst(socket: net.Socket): OriginalDst | null {
  const seen = known.get(socket)
  if (seen !== undefined) return seen
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd
  let out: OriginalDst | null = null
  if (typeof fd === 'number' && fd >= 0) {
    try {
      const [address, port] = loadOriginalDst().originalDst(fd)
      out = { address, port }
    } catch (err) {
      if (err instanceof LoomError) throw err
      out = null
    }
  }
  known.set(socket, out)
  return out
}
