import assert from 'node:assert/strict'
import { Buffer } from 'node:buffer'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import * as tls from 'node:tls'
import { after, before, describe, it } from 'node:test'
import type * as PB from 'protobufjs'
import { type Issuer, makeRoot } from '../../control/ca/pki-fixtures.js'
import { StatsStore } from '../stats/stats.js'
import { encodeOwnMetadata, peerFromHeader } from './exchange.js'
import { UNKNOWN_WORKLOAD } from './metrics.js'
import {
  encodePrefix,
  type ExchangeResult,
  MAX_PAYLOAD_BYTES,
  NO_EXCHANGE,
  ownPrefix,
  PrefixReader,
  type PrefixResult,
  TcpExchange,
} from './tcp-exchange.js'
import { LocalWorkload } from './workload.js'

const require = createRequire(import.meta.url)
const pb = require('protobufjs') as typeof PB

/** google.protobuf.Any and Struct from protobufjs's own copies of the well-known types: an encoder not Loom's. */
function wellKnown(): { any: PB.Type; struct: PB.Type } {
  const root = new pb.Root()
  root.addJSON(pb.common.get('google/protobuf/any.proto')!.nested!)
  root.addJSON(pb.common.get('google/protobuf/struct.proto')!.nested!)
  root.resolveAll()
  return { any: root.lookupType('google.protobuf.Any'), struct: root.lookupType('google.protobuf.Struct') }
}
const WK = wellKnown()

const NODE = {
  id: 'sidecar~10.0.0.9~tcp-echo-v1-7f6d.default~default.svc.cluster.local',
  metadata: { WORKLOAD_NAME: 'tcp-echo-v1', NAMESPACE: 'default', LABELS: { app: 'tcp-echo', version: 'v1' } },
}

/** A prefix as Istio's filter writes it, built with protobufjs: header, then Any { Struct { metadata, id } }. */
function istioPrefix(fields: Record<string, unknown>, typeUrl = 'type.googleapis.com/google.protobuf.Struct'): Buffer {
  const value = WK.struct.encode(WK.struct.fromObject({ fields })).finish()
  const any = Buffer.from(WK.any.encode({ type_url: typeUrl, value }).finish())
  const head = Buffer.from([0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 0])
  head.writeUInt32BE(any.length, 4)
  return Buffer.concat([head, any])
}

const peerFields = {
  'x-envoy-peer-metadata': {
    structValue: {
      fields: {
        NAME: { stringValue: 'client-v1-abc' },
        NAMESPACE: { stringValue: 'shop' },
        WORKLOAD_NAME: { stringValue: 'client-v1' },
        CLUSTER_ID: { stringValue: 'east' },
        LABELS: { structValue: { fields: { app: { stringValue: 'client' }, version: { stringValue: 'v3' } } } },
      },
    },
  },
  'x-envoy-peer-metadata-id': { stringValue: 'sidecar~10.0.0.5~client-v1-abc.shop~shop.svc.cluster.local' },
}

function done(r: PrefixResult): Extract<PrefixResult, { kind: 'done' }> {
  assert.equal(r.kind, 'done', JSON.stringify(r))
  return r as Extract<PrefixResult, { kind: 'done' }>
}

