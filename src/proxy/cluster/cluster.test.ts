import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Cluster, LocalityLbEndpoints } from '../../config/envoy.js'
import { UpstreamCluster } from './cluster.js'
import type { Host, HostPool, HostSpec } from './host.js'

const ext = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'
const extType = 'type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions' as const

function endpoint(address: string, port = 80, extra: Record<string, unknown> = {}) {
  return { endpoint: { address: { socket_address: { address, port_value: port } } }, ...extra }
}

function cluster(endpoints: LocalityLbEndpoints[], extra: Partial<Cluster> = {}): UpstreamCluster {
  return new UpstreamCluster({
    name: 'c',
    load_assignment: { cluster_name: 'c', endpoints },
    ...extra,
  })
}

function tally(c: UpstreamCluster, n: number, hash?: () => number): Map<string, number> {
  const out = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const h = c.chooseHost(hash?.())
    const key = h === null ? 'null' : h.key
    out.set(key, (out.get(key) ?? 0) + 1)
  }
  return out
}

function spec(address: string, extra: Partial<HostSpec> = {}): HostSpec {
  return { address, port: 80, ...extra }
}

test('defaults follow Envoy', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }])
  assert.equal(c.name, 'c')
  assert.equal(c.type, 'STATIC')
  assert.equal(c.lbPolicy, 'ROUND_ROBIN')
  assert.equal(c.connectTimeoutMs, 5000)
  assert.equal(c.http2, false)
  assert.deepEqual(c.http2Options, {})
  assert.equal(c.idleTimeoutMs, 3_600_000)
  assert.equal(c.maxRequestsPerConnection, 0)
  assert.equal(c.perConnectionBufferLimitBytes, 1024 * 1024)
  assert.equal(c.tls, null)
  const [h] = c.hosts()
  assert.equal(h!.key, '10.0.0.1:80')
  assert.equal(h!.hostname, '10.0.0.1')
  assert.equal(h!.weight, 1)
  assert.equal(h!.priority, 0)
  assert.equal(h!.healthStatus, 'UNKNOWN')
  assert.equal(h!.healthy, true)
  assert.equal(h!.pool, null)
})

test('protocol settings from the cluster and from HttpProtocolOptions', () => {
  const a = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }], {
    connect_timeout: '0.25s',
    http2_protocol_options: { max_concurrent_streams: 100, connection_keepalive: { interval: '30s', timeout: '5s' } },
    max_requests_per_connection: 7,
  })
  assert.equal(a.connectTimeoutMs, 250)
  assert.equal(a.http2, true)
  assert.deepEqual(a.http2Options, {
    maxConcurrentStreams: 100,
    connectionKeepalive: { interval: '30s', timeout: '5s' },
  })
  assert.equal(a.maxRequestsPerConnection, 7)

  const b = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }], {
    typed_extension_protocol_options: {
      [ext]: {
        '@type': extType,
        explicit_http_config: {
          http2_protocol_options: { initial_stream_window_size: 65536, initial_connection_window_size: 1048576 },
        },
        common_http_protocol_options: { idle_timeout: '30s', max_requests_per_connection: 1000 },
      },
    },
  })
  assert.equal(b.http2, true)
  assert.deepEqual(b.http2Options, { initialStreamWindowSize: 65536, initialConnectionWindowSize: 1048576 })
  assert.equal(b.idleTimeoutMs, 30_000)
  assert.equal(b.maxRequestsPerConnection, 1000)

  const h1 = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }], {
    typed_extension_protocol_options: {
      [ext]: { '@type': extType, explicit_http_config: { http_protocol_options: {} } },
    },
  })
  assert.equal(h1.http2, false)
})

test('endpoint fields become host fields', () => {
  const c = cluster([
    {
      locality: { region: 'eu', zone: 'eu-1a' },
      priority: 1,
      lb_endpoints: [
        endpoint('10.0.0.1', 8080, { load_balancing_weight: 5, health_status: 'DEGRADED' }),
        { endpoint: { address: { socket_address: { address: '::1', port_value: 81 } }, hostname: 'api.local' } },
      ],
    },
  ])
  const [a, b] = c.hosts()
  assert.equal(a!.port, 8080)
  assert.equal(a!.weight, 5)
  assert.equal(a!.priority, 1)
  assert.deepEqual(a!.locality, { region: 'eu', zone: 'eu-1a' })
  assert.equal(a!.healthStatus, 'DEGRADED')
  assert.equal(a!.healthy, true)
  assert.equal(b!.key, '[::1]:81')
  assert.equal(b!.hostname, 'api.local')
})

