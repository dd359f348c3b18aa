/**
 * How the xDS server paces its pushes, on loopback with real gRPC clients: changes arriving while a response waits
 * for its ACK coalesce, endpoint pushes go before the others, a client that does not read holds one response and
 * no share of the queue while the others get theirs, and a storm of proxies connecting at once to 1000 services
 * is served without a reconnect.
 */
import assert from 'node:assert/strict'
import http2 from 'node:http2'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { after, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { type AdsClientStub, adsService, type DiscoveryRequest, type DiscoveryResponse } from '../src/xds/ads.js'
import { makeSnapshot } from '../src/xds/cache.js'
import { XdsServer } from '../src/xds/server.js'
import { type Snapshot, TYPE_URL } from '../src/xds/snapshot.js'

const HCM = 'type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager'
const ROUTER = 'type.googleapis.com/envoy.extensions.filters.http.router.v3.Router'

// === resources: n services, shared by every node as a translator shares them ===

function listener(port: number) {
  return {
    name: `out-${port}`,
    address: { socket_address: { address: '0.0.0.0', port_value: port } },
    filter_chains: [
      {
        filters: [
          {
            name: 'envoy.filters.network.http_connection_manager',
            typed_config: {
              '@type': HCM,
              stat_prefix: 'out',
              rds: { config_source: { ads: {}, resource_api_version: 'V3' }, route_config_name: 'out' },
              http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
            },
          },
        ],
      },
    ],
  }
}
function cluster(name: string) {
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: name },
    connect_timeout: '1s',
  }
}
function cla(name: string, host: number) {
  return {
    cluster_name: name,
    endpoints: [
      {
        lb_endpoints: [0, 1].map((i) => ({
          endpoint: { address: { socket_address: { address: `10.${host % 250}.0.${i + 1}`, port_value: 8080 } } },
        })),
      },
    ],
  }
}
function mesh(n: number, endpointSeed = 0, listenerPort = 15001) {
  const names = Array.from({ length: n }, (_, i) => `svc-${i}.default.svc.cluster.local`)
  const clusters = names.map(cluster)
  const endpoints = names.map((s, i) => cla(s, i + endpointSeed))
  const routes = [
    {
      name: 'out',
      virtual_hosts: names.map((s) => ({
        name: s,
        domains: [s],
        routes: [{ match: { prefix: '/' }, route: { cluster: s } }],
      })),
    },
  ]
  const listeners = [listener(listenerPort)]
  return { names, clusters, endpoints, routes, listeners }
}
type Mesh = ReturnType<typeof mesh>
/** a node's snapshot: fresh maps over the shared objects */
function snapshotOf(m: Mesh): Snapshot {
  return makeSnapshot({
    [TYPE_URL.listener]: m.listeners,
    [TYPE_URL.route]: m.routes,
    [TYPE_URL.cluster]: m.clusters,
    [TYPE_URL.endpoint]: m.endpoints,
  })
}

// === clients ===

/** Separate connections per client (grpc-js would share one subchannel between alike channels). */
const OWN_CONNECTION = { 'grpc.use_local_subchannel_pool': 1, 'grpc.max_receive_message_length': -1 }

/**
 * A SotW client like a sidecar, without decoding resources: CDS and LDS wildcards, EDS for every cluster and RDS
 * `out`; it ACKs every response unless `ackOf` says to wait (then it calls the returned function to ACK later).
 */
function proxy(port: number, id: string, names: string[], ackOf?: (r: DiscoveryResponse) => boolean) {
  const { Client } = adsService()
  const stub: AdsClientStub = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), OWN_CONNECTION)
  const call = stub.StreamAggregatedResources()
  const responses: DiscoveryResponse[] = []
  const acked = new Map<string, string>()
  const held: (() => void)[] = []
  let error: Error | undefined
  const subs: Record<string, string[]> = {
    [TYPE_URL.cluster]: [],
    [TYPE_URL.endpoint]: names,
    [TYPE_URL.listener]: [],
    [TYPE_URL.route]: ['out'],
  }
  const send = (r: Partial<DiscoveryRequest> & { node?: unknown }) => call.write({ resource_names: [], ...r })
  call.on('data', (r: DiscoveryResponse) => {
    responses.push(r)
    const ack = () => {
      acked.set(r.type_url, r.version_info)
      send({
        type_url: r.type_url,
        version_info: r.version_info,
        response_nonce: r.nonce,
        resource_names: subs[r.type_url],
      })
    }
    if (ackOf === undefined || ackOf(r)) ack()
    else held.push(ack)
  })
  call.on('error', (e: Error) => {
    error = e
  })
  let first = true
  for (const [type_url, resource_names] of Object.entries(subs)) {
    send({ type_url, resource_names, ...(first ? { node: { id, cluster: 'c' } } : {}) })
    first = false
  }
  return {
    responses,
    acked,
    /** ACKs the responses held back so far */
    release: () => {
      for (const f of held.splice(0)) f()
    },
    error: () => error,
    close: () => {
      call.cancel()
      stub.close()
    },
  }
}

