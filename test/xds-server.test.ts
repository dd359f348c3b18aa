/**
 * The xDS server on loopback with real gRPC clients: Loom's AdsClient (subscribe, ACK, updates, NACK, reconnect),
 * raw grpc-js streams misbehaving (no node, unknown types, stale nonces, garbage bytes, disconnects) next to a
 * healthy stream, the delta protocol, and a real proxyless gRPC client (@grpc/grpc-js-xds, in a child process)
 * reaching two echo servers through LDS/RDS/CDS/EDS with a weighted split.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import {
  type AdsClientStub,
  adsService,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from '../src/xds/ads.js'
import { makeSnapshot } from '../src/xds/cache.js'
import { AdsClient, type ConsumerVerdict } from '../src/xds/client.js'
import { decodeResource } from '../src/xds/proto.js'
import { type NodeInfo, type NodeStatus, XdsServer } from '../src/xds/server.js'
import { TYPE_URL } from '../src/xds/snapshot.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const T = 'type.googleapis.com/'
const HCM = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`
const ROUTER = `${T}envoy.extensions.filters.http.router.v3.Router`

// === resources ===

function apiListener(name: string, routeName: string) {
  return {
    name,
    api_listener: {
      api_listener: {
        '@type': HCM,
        rds: { config_source: { ads: {}, resource_api_version: 'V3' }, route_config_name: routeName },
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
      },
    },
  }
}
function route(name: string, domains: string[], split: [string, number][]) {
  return {
    name,
    virtual_hosts: [
      {
        name: 'echo',
        domains,
        routes: [
          {
            match: { prefix: '' },
            route:
              split.length === 1
                ? { cluster: split[0]![0] }
                : { weighted_clusters: { clusters: split.map(([c, weight]) => ({ name: c, weight })) } },
          },
        ],
      },
    ],
  }
}
function edsCluster(name: string) {
  return {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: name },
    connect_timeout: '1s',
    lb_policy: 'ROUND_ROBIN',
  }
}
function cla(name: string, ports: number[], zone = 'z1') {
  return {
    cluster_name: name,
    endpoints: [
      {
        locality: { region: 'r1', zone },
        load_balancing_weight: 1,
        lb_endpoints: ports.map((port) => ({
          endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } },
          health_status: 'HEALTHY',
          load_balancing_weight: 1,
        })),
      },
    ],
  }
}
function meshSnapshot(opts: { endpointPort?: number; extraClusters?: Record<string, unknown>[] } = {}) {
  return makeSnapshot({
    [TYPE_URL.listener]: [apiListener('svc:80', 'svc-route')],
    [TYPE_URL.route]: [route('svc-route', ['*'], [['svc', 1]])],
    [TYPE_URL.cluster]: [edsCluster('svc'), ...(opts.extraClusters ?? [])],
    [TYPE_URL.endpoint]: [cla('svc', [opts.endpointPort ?? 9000])],
  })
}

// === helpers ===

async function waitFor<T>(what: string, f: () => T | undefined | false, timeoutMs = 10_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    const v = f()
    if (v) return v
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

interface LogLine {
  level: string
  msg: string
  fields?: Record<string, unknown>
}

function startServer(opts: ConstructorParameters<typeof XdsServer>[0] = {}) {
  const logs: LogLine[] = []
  const server = new XdsServer({
    pushDebounceMs: 10,
    log: (level, msg, fields) => logs.push({ level, msg, fields }),
    ...opts,
  })
  return { server, logs }
}

function nodeStatus(server: XdsServer, id: string): NodeStatus | undefined {
  return server.status().find((s) => s.nodeId === id)
}
function typeStatus(server: XdsServer, id: string, typeUrl: string) {
  return nodeStatus(server, id)?.perType.find((t) => t.typeUrl === typeUrl)
}

/** A raw ADS stream that records responses and lets the test write anything. */
function rawStream(port: number) {
  const { Client } = adsService()
  const stub: AdsClientStub = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  const call = stub.StreamAggregatedResources()
  const responses: DiscoveryResponse[] = []
  let status: grpc.StatusObject | undefined
  call.on('data', (r: DiscoveryResponse) => responses.push(r))
  call.on('error', () => {})
  call.on('status', (s: grpc.StatusObject) => (status = s))
  return {
    call,
    responses,
    status: () => status,
    send: (r: Partial<DiscoveryRequest> & { node?: unknown }) => call.write({ resource_names: [], ...r }),
    close: () => {
      call.cancel()
      stub.close()
    },
  }
}

