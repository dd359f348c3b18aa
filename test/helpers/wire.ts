/** What crosses the wire between two proxies: a recording TCP relay, and a check that bytes are TLS records. */
import * as net from 'node:net'

/** One relayed connection's bytes, each way, in arrival order. */
export interface RelayedConnection {
  /** client → target */
  up: Buffer[]
  /** target → client */
  down: Buffer[]
}

export interface Relay {
  port: number
  /** every chunk client → target, over all connections */
  up: Buffer[]
  /** every chunk target → client, over all connections */
  down: Buffer[]
  connections: RelayedConnection[]
  close(): Promise<void>
}

/** A TCP relay on loopback to `target`, recording the bytes each way, per connection and overall. */
export async function startRelay(target: number): Promise<Relay> {
  const up: Buffer[] = []
  const down: Buffer[] = []
  const connections: RelayedConnection[] = []
  const sockets = new Set<net.Socket>()
  const server = net.createServer((c) => {
    const conn: RelayedConnection = { up: [], down: [] }
    connections.push(conn)
    const u = net.connect(target, '127.0.0.1')
    sockets.add(c)
    sockets.add(u)
    c.on('data', (d: Buffer) => {
      up.push(d)
      conn.up.push(d)
    })
    u.on('data', (d: Buffer) => {
      down.push(d)
      conn.down.push(d)
    })
    c.pipe(u)
    u.pipe(c)
    c.on('error', () => u.destroy())
    u.on('error', () => c.destroy())
    c.on('close', () => u.destroy())
    u.on('close', () => c.destroy())
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as net.AddressInfo).port,
    up,
    down,
    connections,
    close: () => {
      for (const s of sockets) s.destroy()
      return new Promise<void>((r) => server.close(() => r()))
    },
  }
}

/** Whether `bytes` are a sequence of whole TLS records (handshake, alert, change cipher spec, application data). */
export function tlsRecords(bytes: Buffer): { ok: boolean; records: number; appData: number } {
  let at = 0
  let records = 0
  let appData = 0
  while (at + 5 <= bytes.length) {
    const type = bytes[at]!
    if (type < 20 || type > 23 || bytes[at + 1] !== 3) return { ok: false, records, appData }
    if (type === 23) appData++
    at += 5 + bytes.readUInt16BE(at + 3)
    records++
  }
  return { ok: at === bytes.length, records, appData }
}
