import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Registry } from '../registry/registry.js'
import { loadAssignment } from './clusters.js'
import {
  applyLocality,
  type EnvoyLocality,
  type LocalityPlan,
  type LocalitySetting,
  localityMatches,
  localitySetting,
  withTopologyLabels,
} from './locality.js'
import { manifests, sidecar } from './testdata/bookinfo.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { BatchTranslator, type TranslateNode, translate, translateResources } from './translate.js'
import { type Json, locality } from './util.js'

// === the rewrite on its own (Istio's examples) ===

interface Ep {
  address: string
  locality: string
  labels?: Record<string, string>
  weight?: number
}

function cla(eps: Ep[]): Json {
  return loadAssignment(
    'c',
    eps.map((e) => ({ address: e.address, port: 80, locality: e.locality, weight: e.weight ?? 1 })),
  )
}

function plan(setting: LocalitySetting, eps: Ep[], failover = true): LocalityPlan {
  const labels = new Map<string, Record<string, string>>()
  for (const e of eps) labels.set(`${e.address}:80`, withTopologyLabels(e.labels ?? {}, locality(e.locality)))
  return { cluster: 'c', setting, failover, labels }
}

function proxyAt(where: string, labels: Record<string, string> = {}) {
  const l: EnvoyLocality = locality(where)
  return { locality: l, labels: withTopologyLabels(labels, l) }
}

/** `address → priority` of an assignment (priority 0 is written as no field). */
function priorities(out: Json): Record<string, number> {
  const r: Record<string, number> = {}
  for (const g of out.endpoints as Json[]) {
    for (const e of g.lb_endpoints as Json[]) {
      const sa = ((e.endpoint as Json).address as Json).socket_address as Json
      r[sa.address as string] = (g.priority as number | undefined) ?? 0
    }
  }
  return r
}

/** `region/zone[/subzone] → [load_balancing_weight, endpoints]` of an assignment. */
function weights(out: Json, subzone = false): Record<string, [number, number]> {
  const r: Record<string, [number, number]> = {}
  for (const g of out.endpoints as Json[]) {
    const l = g.locality as EnvoyLocality
    const key = subzone ? `${l.region}/${l.zone}/${l.sub_zone}` : `${l.region}/${l.zone}`
    r[key] = [g.load_balancing_weight as number, (g.lb_endpoints as Json[]).length]
  }
  return r
}

describe('locality failover priorities', () => {
  const eps: Ep[] = [
    { address: '10.0.0.1', locality: 'region1/zone1/sub1' },
    { address: '10.0.0.2', locality: 'region1/zone1/sub2' },
    { address: '10.0.0.3', locality: 'region1/zone2' },
    { address: '10.0.0.4', locality: 'region2/zone3' },
    { address: '10.0.0.5', locality: 'region3/zone4' },
  ]
  const cases: [string, LocalitySetting, string, Record<string, number>][] = [
    [
      'default: subzone, zone, region, anything else',
      { enabled: true },
      'region1/zone1/sub1',
      { '10.0.0.1': 0, '10.0.0.2': 1, '10.0.0.3': 2, '10.0.0.4': 3, '10.0.0.5': 3 },
    ],
    [
      'failover region1 → region2: region2 before every other region',
      { failover: [{ from: 'region1', to: 'region2' }] },
      'region1/zone1/sub1',
      { '10.0.0.1': 0, '10.0.0.2': 1, '10.0.0.3': 2, '10.0.0.4': 3, '10.0.0.5': 4 },
    ],
    [
      'failover region1 → region3 (Istio task): region3 before region2',
      { failover: [{ from: 'region1', to: 'region3' }] },
      'region1/zone1/sub1',
      { '10.0.0.1': 0, '10.0.0.2': 1, '10.0.0.3': 2, '10.0.0.4': 4, '10.0.0.5': 3 },
    ],
    [
      'a failover entry for another region changes nothing here; priorities stay gapless',
      { failover: [{ from: 'region2', to: 'region3' }] },
      'region3/zone4',
      { '10.0.0.1': 1, '10.0.0.2': 1, '10.0.0.3': 1, '10.0.0.4': 1, '10.0.0.5': 0 },
    ],
    [
      'a proxy without a locality: only endpoints without one are local',
      { enabled: true },
      '',
      { '10.0.0.1': 0, '10.0.0.2': 0, '10.0.0.3': 0, '10.0.0.4': 0, '10.0.0.5': 0 },
    ],
  ]
  for (const [name, setting, where, expected] of cases) {
    it(name, () => {
      assert.deepEqual(priorities(applyLocality(cla(eps), plan(setting, eps), proxyAt(where))), expected)
    })
  }

  it('without outlier detection the assignment is left as it is', () => {
    const before = cla(eps)
    const out = applyLocality(
      before,
      plan({ failover: [{ from: 'region1', to: 'region2' }] }, eps, false),
      proxyAt('region1/zone1'),
    )
    assert.deepEqual(out, before)
  })
})