/** A consumer that behaves like the proxy: follows LDS → RDS and CDS → EDS names. */
function proxyConsumer(getClient: () => AdsClient) {
  const got = new Map<string, { version: string; names: string[]; removed: string[] }[]>()
  let reject: ((typeUrl: string, resources: Map<string, Record<string, unknown>>) => string | undefined) | undefined
  const consumer = (
    typeUrl: string,
    version: string,
    resources: Map<string, Record<string, unknown>>,
    removed: string[],
  ): ConsumerVerdict => {
    const error = reject?.(typeUrl, resources)
    if (error) return { ok: false, error }
    if (!got.has(typeUrl)) got.set(typeUrl, [])
    got.get(typeUrl)!.push({ version, names: [...resources.keys()].sort(), removed: [...removed].sort() })
    if (typeUrl === TYPE_URL.listener) {
      const routes = [...resources.values()].map(
        (l) =>
          (l.api_listener as { api_listener?: { rds?: { route_config_name?: string } } } | undefined)?.api_listener?.rds
            ?.route_config_name ?? '',
      )
      getClient().subscribe(TYPE_URL.route, routes.filter(Boolean))
    }
    if (typeUrl === TYPE_URL.cluster) {
      const names = [...resources.values()].map(
        (c) => (c.eds_cluster_config as { service_name?: string } | undefined)?.service_name ?? (c.name as string),
      )
      getClient().subscribe(TYPE_URL.endpoint, names)
    }
    return { ok: true }
  }
  return {
    consumer,
    got,
    last: (t: string) => got.get(t)?.at(-1),
    setReject: (f: typeof reject) => (reject = f),
  }
}

function allSynced(server: XdsServer, id: string, types = 4): boolean {
  const s = nodeStatus(server, id)
  return !!s && s.perType.length === types && s.perType.every((t) => t.state === 'SYNCED')
}

// === tests ===

describe('xDS server with Loom AdsClient', () => {
  let server: XdsServer
  let port: number
  let client: AdsClient
  const c = proxyConsumer(() => client)

  before(async () => {
    ;({ server } = startServer())
    server.setSnapshot('proxy-a', meshSnapshot())
    port = await server.listen('127.0.0.1', 0)
    client = new AdsClient({
      server: `127.0.0.1:${port}`,
      node: { id: 'proxy-a', cluster: 'svc', metadata: { NAMESPACE: 'default', LABELS: { app: 'svc' } } },
      onResources: c.consumer,
      initialBackoffMs: 50,
      maxBackoffMs: 200,
      log: () => {},
    })
    client.start()
  })
  after(async () => {
    client.close()
    await server.close()
  })

  test('subscribes, receives all four types, ACKs', async () => {
    await waitFor('all types synced', () => allSynced(server, 'proxy-a'))
    assert.deepEqual(c.last(TYPE_URL.listener)?.names, ['svc:80'])
    assert.deepEqual(c.last(TYPE_URL.route)?.names, ['svc-route'])
    assert.deepEqual(c.last(TYPE_URL.cluster)?.names, ['svc'])
    assert.deepEqual(c.last(TYPE_URL.endpoint)?.names, ['svc'])
    const st = nodeStatus(server, 'proxy-a')!
    assert.equal(st.streams, 1)
    assert.equal(st.protocol, 'sotw')
    for (const t of st.perType) assert.equal(t.sentVersion, t.ackedVersion)
    // each type's latest response was written after the stream opened, and before now (epoch ms)
    for (const t of st.perType) {
      assert.ok(t.writtenAt !== undefined && t.writtenAt >= Date.parse(st.connectedAt) - 1, t.typeUrl)
      assert.ok(t.writtenAt <= performance.timeOrigin + performance.now(), t.typeUrl)
    }
    // versions are the cache's content hashes (full state for CDS)
    const snap = server.cache.getSnapshot('proxy-a')!
    assert.equal(
      typeStatus(server, 'proxy-a', TYPE_URL.cluster)!.ackedVersion,
      snap.resources.get(TYPE_URL.cluster)!.version,
    )
    assert.equal(client.typeState(TYPE_URL.cluster)!.version, snap.resources.get(TYPE_URL.cluster)!.version)
  })

  test('a new snapshot is pushed and ACKed; only the changed type moves', async () => {
    const before = Object.fromEntries(nodeStatus(server, 'proxy-a')!.perType.map((t) => [t.typeUrl, t.ackedVersion]))
    const edsResponses = c.got.get(TYPE_URL.endpoint)!.length
    const ldsResponses = c.got.get(TYPE_URL.listener)!.length
    server.setSnapshot('proxy-a', meshSnapshot({ endpointPort: 9001 }))
    await waitFor('new EDS version acked', () => {
      const t = typeStatus(server, 'proxy-a', TYPE_URL.endpoint)!
      return t.state === 'SYNCED' && t.ackedVersion !== before[TYPE_URL.endpoint]
    })
    assert.equal(c.got.get(TYPE_URL.endpoint)!.length, edsResponses + 1)
    assert.equal(c.got.get(TYPE_URL.listener)!.length, ldsResponses)
    assert.equal(typeStatus(server, 'proxy-a', TYPE_URL.cluster)!.ackedVersion, before[TYPE_URL.cluster])
  })

  test('a NACK is recorded with its message and the client keeps its previous version', async () => {
    const prev = client.typeState(TYPE_URL.cluster)!.version
    c.setReject((t, res) =>
      t === TYPE_URL.cluster && res.has('bad') ? 'cluster bad: unsupported lb_policy' : undefined,
    )
    server.setSnapshot('proxy-a', meshSnapshot({ endpointPort: 9001, extraClusters: [edsCluster('bad')] }))
    const t = await waitFor('CDS NACKED', () => {
      const s = typeStatus(server, 'proxy-a', TYPE_URL.cluster)
      return s?.state === 'NACKED' && s
    })
    assert.equal(t.nackError, 'cluster bad: unsupported lb_policy')
    assert.equal(t.ackedVersion, prev)
    assert.notEqual(t.sentVersion, prev)
    assert.equal(client.typeState(TYPE_URL.cluster)!.version, prev)
    assert.equal(client.typeState(TYPE_URL.cluster)!.lastError, 'cluster bad: unsupported lb_policy')
    // the rejected version is not pushed again; a fixed snapshot is
    c.setReject(undefined)
    server.setSnapshot('proxy-a', meshSnapshot({ endpointPort: 9001, extraClusters: [edsCluster('good')] }))
    await waitFor('synced again', () => allSynced(server, 'proxy-a'))
    assert.deepEqual(c.last(TYPE_URL.cluster)?.names, ['good', 'svc'])
    assert.deepEqual(c.last(TYPE_URL.endpoint)?.names, ['svc'])
  })

  test('the client reconnects to a restarted server and resubscribes', async () => {
    const connections = client.connections
    await server.close()
    ;({ server } = startServer())
    server.setSnapshot('proxy-a', meshSnapshot({ endpointPort: 9002 }))
    assert.equal(await server.listen('127.0.0.1', port), port)
    await waitFor('synced after restart', () => allSynced(server, 'proxy-a'), 15_000)
    assert.ok(client.connections > connections)
    const eds = c.last(TYPE_URL.endpoint)!
    assert.deepEqual(eds.names, ['svc'])
    assert.equal(eds.version, server.cache.getSnapshot('proxy-a')!.resources.get(TYPE_URL.endpoint)!.version)
  })
})

