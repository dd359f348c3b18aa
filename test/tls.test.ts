/**
 * TLS through a real `loom proxy`, with certificates made by `openssl` for this run:
 * - downstream: a listener with DownstreamTlsContext serving HTTPS/1.1 and HTTP/2 over TLS (ALPN h2), and filter
 *   chains picked by SNI (`filter_chain_match.server_names`), each with its own certificate;
 * - upstream: clusters with UpstreamTlsContext (sni, trusted_ca) to node:https and node:http2 backends, and a wrong
 *   CA that must fail the connection (503, upstream_connect_failure).
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import * as http from 'node:http'
import * as http2 from 'node:http2'
import * as https from 'node:https'
import * as net from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import * as tls from 'node:tls'
import { adminAddress, HCM, ROUTER, type RunningProxy, startProxy, staticCluster, TCP } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const DOWNSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext'
const UPSTREAM_TLS = 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext'

let dir: string
const file = (name: string) => join(dir, name)

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] })
}

/** A self-signed CA: `<name>.key`, `<name>.crt`. */
function makeCa(name: string, cn: string): void {
  openssl(
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-subj',
    `/CN=${cn}`,
  )
}

/** A server certificate for `cn` with the given SANs, signed by CA `ca`. */
function makeLeaf(name: string, cn: string, sans: string, ca: string): void {
  writeFileSync(file(`${name}.ext`), `subjectAltName=${sans}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`)
  openssl(
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    `${name}.key`,
    '-out',
    `${name}.csr`,
    '-subj',
    `/CN=${cn}`,
  )
  openssl(
    'x509',
    '-req',
    '-in',
    `${name}.csr`,
    '-CA',
    `${ca}.crt`,
    '-CAkey',
    `${ca}.key`,
    '-CAcreateserial',
    '-out',
    `${name}.crt`,
    '-days',
    '2',
    '-extfile',
    `${name}.ext`,
  )
}

function tlsChain(serverNames: string[] | null, cert: string, filter: unknown): unknown {
  return {
    ...(serverNames === null ? {} : { filter_chain_match: { server_names: serverNames } }),
    filters: [filter],
    transport_socket: {
      name: 'envoy.transport_sockets.tls',
      typed_config: {
        '@type': DOWNSTREAM_TLS,
        common_tls_context: {
          tls_certificates: [
            { certificate_chain: { filename: file(`${cert}.crt`) }, private_key: { filename: file(`${cert}.key`) } },
          ],
        },
      },
    },
  }
}

function hcmFilter(statPrefix: string, routes: unknown[]): unknown {
  return {
    name: 'envoy.filters.network.http_connection_manager',
    typed_config: {
      '@type': HCM,
      stat_prefix: statPrefix,
      route_config: { name: statPrefix, virtual_hosts: [{ name: 'all', domains: ['*'], routes }] },
      http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
    },
  }
}

const direct = (body: string) => ({
  match: { prefix: '/' },
  direct_response: { status: 200, body: { inline_string: body } },
})

function upstreamTls(ca: string, sni?: string): unknown {
  return {
    name: 'envoy.transport_sockets.tls',
    typed_config: {
      '@type': UPSTREAM_TLS,
      ...(sni === undefined ? {} : { sni }),
      common_tls_context: { validation_context: { trusted_ca: { filename: file(`${ca}.crt`) } } },
    },
  }
}

interface Seen {
  url: string
  servername: string | false | null
  alpn: string | false | null
  protocol: string
}

let plainBackend: Backend
let httpsBackend: { port: number; seen: Seen[]; close(): Promise<void> }
let h2Backend: { port: number; seen: Seen[]; close(): Promise<void> }
let halfCloseServer: net.Server
let proxy: RunningProxy

