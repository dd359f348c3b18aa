/**
 * The TCP proxy network filter in a real `loom proxy`: bytes both ways, a large transfer intact, half-close in both
 * directions, a dead upstream closing the client promptly, and the `tcp.<stat_prefix>.*` stats on the admin endpoint.
 */
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import * as net from 'node:net'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { adminAddress, type RunningProxy, startProxy, staticCluster, TCP } from './helpers/proxy.js'

interface TestServer {
  port: number
  /** resolves with the next connection's socket */
  next(): Promise<net.Socket>
  close(): Promise<void>
}

/** A TCP server with half-open sockets; `onConn` handles each connection. */
async function startServer(onConn: (s: net.Socket) => void): Promise<TestServer> {
  const sockets = new Set<net.Socket>()
  let waiters: ((s: net.Socket) => void)[] = []
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
    s.on('error', () => {})
    onConn(s)
    const w = waiters
    waiters = []
    for (const f of w) f(s)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    next: () => new Promise((r) => waiters.push(r)),
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy()
        server.close(() => r())
      }),
  }
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex')

let echo: TestServer
let summary: TestServer
let serverFirst: TestServer
let deadPort: number
let proxy: RunningProxy
/** connections this file opened to the `echo` listener, to check the stats */
let echoConnections = 0

function tcpListener(name: string, cluster: string): unknown {
  return {
    name,
    address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.tcp_proxy',
            typed_config: { '@type': TCP, stat_prefix: `${name}_tcp`, cluster },
          },
        ],
      },
    ],
  }
}

before(async () => {
  // echoes everything; ends its side when the client has ended
  echo = await startServer((s) => s.pipe(s))
  // answers only after the client's FIN: how many bytes and their hash
  summary = await startServer((s) => {
    const h = createHash('sha256')
    let n = 0
    s.on('data', (c: Buffer) => {
      n += c.length
      h.update(c)
    })
    s.on('end', () => s.end(`${n} ${h.digest('hex')}`))
  })
  // speaks first and half-closes at once, then keeps reading
  serverFirst = await startServer((s) => s.end('server done\n'))
  // a port nobody listens on
  const tmp = net.createServer()
  await new Promise<void>((r) => tmp.listen(0, '127.0.0.1', r))
  deadPort = (tmp.address() as AddressInfo).port
  await new Promise((r) => tmp.close(r))

  proxy = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        tcpListener('echo', 'echo'),
        tcpListener('summary', 'summary'),
        tcpListener('server_first', 'server_first'),
        tcpListener('dead', 'dead'),
      ],
      clusters: [
        staticCluster('echo', [echo.port]),
        staticCluster('summary', [summary.port]),
        staticCluster('server_first', [serverFirst.port]),
        staticCluster('dead', [deadPort]),
      ],
    },
  })
})

after(async () => {
  await proxy?.stop()
  await echo?.close()
  await summary?.close()
  await serverFirst?.close()
})

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    s.once('connect', () => resolve(s))
    s.once('error', reject)
  })
}

/** Reads until `n` bytes have arrived. */
function readBytes(s: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let got = 0
    const onData = (c: Buffer) => {
      chunks.push(c)
      got += c.length
      if (got >= n) {
        s.off('data', onData)
        s.off('close', onClose)
        resolve(Buffer.concat(chunks))
      }
    }
    const onClose = () => reject(new Error(`closed after ${got} of ${n} bytes`))
    s.on('data', onData)
    s.once('close', onClose)
  })
}

/** Collects everything until the peer ends its side. */
function readToEnd(s: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    s.on('data', (c: Buffer) => chunks.push(c))
    s.once('end', () => resolve(Buffer.concat(chunks)))
    s.once('error', reject)
  })
}

