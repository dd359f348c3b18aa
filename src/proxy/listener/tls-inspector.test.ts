import assert from 'node:assert/strict'
import * as net from 'node:net'
import * as tls from 'node:tls'
import { test } from 'node:test'
import type { CompiledChain } from './listener.js'
import { matchChain } from './listener.js'
import { inspectClientHello } from './tls-inspector.js'

/** The first bytes a real Node TLS client sends (its ClientHello), captured by a plain TCP server. */
async function clientHello(options: tls.ConnectionOptions): Promise<Buffer> {
  let resolve!: (b: Buffer) => void
  const got = new Promise<Buffer>((r) => (resolve = r))
  const server = net.createServer((s) => {
    s.once('data', (d: Buffer) => {
      resolve(d)
      s.destroy()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, ...options })
  c.on('error', () => {})
  const bytes = await got
  c.destroy()
  server.close()
  return bytes
}

test('a real ClientHello: TLS, its SNI and the ALPN protocols offered, in order', async () => {
  const hello = await clientHello({
    servername: 'outbound_.80_._.reviews.default.svc.cluster.local',
    ALPNProtocols: ['istio-peer-exchange', 'istio', 'h2'],
  })
  assert.deepEqual(inspectClientHello(hello), {
    kind: 'tls',
    serverName: 'outbound_.80_._.reviews.default.svc.cluster.local',
    alpn: ['istio-peer-exchange', 'istio', 'h2'],
  })
  // without SNI and ALPN (an IP address as host sends no SNI)
  assert.deepEqual(inspectClientHello(await clientHello({})), { kind: 'tls', serverName: '', alpn: [] })
})

test('a ClientHello cut short asks for more bytes; plain text is raw_buffer at once', async () => {
  const hello = await clientHello({ servername: 'a.example', ALPNProtocols: ['h2'] })
  for (const n of [1, 5, 20, hello.length - 1])
    assert.deepEqual(inspectClientHello(hello.subarray(0, n)), { kind: 'more' })
  assert.deepEqual(inspectClientHello(Buffer.from('GET / HTTP/1.1\r\n')), { kind: 'raw' })
  assert.deepEqual(inspectClientHello(Buffer.from('PRI * HTTP/2.0\r\n')), { kind: 'raw' })
  // a handshake record whose message is not a ClientHello is not TLS from a client
  assert.deepEqual(inspectClientHello(Buffer.from([0x16, 3, 1, 0, 4, 2, 0, 0, 0])), { kind: 'raw' })
})

const chain = (name: string, m: { sni?: string[]; tp?: '' | 'tls' | 'raw_buffer'; alpn?: string[] } = {}) =>
  ({
    config: { name } as never,
    serverNames: m.sni ?? [],
    transportProtocol: m.tp ?? '',
    applicationProtocols: m.alpn ?? [],
    tls: null,
    rbac: [],
    handler: null as never,
  }) as CompiledChain

test("filter chain match in Envoy's order: server name, then transport protocol, then application protocols", () => {
  const mtls = chain('mtls', { tp: 'tls', alpn: ['istio-peer-exchange', 'istio'] })
  const tlsAny = chain('tls', { tp: 'tls' })
  const plain = chain('plain', { tp: 'raw_buffer' })
  const named = chain('named', { sni: ['*.example.com'] })
  const exact = chain('exact', { sni: ['a.example.com'] })
  const chains = [mtls, tlsAny, plain, named, exact]
  const pick = (sni: string, tp: 'tls' | 'raw_buffer', alpn: string[]) => matchChain(chains, sni, tp, alpn)?.config.name
  assert.equal(pick('', 'tls', ['istio-peer-exchange', 'h2']), 'mtls')
  assert.equal(pick('', 'tls', ['h2']), 'tls')
  assert.equal(pick('', 'raw_buffer', []), 'plain')
  assert.equal(pick('b.example.com', 'tls', []), 'named')
  assert.equal(pick('A.Example.com', 'tls', []), 'exact')
  // no chain for plain text on a TLS-only listener: the connection is closed
  assert.equal(matchChain([mtls, tlsAny], '', 'raw_buffer', []), null)
  // an unset criterion matches anything
  assert.equal(matchChain([chain('any')], 'x', 'raw_buffer', ['h2'])?.config.name, 'any')
})
