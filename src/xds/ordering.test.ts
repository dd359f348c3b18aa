/**
 * Make before break in the xDS server, on raw ADS streams whose every ACK the test controls, in both protocols:
 * a route naming a new cluster is not sent before that cluster and its endpoints are ACKed; a listener waits for its
 * new cluster; a removed cluster is kept in CDS until the routes that no longer name it are ACKed.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import {
  adsService,
  type DeltaDiscoveryRequest,
  type DeltaDiscoveryResponse,
  type DiscoveryRequest,
  type DiscoveryResponse,
} from './ads.js'
import { makeSnapshot, resourceName } from './cache.js'
import { decodeResource } from './proto.js'
import { XdsServer } from './server.js'
import { TYPE_URL } from './snapshot.js'

const T = 'type.googleapis.com/'
const HCM = `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`
const ROUTER = `${T}envoy.extensions.filters.http.router.v3.Router`
const TCP = `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`
const { cluster: CDS, endpoint: EDS, listener: LDS, route: RDS } = TYPE_URL

const address = (port: number) => ({ socket_address: { address: '127.0.0.1', port_value: port } })
const cla = (name: string) => ({
  cluster_name: name,
  endpoints: [{ locality: { zone: 'z' }, lb_endpoints: [{ endpoint: { address: address(9000) } }] }],
})
const eds = (name: string) => ({
  name,
  type: 'EDS',
  connect_timeout: '1s',
  eds_cluster_config: { eds_config: { ads: {} }, service_name: name },
})
const statik = (name: string) => ({ name, type: 'STATIC', connect_timeout: '1s', load_assignment: cla(name) })
const httpListener = {
  name: 'http',
  address: address(8080),
  filter_chains: [
    {
      filters: [
        {
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': HCM,
            stat_prefix: 'http',
            rds: { config_source: { ads: {} }, route_config_name: 'routes' },
            http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
          },
        },
      ],
    },
  ],
}
const tcpListener = (cluster: string) => ({
  name: 'tcp',
  address: address(8081),
  filter_chains: [
    {
      filters: [
        { name: 'envoy.filters.network.tcp_proxy', typed_config: { '@type': TCP, stat_prefix: 'tcp', cluster } },
      ],
    },
  ],
})
const routes = (cluster: string) => ({
  name: 'routes',
  virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster } }] }],
})
/** http → routes → `cluster` (EDS); tcp → `tcp` (STATIC) */
const snapshot = (cluster: string, tcp: string) =>
  makeSnapshot({
    [LDS]: [httpListener, tcpListener(tcp)],
    [RDS]: [routes(cluster)],
    [CDS]: [eds(cluster), statik(tcp)],
    [EDS]: [cla(cluster)],
  })

/** A response, the same shape for both protocols: the resources it carries (decoded) and the names it removes. */
interface Resp {
  type: string
  names: string[]
  removed: string[]
  resources: Record<string, unknown>[]
  raw: DiscoveryResponse | DeltaDiscoveryResponse
}

