import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import type { Cluster, LocalityLbEndpoints } from '../../config/envoy.js'
import { UpstreamCluster } from './cluster.js'
import { effectiveLocalityWeights } from './locality.js'

function endpoint(address: string, extra: Record<string, unknown> = {}) {
  return { endpoint: { address: { socket_address: { address, port_value: 80 } } }, ...extra }
}

/** `n` endpoints 10.<octet>.0.1.. of which the first `unhealthy` are UNHEALTHY. */
function endpoints(octet: number, n: number, unhealthy = 0) {
  return Array.from({ length: n }, (_, i) =>
    endpoint(`10.${octet}.0.${i + 1}`, i < unhealthy ? { health_status: 'UNHEALTHY' } : {}),
  )
}

function cluster(endpoints: LocalityLbEndpoints[], extra: Partial<Cluster> = {}): UpstreamCluster {
  return new UpstreamCluster({
    name: 'c',
    load_assignment: { cluster_name: 'c', endpoints },
    common_lb_config: { locality_weighted_lb_config: {} },
    ...extra,
  })
}

/** Picks per zone (the host's locality zone). */
function byZone(c: UpstreamCluster, n: number, hash?: (i: number) => number): Map<string, number> {
  const out = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const h = c.chooseHost(hash?.(i))
    const key = h === null ? 'none' : (h.locality.zone ?? '')
    out.set(key, (out.get(key) ?? 0) + 1)
  }
  return out
}

describe('effective locality weights', () => {
  // Envoy's table (locality weighted load balancing): X has weight 1, Y weight 2 and is fully available.
  const cases: [healthyX: number, percentX: number][] = [
    [100, 33],
    [70, 33],
    [69, 32],
    [50, 26],
    [25, 15],
    [0, 0],
  ]
  for (const [healthy, percent] of cases) {
    test(`X ${healthy}% healthy gets ${percent}% of the traffic`, () => {
      const [x, y] = effectiveLocalityWeights([
        { weight: 1, available: healthy, total: 100 },
        { weight: 2, available: 10, total: 10 },
      ])
      // the table is in whole percent (its 69% row truncated, the others rounded)
      const share = (100 * x!) / (x! + y!)
      assert.ok(Math.abs(share - percent) < 1, `${share}`)
    })
  }

  test('a locality without hosts or without a weight gets nothing', () => {
    assert.deepEqual(
      effectiveLocalityWeights([
        { weight: 5, available: 0, total: 0 },
        { weight: 0, available: 3, total: 3 },
      ]),
      [0, 0],
    )
  })
})