function tlsServer<S extends tls.Server>(server: S): Promise<{ port: number; close(): Promise<void> }> {
  const sockets = new Set<tls.TLSSocket>()
  server.on('secureConnection', (s: tls.TLSSocket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () =>
          new Promise<void>((r) => {
            for (const s of sockets) s.destroy()
            server.close(() => r())
          }),
      }),
    ),
  )
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'loom-tls-'))
  makeCa('ca', 'Loom Test CA')
  makeCa('other-ca', 'Unrelated CA')
  makeLeaf('localhost', 'localhost', 'DNS:localhost,IP:127.0.0.1', 'ca')
  makeLeaf('a', 'a.loom.test', 'DNS:a.loom.test', 'ca')
  makeLeaf('b', 'b.loom.test', 'DNS:b.loom.test', 'ca')

  plainBackend = await startBackend()
  const key = readFileSync(file('localhost.key'))
  const cert = readFileSync(file('localhost.crt'))

  const seen1: Seen[] = []
  const s1 = https.createServer({ key, cert }, (req, res) => {
    const sock = req.socket as tls.TLSSocket
    seen1.push({ url: req.url ?? '', servername: sock.servername, alpn: sock.alpnProtocol, protocol: req.httpVersion })
    res.setHeader('content-type', 'text/plain')
    res.end(`https backend: ${req.url}`)
  })
  httpsBackend = { seen: seen1, ...(await tlsServer(s1)) }

  const seen2: Seen[] = []
  const s2 = http2.createSecureServer({ key, cert }, (req, res) => {
    const sock = req.socket as unknown as tls.TLSSocket
    seen2.push({ url: req.url, servername: sock.servername, alpn: sock.alpnProtocol, protocol: req.httpVersion })
    // a body of 1 KB with its length, the kind whose HEADERS and DATA often share a TLS read at the proxy
    if (req.url.startsWith('/h2tls/seq/')) {
      const body = `h2 backend: ${req.url}`.padEnd(1024, '.')
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length })
      res.end(body)
      return
    }
    res.setHeader('content-type', 'text/plain')
    res.end(`h2 backend: ${req.url}`)
  })
  h2Backend = { seen: seen2, ...(await tlsServer(s2)) }

  // replies only after the client's FIN: proves half-close crosses the proxy
  halfCloseServer = net.createServer({ allowHalfOpen: true }, (sock) => {
    const chunks: Buffer[] = []
    sock.on('data', (c: Buffer) => chunks.push(c))
    sock.on('end', () => sock.end(`after FIN: ${Buffer.concat(chunks)}`))
    sock.on('error', () => {})
  })
  await new Promise<void>((r) => halfCloseServer.listen(0, '127.0.0.1', r))

  const h2Options = {
    'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': {
      '@type': 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
      explicit_http_config: { http2_protocol_options: {} },
    },
  }
  const addr = { socket_address: { address: '127.0.0.1', port_value: 0 } }
  proxy = await startProxy({
    admin: { address: adminAddress() },
    static_resources: {
      listeners: [
        {
          name: 'tls',
          address: addr,
          // the SNI chains come first: a client without SNI must still get the default chain and its certificate
          filter_chains: [
            tlsChain(['a.loom.test'], 'a', hcmFilter('chain_a', [direct('chain a')])),
            tlsChain(['b.loom.test'], 'b', hcmFilter('chain_b', [direct('chain b')])),
            tlsChain(
              null,
              'localhost',
              hcmFilter('chain_default', [{ match: { prefix: '/' }, route: { cluster: 'plain' } }]),
            ),
          ],
        },
        {
          name: 'tls_tcp',
          address: addr,
          filter_chains: [
            tlsChain(null, 'localhost', {
              name: 'envoy.filters.network.tcp_proxy',
              typed_config: { '@type': TCP, stat_prefix: 'tls_tcp', cluster: 'half_close' },
            }),
          ],
        },
        {
          name: 'edge',
          address: addr,
          filter_chains: [
            {
              filters: [
                hcmFilter('edge', [
                  { match: { prefix: '/good' }, route: { cluster: 'up_tls' } },
                  { match: { prefix: '/badca' }, route: { cluster: 'up_badca' } },
                  { match: { prefix: '/h2tls' }, route: { cluster: 'up_h2tls' } },
                ]),
              ],
            },
          ],
        },
      ],
      clusters: [
        staticCluster('plain', [plainBackend.port]),
        staticCluster('half_close', [(halfCloseServer.address() as AddressInfo).port]),
        staticCluster('up_tls', [httpsBackend.port], { transport_socket: upstreamTls('ca', 'localhost') }),
        staticCluster('up_badca', [httpsBackend.port], { transport_socket: upstreamTls('other-ca', 'localhost') }),
        staticCluster('up_h2tls', [h2Backend.port], {
          transport_socket: upstreamTls('ca', 'localhost'),
          typed_extension_protocol_options: h2Options,
        }),
      ],
    },
  })
})

