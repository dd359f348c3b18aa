/**
 * HTTP/1.1 Upgrade through a real `loom proxy`: WebSocket with the `ws` client and server (enabled by
 * `upgrade_configs`), a generic upgrade token carrying raw bytes, and upgrades the listener does not allow (403,
 * nothing reaches the backend).
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import * as http from 'node:http'
import * as net from 'node:net'
import type { AddressInfo } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { WebSocket, WebSocketServer } from 'ws'
import { adminAddress, hcm, listener, type RunningProxy, startProxy, staticCluster } from './helpers/proxy.js'

let server: http.Server
let wss: WebSocketServer
const sockets = new Set<net.Socket>()
/** upgrade requests that reached the backend: token and headers */
const upgrades: { token: string; url: string; headers: http.IncomingHttpHeaders }[] = []
let proxy: RunningProxy

before(async () => {
  server = http.createServer((_req, res) => res.end('plain'))
  server.on('connection', (s: net.Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  wss = new WebSocketServer({ noServer: true })
  wss.on('connection', (ws) => {
    ws.send('hello from server')
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : data.toString()
      if (text === 'close me') ws.close(4001, 'closed by server')
      else ws.send(data, { binary: isBinary })
    })
    ws.on('error', () => {})
  })
  server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const token = String(req.headers.upgrade).toLowerCase()
    upgrades.push({ token, url: req.url ?? '', headers: req.headers })
    socket.on('error', () => {})
    if (token === 'websocket') {
      wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req))
    } else if (token === 'loom-echo') {
      socket.write('HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: loom-echo\r\n\r\n')
      if (head.length > 0) socket.write(head)
      socket.pipe(socket)
    } else {
      socket.end('HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n')
    }
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const port = (server.address() as AddressInfo).port
  const routes = {
    name: 'local',
    virtual_hosts: [
      { name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'backend' } }] },
    ],
  }
  proxy = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        listener(
          'ws',
          hcm(routes, { upgrade_configs: [{ upgrade_type: 'websocket' }, { upgrade_type: 'loom-echo' }] }),
        ),
        listener('no_upgrades', hcm(routes)),
        listener('disabled', hcm(routes, { upgrade_configs: [{ upgrade_type: 'websocket', enabled: false }] })),
      ],
      clusters: [staticCluster('backend', [port])],
    },
  })
})

after(async () => {
  await proxy?.stop()
  for (const c of wss?.clients ?? []) c.terminate()
  wss?.close()
  for (const s of sockets) s.destroy()
  await new Promise((r) => server?.close(r))
})

/** Opens a WebSocket through the proxy; resolves once open, with the first (server-pushed) message. */
function openWs(port: number, path: string): Promise<{ ws: WebSocket; first: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
    ws.once('message', (data) => resolve({ ws, first: data.toString() }))
    ws.once('error', reject)
  })
}

/** The next message on `ws`. */
function nextMessage(ws: WebSocket): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    ws.once('message', (data, isBinary) => resolve({ data: data as Buffer, isBinary }))
    ws.once('close', () => reject(new Error('closed before a message arrived')))
  })
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
}

describe('WebSocket (upgrade_configs: websocket)', { timeout: 8000 }, () => {
  test('the upgrade goes through: server push, text and binary echo, clean close', async () => {
    const before = upgrades.length
    const { ws, first } = await openWs(proxy.ports.ws!, '/chat?room=1')
    try {
      assert.equal(first, 'hello from server')
      const seen = upgrades[before]!
      assert.equal(seen.url, '/chat?room=1')
      assert.equal(seen.headers['x-forwarded-proto'], 'http', 'the upgrade request went through the proxy')
      assert.ok(seen.headers['sec-websocket-key'])

      ws.send('ping')
      const text = await nextMessage(ws)
      assert.equal(text.isBinary, false)
      assert.equal(text.data.toString(), 'ping')

      const bin = randomBytes(64 * 1024)
      ws.send(bin)
      const back = await nextMessage(ws)
      assert.equal(back.isBinary, true)
      assert.ok(back.data.equals(bin))

      const done = closed(ws)
      ws.close(1000, 'bye')
      assert.deepEqual(await done, { code: 1000, reason: 'bye' })
    } finally {
      ws.terminate()
    }
  })

  test('a 4 MiB message and 200 small ones in order', async () => {
    const { ws } = await openWs(proxy.ports.ws!, '/bulk')
    try {
      const big = randomBytes(4 * 1024 * 1024)
      const got: Buffer[] = []
      const all = new Promise<void>((resolve) =>
        ws.on('message', (d: Buffer) => {
          got.push(d)
          if (got.length === 201) resolve()
        }),
      )
      ws.send(big)
      for (let i = 0; i < 200; i++) ws.send(`m${i}`)
      await all
      assert.ok(got[0]!.equals(big), 'the big message came back intact')
      for (let i = 0; i < 200; i++) assert.equal(got[i + 1]!.toString(), `m${i}`)
    } finally {
      ws.terminate()
    }
  })

  test('a close from the server reaches the client with its code and reason', async () => {
    const { ws } = await openWs(proxy.ports.ws!, '/server-close')
    const done = closed(ws)
    ws.send('close me')
    assert.deepEqual(await done, { code: 4001, reason: 'closed by server' })
  })

  test('ten WebSockets at once stay separate', async () => {
    const conns = await Promise.all(Array.from({ length: 10 }, (_, i) => openWs(proxy.ports.ws!, `/multi/${i}`)))
    try {
      const replies = conns.map(({ ws }) => nextMessage(ws))
      for (const [i, { ws }] of conns.entries()) ws.send(`conn-${i}`)
      const got = await Promise.all(replies)
      for (const [i, m] of got.entries()) assert.equal(m.data.toString(), `conn-${i}`)
    } finally {
      for (const { ws } of conns) ws.terminate()
    }
  })
})