test('healthy: UNKNOWN, HEALTHY and DEGRADED are usable; UNHEALTHY, DRAINING and TIMEOUT are not', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }])
  const h = c.hosts()[0]!
  for (const s of ['UNKNOWN', 'HEALTHY', 'DEGRADED'] as const) {
    h.healthStatus = s
    assert.equal(h.healthy, true)
    assert.equal(c.chooseHost(undefined), h)
  }
  for (const s of ['UNHEALTHY', 'DRAINING', 'TIMEOUT'] as const) {
    h.healthStatus = s
    assert.equal(h.healthy, false)
    assert.equal(c.chooseHost(undefined), null)
  }
})

test('no hosts, or no healthy host: chooseHost returns null', () => {
  assert.equal(cluster([]).chooseHost(undefined), null)
  assert.equal(cluster([{ lb_endpoints: [] }]).chooseHost(123), null)
  const c = cluster([
    { lb_endpoints: [endpoint('10.0.0.1', 80, { health_status: 'UNHEALTHY' })] },
    { priority: 1, lb_endpoints: [endpoint('10.0.0.2', 80, { health_status: 'DRAINING' })] },
  ])
  assert.equal(c.chooseHost(undefined), null)
  assert.deepEqual(c.priorityLoad(), { healthy: [0, 0], degraded: [0, 0] })
})

test('priority failover: all of P0 unhealthy sends everything to P1', () => {
  const c = cluster([
    {
      lb_endpoints: [
        endpoint('10.0.0.1', 80, { health_status: 'UNHEALTHY' }),
        endpoint('10.0.0.2', 80, { health_status: 'TIMEOUT' }),
      ],
    },
    { priority: 1, lb_endpoints: [endpoint('10.0.1.1'), endpoint('10.0.1.2')] },
  ])
  const t = tally(c, 1000)
  assert.deepEqual([...t.keys()].sort(), ['10.0.1.1:80', '10.0.1.2:80'])
  assert.deepEqual(c.priorityLoad(), { healthy: [0, 100], degraded: [0, 0] })
})

test('priority spill-over with overprovisioning factor 1.4', () => {
  const p0 = Array.from({ length: 10 }, (_, i) => endpoint(`10.0.0.${i + 1}`))
  const c = cluster([{ lb_endpoints: p0 }, { priority: 1, lb_endpoints: [endpoint('10.0.1.1')] }])
  // 8 of 10 healthy: 1.4 * 80% >= 100%, P0 keeps everything.
  for (const h of c.hosts().slice(0, 2)) h.healthStatus = 'UNHEALTHY'
  assert.deepEqual(c.priorityLoad(), { healthy: [100, 0], degraded: [0, 0] })
  assert.equal(tally(c, 1000).get('10.0.1.1:80'), undefined)
  // 5 of 10 healthy: P0 gets 1.4 * 50 = 70%, P1 the other 30%.
  for (const h of c.hosts().slice(2, 5)) h.healthStatus = 'UNHEALTHY'
  const load = c.priorityLoad()
  assert.ok(Math.abs(load.healthy[0]! - 70) < 1e-9 && Math.abs(load.healthy[1]! - 30) < 1e-9)
  const n = 20_000
  const p1 = tally(c, n).get('10.0.1.1:80')! / n
  assert.ok(Math.abs(p1 - 0.3) < 0.02, `P1 share ${p1}`)
})

test('when the levels together fall short of 100%, their loads are scaled up', () => {
  const c = cluster([
    { lb_endpoints: [endpoint('10.0.0.1'), endpoint('10.0.0.2', 80, { health_status: 'UNHEALTHY' })] },
    {
      priority: 1,
      lb_endpoints: [
        endpoint('10.0.1.1'),
        ...[2, 3, 4].map((i) => endpoint(`10.0.1.${i}`, 80, { health_status: 'UNHEALTHY' })),
      ],
    },
  ])
  // P0: 1.4 * 50 = 70, P1: 1.4 * 25 = 35; total 105 -> capped at 100: P0 70, P1 30.
  const load = c.priorityLoad()
  assert.ok(Math.abs(load.healthy[0]! - 70) < 1e-9 && Math.abs(load.healthy[1]! - 30) < 1e-9)
  // Only P1 at 25%: 35 -> scaled to 100.
  c.hosts()[0]!.healthStatus = 'UNHEALTHY'
  assert.deepEqual(c.priorityLoad().healthy, [0, 100])
})