describe('xDS server robustness', () => {
  let server: XdsServer
  let logs: LogLine[]
  let port: number
  let good: AdsClient
  const c = proxyConsumer(() => good)
  const built: NodeInfo[] = []

  before(async () => {
    ;({ server, logs } = startServer({
      snapshotFor: async (node) => {
        built.push(node)
        await new Promise((r) => setTimeout(r, 20))
        return meshSnapshot()
      },
    }))
    port = await server.listen('127.0.0.1', 0)
    good = new AdsClient({
      server: `127.0.0.1:${port}`,
      node: { id: 'good', locality: { zone: 'z9' }, metadata: { GENERATOR: 'envoy', n: 2, tags: ['x'] } },
      onResources: c.consumer,
      log: () => {},
    }).start()
    await waitFor('good client synced', () => allSynced(server, 'good'))
  })
  after(async () => {
    good.close()
    await server.close()
  })

  test('snapshotFor builds a snapshot for a new node, from its node info', () => {
    const n = built.find((b) => b.id === 'good')!
    assert.deepEqual(n.metadata, { GENERATOR: 'envoy', n: 2, tags: ['x'] })
    assert.deepEqual(n.locality, { region: '', zone: 'z9', sub_zone: '' })
    assert.equal(n.userAgentName, 'loom')
  })

  test('a stream without a node is refused; unknown types and stale nonces are ignored', async () => {
    const noNode = rawStream(port)
    noNode.send({ type_url: TYPE_URL.cluster })
    await waitFor('refused', () => noNode.status())
    assert.equal(noNode.status()!.code, grpc.status.INVALID_ARGUMENT)
    noNode.close()

    const s = rawStream(port)
    s.send({ node: { id: 'raw-1', locality: {} }, type_url: `${T}no.such.Type` })
    s.send({ type_url: '' })
    s.send({ type_url: TYPE_URL.cluster })
    const first = await waitFor('CDS response', () => s.responses[0])
    assert.equal(first.type_url, TYPE_URL.cluster)
    assert.deepEqual(
      first.resources.map((r) => decodeResource(r).name),
      ['svc'],
    )
    assert.ok(logs.some((l) => l.msg === 'request for an unknown type ignored' && l.fields?.node === 'raw-1'))
    // EDS responses on the same stream are the barriers below: the server handles a stream's requests in order and
    // pushes CDS before EDS, so once an EDS response is here, anything the earlier step would have sent is here too
    type Cla = {
      endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { port_value: number } } } }[] }[]
    }
    const portOf = (r: DiscoveryResponse) =>
      (decodeResource(r.resources[0]!) as unknown as Cla).endpoints[0]!.lb_endpoints[0]!.endpoint.address.socket_address
        .port_value
    const eds = (p: number) =>
      waitFor(`EDS with port ${p}`, () =>
        s.responses.find((r) => r.type_url === TYPE_URL.endpoint && r.resources.length > 0 && portOf(r) === p),
      )
    const ackEds = (r: DiscoveryResponse) =>
      s.send({
        type_url: TYPE_URL.endpoint,
        resource_names: ['svc'],
        version_info: r.version_info,
        response_nonce: r.nonce,
      })
    const cds = () => s.responses.filter((r) => r.type_url === TYPE_URL.cluster)
    // a wrong nonce is not an ACK
    s.send({ type_url: TYPE_URL.cluster, version_info: first.version_info, response_nonce: 'bogus' })
    s.send({ type_url: TYPE_URL.endpoint, resource_names: ['svc'] })
    ackEds(await eds(9000))
    assert.equal(typeStatus(server, 'raw-1', TYPE_URL.cluster)!.state, 'STALE')
    // at most one unacknowledged push: two changes, still one CDS response (each change's EDS push is the barrier)
    server.setSnapshot('raw-1', meshSnapshot({ endpointPort: 1, extraClusters: [edsCluster('x1')] }))
    ackEds(await eds(1))
    server.setSnapshot('raw-1', meshSnapshot({ endpointPort: 2, extraClusters: [edsCluster('x2')] }))
    ackEds(await eds(2))
    assert.equal(cds().length, 1)
    // the ACK releases the latest state, in one response
    s.send({ type_url: TYPE_URL.cluster, version_info: first.version_info, response_nonce: first.nonce })
    const second = await waitFor('second CDS response', () => cds()[1])
    assert.deepEqual(second.resources.map((r) => decodeResource(r).name).sort(), ['svc', 'x2'])
    s.send({ type_url: TYPE_URL.cluster, version_info: second.version_info, response_nonce: second.nonce })
    await waitFor('raw CDS synced', () => typeStatus(server, 'raw-1', TYPE_URL.cluster)?.state === 'SYNCED')
    s.close()
  })

  test('garbage bytes and abrupt disconnects affect no other stream', async () => {
    // a client that sends bytes that are not a DiscoveryRequest
    const Garbage = grpc.makeGenericClientConstructor(
      {
        StreamAggregatedResources: {
          path: '/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources',
          requestStream: true,
          responseStream: true,
          requestSerialize: (b: Buffer) => b,
          requestDeserialize: (b: Buffer) => b,
          responseSerialize: (b: Buffer) => b,
          responseDeserialize: (b: Buffer) => b,
        },
      },
      'Garbage',
    )
    const g = new Garbage(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
      StreamAggregatedResources(): grpc.ClientDuplexStream<Buffer, Buffer>
    }
    const gcall = g.StreamAggregatedResources()
    const gstatus = new Promise<grpc.StatusObject>((resolve) => gcall.on('status', resolve))
    gcall.on('error', () => {})
    gcall.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 0x0f, 0x01, 0x02]))
    assert.notEqual((await gstatus).code, grpc.status.OK)
    g.close()

    // clients that vanish right after subscribing, while their responses are being written
    for (let i = 0; i < 5; i++) {
      const s = rawStream(port)
      s.send({ node: { id: `flaky-${i}`, locality: {} }, type_url: TYPE_URL.cluster })
      s.send({ type_url: TYPE_URL.listener })
      if (i % 2) await new Promise((r) => setTimeout(r, 5))
      s.close()
    }
    await waitFor('flaky streams gone', () => !server.connectedNodes().some((n) => n.startsWith('flaky')))

    // the healthy stream still gets updates
    const eds = c.got.get(TYPE_URL.endpoint)!.length
    server.setSnapshot('good', meshSnapshot({ endpointPort: 9100 }))
    await waitFor('good got the update', () => c.got.get(TYPE_URL.endpoint)!.length === eds + 1)
    await waitFor('good synced', () => allSynced(server, 'good'))
    assert.equal(nodeStatus(server, 'good')!.streams, 1)
  })

  test('a failing snapshotFor ends only that stream, logged with the node id', async () => {
    const { server: s2, logs: logs2 } = startServer({
      snapshotFor: (node) => {
        if (node.id === 'broken') throw new Error('no such workload')
        return meshSnapshot()
      },
    })
    const p2 = await s2.listen('127.0.0.1', 0)
    const broken = rawStream(p2)
    broken.send({ node: { id: 'broken', locality: {} }, type_url: TYPE_URL.cluster })
    const ok = rawStream(p2)
    ok.send({ node: { id: 'fine', locality: {} }, type_url: TYPE_URL.cluster })
    await waitFor('broken refused', () => broken.status())
    assert.equal(broken.status()!.code, grpc.status.UNAVAILABLE)
    assert.match(broken.status()!.details, /no such workload/)
    assert.ok(logs2.some((l) => l.level === 'error' && l.fields?.node === 'broken'))
    await waitFor('fine answered', () => ok.responses[0])
    broken.close()
    ok.close()
    await s2.close()
  })
})