/** Resolves when `f()` holds, checked whenever one of the emitters' events or a 20 ms tick comes. */
async function until(what: string, f: () => boolean, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

function versionOfType(server: XdsServer, id: string, type: string): string | undefined {
  return server.cache.getSnapshot(id)?.resources.get(type as never)?.version
}

// === tests ===

describe('xDS push pacing', () => {
  const servers: XdsServer[] = []
  const closers: (() => void)[] = []
  after(async () => {
    for (const c of closers) c()
    await Promise.all(servers.map((s) => s.close(100)))
  })

  async function serve(opts: ConstructorParameters<typeof XdsServer>[0] = {}) {
    const pushes: { node: string; type: string }[] = []
    const server = new XdsServer({
      pushDebounceMs: 1,
      log: (_level, msg, fields) => {
        if (msg === 'push' || msg === 'delta push')
          pushes.push({ node: String(fields?.node), type: String(fields?.type) })
      },
      ...opts,
    })
    servers.push(server)
    const port = await server.listen('127.0.0.1', 0)
    return { server, port, pushes }
  }

  test('changes arriving while a response waits for its ACK coalesce: the ACK is followed by the newest state only', async () => {
    const { server, port } = await serve()
    const m = mesh(3)
    server.setSnapshot('n', snapshotOf(m))
    // EDS is ACKed at once; CDS is held until the test says so
    const p = proxy(port, 'n', m.names, (r) => r.type_url !== TYPE_URL.cluster)
    closers.push(p.close)
    const cds = () => p.responses.filter((r) => r.type_url === TYPE_URL.cluster)
    const eds = () => p.responses.filter((r) => r.type_url === TYPE_URL.endpoint)
    await until('first CDS and EDS', () => cds().length === 1 && p.acked.has(TYPE_URL.endpoint))
    // three changes of clusters and endpoints; each EDS push proves the change was pushed to the stream
    for (let i = 1; i <= 3; i++) {
      const next = mesh(3 + i, i * 7)
      server.setSnapshot('n', snapshotOf(next))
      await until(`EDS of change ${i}`, () => eds().length === i + 1)
      assert.equal(cds().length, 1, 'no CDS response while the first is unACKed')
    }
    const newest = versionOfType(server, 'n', TYPE_URL.cluster)!
    p.release()
    await until('the newest CDS', () => cds().length === 2)
    assert.equal(cds()[1]!.version_info, newest, 'the response after the ACK is the newest state')
    assert.equal(cds()[1]!.resources.length, 6)
    p.release()
    await until('CDS ACKed', () => server.status()[0]?.perType.every((t) => t.state === 'SYNCED') === true)
    assert.equal(cds().length, 2)
    assert.ok(eds().length >= 4)
    const st = server.status()[0]!.perType.find((t) => t.typeUrl === TYPE_URL.cluster)!
    assert.ok(st.writtenAt !== undefined && st.writtenAt <= performance.timeOrigin + performance.now())
  })

  test('endpoint pushes go before the other types across streams, each stream still in make-before-break order', async () => {
    // one stream per event-loop turn: the order of the queue shows in the order of the writes
    const { server, port, pushes } = await serve({ sliceMs: 0 })
    const m = mesh(20)
    const ids = Array.from({ length: 30 }, (_, i) => `p${i}`)
    for (const id of ids) server.setSnapshot(id, snapshotOf(m))
    const ps = ids.map((id) => proxy(port, id, m.names))
    for (const p of ps) closers.push(p.close)
    const synced = () => {
      const st = server.status()
      return (
        st.length === ids.length &&
        st.every((n) => n.perType.length === 4 && n.perType.every((t) => t.state === 'SYNCED'))
      )
    }
    await until('all synced', synced)
    // every proxy: new endpoints and a new listener at once
    const next = mesh(20, 99, 15002)
    pushes.length = 0
    for (const id of ids) server.setSnapshot(id, snapshotOf(next))
    await until('all synced again', synced)
    const types = pushes.map((p) => p.type)
    assert.equal(types.filter((t) => t === TYPE_URL.endpoint).length, ids.length)
    assert.equal(types.filter((t) => t === TYPE_URL.listener).length, ids.length)
    const lastEds = types.lastIndexOf(TYPE_URL.endpoint)
    const firstLds = types.indexOf(TYPE_URL.listener)
    assert.ok(lastEds < firstLds, `every EDS push (last at ${lastEds}) before the first LDS push (${firstLds})`)
  })

  test('a client that does not read holds one response and no share of the queue; the others get their pushes', async () => {
    const maxQueuedBytes = 256 * 1024
    const { server, port, pushes } = await serve({ maxQueuedBytes, stallMs: 200 })
    let m = mesh(1000)
    server.setSnapshot('stuck', snapshotOf(m))
    for (let i = 0; i < 10; i++) server.setSnapshot(`ok${i}`, snapshotOf(m))
    // a raw HTTP/2 gRPC call that subscribes to CDS and never reads: its flow-control window fills
    const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 16 * 1024 } })
    closers.push(() => session.destroy())
    const stream = session.request({
      ':method': 'POST',
      ':path': '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
      'content-type': 'application/grpc',
      te: 'trailers',
    })
    stream.pause()
    stream.on('error', () => {})
    const method = adsService().service.StreamAggregatedResources!
    const frame = (req: DiscoveryRequest & { node?: unknown }) => {
      const body = method.requestSerialize(req)
      const head = Buffer.alloc(5)
      head.writeUInt32BE(body.length, 1)
      return Buffer.concat([head, body])
    }
    stream.write(frame({ node: { id: 'stuck' }, type_url: TYPE_URL.cluster, resource_names: [] }))
    stream.write(frame({ type_url: TYPE_URL.endpoint, resource_names: m.names }))
    const ps = Array.from({ length: 10 }, (_, i) => proxy(port, `ok${i}`, m.names))
    for (const p of ps) closers.push(p.close)
    const stuckPushes = () => pushes.filter((p) => p.node === 'stuck').length
    await until('the stuck stream was written to', () => stuckPushes() === 1)
    let maxQueued = 0
    const sample = setInterval(() => {
      maxQueued = Math.max(maxQueued, server.queuedBytes)
    }, 5)
    closers.push(() => clearInterval(sample))
    // five rounds of changes: every reading proxy gets each one, the stuck one nothing more
    for (let round = 1; round <= 5; round++) {
      m = mesh(1000, round)
      for (const id of ['stuck', ...ps.map((_, i) => `ok${i}`)]) server.setSnapshot(id, snapshotOf(m))
      const want = versionOfType(server, 'ok0', TYPE_URL.endpoint)
      await until(`round ${round} reached the reading proxies`, () =>
        ps.every((p) => p.acked.get(TYPE_URL.endpoint) === want),
      )
    }
    clearInterval(sample)
    assert.equal(stuckPushes(), 1, 'one response written to the stream that does not read')
    assert.ok(maxQueued <= maxQueuedBytes + 200 * 1024, `queued bytes ${maxQueued} stayed bounded`)
    assert.ok(server.queuedBytes <= maxQueuedBytes)
    const stuck = server.status().find((s) => s.nodeId === 'stuck')!
    assert.equal(stuck.perType.find((t) => t.typeUrl === TYPE_URL.cluster)?.writtenAt, undefined, 'never flushed')
    for (const p of ps) assert.equal(p.error(), undefined)
  })

  test('a storm: 300 proxies connect at once to 1000 services; all ACK, none reconnects', async () => {
    const m = mesh(1000)
    let builds = 0
    const { server, port } = await serve({
      snapshotFor: () => {
        builds++
        return snapshotOf(m)
      },
    })
    const opened: number[] = []
    const lag = monitorEventLoopDelay({ resolution: 10 })
    lag.enable()
    const t0 = performance.now()
    const ps = Array.from({ length: 300 }, (_, i) => proxy(port, `storm-${i}`, m.names))
    for (const p of ps) closers.push(p.close)
    const all = [TYPE_URL.cluster, TYPE_URL.endpoint, TYPE_URL.listener, TYPE_URL.route]
    await until('every proxy ACKed every type', () => ps.every((p) => all.every((t) => p.acked.has(t))), 120_000)
    // and the server has taken every ACK in
    await until('every stream SYNCED', () => {
      const st = server.status()
      return (
        st.length === 300 && st.every((n) => n.perType.length === 4 && n.perType.every((t) => t.state === 'SYNCED'))
      )
    })
    const ms = performance.now() - t0
    lag.disable()
    for (const st of server.status()) {
      opened.push(st.streams)
      for (const t of st.perType) assert.equal(t.state, 'SYNCED', `${st.nodeId} ${t.typeUrl}`)
    }
    assert.equal(opened.length, 300)
    assert.ok(
      opened.every((n) => n === 1),
      'one stream per proxy',
    )
    for (const p of ps) assert.equal(p.error(), undefined, 'no stream failed')
    assert.equal(builds, 300)
    // the nodes share one CachedType per type
    assert.equal(server.cache.stats().sharedTypes, 4)
    process.stderr.write(
      `storm: 300 proxies, 1000 services: all ACKed in ${(ms / 1000).toFixed(1)} s; event loop delay max ${(lag.max / 1e6).toFixed(0)} ms\n`,
    )
  })
})
