/**
 * VHDS in the xDS server, on raw delta streams: an alias `<route config>/<host>` resolves to the VirtualHost whose
 * domains match the host (sent with `aliases`), an alias nothing matches is answered in `removed_resources`, a
 * virtual host naming a new cluster waits for that cluster like a route does, and a virtual host no subscription
 * resolves to any more is removed.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import { adsService, type DeltaDiscoveryResponse } from './ads.js'
import { makeSnapshot, SnapshotCache } from './cache.js'
import { decodeResource } from './proto.js'
import { XdsServer } from './server.js'
import { TYPE_URL } from './snapshot.js'
import { resolveAlias } from './vhds-aliases.js'

const { cluster: CDS, endpoint: EDS, virtualHost: VHDS } = TYPE_URL

const cla = (name: string) => ({
  cluster_name: name,
  endpoints: [
    { lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 1 } } } }] },
  ],
})
const eds = (name: string) => ({
  name,
  type: 'EDS',
  connect_timeout: '1s',
  eds_cluster_config: { eds_config: { ads: {} }, service_name: name },
})
const vhost = (name: string, domains: string[], cluster: string) => ({
  name: `outbound/${name}`,
  domains,
  routes: [{ match: { prefix: '/' }, route: { cluster } }],
})

function snapshot(vhosts: ReturnType<typeof vhost>[], clusters: string[]) {
  return makeSnapshot({ [CDS]: clusters.map(eds), [EDS]: clusters.map(cla), [VHDS]: vhosts })
}

function deltaDriver(port: number, nodeId: string) {
  const { Client } = adsService()
  const stub = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure())
  const call = stub.DeltaAggregatedResources()
  const queue: DeltaDiscoveryResponse[] = []
  const waiters: (() => void)[] = []
  let nodeSent = false
  call.on('error', () => {})
  call.on('data', (r: DeltaDiscoveryResponse) => {
    queue.push(r)
    for (const w of waiters.splice(0)) w()
  })
  const write = (req: Record<string, unknown>) => {
    if (!nodeSent) {
      nodeSent = true
      req.node = { id: nodeId, locality: {} }
    }
    ;(call as grpc.ClientWritableStream<unknown>).write(req)
  }
  return {
    subscribe(type: string, sub: string[], unsub: string[] = []) {
      write({ type_url: type, resource_names_subscribe: sub, resource_names_unsubscribe: unsub })
    },
    ack(r: DeltaDiscoveryResponse) {
      write({
        type_url: r.type_url,
        response_nonce: r.nonce,
        resource_names_subscribe: [],
        resource_names_unsubscribe: [],
      })
    },
    async next(type: string, timeoutMs = 5000): Promise<DeltaDiscoveryResponse> {
      const end = Date.now() + timeoutMs
      for (;;) {
        const i = queue.findIndex((r) => r.type_url === type)
        if (i >= 0) return queue.splice(i, 1)[0]!
        const left = end - Date.now()
        if (left <= 0) throw new Error(`no ${type} response`)
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, left)
          waiters.push(() => {
            clearTimeout(t)
            resolve()
          })
        })
      }
    },
    async quiet(type: string, ms: number, why: string) {
      await new Promise((r) => setTimeout(r, ms))
      assert.equal(
        queue.find((r) => r.type_url === type),
        undefined,
        why,
      )
    },
    close() {
      call.cancel()
      stub.close()
    },
  }
}

const summary = (r: DeltaDiscoveryResponse) => ({
  resources: r.resources.map((x) => ({ name: x.name, aliases: x.aliases ?? [] })),
  removed: [...r.removed_resources].sort(),
})

describe('VHDS: virtual hosts by alias', () => {
  let server: XdsServer
  let port: number
  const cache = new SnapshotCache()
  before(async () => {
    server = new XdsServer({ cache, pushDebounceMs: 1 })
    port = await server.listen('127.0.0.1', 0)
  })
  after(() => server.close(100))

  test('an alias resolves to the virtual host its domains match, sent with the alias; an unknown one is removed', async () => {
    cache.setSnapshot(
      'n1',
      snapshot(
        [
          vhost(
            'reviews.default.svc.cluster.local:9080',
            ['reviews.default.svc.cluster.local:9080', 'reviews:9080'],
            'r',
          ),
          vhost('wild', ['*.example.com'], 'r'),
        ],
        ['r'],
      ),
    )
    const d = deltaDriver(port, 'n1')
    try {
      d.subscribe(CDS, ['*'])
      d.ack(await d.next(CDS))
      d.subscribe(EDS, ['r'])
      d.ack(await d.next(EDS))
      d.subscribe(VHDS, ['outbound/reviews:9080'])
      const r1 = await d.next(VHDS)
      assert.deepEqual(summary(r1), {
        resources: [{ name: 'outbound/reviews.default.svc.cluster.local:9080', aliases: ['outbound/reviews:9080'] }],
        removed: [],
      })
      const body = decodeResource(r1.resources[0]!.resource!, { withType: false })
      assert.deepEqual(body.domains, ['reviews.default.svc.cluster.local:9080', 'reviews:9080'])
      d.ack(r1)
      // the same virtual host by another alias: sent again (with every alias it answers), so the client knows
      d.subscribe(VHDS, ['outbound/Reviews.default.svc.cluster.local:9080', 'outbound/api.example.com'])
      const r2 = await d.next(VHDS)
      assert.deepEqual(summary(r2), {
        resources: [
          {
            name: 'outbound/reviews.default.svc.cluster.local:9080',
            aliases: ['outbound/reviews:9080', 'outbound/Reviews.default.svc.cluster.local:9080'],
          },
          { name: 'outbound/wild', aliases: ['outbound/api.example.com'] },
        ],
        removed: [],
      })
      d.ack(r2)
      d.subscribe(VHDS, ['outbound/nowhere:80'])
      const r3 = await d.next(VHDS)
      assert.deepEqual(summary(r3), { resources: [], removed: ['outbound/nowhere:80'] })
      d.ack(r3)
      // nothing more to say about the missing one, even after a snapshot change elsewhere
      cache.setSnapshot(
        'n1',
        snapshot(
          [
            vhost(
              'reviews.default.svc.cluster.local:9080',
              ['reviews.default.svc.cluster.local:9080', 'reviews:9080'],
              'r',
            ),
            vhost('wild', ['*.example.com'], 'r'),
            vhost('other:80', ['other:80'], 'r'),
          ],
          ['r'],
        ),
      )
      await d.quiet(VHDS, 150, 'a virtual host nobody asked for is not sent')
      // the host appears: the alias that was not found resolves now
      cache.setSnapshot(
        'n1',
        snapshot(
          [
            vhost(
              'reviews.default.svc.cluster.local:9080',
              ['reviews.default.svc.cluster.local:9080', 'reviews:9080'],
              'r',
            ),
            vhost('wild', ['*.example.com'], 'r'),
            vhost('nowhere.default.svc.cluster.local:80', ['nowhere:80'], 'r'),
          ],
          ['r'],
        ),
      )
      const r4 = await d.next(VHDS)
      assert.deepEqual(summary(r4), {
        resources: [{ name: 'outbound/nowhere.default.svc.cluster.local:80', aliases: ['outbound/nowhere:80'] }],
        removed: [],
      })
      d.ack(r4)
      // the wildcard host goes: the alias is answered as removed, and so is the virtual host the client holds
      cache.setSnapshot(
        'n1',
        snapshot(
          [
            vhost(
              'reviews.default.svc.cluster.local:9080',
              ['reviews.default.svc.cluster.local:9080', 'reviews:9080'],
              'r',
            ),
            vhost('nowhere.default.svc.cluster.local:80', ['nowhere:80'], 'r'),
          ],
          ['r'],
        ),
      )
      const r5 = await d.next(VHDS)
      assert.deepEqual(summary(r5), { resources: [], removed: ['outbound/api.example.com', 'outbound/wild'] })
      d.ack(r5)
    } finally {
      d.close()
    }
  })

  test('a virtual host naming a new cluster waits until the cluster and its endpoints are ACKed', async () => {
    cache.setSnapshot('n2', snapshot([vhost('a:80', ['a:80'], 'a')], ['a']))
    const d = deltaDriver(port, 'n2')
    try {
      d.subscribe(CDS, ['*'])
      d.ack(await d.next(CDS))
      d.subscribe(EDS, ['a'])
      d.ack(await d.next(EDS))
      d.subscribe(VHDS, ['outbound/a:80'])
      d.ack(await d.next(VHDS))
      cache.setSnapshot('n2', snapshot([vhost('a:80', ['a:80'], 'b')], ['a', 'b']))
      const cds = await d.next(CDS)
      assert.deepEqual(
        cds.resources.map((r) => r.name),
        ['b'],
      )
      await d.quiet(VHDS, 150, 'the virtual host waits for cluster b')
      d.ack(cds)
      d.subscribe(EDS, ['a', 'b'])
      await d.quiet(VHDS, 100, 'the virtual host waits for the endpoints of b')
      d.ack(await d.next(EDS))
      const v = await d.next(VHDS)
      assert.deepEqual(summary(v), { resources: [{ name: 'outbound/a:80', aliases: [] }], removed: [] })
    } finally {
      d.close()
    }
  })
})

describe('resolveAlias', () => {
  const items = makeSnapshot({
    [VHDS]: [
      vhost('exact', ['api.example.com'], 'x'),
      vhost('suffix', ['*.example.com'], 'x'),
      vhost('longer-suffix', ['*.eu.example.com'], 'x'),
      vhost('prefix', ['api.*'], 'x'),
      vhost('any', ['*'], 'x'),
    ],
  }).resources.get(VHDS)!.items
  const cached = new Map([...items].map(([n, r]) => [n, { name: n, resource: r, hash: '', any: {} }])) as never
  test("Envoy's order: exact, longest suffix wildcard, prefix wildcard, then *; case does not matter", () => {
    assert.equal(resolveAlias(cached, 'outbound/API.example.com'), 'outbound/exact')
    assert.equal(resolveAlias(cached, 'outbound/web.eu.example.com'), 'outbound/longer-suffix')
    assert.equal(resolveAlias(cached, 'outbound/web.example.com'), 'outbound/suffix')
    assert.equal(resolveAlias(cached, 'outbound/api.other.org'), 'outbound/prefix')
    assert.equal(resolveAlias(cached, 'outbound/elsewhere'), 'outbound/any')
    assert.equal(resolveAlias(cached, 'inbound/api.example.com'), undefined, 'another route configuration')
    assert.equal(resolveAlias(cached, 'outbound/'), undefined)
    assert.equal(resolveAlias(cached, 'noslash'), undefined)
  })
})