describe('delta xDS', () => {
  let server: XdsServer
  let port: number
  before(async () => {
    ;({ server } = startServer())
    port = await server.listen('127.0.0.1', 0)
    server.setSnapshot(
      'delta-1',
      makeSnapshot({
        [TYPE_URL.endpoint]: [cla('a', [1]), cla('b', [2]), cla('c', [3])],
        [TYPE_URL.cluster]: [edsCluster('a'), edsCluster('b')],
      }),
    )
  })
  after(() => server.close())

  function deltaStream() {
    const { Client } = adsService()
    const stub = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
    const call = stub.DeltaAggregatedResources()
    const responses: DeltaDiscoveryResponse[] = []
    call.on('data', (r: DeltaDiscoveryResponse) => responses.push(r))
    call.on('error', () => {})
    const send = (r: Partial<DeltaDiscoveryRequest> & { node?: unknown }) =>
      call.write({ resource_names_subscribe: [], resource_names_unsubscribe: [], ...r })
    const ack = (r: DeltaDiscoveryResponse, error?: string) =>
      send({
        type_url: r.type_url,
        response_nonce: r.nonce,
        ...(error ? { error_detail: { code: 3, message: error } } : {}),
      })
    return {
      responses,
      send,
      ack,
      close: () => {
        call.cancel()
        stub.close()
      },
    }
  }
  const names = (r: DeltaDiscoveryResponse) => r.resources.map((x) => x.name).sort()

  test('subscribe, receive, unsubscribe, removals', async () => {
    const d = deltaStream()
    d.send({
      node: { id: 'delta-1', locality: {} },
      type_url: TYPE_URL.endpoint,
      resource_names_subscribe: ['a', 'b', 'zz'],
    })
    const r1 = await waitFor('first delta response', () => d.responses[0])
    assert.deepEqual(names(r1), ['a', 'b'])
    assert.deepEqual(r1.removed_resources, ['zz']) // subscribed but does not exist
    const hashes = server.cache.getEntry('delta-1')!.types.get(TYPE_URL.endpoint)!.items
    for (const r of r1.resources) {
      assert.equal(r.version, hashes.get(r.name)!.hash)
      assert.deepEqual(decodeResource(r.resource!, { withType: false }), cla(r.name, [r.name === 'a' ? 1 : 2]))
    }
    d.ack(r1)
    await waitFor('delta synced', () => typeStatus(server, 'delta-1', TYPE_URL.endpoint)?.state === 'SYNCED')
    assert.equal(nodeStatus(server, 'delta-1')!.protocol, 'delta')

    // subscribe one more: only it is sent
    d.send({ type_url: TYPE_URL.endpoint, resource_names_subscribe: ['c'] })
    const r2 = await waitFor('c', () => d.responses[1])
    assert.deepEqual(names(r2), ['c'])
    assert.deepEqual(r2.removed_resources, [])
    d.ack(r2)

    // unsubscribe b: a later change of b is not sent; a change of a is, alone. The barrier: subscribing a name that
    // does not exist is answered at once (in removed_resources), after the unsubscribe, which comes first on the stream
    d.send({ type_url: TYPE_URL.endpoint, resource_names_unsubscribe: ['b'] })
    d.send({ type_url: TYPE_URL.endpoint, resource_names_subscribe: ['nope'] })
    const barrier = await waitFor('the barrier', () => d.responses[2])
    assert.deepEqual([names(barrier), barrier.removed_resources], [[], ['nope']])
    d.ack(barrier)
    server.setSnapshot(
      'delta-1',
      makeSnapshot({
        [TYPE_URL.endpoint]: [cla('a', [11]), cla('b', [22]), cla('c', [3])],
        [TYPE_URL.cluster]: [edsCluster('a'), edsCluster('b')],
      }),
    )
    const r3 = await waitFor('a changed', () => d.responses[3])
    assert.deepEqual(names(r3), ['a'])
    d.ack(r3)

    // a removed resource the client holds is announced in removed_resources
    server.setSnapshot(
      'delta-1',
      makeSnapshot({
        [TYPE_URL.endpoint]: [cla('a', [11]), cla('b', [22])],
        [TYPE_URL.cluster]: [edsCluster('a'), edsCluster('b')],
      }),
    )
    const r4 = await waitFor('c removed', () => d.responses[4])
    assert.deepEqual(r4.resources, [])
    assert.deepEqual(r4.removed_resources, ['c'])
    // NACK is recorded
    d.ack(r4, 'cannot remove c')
    await waitFor('NACKED', () => typeStatus(server, 'delta-1', TYPE_URL.endpoint)?.state === 'NACKED')
    assert.equal(typeStatus(server, 'delta-1', TYPE_URL.endpoint)!.nackError, 'cannot remove c')
    d.close()
  })

  test('AdsClient in delta mode: full sets for CDS, removals, reconnect with initial_resource_versions', async () => {
    let client: AdsClient
    const c = proxyConsumer(() => client)
    let { server: s2, logs } = startServer()
    s2.setSnapshot('delta-2', meshSnapshot({ extraClusters: [edsCluster('extra')] }))
    const p2 = await s2.listen('127.0.0.1', 0)
    client = new AdsClient({
      server: `127.0.0.1:${p2}`,
      protocol: 'delta',
      node: { id: 'delta-2' },
      onResources: c.consumer,
      initialBackoffMs: 50,
      maxBackoffMs: 200,
      log: () => {},
    }).start()
    try {
      await waitFor('delta client synced', () => allSynced(s2, 'delta-2'))
      assert.equal(nodeStatus(s2, 'delta-2')!.protocol, 'delta')
      assert.deepEqual(c.last(TYPE_URL.cluster)?.names, ['extra', 'svc'])
      assert.deepEqual(c.last(TYPE_URL.endpoint)?.names, ['svc'])
      assert.deepEqual(c.last(TYPE_URL.route)?.names, ['svc-route'])
      // a cluster goes away: the consumer still gets the full set, and the removal
      s2.setSnapshot('delta-2', meshSnapshot())
      await waitFor('extra removed', () => c.last(TYPE_URL.cluster)?.names.length === 1)
      assert.deepEqual(c.last(TYPE_URL.cluster), {
        version: s2.cache.getSnapshot('delta-2')!.resources.get(TYPE_URL.cluster)!.version,
        names: ['svc'],
        removed: ['extra'],
      })
      await waitFor('synced after removal', () => allSynced(s2, 'delta-2'))
      // a restarted server with the same config sends nothing again: the client said what it has
      await s2.close()
      ;({ server: s2, logs } = startServer())
      s2.setSnapshot('delta-2', meshSnapshot())
      await s2.listen('127.0.0.1', p2)
      await waitFor('delta client synced again', () => allSynced(s2, 'delta-2'), 15_000)
      // not even an empty response: every type the client resumed with is what it would be sent
      const pushes = logs.filter((l) => l.msg === 'delta push')
      assert.deepEqual(pushes, [])
      // it reconnected (streams tried while the server was down count too: how many depends on the machine's speed)
      assert.ok(client.connections >= 2, `${client.connections} streams`)
    } finally {
      client.close()
      await s2.close()
    }
  })

  test('wildcard CDS and initial_resource_versions on reconnect', async () => {
    const hashes = server.cache.getEntry('delta-1')!.types.get(TYPE_URL.cluster)!.items
    const d = deltaStream()
    d.send({
      node: { id: 'delta-1', locality: {} },
      type_url: TYPE_URL.cluster,
      initial_resource_versions: { a: hashes.get('a')!.hash, b: 'old', gone: 'v0' },
    })
    const r = await waitFor('CDS delta', () => d.responses[0])
    assert.deepEqual(names(r), ['b'])
    assert.deepEqual(r.removed_resources, ['gone'])
    assert.equal(r.system_version_info, server.cache.getSnapshot('delta-1')!.resources.get(TYPE_URL.cluster)!.version)
    d.close()
  })
})