test('healthy hosts of any level come before degraded ones', () => {
  const c = cluster([
    { lb_endpoints: [endpoint('10.0.0.1', 80, { health_status: 'DEGRADED' })] },
    { priority: 1, lb_endpoints: [endpoint('10.0.1.1')] },
  ])
  assert.deepEqual(c.priorityLoad(), { healthy: [0, 100], degraded: [0, 0] })
  assert.equal(c.chooseHost(undefined)!.key, '10.0.1.1:80')
  c.hosts()[1]!.healthStatus = 'UNHEALTHY'
  assert.deepEqual(c.priorityLoad(), { healthy: [0, 0], degraded: [100, 0] })
  assert.equal(c.chooseHost(undefined)!.key, '10.0.0.1:80')
})

test('health changes take effect on the next pick', async () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1'), endpoint('10.0.0.2')] }])
  const [a, b] = c.hosts()
  a!.healthStatus = 'UNHEALTHY'
  for (let i = 0; i < 20; i++) assert.equal(c.chooseHost(undefined), b)
  a!.healthStatus = 'HEALTHY'
  b!.healthStatus = 'UNHEALTHY'
  await Promise.resolve()
  for (let i = 0; i < 20; i++) assert.equal(c.chooseHost(undefined), a)
})

test('updateHosts keeps surviving hosts, drains removed ones, and adds new ones', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1'), endpoint('10.0.0.2')] }])
  const [a, b] = c.hosts() as Host[]
  const drained: string[] = []
  const pool = (name: string): HostPool => ({ drain: () => drained.push(name), close: () => {} })
  a!.pool = pool('a')
  b!.pool = pool('b')
  a!.rqTotal = 42
  const events: string[] = []
  c.onHostsChanged(({ added, removed }) => events.push(`+${added.map((h) => h.key)} -${removed.map((h) => h.key)}`))

  const before = c.hosts()
  const change = c.updateHosts([spec('10.0.0.1', { weight: 3, priority: 0 }), spec('10.0.0.3')])
  assert.equal(c.hosts()[0], a)
  assert.equal(a!.rqTotal, 42)
  assert.equal(a!.weight, 3)
  assert.deepEqual(drained, ['b'])
  assert.deepEqual(
    change.added.map((h) => h.key),
    ['10.0.0.3:80'],
  )
  assert.deepEqual(change.removed, [b])
  assert.deepEqual(events, ['+10.0.0.3:80 -10.0.0.2:80'])
  assert.notEqual(c.hosts(), before)
  assert.equal(before.length, 2)
  assert.equal(c.host('10.0.0.3:80')?.key, '10.0.0.3:80')
  assert.equal(c.host('10.0.0.2:80'), undefined)

  // Weight 3 vs 1 now shows in the picks.
  const t = tally(c, 4000)
  assert.ok(Math.abs(t.get('10.0.0.1:80')! - 3000) <= 2)

  // The same membership again: nothing added or removed, no listener call.
  const same = c.updateHosts([spec('10.0.0.1', { weight: 3 }), spec('10.0.0.3')])
  assert.deepEqual(same, { added: [], removed: [] })
  assert.equal(events.length, 1)
})

test('updateHosts: health given by the source applies; absent health leaves the current status', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }])
  const h = c.hosts()[0]!
  h.healthStatus = 'UNHEALTHY'
  c.updateHosts([spec('10.0.0.1')])
  assert.equal(h.healthStatus, 'UNHEALTHY')
  assert.equal(c.chooseHost(undefined), null)
  c.updateHosts([spec('10.0.0.1', { healthStatus: 'HEALTHY' })])
  assert.equal(c.chooseHost(undefined), h)
})

test('updateFromAssignment takes an EDS ClusterLoadAssignment', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }])
  const a = c.hosts()[0]
  c.updateFromAssignment({
    cluster_name: 'c',
    endpoints: [{ lb_endpoints: [endpoint('10.0.0.1'), endpoint('10.0.0.9', 9000, { health_status: 'HEALTHY' })] }],
  })
  assert.equal(c.hosts()[0], a)
  assert.equal(c.hosts()[1]!.key, '10.0.0.9:9000')
  assert.equal(c.hosts()[1]!.healthStatus, 'HEALTHY')
})