describe('TCP metadata exchange prefix', () => {
  it("encodes Istio's wire form: magic 0x3D230467, big-endian length, an Any of a Struct naming the workload", () => {
    const w = new LocalWorkload(NODE)
    const p = encodePrefix(w)
    assert.deepEqual([...p.subarray(0, 4)], [0x3d, 0x23, 0x04, 0x67])
    assert.equal(p.readUInt32BE(4), p.length - 8)
    const any = WK.any.decode(p.subarray(8)) as unknown as { type_url: string; value: Uint8Array }
    assert.equal(any.type_url, 'type.googleapis.com/google.protobuf.Struct')
    const struct = WK.struct.toObject(WK.struct.decode(any.value)) as {
      fields: Record<string, { structValue?: { fields: Record<string, unknown> }; stringValue?: string }>
    }
    assert.deepEqual(Object.keys(struct.fields).sort(), ['x-envoy-peer-metadata', 'x-envoy-peer-metadata-id'])
    assert.equal(struct.fields['x-envoy-peer-metadata-id']!.stringValue, NODE.id)
    const md = struct.fields['x-envoy-peer-metadata']!.structValue!.fields
    assert.deepEqual(md.WORKLOAD_NAME, { stringValue: 'tcp-echo-v1' })
    assert.deepEqual(md.NAMESPACE, { stringValue: 'default' })
    assert.deepEqual(md.NAME, { stringValue: 'tcp-echo-v1-7f6d' })
    assert.deepEqual(md.LABELS, {
      structValue: { fields: { app: { stringValue: 'tcp-echo' }, version: { stringValue: 'v1' } } },
    })
    // the inner Struct is byte for byte what the HTTP exchange's header carries
    assert.ok(p.includes(Buffer.from(encodeOwnMetadata(w).metadata, 'base64')))
    assert.equal(ownPrefix(w), ownPrefix(w), 'encoded once per workload')
  })

  it('decodes a prefix Istio would write, and round-trips its own', () => {
    const r = done(new PrefixReader().push(istioPrefix(peerFields)))
    assert.equal(r.peer.workload, 'client-v1')
    assert.equal(r.peer.namespace, 'shop')
    assert.equal(r.peer.app, 'client')
    assert.equal(r.peer.version, 'v3')
    assert.equal(r.peer.cluster, 'east')
    assert.equal(r.peer.pod, 'client-v1-abc')
    assert.equal(r.rest, null)
    const own = done(new PrefixReader().push(encodePrefix(new LocalWorkload(NODE))))
    assert.equal(own.peer.workload, 'tcp-echo-v1')
    assert.equal(own.peer.version, 'v1')
  })

  it("shares the HTTP exchange's cache: the same metadata is the same object either way", () => {
    const w = new LocalWorkload({ ...NODE, id: `${NODE.id}-shared` })
    const http = encodeOwnMetadata(w)
    const fromHeader = peerFromHeader(http.metadata, http.id)
    const fromPrefix = done(new PrefixReader().push(encodePrefix(w))).peer
    assert.equal(fromPrefix, fromHeader)
    assert.equal(done(new PrefixReader().push(encodePrefix(w))).peer, fromHeader)
  })

  it('reads a prefix split across reads at every byte, and leaves what follows as a view of the last read', () => {
    const prefix = istioPrefix(peerFields)
    const app = Buffer.from('hello, server')
    const wire = Buffer.concat([prefix, app])
    for (let cut = 1; cut < prefix.length; cut++) {
      const reader = new PrefixReader()
      assert.equal(reader.push(wire.subarray(0, cut)).kind, 'more', `cut at ${cut}`)
      const last = wire.subarray(cut)
      const r = done(reader.push(last))
      assert.equal(r.peer.workload, 'client-v1', `cut at ${cut}`)
      assert.equal(r.length, prefix.length)
      assert.deepEqual(r.rest, app)
      assert.equal(r.rest!.buffer, last.buffer, 'not copied')
    }
    // one byte per read
    const reader = new PrefixReader()
    let r: PrefixResult = { kind: 'more' }
    for (let i = 0; i < prefix.length; i++) r = reader.push(prefix.subarray(i, i + 1))
    assert.equal(done(r).peer.namespace, 'shop')
    assert.equal(done(r).rest, null)
  })

  it('refuses a wrong magic after four bytes, without waiting for more', () => {
    const reader = new PrefixReader()
    assert.equal(reader.push(Buffer.from([0x3d, 0x23, 0x04])).kind, 'more')
    const r = reader.push(Buffer.from([0x68]))
    assert.equal(r.kind, 'error')
    assert.equal((r as { error: string }).error, 'magic')
    assert.match((r as { message: string }).message, /0x3d230468/)
    // a client that speaks its protocol at once (no prefix): its first bytes are not the magic
    const http = new PrefixReader().push(Buffer.from('GET / HTTP/1.1\r\n\r\n'))
    assert.equal(http.kind === 'error' && http.error, 'magic')
  })

  it('refuses a length over the cap as soon as the header is in', () => {
    const head = Buffer.from([0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 0])
    head.writeUInt32BE(MAX_PAYLOAD_BYTES + 1, 4)
    const r = new PrefixReader().push(head)
    assert.equal(r.kind === 'error' && r.error, 'oversized')
    head.writeUInt32BE(0xffffffff, 4)
    assert.equal(new PrefixReader().push(head).kind, 'error')
    // the cap itself is allowed: it waits for the payload
    head.writeUInt32BE(MAX_PAYLOAD_BYTES, 4)
    assert.equal(new PrefixReader().push(head).kind, 'more')
  })

  it('refuses a payload that is not an Any of a Struct, or whose metadata is not a Struct', () => {
    const frame = (payload: Buffer) => {
      const head = Buffer.from([0x3d, 0x23, 0x04, 0x67, 0, 0, 0, 0])
      head.writeUInt32BE(payload.length, 4)
      return Buffer.concat([head, payload])
    }
    const malformed = (b: Buffer) => {
      const r = new PrefixReader().push(b)
      assert.equal(r.kind === 'error' && r.error, 'malformed', JSON.stringify(r))
    }
    malformed(frame(Buffer.alloc(0)))
    malformed(frame(Buffer.from([0x0a, 0x40, 0x01])))
    malformed(istioPrefix(peerFields, 'type.googleapis.com/google.protobuf.Duration'))
    // x-envoy-peer-metadata whose struct_value bytes are not a Struct (a field 1 claiming 64 bytes of 0)
    const ld = (tag: number, bytes: Buffer) => Buffer.concat([Buffer.from([tag, bytes.length]), bytes])
    const value = ld(
      0x0a,
      Buffer.concat([ld(0x0a, Buffer.from('x-envoy-peer-metadata')), ld(0x12, ld(0x2a, Buffer.from([0x0a, 0x40])))]),
    )
    malformed(
      frame(Buffer.concat([ld(0x0a, Buffer.from('type.googleapis.com/google.protobuf.Struct')), ld(0x12, value)])),
    )
  })

  it('a Struct without x-envoy-peer-metadata names nobody; an Any type URL of another host is a Struct', () => {
    const r = done(new PrefixReader().push(istioPrefix({ other: { stringValue: 'x' } })))
    assert.equal(r.peer, UNKNOWN_WORKLOAD)
    const other = done(new PrefixReader().push(istioPrefix(peerFields, 'example.com/google.protobuf.Struct')))
    assert.equal(other.peer.workload, 'client-v1')
  })
})