/** A raw ADS stream driven step by step: nothing is ACKed or subscribed unless the test says so. */
function driver(port: number, protocol: 'sotw' | 'delta', nodeId: string) {
  const { Client } = adsService()
  const stub = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  const call = protocol === 'sotw' ? stub.StreamAggregatedResources() : stub.DeltaAggregatedResources()
  const queue: Resp[] = []
  const waiters: (() => void)[] = []
  const subs = new Map<string, string[]>()
  const last = new Map<string, DiscoveryResponse>()
  let nodeSent = false
  call.on('error', () => {})
  call.on('data', (r: DiscoveryResponse | DeltaDiscoveryResponse) => {
    const list =
      'version_info' in r
        ? r.resources
        : (r as DeltaDiscoveryResponse).resources.map((x) => x.resource!).filter(Boolean)
    const resources = list.map((a) => decodeResource(a, { withType: false }))
    queue.push({
      type: r.type_url,
      names: resources.map((x) => resourceName(r.type_url, x)).sort(),
      removed: [...((r as DeltaDiscoveryResponse).removed_resources ?? [])].sort(),
      resources,
      raw: r,
    })
    for (const w of waiters.splice(0)) w()
  })
  const write = (req: Record<string, unknown>) => {
    if (!nodeSent) {
      nodeSent = true
      req.node = { id: nodeId, locality: {} }
    }
    ;(call as grpc.ClientWritableStream<unknown>).write(req)
  }
  const sotwRequest = (type: string, extra: Partial<DiscoveryRequest> = {}) => {
    const l = last.get(type)
    write({
      type_url: type,
      resource_names: subs.get(type) ?? [],
      version_info: l?.version_info ?? '',
      response_nonce: l?.nonce ?? '',
      ...extra,
    })
  }
  return {
    /** the subscription of a type: names, or [] for a wildcard (LDS/CDS) */
    subscribe(type: string, names: string[]) {
      const before = subs.get(type)
      subs.set(type, names)
      if (protocol === 'sotw') return sotwRequest(type)
      const req: Partial<DeltaDiscoveryRequest> = {
        type_url: type,
        resource_names_subscribe: names.filter((n) => !before?.includes(n)),
        resource_names_unsubscribe: (before ?? []).filter((n) => !names.includes(n)),
      }
      write(req)
    },
    ack(r: Resp) {
      if (protocol === 'sotw') {
        last.set(r.type, r.raw as DiscoveryResponse)
        return sotwRequest(r.type)
      }
      write({
        type_url: r.type,
        response_nonce: r.raw.nonce,
        resource_names_subscribe: [],
        resource_names_unsubscribe: [],
      })
    },
    /** the next response of a type (responses of other types stay queued) */
    async next(type: string, timeoutMs = 5000): Promise<Resp> {
      const end = Date.now() + timeoutMs
      for (;;) {
        const i = queue.findIndex((r) => r.type === type)
        if (i >= 0) return queue.splice(i, 1)[0]!
        const left = end - Date.now()
        if (left <= 0) throw new Error(`no ${type.slice(type.lastIndexOf('.') + 1)} response`)
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left)
          waiters.push(() => {
            clearTimeout(t)
            resolve()
          })
        })
      }
    },
    /** asserts that no response of `type` arrives for `ms` */
    async quiet(type: string, ms: number, why: string) {
      await new Promise((r) => setTimeout(r, ms))
      const early = queue.find((r) => r.type === type)
      assert.equal(early, undefined, `${why}: got ${early?.names.join(',')} (removed ${early?.removed.join(',')})`)
    },
    close() {
      call.cancel()
      stub.close()
    },
  }
}

type Driver = ReturnType<typeof driver>

/** What the proxy does with a response: ACK it, subscribing to the route and endpoint names it now needs. */
function follow(d: Driver, r: Resp) {
  if (r.type === CDS) d.subscribe(EDS, r.names)
  d.ack(r)
  if (r.type === LDS) d.subscribe(RDS, ['routes'])
}

const QUIET = 150