test('RING_HASH and MAGLEV clusters: the same hash sticks to the same host', () => {
  for (const lb_policy of ['RING_HASH', 'MAGLEV'] as const) {
    const c = cluster(
      [{ lb_endpoints: Array.from({ length: 5 }, (_, i) => endpoint(`10.0.0.${i + 1}`)) }],
      lb_policy === 'RING_HASH' ? { lb_policy, ring_hash_lb_config: { minimum_ring_size: 512 } } : { lb_policy },
    )
    const seen = new Set<string>()
    for (let k = 0; k < 200; k++) {
      const hash = (k * 2654435761) >>> 0
      const h = c.chooseHost(hash)!
      assert.equal(c.chooseHost(hash), h)
      seen.add(h.key)
    }
    assert.equal(seen.size, 5)
  }
})

test('LEAST_REQUEST cluster prefers hosts with fewer active requests', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1'), endpoint('10.0.0.2')] }], {
    lb_policy: 'LEAST_REQUEST',
    least_request_lb_config: { choice_count: 4 },
  })
  c.hosts()[0]!.activeRequests = 10
  const t = tally(c, 10_000)
  // Only when all four choices land on the busy host: 1/16.
  assert.ok(t.get('10.0.0.1:80')! < 1000, `busy picks ${t.get('10.0.0.1:80')}`)
})

const peakEwmaPolicy = (fields: Record<string, unknown> = {}) =>
  ({
    policies: [
      {
        typed_extension_config: {
          name: 'loom.load_balancing_policies.peak_ewma',
          typed_config: { '@type': 'type.googleapis.com/loom.config.lb.v1.PeakEwma', ...fields },
        },
      },
    ],
  }) as Cluster['load_balancing_policy']

test('load_balancing_policy: its first entry is the policy; only PEAK_EWMA clusters sample latency', () => {
  const eps = [{ lb_endpoints: [endpoint('10.0.0.1'), endpoint('10.0.0.2')] }]
  const ewma = cluster(eps, { load_balancing_policy: peakEwmaPolicy() })
  assert.equal(ewma.lbPolicy, 'PEAK_EWMA')
  assert.equal(ewma.samplesLatency, true)
  assert.equal(ewma.plainRequests, false)
  ewma.chooseHost(undefined)
  for (const h of ewma.hosts()) assert.notEqual(h.latency, null, 'every host in a build has an estimate')
  const rr = cluster(eps, {
    round_robin_lb_config: { slow_start_config: { slow_start_window: '10s' } },
  })
  assert.equal(rr.lbPolicy, 'ROUND_ROBIN')
  assert.equal(rr.samplesLatency, false)
  assert.equal(rr.plainRequests, true, 'no wrapper per request for a cluster without the policy')
  for (const h of rr.hosts()) assert.equal(h.latency, null)
  const lr = cluster(eps, {
    load_balancing_policy: {
      policies: [
        {
          typed_extension_config: {
            name: 'envoy.load_balancing_policies.least_request',
            typed_config: {
              '@type': 'type.googleapis.com/envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest',
              choice_count: 3,
            },
          },
        },
      ],
    },
  })
  assert.equal(lr.lbPolicy, 'LEAST_REQUEST')
})

test('slow start: hosts are stamped when they join, a host added later gets a small share first', () => {
  const c = cluster([{ lb_endpoints: [endpoint('10.0.0.1')] }], {
    round_robin_lb_config: { slow_start_config: { slow_start_window: '60s' } },
  })
  const first = c.hosts()[0]!
  assert.ok(!Number.isNaN(first.healthyAt))
  first.healthyAt -= 120_000 // joined two minutes ago
  c.updateHosts([spec('10.0.0.1'), spec('10.0.0.2')])
  const counts = tally(c, 1_100)
  assert.ok((counts.get('10.0.0.2:80') ?? 0) < 200, `new host picks ${counts.get('10.0.0.2:80')} of 1100`)
})

test('load_balancing_policy errors name their path', () => {
  const eps = [{ lb_endpoints: [endpoint('10.0.0.1')] }]
  const fails = (extra: Partial<Cluster>, path: string, fragment: string) =>
    assert.throws(
      () => cluster(eps, extra),
      (e: Error & { issues?: { path: string; message: string }[] }) =>
        e.issues?.some((i) => i.path === path && i.message.includes(fragment)) === true,
    )
  fails({ lb_policy: 'RANDOM', load_balancing_policy: peakEwmaPolicy() }, '.load_balancing_policy', 'not both')
  fails(
    { load_balancing_policy: peakEwmaPolicy({ decay_time: '0s' }) },
    '.load_balancing_policy.policies[0].typed_extension_config.typed_config.decay_time',
    'greater than 0',
  )
})
