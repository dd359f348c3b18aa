/**
 * Live configuration changes on a running proxy, as the xDS client applies them: listeners, routes (RDS), clusters
 * and endpoints (EDS) change under real traffic, bad updates are rejected with precise errors, and in-flight
 * requests survive every change. (The xDS transport itself is covered by the xDS tests.)
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { ProxyServer } from '../src/proxy/proxy.js'
import { XdsConsumer } from '../src/proxy/xds-consumer.js'
import { TYPE_URL } from '../src/xds/snapshot.js'
import { HCM, ROUTER } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

function get(port: number, path: string, host = 'svc'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      .on('error', reject)
  })
}

const listener = (name: string, port: number, rds = 'routes') => ({
  name,
  address: { socket_address: { address: '127.0.0.1', port_value: port } },
  filter_chains: [
    {
      filters: [
        {
          name: 'envoy.filters.network.http_connection_manager',
          typed_config: {
            '@type': HCM,
            stat_prefix: name,
            rds: { config_source: { ads: {} }, route_config_name: rds },
            http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': ROUTER } }],
          },
        },
      ],
    },
  ],
})
const edsCluster = (name: string) => ({
  name,
  type: 'EDS',
  connect_timeout: '1s',
  eds_cluster_config: { eds_config: { ads: {} }, service_name: name },
})
const cla = (name: string, ports: number[]) => ({
  cluster_name: name,
  endpoints: [
    {
      locality: { region: 'r', zone: 'z' },
      load_balancing_weight: 1,
      lb_endpoints: ports.map((p) => ({
        endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: p } } },
      })),
    },
  ],
})
const routes = (name: string, cluster: string, extra: Record<string, unknown> = {}) => ({
  name,
  virtual_hosts: [{ name: 'svc', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster, ...extra } }] }],
})
const m = (items: Record<string, unknown>[], key = 'name') => new Map(items.map((i) => [String(i[key]), i]))

/**
 * A request held by the `slow` backend: `arrived` resolves when the backend has it, and the backend answers 'slow'
 * only when the test calls `release`. So a config change is applied while the request is known to be in flight.
 */
function holdNext(): { arrived: Promise<void>; release: () => void } {
  let arrive: () => void = () => {}
  const arrived = new Promise<void>((r) => {
    arrive = r
  })
  let release: () => void = () => {}
  const released = new Promise<void>((r) => {
    release = r
  })
  held.push({ arrive, released })
  return { arrived, release }
}
const held: { arrive: () => void; released: Promise<void> }[] = []