after(async () => {
  await proxy?.stop()
  await plainBackend?.close()
  await httpsBackend?.close()
  await h2Backend?.close()
  await new Promise((r) => halfCloseServer?.close(r))
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true })
})

interface TlsResponse {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
  cert: tls.PeerCertificate
  alpn: string | false | null
}

/** An HTTPS/1.1 request to the TLS listener on 127.0.0.1 (no SNI unless `servername` is given). */
function httpsGet(
  path: string,
  opts: https.RequestOptions & Pick<tls.ConnectionOptions, 'ALPNProtocols'> = {},
): Promise<TlsResponse> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: proxy.ports.tls, path, ca: readFileSync(file('ca.crt')), agent: false, ...opts },
      (res) => {
        const sock = res.socket as tls.TLSSocket
        const cert = sock.getPeerCertificate()
        const alpn = sock.alpnProtocol
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, cert, alpn }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** A request on the plain `edge` listener, which routes to the TLS clusters. */
function edgeGet(path: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: proxy.ports.edge, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('downstream TLS', { timeout: 8000 }, () => {
  test('HTTPS/1.1 with the CA trusted: 200, scheme https reaches the backend', async () => {
    const before = plainBackend.requests.length
    const r = await httpsGet('/secure?q=1', { servername: 'localhost' })
    assert.equal(r.status, 200)
    assert.equal(r.cert.subject.CN, 'localhost')
    const seen = plainBackend.requests[before]!
    assert.equal(seen.url, '/secure?q=1')
    assert.equal(seen.headers['x-forwarded-proto'], 'https')
  })

  test('ALPN http/1.1 is negotiated when the client offers it', async () => {
    const r = await httpsGet('/alpn', { servername: 'localhost', ALPNProtocols: ['http/1.1'] })
    assert.equal(r.status, 200)
    assert.equal(r.alpn, 'http/1.1')
  })

  test('HTTP/2 over TLS: ALPN h2, request reaches the HTTP/1.1 backend with scheme https', async () => {
    const session = http2.connect(`https://127.0.0.1:${proxy.ports.tls}`, {
      ca: readFileSync(file('ca.crt')),
      servername: 'localhost',
    })
    try {
      await new Promise<void>((resolve, reject) => {
        session.once('connect', () => resolve())
        session.once('error', reject)
      })
      assert.equal(session.alpnProtocol, 'h2')
      const before = plainBackend.requests.length
      const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
        const req = session.request({ ':path': '/over-h2', 'x-h2': 'yes' })
        let status = 0
        let body = ''
        req.setEncoding('utf8')
        req.on('response', (h) => (status = Number(h[':status'])))
        req.on('data', (c: string) => (body += c))
        req.on('end', () => resolve({ status, body }))
        req.on('error', reject)
      })
      assert.equal(res.status, 200)
      const seen = plainBackend.requests[before]!
      assert.equal(seen.url, '/over-h2')
      assert.equal(seen.headers['x-h2'], 'yes')
      assert.equal(seen.headers['x-forwarded-proto'], 'https')
    } finally {
      session.destroy()
    }
  })

  test('a client without SNI gets the default chain and its certificate', async () => {
    // Node sends no SNI for an IP address; the certificate must still verify for 127.0.0.1
    const before = plainBackend.requests.length
    const r = await httpsGet('/no-sni')
    assert.equal(r.status, 200)
    assert.equal(r.cert.subject.CN, 'localhost')
    assert.equal(plainBackend.requests[before]?.url, '/no-sni')
  })

  test('SNI picks the filter chain and its certificate', async () => {
    const a = await httpsGet('/', { servername: 'a.loom.test' })
    assert.equal(a.cert.subject.CN, 'a.loom.test')
    assert.equal(a.body, 'chain a')
    const b = await httpsGet('/', { servername: 'b.loom.test' })
    assert.equal(b.cert.subject.CN, 'b.loom.test')
    assert.equal(b.body, 'chain b')
    // SNI names are case-insensitive
    const upper = await httpsGet('/', { servername: 'B.LOOM.TEST' })
    assert.equal(upper.cert.subject.CN, 'b.loom.test')
    assert.equal(upper.body, 'chain b')
  })

  test('an unknown SNI name falls back to the chain without server_names', async () => {
    const before = plainBackend.requests.length
    const r = await httpsGet('/unknown-sni', { servername: 'zzz.loom.test', checkServerIdentity: () => undefined })
    assert.equal(r.cert.subject.CN, 'localhost')
    assert.equal(r.status, 200)
    assert.equal(plainBackend.requests[before]?.url, '/unknown-sni')
  })

  test('a client that does not trust the CA fails the handshake', async () => {
    const err = await httpsGet('/untrusted', { servername: 'localhost', ca: readFileSync(file('other-ca.crt')) }).then(
      () => assert.fail('the handshake must fail'),
      (e: NodeJS.ErrnoException) => e,
    )
    assert.match(String(err.code), /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|UNABLE_TO_GET_ISSUER_CERT/)
    // the proxy must let go of the aborted handshake (it used to keep such sockets open forever)
    await waitForStat((text) => gaugeValues(text, /^listener\..*\.downstream_cx_active$/).every((v) => v === 0))
  })

  test('half-close works through a TLS-terminating tcp_proxy', async () => {
    const sock = tls.connect({ host: '127.0.0.1', port: proxy.ports.tls_tcp, ca: readFileSync(file('ca.crt')) })
    let got = ''
    sock.setEncoding('utf8')
    sock.on('data', (c: string) => (got += c))
    await new Promise<void>((resolve, reject) => {
      sock.on('secureConnect', () => sock.end('hello'))
      sock.on('end', () => resolve())
      sock.on('error', reject)
    })
    sock.destroy()
    assert.equal(got, 'after FIN: hello')
  })
})