describe('failoverPriority', () => {
  const net = 'topology.istio.io/network'
  // Istio's reference example: network, then region, then zone, then subzone
  const topology = [net, 'topology.kubernetes.io/region', 'topology.kubernetes.io/zone', 'topology.istio.io/subzone']
  const eps: Ep[] = [
    { address: '10.0.0.1', locality: 'region1/zone1/sub1', labels: { [net]: 'n1' } },
    { address: '10.0.0.2', locality: 'region1/zone1/sub2', labels: { [net]: 'n1' } },
    { address: '10.0.0.3', locality: 'region1/zone2/sub1', labels: { [net]: 'n1' } },
    { address: '10.0.0.4', locality: 'region2/zone3/sub1', labels: { [net]: 'n1' } },
    { address: '10.0.0.5', locality: 'region1/zone1/sub1', labels: { [net]: 'n2' } },
  ]
  const cases: [string, string[], string, Record<string, string>, Record<string, number>][] = [
    [
      'topology labels: same network+region+zone+subzone, then fewer, then another network',
      topology,
      'region1/zone1/sub1',
      { [net]: 'n1' },
      { '10.0.0.1': 0, '10.0.0.2': 1, '10.0.0.3': 2, '10.0.0.4': 3, '10.0.0.5': 4 },
    ],
    [
      'a label=value entry compares with the value, not the proxy’s',
      [`${net}=n2`, 'topology.kubernetes.io/region'],
      'region1/zone1/sub1',
      { [net]: 'n1' },
      { '10.0.0.1': 1, '10.0.0.2': 1, '10.0.0.3': 1, '10.0.0.4': 1, '10.0.0.5': 0 },
    ],
    [
      'no endpoint has the proxy’s label value: one priority, renumbered to 0',
      ['version'],
      'region9',
      { version: 'v1' },
      { '10.0.0.1': 0, '10.0.0.2': 0, '10.0.0.3': 0, '10.0.0.4': 0, '10.0.0.5': 0 },
    ],
  ]
  for (const [name, labels, where, proxyLabels, expected] of cases) {
    it(name, () => {
      const out = applyLocality(cla(eps), plan({ failoverPriority: labels }, eps), proxyAt(where, proxyLabels))
      assert.deepEqual(priorities(out), expected)
    })
  }

  it('splits a locality across priorities, each part weighted by its own endpoints', () => {
    const mixed: Ep[] = [
      { address: '10.0.0.1', locality: 'r1/z1', labels: { env: 'prod' }, weight: 3 },
      { address: '10.0.0.2', locality: 'r1/z1', labels: { env: 'test' }, weight: 2 },
      { address: '10.0.0.3', locality: 'r1/z1', labels: { env: 'prod' }, weight: 1 },
    ]
    const out = applyLocality(cla(mixed), plan({ failoverPriority: ['env'] }, mixed), proxyAt('r1/z1', { env: 'prod' }))
    const groups = (out.endpoints as Json[]).map((g) => [g.priority ?? 0, g.load_balancing_weight])
    assert.deepEqual(groups, [
      [0, 4],
      [1, 2],
    ])
  })

  it('with failover too: label priority × 5 + locality priority, renumbered', () => {
    const two: Ep[] = [
      { address: '10.0.0.1', locality: 'r1/z1', labels: { env: 'prod' } },
      { address: '10.0.0.2', locality: 'r2/z1', labels: { env: 'prod' } },
      { address: '10.0.0.3', locality: 'r3/z1', labels: { env: 'prod' } },
      { address: '10.0.0.4', locality: 'r1/z1', labels: { env: 'test' } },
    ]
    const s: LocalitySetting = { failoverPriority: ['env'], failover: [{ from: 'r1', to: 'r3' }] }
    const out = applyLocality(cla(two), plan(s, two), proxyAt('r1/z1', { env: 'prod' }))
    assert.deepEqual(priorities(out), { '10.0.0.1': 0, '10.0.0.3': 1, '10.0.0.2': 2, '10.0.0.4': 3 })
  })
})