describe('dynamic configuration', () => {
  let a: Backend
  let b: Backend
  let slow: Backend
  let proxy: ProxyServer
  let xds: XdsConsumer
  let port: number

  before(async () => {
    a = await startBackend((_q, r) => r.end('a'))
    b = await startBackend((_q, r) => r.end('b'))
    slow = await startBackend((_q, r) => {
      const h = held.shift()
      if (h === undefined) {
        r.end('slow')
        return
      }
      h.arrive()
      void h.released.then(() => r.end('slow'))
    })
    proxy = new ProxyServer({}, { file: 'test', drainTimeMs: 2000 })
    await proxy.start()
    xds = new XdsConsumer(proxy)
    assert.deepEqual(
      await xds.onResources(TYPE_URL.cluster, '1', m([edsCluster('a'), edsCluster('b'), edsCluster('slow')])),
      { ok: true },
    )
    assert.deepEqual(
      await xds.onResources(
        TYPE_URL.endpoint,
        '1',
        m([cla('a', [a.port]), cla('b', [b.port]), cla('slow', [slow.port])], 'cluster_name'),
      ),
      { ok: true },
    )
    assert.deepEqual(await xds.onResources(TYPE_URL.listener, '1', m([listener('http', 0)])), { ok: true })
    assert.deepEqual(xds.routeNames(), ['routes'])
    assert.deepEqual(xds.endpointNames(), ['a', 'b', 'slow'])
    port = proxy.listeners[0]!.boundPort
  })
  after(async () => {
    await proxy.close()
    await Promise.all([a.close(), b.close(), slow.close()])
  })

  const flag = (f: string) => [...proxy.stats.entries()].find(([n]) => n === `http.http.response_flag.${f}`)?.[1] ?? 0

  test('before routes arrive, requests get 404 NR', async () => {
    const nr = flag('NR')
    const r = await get(port, '/')
    assert.equal(r.status, 404)
    assert.equal(flag('NR'), nr + 1)
  })

  test('RDS: routes apply at once, and change live', async () => {
    assert.deepEqual(await xds.onResources(TYPE_URL.route, '1', m([routes('routes', 'a')])), { ok: true })
    assert.equal((await get(port, '/')).body, 'a')
    assert.deepEqual(await xds.onResources(TYPE_URL.route, '2', m([routes('routes', 'b')])), { ok: true })
    assert.equal((await get(port, '/')).body, 'b')
  })

  test('EDS: endpoints move without touching the cluster', async () => {
    assert.deepEqual(await xds.onResources(TYPE_URL.endpoint, '2', m([cla('b', [a.port])], 'cluster_name')), {
      ok: true,
    })
    assert.equal((await get(port, '/')).body, 'a')
    assert.deepEqual(await xds.onResources(TYPE_URL.endpoint, '3', m([cla('b', [b.port])], 'cluster_name')), {
      ok: true,
    })
    assert.equal((await get(port, '/')).body, 'b')
  })

  test('an invalid update is rejected with the resource and field, and the running config stays', async () => {
    const bad = routes('routes', 'a')
    ;(bad.virtual_hosts[0]!.routes[0] as Record<string, unknown>).match = { prefix: '/', path: '/x' }
    const r = await xds.onResources(TYPE_URL.route, '3', m([bad]))
    assert.equal(r.ok, false)
    assert.match(
      (r as { error: string }).error,
      /RouteConfiguration "routes": virtual_hosts\[0\]\.routes\[0\]\.match: only one of/,
    )
    assert.equal((await get(port, '/')).body, 'b')

    const badCluster = { ...edsCluster('c'), lb_policy: 'FASTEST' }
    const rc = await xds.onResources(
      TYPE_URL.cluster,
      '2',
      m([edsCluster('a'), edsCluster('b'), edsCluster('slow'), badCluster]),
    )
    assert.equal(rc.ok, false)
    assert.match((rc as { error: string }).error, /Cluster "c": lb_policy/)
    assert.equal((await get(port, '/')).body, 'b')
  })

  test('a route change does not disturb a request in flight', async () => {
    assert.deepEqual(await xds.onResources(TYPE_URL.route, '4', m([routes('routes', 'slow')])), { ok: true })
    const hold = holdNext()
    const inflight = get(port, '/')
    await hold.arrived
    assert.deepEqual(await xds.onResources(TYPE_URL.route, '5', m([routes('routes', 'a')])), { ok: true })
    hold.release()
    assert.equal((await inflight).body, 'slow')
    assert.equal((await get(port, '/')).body, 'a')
  })

  test('a listener change keeps the socket, drains old connections, and in-flight requests finish', async () => {
    assert.deepEqual(await xds.onResources(TYPE_URL.route, '6', m([routes('routes', 'slow'), routes('other', 'b')])), {
      ok: true,
    })
    const hold = holdNext()
    const inflight = get(port, '/')
    await hold.arrived
    assert.deepEqual(await xds.onResources(TYPE_URL.listener, '2', m([listener('http', 0, 'other')])), { ok: true })
    assert.equal(proxy.listeners[0]!.boundPort, port, 'same socket')
    hold.release()
    assert.equal((await inflight).body, 'slow')
    assert.equal((await get(port, '/')).body, 'b')
  })

  test('an unchanged cluster keeps its hosts (and pools); a changed one keeps serving from its last assignment', async () => {
    const hostA = proxy.clusters.get('a')!.hosts()[0]
    const hostB = proxy.clusters.get('b')!.hosts()[0]
    assert.ok(hostA && hostB)
    const changedB = { ...edsCluster('b'), connect_timeout: '2s' }
    assert.deepEqual(await xds.onResources(TYPE_URL.cluster, '4', m([edsCluster('a'), changedB, edsCluster('slow')])), {
      ok: true,
    })
    assert.equal(proxy.clusters.get('a')!.hosts()[0], hostA, 'the same host object, with its pool')
    // b was rebuilt; without waiting for EDS it has the hosts of its last assignment
    assert.notEqual(proxy.clusters.get('b')!.hosts()[0], hostB)
    assert.equal(proxy.clusters.get('b')!.hosts().length, 1)
    assert.equal((await get(port, '/')).body, 'b')
  })

  test('a cluster removed and added again has no hosts until its assignment comes (none left over)', async () => {
    assert.deepEqual(await xds.onResources(TYPE_URL.cluster, '5', m([edsCluster('a'), edsCluster('slow')])), {
      ok: true,
    })
    assert.deepEqual(
      await xds.onResources(TYPE_URL.cluster, '6', m([edsCluster('a'), edsCluster('b'), edsCluster('slow')])),
      { ok: true },
    )
    assert.equal(proxy.clusters.get('b')!.hosts().length, 0)
    assert.deepEqual(await xds.onResources(TYPE_URL.endpoint, '4', m([cla('b', [b.port])], 'cluster_name')), {
      ok: true,
    })
    assert.equal((await get(port, '/')).body, 'b')
  })

  test('a removed cluster answers 503 NC; a removed listener stops accepting', async () => {
    assert.deepEqual(await xds.onResources(TYPE_URL.cluster, '3', m([edsCluster('a'), edsCluster('slow')])), {
      ok: true,
    })
    const nc = flag('NC')
    const r = await get(port, '/')
    assert.equal(r.status, 503)
    assert.equal(flag('NC'), nc + 1)
    assert.deepEqual(await xds.onResources(TYPE_URL.listener, '3', new Map()), { ok: true })
    await assert.rejects(get(port, '/'))
  })
})