/** Sends an upgrade request on a raw socket; resolves with the socket and the response head once it arrives. */
function rawUpgrade(
  port: number,
  token: string,
  early = '',
): Promise<{ sock: net.Socket; head: string; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1')
    let buf = Buffer.alloc(0)
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d])
      const end = buf.indexOf('\r\n\r\n')
      if (end === -1) return
      sock.off('data', onData)
      sock.pause()
      resolve({ sock, head: buf.subarray(0, end).toString('latin1'), rest: buf.subarray(end + 4) })
    }
    sock.on('data', onData)
    sock.on('error', reject)
    sock.write(`GET /raw HTTP/1.1\r\nHost: upgrade.test\r\nConnection: Upgrade\r\nUpgrade: ${token}\r\n\r\n${early}`)
  })
}

describe('generic Upgrade', { timeout: 8000 }, () => {
  test('an enabled custom token becomes a byte pipe both ways, closed end to end', async () => {
    const { sock, head, rest } = await rawUpgrade(proxy.ports.ws!, 'loom-echo')
    try {
      assert.match(head, /^HTTP\/1\.1 101 /)
      assert.match(head, /\r\nupgrade: loom-echo/i)
      assert.equal(rest.length, 0)
      const chunks: Buffer[] = []
      sock.on('data', (d: Buffer) => chunks.push(d))
      const ended = new Promise<void>((r) => sock.once('end', r))
      sock.resume()
      const payload = randomBytes(256 * 1024)
      sock.end(payload)
      // the backend echoes, then ends when it sees our FIN
      await ended
      assert.ok(Buffer.concat(chunks).equals(payload))
    } finally {
      sock.destroy()
    }
  })

  test('bytes sent right behind the upgrade request, and more after the 101, all go through', async () => {
    const { sock, head, rest } = await rawUpgrade(proxy.ports.ws!, 'loom-echo', 'early|')
    try {
      assert.match(head, /^HTTP\/1\.1 101 /)
      const chunks: Buffer[] = [rest]
      sock.on('data', (d: Buffer) => chunks.push(d))
      const ended = new Promise<void>((r) => sock.once('end', r))
      sock.resume()
      sock.end('late')
      await ended
      assert.equal(Buffer.concat(chunks).toString(), 'early|late')
    } finally {
      sock.destroy()
    }
  })

  test('an upgrade not listed in upgrade_configs gets 403 and never reaches the backend', async () => {
    const before = upgrades.length
    const { sock, head } = await rawUpgrade(proxy.ports.ws!, 'not-enabled')
    sock.destroy()
    assert.match(head, /^HTTP\/1\.1 403 /)
    assert.match(head, /\r\nx-loom-reason: upgrade_not_allowed/i)
    assert.equal(upgrades.length, before)
  })

  test('WebSocket on a listener without upgrade_configs gets 403', async () => {
    const before = upgrades.length
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${proxy.ports.no_upgrades}/`)
      ws.on('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0)
        ws.terminate()
      })
      ws.on('open', () => reject(new Error('the upgrade must be refused')))
      ws.on('error', () => {})
    })
    assert.equal(status, 403)
    assert.equal(upgrades.length, before)
  })

  test('an upgrade_configs entry with enabled: false refuses the upgrade', async () => {
    const before = upgrades.length
    const { sock, head } = await rawUpgrade(proxy.ports.disabled!, 'websocket')
    sock.destroy()
    assert.match(head, /^HTTP\/1\.1 403 /)
    assert.equal(upgrades.length, before)
  })
})