describe('distribute', () => {
  const eps: Ep[] = [
    { address: '10.0.1.1', locality: 'us-west/zone1/a' },
    { address: '10.0.1.2', locality: 'us-west/zone1/b' },
    { address: '10.0.2.1', locality: 'us-west/zone2/a' },
    { address: '10.0.3.1', locality: 'us-east/zone3/a' },
  ]
  // Istio's reference example
  const setting: LocalitySetting = {
    distribute: [
      { from: 'us-west/zone1/*', to: { 'us-west/zone1/*': 80, 'us-west/zone2/*': 20 } },
      { from: 'us-west/zone2/*', to: { 'us-west/zone1/*': 20, 'us-west/zone2/*': 80 } },
    ],
  }
  const cases: [string, string, Record<string, [number, number]>][] = [
    [
      'from zone1: 80 split over zone1’s two subzones, 20 to zone2, nothing elsewhere',
      'us-west/zone1/a',
      { 'us-west/zone1/a': [40, 1], 'us-west/zone1/b': [40, 1], 'us-west/zone2/a': [20, 1], 'us-east/zone3/a': [1, 0] },
    ],
    [
      'from zone2: the other way round',
      'us-west/zone2/a',
      { 'us-west/zone1/a': [10, 1], 'us-west/zone1/b': [10, 1], 'us-west/zone2/a': [80, 1], 'us-east/zone3/a': [1, 0] },
    ],
    [
      'from a locality no entry matches: as it was',
      'us-east/zone3/a',
      { 'us-west/zone1/a': [1, 1], 'us-west/zone1/b': [1, 1], 'us-west/zone2/a': [1, 1], 'us-east/zone3/a': [1, 1] },
    ],
  ]
  for (const [name, where, expected] of cases) {
    it(name, () => {
      assert.deepEqual(weights(applyLocality(cla(eps), plan(setting, eps, false), proxyAt(where)), true), expected)
    })
  }

  it('a wildcard destination is split by the localities’ own weights, rounded up', () => {
    const w: Ep[] = [
      { address: '10.0.1.1', locality: 'r1/z1', weight: 2 },
      { address: '10.0.2.1', locality: 'r1/z2', weight: 1 },
    ]
    const out = applyLocality(cla(w), plan({ distribute: [{ from: '*', to: { 'r1/*': 100 } }] }, w), proxyAt('r9'))
    assert.deepEqual(weights(out), { 'r1/z1': [67, 1], 'r1/z2': [34, 1] })
  })

  it('Istio’s locality match: * anywhere, a missing zone or subzone matches any', () => {
    const l = locality('r1/z1/s1')
    for (const rule of ['*', 'r1', 'r1/*', 'r1/z1', 'r1/z1/*', 'r1/z1/s1']) assert.ok(localityMatches(l, rule), rule)
    for (const rule of ['r2', 'r1/z2', 'r1/z1/s2', 'r2/*']) assert.ok(!localityMatches(l, rule), rule)
  })
})

describe('which setting applies', () => {
  it('the DestinationRule’s over the mesh’s; enabled: false turns it off at either level', () => {
    const mesh: LocalitySetting = { enabled: true }
    const dr: LocalitySetting = { failover: [{ from: 'a', to: 'b' }] }
    assert.equal(localitySetting(mesh, undefined), mesh)
    assert.equal(localitySetting(mesh, dr), dr)
    assert.equal(localitySetting(mesh, { enabled: false }), null)
    assert.equal(localitySetting({ enabled: false }, undefined), null)
    assert.equal(localitySetting({ enabled: false }, dr), dr)
    assert.equal(localitySetting(null, undefined), null)
  })
})

