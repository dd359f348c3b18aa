import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { TYPE_URL } from '../../xds/snapshot.js'
import { PRODUCTPAGE, bookinfoRegistry, INGRESS, samples } from './testdata/bookinfo.js'
import { BatchTranslator, translate, type TranslateInput } from './translate.js'
import type { Json } from './util.js'
import { inlineVirtualHosts } from './vhds.js'

const ON_DEMAND = { ...PRODUCTPAGE, metadata: { ...PRODUCTPAGE.metadata, LOOM_ON_DEMAND: 'true' } }

function input(...files: string[]): TranslateInput {
  return { resources: samples(...files), services: bookinfoRegistry().services() }
}

describe('VHDS layout (LOOM_ON_DEMAND proxies)', () => {
  it('the outbound route configuration names vhds, and each of its virtual hosts is a VirtualHost resource', () => {
    const i = input('virtual-service-reviews-80-20.yaml', 'destination-rule-all.yaml')
    const full = translate(i, PRODUCTPAGE)
    const split = translate(i, ON_DEMAND)
    const before = full.resources.get(TYPE_URL.route)!.items.get('outbound')!
    const after = split.resources.get(TYPE_URL.route)!.items.get('outbound')!
    assert.equal(after.virtual_hosts, undefined)
    assert.deepEqual(after.vhds, { config_source: { ads: {} } })
    const { virtual_hosts, ...rest } = before
    assert.deepEqual({ ...after, vhds: undefined }, { ...rest, vhds: undefined })
    const vhosts = split.resources.get(TYPE_URL.virtualHost)!.items
    const expected = (virtual_hosts as Json[]).map((v) => [`outbound/${v.name}`, { ...v, name: `outbound/${v.name}` }])
    assert.ok(expected.length > 3)
    assert.deepEqual([...vhosts], expected)
    assert.ok(vhosts.has('outbound/reviews.default.svc.cluster.local:9080'))
    // everything else is as for any proxy; the route type's version differs (its content does)
    for (const t of [TYPE_URL.listener, TYPE_URL.cluster, TYPE_URL.endpoint]) {
      assert.deepEqual(split.resources.get(t), full.resources.get(t), t)
    }
    assert.notEqual(split.resources.get(TYPE_URL.route)!.version, full.resources.get(TYPE_URL.route)!.version)
  })

  it('a VirtualService change changes one VirtualHost resource only', () => {
    const a = translate(input('virtual-service-all-v1.yaml'), ON_DEMAND).resources.get(TYPE_URL.virtualHost)!
    const b = translate(
      input('virtual-service-all-v1.yaml', 'virtual-service-reviews-v3.yaml'),
      ON_DEMAND,
    ).resources.get(TYPE_URL.virtualHost)!
    const changed = [...a.items.keys()].filter((n) => JSON.stringify(a.items.get(n)) !== JSON.stringify(b.items.get(n)))
    assert.deepEqual(changed, ['outbound/reviews.default.svc.cluster.local:9080'])
    assert.notEqual(a.version, b.version)
  })

  it('BatchTranslator gives the same resources, sharing the VirtualHost objects between alike proxies', () => {
    const i = input('virtual-service-reviews-80-20.yaml', 'destination-rule-all.yaml')
    const batch = new BatchTranslator(i)
    const one = batch.translate(ON_DEMAND)
    const items = (s: typeof one) => [...s.resources].map(([t, v]) => [t, v.items])
    assert.deepEqual(items(one), items(translate(i, ON_DEMAND)))
    const other = batch.translate({ ...ON_DEMAND, id: 'sidecar~10.0.0.11~productpage-2.default', ip: '10.0.0.11' })
    const vh = (s: typeof one) =>
      s.resources.get(TYPE_URL.virtualHost)!.items.get('outbound/reviews.default.svc.cluster.local:9080')
    assert.equal(vh(one), vh(other))
  })

  it('other proxies are not touched: without the metadata, a gateway, or with LOOM_ON_DEMAND "false"', () => {
    const i = input('bookinfo-gateway.yaml')
    assert.equal(translate(i, PRODUCTPAGE).resources.has(TYPE_URL.virtualHost), false)
    const off = { ...ON_DEMAND, metadata: { ...ON_DEMAND.metadata, LOOM_ON_DEMAND: 'false' } }
    assert.equal(translate(i, off).resources.has(TYPE_URL.virtualHost), false)
    const gw = { ...INGRESS, metadata: { ...INGRESS.metadata, LOOM_ON_DEMAND: 'true' } }
    assert.deepEqual(translate(i, gw), translate(i, INGRESS))
  })
})

describe('inlineVirtualHosts', () => {
  it('puts the VirtualHost resources back into the route configuration that names vhds', () => {
    const i = input('virtual-service-reviews-80-20.yaml')
    const full = translate(i, PRODUCTPAGE).resources.get(TYPE_URL.route)!.items
    const split = translate(i, ON_DEMAND).resources
    const back = inlineVirtualHosts(
      [...split.get(TYPE_URL.route)!.items.values()],
      [...split.get(TYPE_URL.virtualHost)!.items.values()],
    )
    assert.deepEqual(back, [...full.values()])
  })
})