describe('upstream TLS', { timeout: 8000 }, () => {
  test('UpstreamTlsContext with sni and trusted_ca reaches an HTTPS backend', async () => {
    const before = httpsBackend.seen.length
    const r = await edgeGet('/good/x')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'https backend: /good/x')
    const seen = httpsBackend.seen[before]!
    assert.equal(seen.servername, 'localhost', 'the configured SNI was sent')
    assert.equal(seen.protocol, '1.1')
  })

  test('a certificate from an untrusted CA fails the connection: 503 UF naming the reason', async () => {
    const before = httpsBackend.seen.length
    const r = await edgeGet('/badca')
    assert.equal(r.status, 503)
    assert.equal(r.headers['x-loom-reason'], 'tls_peer: untrusted_root')
    assert.equal(httpsBackend.seen.length, before, 'no request reached the backend')
  })

  test('HTTP/2 over TLS upstream (ALPN h2)', async () => {
    const before = h2Backend.seen.length
    const r = await edgeGet('/h2tls/y')
    assert.equal(r.status, 200)
    assert.equal(r.body, 'h2 backend: /h2tls/y')
    const seen = h2Backend.seen[before]!
    assert.equal(seen.alpn, 'h2')
    assert.equal(seen.protocol, '2.0')
    assert.equal(seen.servername, 'localhost')
  })
})

