import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import type { DestinationRuleSpec } from '../../api/index.js'
import { effectivePolicy, hashPolicy, loadBalancerFields } from './policy.js'
import type { ConsistentHashLB, LoadBalancerSettings } from './types.js'
import { protoDuration } from './util.js'

describe('effectivePolicy (Istio merge rules)', () => {
  const dr: DestinationRuleSpec = {
    host: 'reviews',
    trafficPolicy: {
      loadBalancer: { simple: 'RANDOM' },
      connectionPool: { tcp: { connectTimeout: '1s' } },
      portLevelSettings: [{ port: { number: 9443 }, loadBalancer: { simple: 'ROUND_ROBIN' } }],
    },
    subsets: [
      { name: 'v1', labels: { version: 'v1' } },
      { name: 'v2', labels: { version: 'v2' }, trafficPolicy: { loadBalancer: { simple: 'LEAST_REQUEST' } } },
      {
        name: 'v3',
        labels: { version: 'v3' },
        trafficPolicy: {
          connectionPool: { tcp: { connectTimeout: '3s' } },
          portLevelSettings: [{ port: { number: 9080 }, loadBalancer: { simple: 'ROUND_ROBIN' } }],
        },
      },
    ],
  }
  // subset, port → lb.simple, connect timeout
  const cases: [string, number, string | undefined, string | undefined][] = [
    ['', 9080, 'RANDOM', '1s'],
    // a port-level entry replaces the top level wholesale: connectTimeout is not inherited
    ['', 9443, 'ROUND_ROBIN', undefined],
    ['v1', 9080, 'RANDOM', '1s'],
    // a subset overrides field by field
    ['v2', 9080, 'LEAST_REQUEST', '1s'],
    ['v2', 9443, 'LEAST_REQUEST', undefined],
    ['v3', 9443, 'ROUND_ROBIN', '3s'],
    // the subset's own port-level entry replaces all fields
    ['v3', 9080, 'ROUND_ROBIN', undefined],
    ['nope', 9080, 'RANDOM', '1s'],
  ]
  for (const [subset, port, lb, timeout] of cases) {
    it(`subset '${subset}' port ${port}`, () => {
      const p = effectivePolicy(dr, subset, port)
      assert.equal(p?.loadBalancer?.simple, lb)
      assert.equal(p?.connectionPool?.tcp?.connectTimeout, timeout)
    })
  }
  it('is undefined without a rule', () => assert.equal(effectivePolicy(undefined, '', 80), undefined))
})

describe('loadBalancerFields', () => {
  const cases: [string, LoadBalancerSettings | undefined, 'envoy' | 'grpc', object][] = [
    ['default', undefined, 'envoy', { lb_policy: 'LEAST_REQUEST' }],
    ['default for gRPC', undefined, 'grpc', { lb_policy: 'ROUND_ROBIN' }],
    ['ROUND_ROBIN', { simple: 'ROUND_ROBIN' }, 'envoy', { lb_policy: 'ROUND_ROBIN' }],
    ['LEAST_CONN', { simple: 'LEAST_CONN' }, 'envoy', { lb_policy: 'LEAST_REQUEST' }],
    ['RANDOM', { simple: 'RANDOM' }, 'envoy', { lb_policy: 'RANDOM' }],
    ['RANDOM for gRPC', { simple: 'RANDOM' }, 'grpc', { lb_policy: 'ROUND_ROBIN' }],
    ['PASSTHROUGH', { simple: 'PASSTHROUGH' }, 'envoy', { lb_policy: 'LEAST_REQUEST' }],
    [
      'consistent hash',
      { consistentHash: { httpHeaderName: 'x-user' } },
      'envoy',
      { lb_policy: 'RING_HASH', ring_hash_lb_config: { minimum_ring_size: 1024 } },
    ],
    [
      'ring size',
      { consistentHash: { useSourceIp: true, ringHash: { minimumRingSize: 64 } } },
      'envoy',
      { lb_policy: 'RING_HASH', ring_hash_lb_config: { minimum_ring_size: 64 } },
    ],
    [
      'maglev',
      { consistentHash: { useSourceIp: true, maglev: { tableSize: 65537 } } },
      'envoy',
      { lb_policy: 'MAGLEV', maglev_lb_config: { table_size: 65537 } },
    ],
    [
      'maglev for gRPC',
      { consistentHash: { httpHeaderName: 'x', maglev: {} } },
      'grpc',
      { lb_policy: 'RING_HASH', ring_hash_lb_config: { minimum_ring_size: 1024 } },
    ],
  ]
  for (const [name, lb, gen, want] of cases) {
    it(name, () => assert.deepEqual(loadBalancerFields(lb, 'LEAST_REQUEST', gen), want))
  }
})