for (const protocol of ['sotw', 'delta'] as const) {
  describe(`make before break (${protocol})`, () => {
    let server: XdsServer
    let port: number
    before(async () => {
      // a hold long enough that a loaded machine never reaches it: these tests are about order, not the timeout
      server = new XdsServer({ pushDebounceMs: 0, holdTimeoutMs: 10_000, log: () => {} })
      port = await server.listen('127.0.0.1', 0)
    })
    after(() => server.close())

    test('new clusters and endpoints before the routes and listeners naming them; old clusters after', async () => {
      const id = `order-${protocol}`
      server.setSnapshot(id, snapshot('c1', 's1'))
      const d = driver(port, protocol, id)
      try {
        d.subscribe(CDS, [])
        d.subscribe(LDS, [])
        // first config: CDS, then (its clusters ACKed) EDS, LDS, RDS
        const cds0 = await d.next(CDS)
        assert.deepEqual(cds0.names, ['c1', 's1'])
        await d.quiet(LDS, QUIET, 'a listener before its cluster was ACKed')
        follow(d, cds0)
        follow(d, await d.next(LDS))
        follow(d, await d.next(EDS))
        const rds0 = await d.next(RDS)
        assert.deepEqual(rds0.resources[0], routes('c1'))
        d.ack(rds0)

        // the change: routes move from c1 to c2 (new, EDS), the TCP listener from s1 to s2 (new, STATIC)
        server.setSnapshot(id, snapshot('c2', 's2'))
        const cds1 = await d.next(CDS)
        if (protocol === 'sotw') assert.deepEqual(cds1.names, ['c1', 'c2', 's1', 's2'], 'old clusters kept')
        else assert.deepEqual([cds1.names, cds1.removed], [['c2', 's2'], []], 'new clusters, nothing removed')
        // the listener and the route wait for the CDS ACK (the route for c2's endpoints too)
        await d.quiet(LDS, QUIET, 'a listener before the cluster it names was ACKed')
        await d.quiet(RDS, QUIET, 'a route before the cluster it names was ACKed')
        d.subscribe(EDS, ['c1', 'c2'])
        d.ack(cds1)
        const lds = await d.next(LDS)
        assert.equal(
          (lds.resources.find((l) => l.name === 'tcp') as ReturnType<typeof tcpListener>).filter_chains[0]!.filters[0]!
            .typed_config.cluster,
          's2',
        )
        const eds1 = await d.next(EDS)
        assert.ok(eds1.names.includes('c2'))
        assert.deepEqual(eds1.removed, [])
        await d.quiet(RDS, QUIET, 'a route before the endpoints of the cluster it names were ACKed')
        d.ack(eds1)
        const rds = await d.next(RDS)
        assert.deepEqual(rds.resources[0], routes('c2'))

        // break: s1 goes once the listener no longer naming it is ACKed; c1 only once the route is
        d.ack(lds)
        const cds2 = await d.next(CDS)
        if (protocol === 'sotw') assert.deepEqual(cds2.names, ['c1', 'c2', 's2'])
        else assert.deepEqual([cds2.names, cds2.removed], [[], ['s1']])
        d.ack(cds2)
        await d.quiet(CDS, QUIET, 'a cluster removed while a route the client holds names it')
        d.ack(rds)
        const cds3 = await d.next(CDS)
        if (protocol === 'sotw') assert.deepEqual(cds3.names, ['c2', 's2'])
        else assert.deepEqual([cds3.names, cds3.removed], [[], ['c1']])
        // with c1, its endpoints go (SotW: no longer sent; delta: removed)
        const eds2 = await d.next(EDS)
        if (protocol === 'sotw') assert.deepEqual(eds2.names, ['c2'])
        else assert.deepEqual([eds2.names, eds2.removed], [[], ['c1']])
        d.subscribe(EDS, ['c2'])
        d.ack(cds3)
        d.ack(eds2)
        const status = () => server.status().find((s) => s.nodeId === id)
        for (let i = 0; i < 100 && !status()?.perType.every((t) => t.state === 'SYNCED'); i++) {
          await new Promise((r) => setTimeout(r, 20))
        }
        assert.deepEqual(
          status()?.perType.map((t) => t.state),
          ['SYNCED', 'SYNCED', 'SYNCED', 'SYNCED'],
        )
      } finally {
        d.close()
      }
    })

    test("a listener waits for the SDS secrets of its cluster's TLS context, as Envoy warms the cluster", async () => {
      const id = `sds-${protocol}`
      const mtls = {
        ...statik('s1'),
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
            common_tls_context: { tls_certificate_sds_secret_configs: [{ name: 'default', sds_config: { ads: {} } }] },
          },
        },
      }
      const secret = {
        name: 'default',
        tls_certificate: { certificate_chain: { inline_string: 'chain' }, private_key: { inline_string: 'key' } },
      }
      server.setSnapshot(id, makeSnapshot({ [LDS]: [tcpListener('s1')], [CDS]: [mtls], [TYPE_URL.secret]: [secret] }))
      const d = driver(port, protocol, id)
      try {
        d.subscribe(CDS, [])
        d.subscribe(LDS, [])
        const cds = await d.next(CDS)
        d.subscribe(TYPE_URL.secret, ['default'])
        d.ack(cds)
        const sds = await d.next(TYPE_URL.secret)
        assert.deepEqual(sds.names, ['default'])
        await d.quiet(LDS, QUIET, "a listener before its cluster's secret was ACKed")
        d.ack(sds)
        const lds = await d.next(LDS)
        assert.deepEqual(lds.names, ['tcp'])
      } finally {
        d.close()
      }
    })

    test('a route waits for endpoints at most holdTimeoutMs (a client that never subscribes to them)', async () => {
      const id = `hold-${protocol}`
      const short = new XdsServer({ pushDebounceMs: 0, holdTimeoutMs: 400, log: () => {} })
      short.setSnapshot(id, snapshot('c1', 's1'))
      const d = driver(await short.listen('127.0.0.1', 0), protocol, id)
      try {
        d.subscribe(CDS, [])
        d.subscribe(LDS, [])
        follow(d, await d.next(CDS))
        follow(d, await d.next(LDS))
        follow(d, await d.next(EDS))
        follow(d, await d.next(RDS))
        short.setSnapshot(id, snapshot('c2', 's1'))
        const t0 = Date.now()
        d.ack(await d.next(CDS)) // ACKed, but the client does not subscribe to c2's endpoints
        const rds = await d.next(RDS, 3000)
        assert.deepEqual(rds.resources[0], routes('c2'))
        assert.ok(Date.now() - t0 >= 350, `the route came after ${Date.now() - t0} ms`)
      } finally {
        d.close()
        await short.close()
      }
    })
  })
}