describe('upstream TLS under concurrency', { timeout: 30_000 }, () => {
  test('HTTP/2 over TLS upstream: every HTTP/1.1 response has its head before its body', async () => {
    // With several streams in flight a TLS read often brings one stream's HEADERS and DATA together; node:http2
    // emits that body before that head, and the proxy must still write the head first. 50 kept-alive connections,
    // each sending its requests one after the other.
    const perConnection = 40
    const one = async (c: number): Promise<string[]> => {
      const socket = net.connect(proxy.ports.edge!, '127.0.0.1')
      await new Promise((r) => socket.once('connect', r))
      let buf = Buffer.alloc(0)
      const bodies: string[] = []
      const send = () => socket.write(`GET /h2tls/seq/${c}/${bodies.length} HTTP/1.1\r\nhost: x\r\n\r\n`)
      await new Promise<void>((resolve, reject) => {
        socket.on('error', reject)
        socket.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d])
          for (;;) {
            const r = takeResponse(buf)
            if (r === null) return
            bodies.push(r.body)
            buf = buf.subarray(r.used)
            if (!r.ok || bodies.length === perConnection) return resolve()
            send()
          }
        })
        send()
      })
      socket.destroy()
      return bodies
    }
    const got = await Promise.all(Array.from({ length: 50 }, (_, c) => one(c)))
    got.forEach((bodies, c) => {
      assert.deepEqual(
        bodies,
        Array.from({ length: perConnection }, (_, i) => `h2 backend: /h2tls/seq/${c}/${i}`.padEnd(1024, '.')),
      )
    })
  })
})

/**
 * One HTTP/1.1 response (content-length or chunked) from the front of `buf`: its body and the bytes it took; null
 * while incomplete; `ok: false` with the bytes seen when they do not start with a status line.
 */
function takeResponse(buf: Buffer): { ok: boolean; body: string; used: number } | null {
  const text = buf.toString('latin1')
  if (!text.startsWith('HTTP/1.1 ')) return text.length >= 9 ? { ok: false, body: text.slice(0, 40), used: 0 } : null
  const headEnd = text.indexOf('\r\n\r\n')
  if (headEnd < 0) return null
  const head = text.slice(0, headEnd)
  let at = headEnd + 4
  const length = /\r\ncontent-length: (\d+)/i.exec(head)?.[1]
  if (length !== undefined) {
    const end = at + Number(length)
    return text.length < end ? null : { ok: true, body: text.slice(at, end), used: end }
  }
  let body = ''
  for (;;) {
    const eol = text.indexOf('\r\n', at)
    if (eol < 0) return null
    const size = Number.parseInt(text.slice(at, eol), 16)
    if (text.length < eol + 2 + size + 2) return null
    if (size === 0) return { ok: true, body, used: eol + 4 }
    body += text.slice(eol + 2, eol + 2 + size)
    at = eol + 2 + size + 2
  }
}

/** The values of every stat whose name matches `name`; fails when there is none. */
function gaugeValues(text: string, name: RegExp): number[] {
  const values: number[] = []
  for (const line of text.split('\n')) {
    const i = line.lastIndexOf(': ')
    if (i > 0 && name.test(line.slice(0, i))) values.push(Number(line.slice(i + 2)))
  }
  assert.ok(values.length > 0, `no stat matches ${name}`)
  return values
}

/** Waits (polling the admin endpoint) until `ok(/stats text)`; fails after 3 s. */
async function waitForStat(ok: (text: string) => boolean): Promise<void> {
  const deadline = Date.now() + 3000
  for (;;) {
    const text = await (await fetch(`http://${proxy.admin}/stats`)).text()
    if (ok(text)) return
    if (Date.now() > deadline) assert.fail(`stats never reached the expected state:\n${text}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}