// === proxyless gRPC (@grpc/grpc-js-xds) ===

describe('an AdsClient with several servers (replicas)', () => {
  for (const protocol of ['sotw', 'delta'] as const) {
    test(`${protocol}: moves to the next server when its stream ends; same config, no response`, async () => {
      const a = startServer()
      const b = startServer()
      // replicas build the same snapshot from the same config, each in its own cache
      a.server.setSnapshot('r', meshSnapshot())
      b.server.setSnapshot('r', meshSnapshot())
      const pa = await a.server.listen('127.0.0.1', 0)
      const pb = await b.server.listen('127.0.0.1', 0)
      let client: AdsClient
      const c = proxyConsumer(() => client)
      let responses = 0
      client = new AdsClient({
        server: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`],
        protocol,
        node: { id: 'r' },
        onResources: c.consumer,
        initialBackoffMs: 50,
        log: () => {},
      })
      client.on('response', () => responses++)
      client.start()
      try {
        await waitFor('synced on a', () => allSynced(a.server, 'r'))
        const before = responses
        assert.equal(client.server, `127.0.0.1:${pa}`)
        await a.server.close(100)
        await waitFor('synced on b', () => allSynced(b.server, 'r'))
        assert.equal(client.server, `127.0.0.1:${pb}`)
        assert.equal(responses, before, 'nothing sent again: b serves the versions a served')
        for (const t of nodeStatus(b.server, 'r')!.perType)
          assert.equal(t.ackedVersion, b.server.cache.getSnapshot('r')!.resources.get(t.typeUrl as never)!.version)
        // a change on b after the move is pushed as usual: only the type that changed
        b.server.setSnapshot('r', meshSnapshot({ endpointPort: 9001 }))
        await waitFor('the change', () => responses === before + 1 && allSynced(b.server, 'r'))
        assert.equal(c.last(TYPE_URL.endpoint)?.names.join(), 'svc')
      } finally {
        client.close()
        await a.server.close(100)
        await b.server.close(100)
      }
    })
  }

  test('delta with every virtual host (VHDS wildcard): moves to the next server; same config, no response', async () => {
    const withVhosts = () => {
      const snap = makeSnapshot({
        [TYPE_URL.listener]: [apiListener('svc:80', 'svc-route')],
        [TYPE_URL.route]: [{ name: 'svc-route', vhds: { config_source: { ads: {} } } }],
        [TYPE_URL.cluster]: [edsCluster('svc')],
        [TYPE_URL.endpoint]: [cla('svc', [9000])],
        [TYPE_URL.virtualHost]: [
          { name: 'svc-route/svc', domains: ['svc'], routes: [{ match: { prefix: '/' }, route: { cluster: 'svc' } }] },
        ],
      })
      return snap
    }
    const a = startServer()
    const b = startServer()
    a.server.setSnapshot('v', withVhosts())
    b.server.setSnapshot('v', withVhosts())
    const pa = await a.server.listen('127.0.0.1', 0)
    const pb = await b.server.listen('127.0.0.1', 0)
    let client: AdsClient
    const c = proxyConsumer(() => client)
    const seen: string[] = []
    client = new AdsClient({
      server: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`],
      protocol: 'delta',
      node: { id: 'v' },
      wildcardTypes: [TYPE_URL.listener, TYPE_URL.cluster, TYPE_URL.virtualHost],
      onResources: c.consumer,
      initialBackoffMs: 50,
      log: () => {},
    })
    client.on('response', (type: string) => seen.push(type))
    client.start()
    try {
      await waitFor('synced on a', () => allSynced(a.server, 'v', 5))
      const before = seen.length
      await a.server.close(100)
      await waitFor('synced on b', () => allSynced(b.server, 'v', 5))
      assert.deepEqual(seen.slice(before), [], 'nothing sent again: b serves the versions a served')
    } finally {
      client.close()
      await a.server.close(100)
      await b.server.close(100)
    }
  })

  test('a client that held other config is answered as usual on the new server', async () => {
    const a = startServer()
    const b = startServer()
    a.server.setSnapshot('r2', meshSnapshot())
    b.server.setSnapshot('r2', meshSnapshot({ endpointPort: 9002 }))
    const pa = await a.server.listen('127.0.0.1', 0)
    const pb = await b.server.listen('127.0.0.1', 0)
    let client: AdsClient
    const c = proxyConsumer(() => client)
    client = new AdsClient({
      server: [`127.0.0.1:${pa}`, `127.0.0.1:${pb}`],
      node: { id: 'r2' },
      onResources: c.consumer,
      initialBackoffMs: 50,
      log: () => {},
    }).start()
    try {
      await waitFor('synced on a', () => allSynced(a.server, 'r2'))
      const eds = c.got.get(TYPE_URL.endpoint)!.length
      await a.server.close(100)
      await waitFor('synced on b', () => allSynced(b.server, 'r2'))
      assert.equal(c.got.get(TYPE_URL.endpoint)!.length, eds + 1, 'the endpoints that differ are sent')
    } finally {
      client.close()
      await a.server.close(100)
      await b.server.close(100)
    }
  })
})

