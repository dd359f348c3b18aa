/** A TCP relay on loopback, for tests that watch or cut what a client sends to a server. */
import * as net from 'node:net'

export interface Relay {
  /** host:port to connect to instead of the target */
  address: string
  /** every byte the clients sent, in order */
  sent: () => Buffer
  /** connections accepted so far (refused ones included) */
  accepted: () => number
  /** `true`: drop every connection, now and later; `false`: relay again */
  cut: (on: boolean) => void
  close: () => void
}

/** Relays every connection to `target` (host:port), recording what the client sends. */
export async function tcpRelay(target: string): Promise<Relay> {
  const i = target.lastIndexOf(':')
  const [host, port] = [target.slice(0, i), Number(target.slice(i + 1))]
  const chunks: Buffer[] = []
  const sockets = new Set<net.Socket>()
  let cut = false
  let accepted = 0
  const server = net.createServer((c) => {
    accepted++
    if (cut) return void c.destroy()
    const up = net.connect(port, host)
    sockets.add(c).add(up)
    c.on('data', (d: Buffer) => chunks.push(Buffer.from(d)))
    c.pipe(up).pipe(c)
    c.on('error', () => up.destroy())
    up.on('error', () => c.destroy())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    sent: () => Buffer.concat(chunks),
    accepted: () => accepted,
    cut: (on: boolean) => {
      cut = on
      if (on) for (const s of sockets) s.destroy()
    },
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
  }
}
