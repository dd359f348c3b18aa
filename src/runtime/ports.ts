/**
 * Ports for the processes a local mesh starts. A port is found by binding port 0 and closing the socket; the
 * process that will use it binds it a moment later. Until then the port is free again, and the kernel may hand the
 * same number to the next bind of port 0 (in a mesh of a few dozen ports that happens in a few per cent of starts:
 * a sidecar then finds its outbound port taken by its own inbound listener). So every port handed out here is
 * remembered and never handed out again by this process.
 *
 * Ports are drawn at random below the kernel's ephemeral range (Linux: net.ipv4.ip_local_port_range, 32768 and up),
 * not with port 0: between the check and the bind, an ephemeral port may become the local port of any outgoing
 * connection on the machine (or another program's bind of port 0), and the app then fails with EADDRINUSE. Below
 * the range only another explicit bind can take it. Where the range cannot be read, port 0 is used.
 *
 * Ports that the Fetch standard blocks ("bad ports": `fetch('http://127.0.0.1:10080/')` fails with "bad port" in
 * Node and in browsers) are never drawn: apps and probes that use fetch could not reach them.
 */
import { readFileSync } from 'node:fs'
import * as net from 'node:net'
import { ErrorCodes, LoomError } from '../core/errors.js'

const handedOut = new Set<number>()

/** The lowest port the random draw may return */
const LOWEST = 10_000

/** The first ephemeral port, or null when unknown (not Linux) or when there is no room below it. */
function ephemeralStart(): number | null {
  try {
    const low = Number(readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0])
    return Number.isInteger(low) && low > LOWEST + 1000 ? low : null
  } catch {
    return null
  }
}

const below = ephemeralStart()

/** The Fetch standard's bad ports at or above LOWEST (https://fetch.spec.whatwg.org/#port-blocking). */
const FETCH_BAD_PORTS = new Set([10080])

/** Whether fetch refuses `port` (the whole list: all of them are below 10080). */
export function fetchBlocksPort(port: number): boolean {
  return FETCH_BAD_PORTS.has(port) || (port < LOWEST && LOW_BAD_PORTS.has(port))
}

const LOW_BAD_PORTS = new Set([
  0, 1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95, 101, 102, 103, 104, 109, 110,
  111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161, 179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532,
  540, 548, 554, 556, 563, 587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060, 5061,
  6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697,
])

/** A candidate: a random port below the ephemeral range, or 0 (the kernel's choice). */
function candidate(): number {
  return below === null ? 0 : LOWEST + Math.floor(Math.random() * (below - LOWEST))
}

function tryPort(port: number): Promise<number | null> {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(null))
    s.listen(port, '127.0.0.1', () => {
      const bound = (s.address() as net.AddressInfo).port
      s.close(() => resolve(bound))
    })
  })
}

/** A free port on 127.0.0.1 that this process has not handed out before; `preferred` when it is free (0: any). */
export async function freePort(preferred?: number): Promise<number> {
  if (preferred !== undefined && preferred !== 0 && !handedOut.has(preferred)) {
    const p = await tryPort(preferred)
    if (p !== null) {
      handedOut.add(p)
      return p
    }
  }
  for (let attempt = 0; attempt < 100; attempt++) {
    const p = await tryPort(candidate())
    if (p === null || fetchBlocksPort(p)) continue
    if (!handedOut.has(p)) {
      handedOut.add(p)
      return p
    }
  }
  throw new LoomError(ErrorCodes.LISTEN, 'no free port on 127.0.0.1')
}