const echoDef = protoLoader.loadSync(join(ROOT, 'test', 'fixtures', 'echo.proto'), { keepCase: true })
const echoPkg = grpc.loadPackageDefinition(echoDef) as unknown as {
  loom: { test: { Echo: grpc.ServiceClientConstructor } }
}

async function echoServer(name: string): Promise<{ port: number; server: grpc.Server; calls: () => number }> {
  const server = new grpc.Server()
  let calls = 0
  server.addService(echoPkg.loom.test.Echo.service, {
    Unary(_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) {
      calls++
      cb(null, { message: name, index: 0 })
    },
  })
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  )
  return { port, server, calls: () => calls }
}

function runGrpcXdsClient(
  xdsPort: number,
  nodeId: string,
  target: string,
  calls: number,
  deadlineMs = 10_000,
  lingerMs = 0,
): Promise<{ replies: Record<string, number>; errors: Record<string, number>; lastError: string }> {
  const bootstrap = {
    xds_servers: [
      { server_uri: `127.0.0.1:${xdsPort}`, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] },
    ],
    node: {
      id: nodeId,
      cluster: 'echo-client',
      locality: { region: 'r1', zone: 'z1' },
      metadata: { GENERATOR: 'grpc' },
    },
  }
  const script = join(ROOT, 'dist', 'test', 'fixtures', 'xds-grpc-client.js')
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [script, target, String(calls), String(deadlineMs), String(lingerMs)], {
      env: { ...process.env, LOOM_XDS_FIXTURE: '1', GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap) },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let err = ''
    p.stdout.on('data', (d) => (out += d))
    p.stderr.on('data', (d) => (err += d))
    const timer = setTimeout(() => p.kill('SIGKILL'), 60_000)
    p.on('close', (code) => {
      clearTimeout(timer)
      if (code !== 0) return reject(new Error(`grpc-js-xds client exited ${code}: ${err}`))
      try {
        resolve(JSON.parse(out.trim().split('\n').at(-1)!))
      } catch {
        reject(new Error(`bad output: ${out} ${err}`))
      }
    })
  })
}