describe('locality-weighted load balancing', () => {
  test('localities share a priority level by their load_balancing_weight (80/20)', () => {
    const c = cluster([
      { locality: { region: 'r', zone: 'a' }, load_balancing_weight: 80, lb_endpoints: endpoints(1, 2) },
      { locality: { region: 'r', zone: 'b' }, load_balancing_weight: 20, lb_endpoints: endpoints(2, 3) },
    ])
    const seen = byZone(c, 1000)
    // the locality schedule is weighted round robin: exact up to the one pick in flight
    assert.ok(Math.abs(seen.get('a')! - 800) <= 1, JSON.stringify([...seen]))
    assert.ok(Math.abs(seen.get('b')! - 200) <= 1, JSON.stringify([...seen]))
  })

  test('without locality_weighted_lb_config the locality weights are ignored', () => {
    const c = cluster(
      [
        { locality: { zone: 'a' }, load_balancing_weight: 80, lb_endpoints: endpoints(1, 1) },
        { locality: { zone: 'b' }, load_balancing_weight: 20, lb_endpoints: endpoints(2, 3) },
      ],
      { common_lb_config: {} },
    )
    const seen = byZone(c, 400)
    assert.equal(seen.get('a'), 100)
    assert.equal(seen.get('b'), 300)
  })

  test('a partly unhealthy locality spills over to the others of its level', () => {
    // zone a: 10 hosts, 5 healthy: availability 1.4 × 0.5 = 0.7, so a gets 0.7 / 1.7 of the picks
    const c = cluster([
      { locality: { zone: 'a' }, load_balancing_weight: 1, lb_endpoints: endpoints(1, 10, 5) },
      { locality: { zone: 'b' }, load_balancing_weight: 1, lb_endpoints: endpoints(2, 2) },
    ])
    const seen = byZone(c, 1700)
    assert.ok(Math.abs(seen.get('a')! - 700) <= 1, JSON.stringify([...seen]))
    // the level as a whole is 7/12 healthy: alone, it keeps all the traffic
    assert.deepEqual(c.priorityLoad(), { healthy: [100], degraded: [0] })
  })

  test('a locality without a weight gets no traffic; with none weighted the level is balanced whole', () => {
    const some = cluster([
      { locality: { zone: 'a' }, lb_endpoints: endpoints(1, 2) },
      { locality: { zone: 'b' }, load_balancing_weight: 1, lb_endpoints: endpoints(2, 2) },
    ])
    assert.deepEqual([...byZone(some, 50)], [['b', 50]])
    const none = cluster([
      { locality: { zone: 'a' }, lb_endpoints: endpoints(1, 1) },
      { locality: { zone: 'b' }, lb_endpoints: endpoints(2, 1) },
    ])
    assert.deepEqual(Object.fromEntries(byZone(none, 50)), { a: 25, b: 25 })
  })

  test('priorities first: a level is left only as its availability drops, then localities within the next', () => {
    const c = cluster([
      { locality: { zone: 'a' }, load_balancing_weight: 1, priority: 0, lb_endpoints: endpoints(1, 1) },
      { locality: { zone: 'b' }, load_balancing_weight: 3, priority: 1, lb_endpoints: endpoints(2, 1) },
      { locality: { zone: 'c' }, load_balancing_weight: 1, priority: 1, lb_endpoints: endpoints(3, 1) },
    ])
    assert.deepEqual([...byZone(c, 20)], [['a', 20]])
    const a = c.hosts().find((h) => h.locality.zone === 'a')!
    a.ejected = true // what outlier detection does, then it tells the cluster
    c.hostHealthChanged()
    assert.deepEqual(c.priorityLoad(), { healthy: [0, 100], degraded: [0, 0] })
    const seen = byZone(c, 400)
    assert.equal(seen.get('a'), undefined)
    assert.ok(Math.abs(seen.get('b')! - 300) <= 1, JSON.stringify([...seen]))
    a.ejected = false
    c.hostHealthChanged()
    assert.deepEqual([...byZone(c, 20)], [['a', 20]])
  })

  test('an EDS update that changes only locality weights rebuilds the balancer', () => {
    const eds = (wa: number, wb: number): LocalityLbEndpoints[] => [
      { locality: { zone: 'a' }, load_balancing_weight: wa, lb_endpoints: endpoints(1, 1) },
      { locality: { zone: 'b' }, load_balancing_weight: wb, lb_endpoints: endpoints(2, 1) },
    ]
    const c = cluster(eds(1, 1))
    const hosts = c.hosts()
    c.updateFromAssignment({ cluster_name: 'c', endpoints: eds(9, 1) })
    assert.equal(c.hosts()[0], hosts[0], 'hosts keep their identity')
    const seen = byZone(c, 100)
    assert.ok(Math.abs(seen.get('a')! - 90) <= 1, JSON.stringify([...seen]))
  })

  test('RING_HASH draws the locality by the hash: a key sticks, the weights hold', () => {
    const c = cluster(
      [
        { locality: { zone: 'a' }, load_balancing_weight: 3, lb_endpoints: endpoints(1, 2) },
        { locality: { zone: 'b' }, load_balancing_weight: 1, lb_endpoints: endpoints(2, 2) },
      ],
      { lb_policy: 'RING_HASH' },
    )
    for (const key of [1, 77, 123456, 0xfffffff0]) {
      const first = c.chooseHost(key)!.key
      for (let i = 0; i < 5; i++) assert.equal(c.chooseHost(key)!.key, first)
    }
    // well-spread keys (a multiplicative hash of i) split 3:1 within a few percent
    const seen = byZone(c, 4000, (i) => Math.imul(i + 1, 0x9e3779b1) >>> 0)
    assert.ok(Math.abs(seen.get('a')! - 3000) < 160, JSON.stringify([...seen]))
  })
})