describe('hashPolicy', () => {
  const cases: [string, ConsistentHashLB, 'envoy' | 'grpc', object | null][] = [
    ['header', { httpHeaderName: 'X-User' }, 'envoy', { header: { header_name: 'x-user' } }],
    [
      'cookie',
      { httpCookie: { name: 'session', ttl: '1h', path: '/' } },
      'envoy',
      { cookie: { name: 'session', ttl: '3600s', path: '/' } },
    ],
    ['source ip', { useSourceIp: true }, 'envoy', { connection_properties: { source_ip: true } }],
    ['query', { httpQueryParameterName: 'u' }, 'envoy', { query_parameter: { name: 'u' } }],
    ['gRPC hashes on headers only', { useSourceIp: true }, 'grpc', null],
    ['gRPC header', { httpHeaderName: 'x' }, 'grpc', { header: { header_name: 'x' } }],
  ]
  for (const [name, ch, gen, want] of cases) it(name, () => assert.deepEqual(hashPolicy(ch, gen), want))
})

describe('protoDuration', () => {
  const cases: [string, string | null][] = [
    ['0.5s', '0.5s'],
    ['10s', '10s'],
    ['3m', '180s'],
    ['1h30m', '5400s'],
    ['250ms', '0.25s'],
    ['1.5s', '1.5s'],
    ['10', null],
    ['-1s', null],
  ]
  for (const [text, want] of cases) it(`${text} → ${want}`, () => assert.equal(protoDuration(text), want))
})