describe('TCP metadata exchange on a TLS connection', () => {
  let cert: Issuer
  before(async () => {
    cert = await makeRoot({ name: 'CN=exchange test' })
  })
  const servers: tls.Server[] = []
  after(() => {
    for (const s of servers) s.close()
  })

  const CLIENT = new LocalWorkload({
    id: 'sidecar~127.0.0.1~client-v1.shop~shop.svc.cluster.local',
    metadata: { WORKLOAD_NAME: 'client-v1', NAMESPACE: 'shop', LABELS: { app: 'client', version: 'v1' } },
  })
  const SERVER = new LocalWorkload(NODE)
  const MX = {
    '@type': 'type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange',
    protocol: 'istio-peer-exchange',
  } as const

  /** A TLS server selecting among `alpn`; resolves with the client's socket and the server's accepted one. */
  async function pair(alpn: string[], offer: string[]): Promise<{ client: tls.TLSSocket; server: tls.TLSSocket }> {
    const srv = tls.createServer({ cert: cert.pem, key: cert.keyPem, ALPNProtocols: alpn, allowHalfOpen: true })
    servers.push(srv)
    srv.listen(0, '127.0.0.1')
    await once(srv, 'listening')
    const accepted = once(srv, 'secureConnection') as Promise<[tls.TLSSocket]>
    const client = tls.connect({
      port: (srv.address() as AddressInfo).port,
      host: '127.0.0.1',
      rejectUnauthorized: false,
      ALPNProtocols: offer,
    })
    await once(client, 'secureConnect')
    const [server] = await accepted
    return { client, server }
  }

  /** Runs the exchange on a socket; resolves with what it learnt. */
  function exchange(mx: TcpExchange, socket: tls.TLSSocket): Promise<ExchangeResult> {
    return new Promise((resolve, reject) =>
      mx.run(socket, 'istio-peer-exchange', 'test', resolve, (r) => reject(new Error(r))),
    )
  }

  /** Reads `n` bytes from a socket (and leaves it open). */
  function read(socket: tls.TLSSocket, n: number): Promise<string> {
    return new Promise((resolve) => {
      let got = ''
      const onData = (chunk: Buffer) => {
        got += chunk.toString()
        if (got.length < n) return
        socket.off('data', onData)
        resolve(got)
      }
      socket.on('data', onData)
      socket.resume()
    })
  }

  it('both sides learn the other; the application bytes after the prefixes arrive exactly', async () => {
    const store = new StatsStore()
    const { client, server } = await pair(['istio-peer-exchange', 'h2', 'http/1.1'], ['istio-peer-exchange', 'istio'])
    const c = new TcpExchange(CLIENT, store, null)
    const s = new TcpExchange(SERVER, store, MX)
    const learnt = Promise.all([exchange(c, client), exchange(s, server)])
    // written right behind the prefix: it may share the prefix's read on the server
    client.write('early bytes')
    const [byClient, byServer] = await learnt
    assert.equal(byClient.peer.workload, 'tcp-echo-v1')
    assert.equal(byServer.peer.workload, 'client-v1')
    assert.equal(byServer.peer.namespace, 'shop')
    assert.equal(byClient.read, ownPrefix(SERVER).length)
    assert.equal(byClient.written, ownPrefix(CLIENT).length)
    assert.equal(await read(server, 11), 'early bytes')
    server.write('reply')
    assert.equal(await read(client, 5), 'reply')
    const counters = store.forCounters('metadata_exchange.').values
    assert.equal(counters.alpn_protocol_found, 2)
    assert.equal(counters.metadata_added, 2)
    assert.equal(counters.alpn_protocol_not_found, 0)
    client.destroy()
    server.destroy()
  })

  it('a peer without the ALPN: nothing is written or read, and the bytes pass as they are', async () => {
    const store = new StatsStore()
    const { client, server } = await pair(['h2', 'http/1.1'], ['istio-peer-exchange', 'istio', 'h2'])
    assert.equal(client.alpnProtocol, 'h2')
    const r = await exchange(new TcpExchange(CLIENT, store, null), client)
    assert.equal(r, NO_EXCHANGE)
    client.write('plain bytes')
    assert.equal(await read(server, 11), 'plain bytes')
    assert.equal(server.bytesRead, 11, 'no prefix went out')
    const counters = store.forCounters('metadata_exchange.').values
    assert.equal(counters.alpn_protocol_not_found, 1)
    assert.equal(counters.metadata_added, 0)
    client.destroy()
    server.destroy()
  })

  it('a peer that chose the ALPN but sends no prefix fails the exchange, counted by reason', async () => {
    const store = new StatsStore()
    const { client, server } = await pair(['istio-peer-exchange'], ['istio-peer-exchange'])
    const failed = exchange(new TcpExchange(SERVER, store, MX), server)
    client.write('SSH-2.0-OpenSSH_9.6\r\n')
    await assert.rejects(failed, /metadata_exchange: magic/)
    assert.equal(store.forCounters('metadata_exchange.').values.initial_header_not_found, 1)
    const huge = Buffer.from([0x3d, 0x23, 0x04, 0x67, 0x7f, 0xff, 0xff, 0xff])
    const { client: c2, server: s2 } = await pair(['istio-peer-exchange'], ['istio-peer-exchange'])
    const failed2 = exchange(new TcpExchange(SERVER, store, MX), s2)
    c2.write(huge)
    await assert.rejects(failed2, /metadata_exchange: oversized/)
    assert.equal(store.forCounters('metadata_exchange.').values.header_not_found, 1)
    for (const s of [client, server, c2, s2]) s.destroy()
  })
})