describe('make before break, alike delta streams sharing a push', () => {
  test('a stream whose clusters are warm gets the route; an alike one whose clusters are not waits for its own', async () => {
    const server = new XdsServer({ pushDebounceMs: 0, holdTimeoutMs: 10_000, log: () => {} })
    const port = await server.listen('127.0.0.1', 0)
    const ids = ['alike-a', 'alike-b']
    for (const id of ids) server.setSnapshot(id, snapshot('c1', 's1'))
    const [a, b] = ids.map((id) => driver(port, 'delta', id)) as [Driver, Driver]
    try {
      // both take the first config in the same steps: their states are then the same (shared) objects
      for (const d of [a, b]) {
        d.subscribe(CDS, [])
        d.subscribe(LDS, [])
        follow(d, await d.next(CDS))
        follow(d, await d.next(LDS))
        follow(d, await d.next(EDS))
        d.ack(await d.next(RDS))
      }
      // c2 added (nothing removed: a push alike streams share), and the route moves to it
      const next = makeSnapshot({
        [LDS]: [httpListener, tcpListener('s1')],
        [RDS]: [routes('c2')],
        [CDS]: [eds('c1'), eds('c2'), statik('s1')],
        [EDS]: [cla('c1'), cla('c2')],
      })
      for (const id of ids) server.setSnapshot(id, next)
      const [ca, cb] = [await a.next(CDS), await b.next(CDS)]
      assert.deepEqual(ca.names, ['c2'])
      assert.equal(ca.raw.nonce, cb.raw.nonce, 'one shared push')
      // a: c2 and its endpoints ACKed, so its route comes; b has ACKed nothing yet
      a.subscribe(EDS, ['c1', 'c2'])
      a.ack(ca)
      a.ack(await a.next(EDS))
      assert.deepEqual((await a.next(RDS)).resources[0], routes('c2'))
      await b.quiet(RDS, QUIET, 'a route before this stream ACKed the cluster it names')
      b.subscribe(EDS, ['c1', 'c2'])
      b.ack(cb)
      await b.quiet(RDS, QUIET, 'a route before this stream ACKed the endpoints of the cluster it names')
      b.ack(await b.next(EDS))
      assert.deepEqual((await b.next(RDS)).resources[0], routes('c2'))
    } finally {
      a.close()
      b.close()
      await server.close()
    }
  })
})
