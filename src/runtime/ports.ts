/**
 * Ports for the processes a local mesh starts. A port is found by binding port 0 and closing the socket; the
 * process that will use it binds it a moment later. Until then the port is free again, and the kernel may hand the
 * same number to the next bind of port 0 (in a mesh of a few dozen ports that happens in a few per cent of starts:
 * a sidecar then finds its outbound port taken by its own inbound listener). So every port handed out here is
 * remembered and never handed out again by this process.
 */
import * as net from 'node:net'
import { ErrorCodes, LoomError } from '../core/errors.js'

const handedOut = new Set<number>()

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

/** A free port on 127.0.0.1 that this process has not handed out before; `preferred` when it is free. */
export async function freePort(preferred?: number): Promise<number> {
  if (preferred !== undefined && !handedOut.has(preferred)) {
    const p = await tryPort(preferred)
    if (p !== null) {
      handedOut.add(p)
      return p
    }
  }
  for (let attempt = 0; attempt < 100; attempt++) {
    const p = await tryPort(0)
    if (p === null) break
    if (!handedOut.has(p)) {
      handedOut.add(p)
      return p
    }
  }
  throw new LoomError(ErrorCodes.LISTEN, 'no free port on 127.0.0.1')
}