// === through the translator ===

const RESOURCES = (policy: string) =>
  manifests(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo}
spec:
  hosts: [echo.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  location: MESH_INTERNAL
  endpoints:
  - {address: 10.1.1.1, locality: region1/zone1, labels: {app: echo, version: v1}}
  - {address: 10.1.2.1, locality: region1/zone2, labels: {app: echo, version: v2}}
  - {address: 10.2.1.1, locality: region2/zone1, labels: {app: echo, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo.example.com
  trafficPolicy:
${policy
  .trim()
  .split('\n')
  .map((l) => `    ${l}`)
  .join('\n')}
`)

const CLUSTER = 'outbound|80||echo.example.com'

function nodeAt(where: string | undefined, name = 'client', labels: Record<string, string> = {}): TranslateNode {
  const n = sidecar(name, 'v1', '10.9.9.9', { labels: { app: name, version: 'v1', ...labels } })
  return where === undefined ? n : { ...n, locality: locality(where) }
}

function input(policy: string, meshConfig?: { localityLbSetting?: LocalitySetting }) {
  const resources = RESOURCES(policy)
  return { resources, services: Registry.fromResources(resources).services(), ...(meshConfig ? { meshConfig } : {}) }
}

function edsOf(r: { endpoints: Json[] }): Json {
  const e = r.endpoints.find((x) => x.cluster_name === CLUSTER)
  assert.ok(e, 'no assignment')
  return e
}

const clusterOf = (r: { clusters: Json[] }) => r.clusters.find((c) => c.name === CLUSTER)!

describe('translator', () => {
  const OD = 'outlierDetection: {consecutive5xxErrors: 1}'

  it('failover: locality_weighted_lb_config on the cluster, priorities per proxy locality', () => {
    const inp = input(`${OD}\nloadBalancer: {localityLbSetting: {failover: [{from: region1, to: region2}]}}`)
    const r = translateResources(inp, nodeAt('region1/zone1'))
    assert.deepEqual(clusterOf(r).common_lb_config, { locality_weighted_lb_config: {} })
    assert.deepEqual(priorities(edsOf(r)), { '10.1.1.1': 0, '10.1.2.1': 1, '10.2.1.1': 2 })
    const far = translateResources(inp, nodeAt('region2/zone1'))
    assert.deepEqual(priorities(edsOf(far)), { '10.1.1.1': 1, '10.1.2.1': 1, '10.2.1.1': 0 })
  })

  it('the mesh default (enabled) fails over by locality with outlier detection, without the locality weights', () => {
    const r = translateResources(input(OD), nodeAt('region1/zone2'))
    assert.equal(clusterOf(r).common_lb_config, undefined)
    assert.deepEqual(priorities(edsOf(r)), { '10.1.1.1': 1, '10.1.2.1': 0, '10.2.1.1': 2 })
  })

  it('off: without outlier detection, with enabled: false, or with the mesh default turned off', () => {
    const flat = { '10.1.1.1': 0, '10.1.2.1': 0, '10.2.1.1': 0 }
    const node = nodeAt('region1/zone2')
    const noOutlier = translateResources(
      input('loadBalancer: {localityLbSetting: {failover: [{from: region1, to: region2}]}}'),
      node,
    )
    assert.equal(clusterOf(noOutlier).common_lb_config, undefined)
    assert.deepEqual(priorities(edsOf(noOutlier)), flat)
    const disabled = translateResources(input(`${OD}\nloadBalancer: {localityLbSetting: {enabled: false}}`), node)
    assert.deepEqual(priorities(edsOf(disabled)), flat)
    const meshOff = translateResources(input(OD, { localityLbSetting: { enabled: false } }), node)
    assert.deepEqual(priorities(edsOf(meshOff)), flat)
  })

  it('distribute applies without outlier detection: weights for the proxy’s locality', () => {
    const inp = input(
      'loadBalancer:\n  localityLbSetting:\n    distribute:\n' +
        '    - {from: region1/zone1/*, to: {"region1/zone1/*": 80, "region2/*": 20}}',
    )
    const r = translateResources(inp, nodeAt('region1/zone1/a'))
    assert.deepEqual(clusterOf(r).common_lb_config, { locality_weighted_lb_config: {} })
    assert.deepEqual(weights(edsOf(r)), { 'region1/zone1': [80, 1], 'region1/zone2': [1, 0], 'region2/zone1': [20, 1] })
  })

  it('STRICT_DNS clusters keep their shared assignment and get no locality_weighted_lb_config', () => {
    const resources = manifests(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [ext.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
  endpoints: [{address: a.example.com, locality: region1/zone1}, {address: b.example.com, locality: region2/zone1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ext}
spec:
  host: ext.example.com
  trafficPolicy:
    outlierDetection: {consecutive5xxErrors: 1}
    loadBalancer: {localityLbSetting: {failover: [{from: region1, to: region2}]}}
`)
    const inp = { resources, services: Registry.fromResources(resources).services() }
    const near = translateResources(inp, nodeAt('region1/zone1'))
    const far = translateResources(inp, nodeAt('region2/zone1'))
    const c = near.clusters.find((x) => x.name === 'outbound|80||ext.example.com')!
    assert.equal(c.type, 'STRICT_DNS')
    assert.equal(c.common_lb_config, undefined)
    assert.deepEqual(
      c,
      far.clusters.find((x) => x.name === 'outbound|80||ext.example.com'),
    )
  })

  it('a proxy’s topology labels are its locality, before node.locality', () => {
    const inp = input(OD)
    const node = nodeAt('region2/zone1', 'client', {
      'topology.kubernetes.io/region': 'region1',
      'topology.kubernetes.io/zone': 'zone2',
    })
    assert.deepEqual(priorities(edsOf(translateResources(inp, node))), { '10.1.1.1': 1, '10.1.2.1': 0, '10.2.1.1': 2 })
  })

  it('failoverPriority on an application label: proxies of one locality differ by their label', () => {
    const inp = input(`${OD}\nloadBalancer: {localityLbSetting: {failoverPriority: [version]}}`)
    const batch = new BatchTranslator(inp)
    const v1 = nodeAt('region1/zone1', 'a', { version: 'v1' })
    const v2 = nodeAt('region1/zone1', 'b', { version: 'v2' })
    assert.deepEqual(priorities(edsOf(translateResources(inp, v1))), { '10.1.1.1': 0, '10.1.2.1': 1, '10.2.1.1': 0 })
    assert.deepEqual(priorities(edsOf(translateResources(inp, v2))), { '10.1.1.1': 1, '10.1.2.1': 0, '10.2.1.1': 1 })
    for (const n of [v1, v2]) {
      const got = batch.translate(n).resources.get(TYPE_URL.endpoint)!.items.get(CLUSTER)
      assert.deepEqual(got, edsOf(translateResources(inp, n)), n.id)
    }
  })

  it('the batch translator gives each proxy what translate gives it, sharing EDS within a locality group', () => {
    const inp = input(`${OD}\nloadBalancer: {localityLbSetting: {failover: [{from: region1, to: region2}]}}`)
    const batch = new BatchTranslator(inp)
    const nodes = [
      nodeAt('region1/zone1', 'a'),
      nodeAt('region1/zone1', 'b'),
      nodeAt('region2/zone1', 'c'),
      nodeAt(undefined, 'd'),
    ]
    const snaps = nodes.map((n) => batch.translate(n))
    nodes.forEach((n, i) => {
      const want = translate(inp, n)
      for (const [type, { items }] of want.resources) {
        assert.deepEqual(
          Object.fromEntries(snaps[i]!.resources.get(type)!.items),
          Object.fromEntries(items),
          `${n.id} ${type}`,
        )
      }
    })
    const eds = (i: number) =>
      snaps[i]!.resources.get('type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment')!
    assert.equal(eds(0).items.get(CLUSTER), eds(1).items.get(CLUSTER), 'one object for one locality group')
    assert.equal(eds(0).version, eds(1).version)
    assert.notEqual(eds(0).version, eds(2).version)
    assert.notEqual(eds(2).version, eds(3).version)
  })
})