async function stats(): Promise<Map<string, number>> {
  const text = await (await fetch(`http://${proxy.admin}/stats`)).text()
  const m = new Map<string, number>()
  for (const line of text.split('\n')) {
    const i = line.lastIndexOf(': ')
    if (i > 0) m.set(line.slice(0, i), Number(line.slice(i + 2)))
  }
  return m
}

describe('tcp_proxy', { timeout: 8000 }, () => {
  test('bytes echo both ways, in several exchanges on one connection', async () => {
    const s = await connect(proxy.ports.echo!)
    echoConnections++
    try {
      s.write('hello')
      assert.equal((await readBytes(s, 5)).toString(), 'hello')
      s.write('second message')
      assert.equal((await readBytes(s, 14)).toString(), 'second message')
    } finally {
      s.destroy()
    }
  })

  test('5 MiB each way arrives intact', async () => {
    const s = await connect(proxy.ports.echo!)
    echoConnections++
    try {
      const data = randomBytes(5 * 1024 * 1024)
      const back = readToEnd(s)
      // several writes, so the proxy sees many chunks and backpressure
      for (let off = 0; off < data.length; off += 256 * 1024) s.write(data.subarray(off, off + 256 * 1024))
      s.end()
      const got = await back
      assert.equal(got.length, data.length)
      assert.equal(sha256(got), sha256(data))
    } finally {
      s.destroy()
    }
  })

  test('client half-close: the server sees FIN after all bytes, and its answer still comes back', async () => {
    const s = await connect(proxy.ports.summary!)
    try {
      const data = randomBytes(1024 * 1024)
      const answer = readToEnd(s)
      s.end(data)
      assert.equal((await answer).toString(), `${data.length} ${sha256(data)}`)
    } finally {
      s.destroy()
    }
  })

  test('server half-close: the client reads the FIN and can still send to the server', async () => {
    const upstream = serverFirst.next()
    const s = await connect(proxy.ports.server_first!)
    try {
      const up = await upstream
      const serverGot = readToEnd(up)
      assert.equal((await readToEnd(s)).toString(), 'server done\n')
      s.end('client still talking')
      assert.equal((await serverGot).toString(), 'client still talking')
    } finally {
      s.destroy()
    }
  })

  test('a client reset closes the upstream connection', async () => {
    const upstream = echo.next()
    const s = await connect(proxy.ports.echo!)
    echoConnections++
    const up = await upstream
    const upClosed = new Promise<void>((r) => up.once('close', () => r()))
    s.write('x')
    await readBytes(s, 1)
    s.resetAndDestroy()
    await upClosed
  })

  test('upstream down: the client connection is closed promptly, with no bytes', async () => {
    const s = await connect(proxy.ports.dead!)
    const start = performance.now()
    try {
      // the proxy's FIN (or a reset) ends the client's reading side
      const got = await new Promise<Buffer>((resolve) => {
        const chunks: Buffer[] = []
        s.on('data', (c: Buffer) => chunks.push(c))
        s.once('end', () => resolve(Buffer.concat(chunks)))
        s.once('error', () => resolve(Buffer.concat(chunks)))
      })
      const ms = performance.now() - start
      assert.ok(ms < 500, `closed after ${ms.toFixed(0)} ms`)
      assert.equal(got.length, 0)
    } finally {
      s.destroy()
    }
    const st = await stats()
    assert.equal(st.get('tcp.dead_tcp.downstream_cx_total'), 1)
    assert.equal(st.get('cluster.dead.upstream_cx_connect_fail'), 1)
  })

  test('stats: tcp.<stat_prefix>.downstream_cx_total counts every connection', async () => {
    const st = await stats()
    assert.equal(st.get('tcp.echo_tcp.downstream_cx_total'), echoConnections)
    assert.equal(st.get('tcp.summary_tcp.downstream_cx_total'), 1)
    assert.equal(st.get('tcp.server_first_tcp.downstream_cx_total'), 1)
    assert.equal(st.get('cluster.echo.upstream_cx_total'), echoConnections)
  })
})