describe('proxyless gRPC (@grpc/grpc-js-xds) through the xDS server', () => {
  let server: XdsServer
  let port: number
  const echo: Awaited<ReturnType<typeof echoServer>>[] = []

  before(async () => {
    echo.push(await echoServer('a'), await echoServer('b'))
    ;({ server } = startServer())
    port = await server.listen('127.0.0.1', 0)
  })
  after(async () => {
    await server.close()
    for (const e of echo) e.server.forceShutdown()
  })

  test('LDS(api_listener) → RDS(weighted clusters) → CDS(EDS) → EDS splits calls across two servers', async (t) => {
    const target = 'echo.loom.test:8080'
    server.setSnapshot(
      'grpc-client-1',
      makeSnapshot({
        [TYPE_URL.listener]: [apiListener(target, 'echo-route')],
        [TYPE_URL.route]: [
          route(
            'echo-route',
            [target, 'echo.loom.test'],
            [
              ['echo-a', 50],
              ['echo-b', 50],
            ],
          ),
        ],
        [TYPE_URL.cluster]: [edsCluster('echo-a'), edsCluster('echo-b')],
        [TYPE_URL.endpoint]: [cla('echo-a', [echo[0]!.port]), cla('echo-b', [echo[1]!.port])],
      }),
    )
    const res = await runGrpcXdsClient(port, 'grpc-client-1', `xds:///${target}`, 200)
    assert.deepEqual(res.errors, {}, res.lastError)
    const a = res.replies.a ?? 0
    const b = res.replies.b ?? 0
    assert.equal(a + b, 200)
    assert.ok(a >= 50 && b >= 50, `split a=${a} b=${b}`)
    t.diagnostic(`weighted 50/50 split over 200 calls: a=${a} b=${b}`)
    assert.equal(echo[0]!.calls() + echo[1]!.calls(), 200)
  })

  test('the grpc-js-xds stream ACKed every type (seen while it was connected)', async () => {
    // the child has exited; run it again and watch the status while it runs
    const target = 'echo.loom.test:8080'
    let seen: NodeStatus | undefined
    const poll = setInterval(() => {
      const s = nodeStatus(server, 'grpc-client-1')
      if (s && s.perType.length === 4 && s.perType.every((t) => t.state === 'SYNCED')) seen = s
    }, 10)
    try {
      const res = await runGrpcXdsClient(port, 'grpc-client-1', `xds:///${target}`, 100, 10_000, 500)
      assert.deepEqual(res.errors, {}, res.lastError)
    } finally {
      clearInterval(poll)
    }
    assert.ok(seen, 'status showed all four types SYNCED')
    assert.deepEqual(seen.perType.map((t) => t.typeUrl).sort(), [
      TYPE_URL.cluster,
      TYPE_URL.endpoint,
      TYPE_URL.listener,
      TYPE_URL.route,
    ])
  })

  test('grpc-js-xds NACKs what it does not support, and the NACK shows in status()', async (t) => {
    const target = 'static.loom.test:8080'
    server.setSnapshot(
      'grpc-client-2',
      makeSnapshot({
        [TYPE_URL.listener]: [apiListener(target, 'static-route')],
        [TYPE_URL.route]: [route('static-route', ['*'], [['static', 1]])],
        [TYPE_URL.cluster]: [
          { name: 'static', type: 'STATIC', connect_timeout: '1s', load_assignment: cla('static', [1]) },
        ],
      }),
    )
    let nack: string | undefined
    const poll = setInterval(() => {
      const t = typeStatus(server, 'grpc-client-2', TYPE_URL.cluster)
      if (t?.state === 'NACKED') nack = t.nackError
    }, 10)
    try {
      const res = await runGrpcXdsClient(port, 'grpc-client-2', `xds:///${target}`, 1, 3000, 1500)
      assert.equal(res.replies.a ?? 0, 0)
    } finally {
      clearInterval(poll)
    }
    assert.ok(nack, 'CDS was NACKed')
    assert.match(nack, /static/i)
    t.diagnostic(`grpc-js-xds NACK: ${nack}`)
  })
})