describe('loadBalancerFields: warmup (slow start), as Istio writes it', () => {
  const window = { slow_start_window: '30s' }
  const full = (w: string, aggression: number, percent: number) => ({
    slow_start_window: w,
    aggression: { default_value: aggression, runtime_key: '(' },
    min_weight_percent: { value: percent },
  })
  const cases: [string, LoadBalancerSettings, 'envoy' | 'grpc', object][] = [
    [
      'warmupDurationSecs on ROUND_ROBIN',
      { simple: 'ROUND_ROBIN', warmupDurationSecs: '30s' },
      'envoy',
      { lb_policy: 'ROUND_ROBIN', round_robin_lb_config: { slow_start_config: window } },
    ],
    [
      'warmupDurationSecs on LEAST_REQUEST',
      { simple: 'LEAST_REQUEST', warmupDurationSecs: '30s' },
      'envoy',
      { lb_policy: 'LEAST_REQUEST', least_request_lb_config: { slow_start_config: window } },
    ],
    [
      'warmupDurationSecs on LEAST_CONN',
      { simple: 'LEAST_CONN', warmupDurationSecs: '30s' },
      'envoy',
      { lb_policy: 'LEAST_REQUEST', least_request_lb_config: { slow_start_config: window } },
    ],
    [
      'warmupDurationSecs with the default load balancer (LEAST_REQUEST)',
      { warmupDurationSecs: '1m' },
      'envoy',
      { lb_policy: 'LEAST_REQUEST', least_request_lb_config: { slow_start_config: { slow_start_window: '60s' } } },
    ],
    [
      'warmup: its duration, aggression and minimum percent',
      { simple: 'ROUND_ROBIN', warmup: { duration: '45s', minimumPercent: 5, aggression: 2 } },
      'envoy',
      { lb_policy: 'ROUND_ROBIN', round_robin_lb_config: { slow_start_config: full('45s', 2, 5) } },
    ],
    [
      'warmup: Istio writes the defaults (aggression 1, 10%)',
      { warmup: { duration: '10s' } },
      'envoy',
      { lb_policy: 'LEAST_REQUEST', least_request_lb_config: { slow_start_config: full('10s', 1, 10) } },
    ],
    [
      'warmup takes precedence over warmupDurationSecs',
      { simple: 'ROUND_ROBIN', warmupDurationSecs: '99s', warmup: { duration: '10s' } },
      'envoy',
      { lb_policy: 'ROUND_ROBIN', round_robin_lb_config: { slow_start_config: full('10s', 1, 10) } },
    ],
    ['ignored with RANDOM', { simple: 'RANDOM', warmupDurationSecs: '30s' }, 'envoy', { lb_policy: 'RANDOM' }],
    [
      'ignored with PASSTHROUGH',
      { simple: 'PASSTHROUGH', warmupDurationSecs: '30s' },
      'envoy',
      { lb_policy: 'LEAST_REQUEST' },
    ],
    [
      'ignored with consistentHash',
      { consistentHash: { httpHeaderName: 'x' }, warmupDurationSecs: '30s' },
      'envoy',
      { lb_policy: 'RING_HASH', ring_hash_lb_config: { minimum_ring_size: 1024 } },
    ],
    [
      'left out for proxyless gRPC',
      { simple: 'ROUND_ROBIN', warmupDurationSecs: '30s' },
      'grpc',
      { lb_policy: 'ROUND_ROBIN' },
    ],
  ]
  for (const [name, lb, gen, want] of cases) {
    it(name, () => assert.deepEqual(loadBalancerFields(lb, 'LEAST_REQUEST', gen), want))
  }
  it('not with a RANDOM mesh default', () =>
    assert.deepEqual(loadBalancerFields({ warmupDurationSecs: '30s' }, 'RANDOM', 'envoy'), { lb_policy: 'RANDOM' }))
})

describe('loadBalancerFields: loom.dev/load-balancer peak-ewma', () => {
  const T = 'type.googleapis.com/'
  const policy = {
    load_balancing_policy: {
      policies: [
        {
          typed_extension_config: {
            name: 'loom.load_balancing_policies.peak_ewma',
            typed_config: { '@type': `${T}loom.config.lb.v1.PeakEwma` },
          },
        },
        {
          typed_extension_config: {
            name: 'envoy.load_balancing_policies.least_request',
            typed_config: { '@type': `${T}envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest` },
          },
        },
      ],
    },
  }
  it('replaces the simple load balancer (and the mesh default), with Envoy LeastRequest second', () => {
    assert.deepEqual(loadBalancerFields(undefined, 'LEAST_REQUEST', 'envoy', 'peak-ewma'), policy)
    assert.deepEqual(loadBalancerFields({ simple: 'RANDOM' }, 'LEAST_REQUEST', 'envoy', 'peak-ewma'), policy)
    assert.deepEqual(
      loadBalancerFields({ simple: 'ROUND_ROBIN', warmupDurationSecs: '30s' }, 'LEAST_REQUEST', 'envoy', 'peak-ewma'),
      policy,
    )
  })
  it('consistentHash keeps precedence; proxyless gRPC keeps its own policy', () => {
    assert.deepEqual(
      loadBalancerFields({ consistentHash: { useSourceIp: true } }, 'LEAST_REQUEST', 'envoy', 'peak-ewma'),
      {
        lb_policy: 'RING_HASH',
        ring_hash_lb_config: { minimum_ring_size: 1024 },
      },
    )
    assert.deepEqual(loadBalancerFields(undefined, 'LEAST_REQUEST', 'grpc', 'peak-ewma'), { lb_policy: 'ROUND_ROBIN' })
  })
})
