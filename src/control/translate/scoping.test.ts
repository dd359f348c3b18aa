/**
 * Scoping (`TranslateNode.scopeHosts`): a sidecar's outbound HTTP services are only the scope's hosts and the
 * destinations of their VirtualServices; TCP ports, the inbound part and proxies under a Sidecar with egress
 * listeners are unchanged; the batch translator gives what `translate` gives, sharing alike scopes.
 */
import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Registry } from '../registry/registry.js'
import { manifests } from './testdata/bookinfo.js'
import { OUTBOUND_LISTENER } from './listeners.js'
import { BatchTranslator, type TranslateInput, type TranslateNode, translateResources, translate } from './translate.js'
import { canonicalJson, type Json } from './util.js'

const fqdn = (app: string) => `${app}.default.svc.cluster.local`

function service(app: string, tcp = false): Record<string, unknown> {
  const ports: Record<string, unknown>[] = [{ number: 80, name: 'http', protocol: 'HTTP' }]
  if (tcp) ports.push({ number: 3306, name: 'tcp', protocol: 'TCP' })
  return {
    apiVersion: 'networking.istio.io/v1',
    kind: 'ServiceEntry',
    metadata: { name: app, namespace: 'default' },
    spec: {
      hosts: [fqdn(app)],
      location: 'MESH_INTERNAL',
      resolution: 'STATIC',
      ports,
      endpoints: [{ address: '10.1.0.1' }],
    },
  }
}

function inputOf(docs: Record<string, unknown>[]): TranslateInput {
  const resources = manifests(JSON.stringify({ apiVersion: 'v1', kind: 'List', items: docs }))
  return { resources, services: Registry.fromResources(resources).services() }
}

function sidecar(ip: string, scopeHosts?: ReadonlySet<string>): TranslateNode {
  return {
    id: `sidecar~${ip}~client.default~default.svc.cluster.local`,
    kind: 'sidecar',
    namespace: 'default',
    labels: { app: 'client' },
    serviceAccount: 'client',
    ip,
    generator: 'envoy',
    ...(scopeHosts === undefined ? {} : { scopeHosts }),
  }
}

const outbound = (items: Json[], field: string) =>
  items.map((x) => x[field] as string).filter((n) => n.startsWith('outbound|'))
function vhosts(routes: Json[]): string[] {
  const rc = routes.find((r) => r.name === 'outbound')
  return ((rc?.virtual_hosts ?? []) as Json[]).map((v) => v.name as string).filter((n) => n !== 'allow_any')
}

const routeTo = {
  apiVersion: 'networking.istio.io/v1',
  kind: 'VirtualService',
  metadata: { name: 'a', namespace: 'default' },
  spec: { hosts: ['a'], http: [{ route: [{ destination: { host: 'b' } }] }] },
}

describe('scoping', () => {
  const docs = [service('a'), service('b'), service('c'), service('d', true), routeTo]
  const input = inputOf(docs)

  it('gives only the scope and the destinations of its VirtualServices; TCP ports stay', () => {
    const r = translateResources(input, sidecar('10.0.0.1', new Set([fqdn('a')])))
    assert.deepEqual(outbound(r.clusters, 'name'), [
      'outbound|3306||d.default.svc.cluster.local',
      'outbound|80||a.default.svc.cluster.local',
      'outbound|80||b.default.svc.cluster.local',
    ])
    assert.deepEqual(outbound(r.endpoints, 'cluster_name'), outbound(r.clusters, 'name'))
    assert.deepEqual(vhosts(r.routes), ['a.default.svc.cluster.local:80'])
    const none = translateResources(input, sidecar('10.0.0.1', new Set()))
    assert.deepEqual(outbound(none.clusters, 'name'), ['outbound|3306||d.default.svc.cluster.local'])
    assert.deepEqual(vhosts(none.routes), [])
  })

  it('without a scope, everything visible (as before)', () => {
    const r = translateResources(input, sidecar('10.0.0.1'))
    assert.equal(outbound(r.clusters, 'name').length, 5)
    assert.equal(vhosts(r.routes).length, 4)
  })

  it('a Sidecar with egress listeners wins over the scope', () => {
    const withSidecar = inputOf([
      ...docs,
      {
        apiVersion: 'networking.istio.io/v1',
        kind: 'Sidecar',
        metadata: { name: 'default', namespace: 'default' },
        spec: { egress: [{ hosts: ['./c.default.svc.cluster.local', './d.default.svc.cluster.local'] }] },
      },
    ])
    const r = translateResources(withSidecar, sidecar('10.0.0.1', new Set([fqdn('a')])))
    assert.deepEqual(vhosts(r.routes), ['c.default.svc.cluster.local:80', 'd.default.svc.cluster.local:80'])
  })

  it('the batch translator: what translate gives; alike scopes share, a scope change re-translates', () => {
    const batch = new BatchTranslator(input)
    const one = sidecar('10.0.0.1', new Set([fqdn('c')]))
    const two = sidecar('10.0.0.2', new Set([fqdn('c')]))
    const s1 = batch.translate(one)
    const s2 = batch.translate(two)
    for (const [n, s] of [
      [one, s1],
      [two, s2],
    ] as const) {
      const e = translate(input, n)
      for (const [type, t] of e.resources)
        assert.equal(canonicalJson([...s.resources.get(type)!.items.values()]), canonicalJson([...t.items.values()]))
    }
    const clusters = (s: typeof s1) => s.resources.get('type.googleapis.com/envoy.config.cluster.v3.Cluster')!.items
    assert.equal(
      clusters(s1).get('outbound|80||c.default.svc.cluster.local'),
      clusters(s2).get('outbound|80||c.default.svc.cluster.local'),
    )
    assert.equal(batch.update(one), null, 'same scope: nothing to push')
    const wider = batch.update({ ...one, scopeHosts: new Set([fqdn('c'), fqdn('b')]) })
    assert.notEqual(wider, null)
    assert.ok(clusters(wider!).has('outbound|80||b.default.svc.cluster.local'))
    // a service outside every scope changes: the scoped proxies keep their snapshots
    const next = new BatchTranslator(
      inputOf([...docs.slice(0, 2), service('c'), { ...service('e') }, routeTo, service('d', true)]),
      batch,
    )
    assert.equal(next.update(two), null, 'a new service outside the scope')
  })

  it('proxies of different scopes share their outbound listeners, as what translate gives', () => {
    const batch = new BatchTranslator(input)
    const one = sidecar('10.0.0.1', new Set([fqdn('c')]))
    const two = sidecar('10.0.0.2', new Set([fqdn('b'), fqdn('d')]))
    const listener = (n: TranslateNode) =>
      batch
        .translate(n)
        .resources.get('type.googleapis.com/envoy.config.listener.v3.Listener')!
        .items.get(OUTBOUND_LISTENER)
    const [l1, l2] = [listener(one), listener(two)]
    assert.ok(l1 !== undefined)
    assert.equal(l1, l2, 'one object for both')
    for (const n of [one, two]) {
      const want = translate(input, n).resources.get('type.googleapis.com/envoy.config.listener.v3.Listener')!.items
      assert.equal(canonicalJson(listener(n)), canonicalJson(want.get(OUTBOUND_LISTENER)))
    }
  })
})
