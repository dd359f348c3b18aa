import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Cluster } from '../../config/envoy.js'
import { UpstreamCluster } from './cluster.js'
import { ClusterConfigError } from './errors.js'

function cluster(extra: Partial<Cluster> = {}): UpstreamCluster {
  return new UpstreamCluster({
    name: 'c',
    load_assignment: {
      cluster_name: 'c',
      endpoints: [
        { lb_endpoints: [{ endpoint: { address: { socket_address: { address: '10.0.0.1', port_value: 80 } } } }] },
      ],
    },
    ...extra,
  })
}

test('no circuit_breakers: no breaker object (nothing on the request path), a retry budget of 3', () => {
  const c = cluster()
  assert.equal(c.circuitBreakers, null)
  assert.equal(c.retryBudget.max, 3)
})

test("Envoy's defaults for thresholds left out; the DEFAULT priority is the entry without a priority", () => {
  const c = cluster({
    circuit_breakers: { thresholds: [{ priority: 'HIGH', max_connections: 7 }, { max_pending_requests: 2 }] },
  })
  const b = c.circuitBreakers!
  assert.equal(b.maxConnections, 1024)
  assert.equal(b.maxPendingRequests, 2)
  assert.equal(b.maxRequests, 1024)
  assert.equal(c.retryBudget.max, 3)
})

test('retry budget: max_retries in flight, overflow counted, release frees a slot', () => {
  const c = cluster({ circuit_breakers: { thresholds: [{ max_retries: 2 }] } })
  const r = c.retryBudget
  assert.equal(r.tryAcquire(), true)
  assert.equal(r.tryAcquire(), true)
  assert.equal(r.tryAcquire(), false)
  assert.equal(c.stats.upstream_rq_retry_overflow, 1)
  assert.equal(r.remaining, 0)
  r.release()
  assert.equal(r.remaining, 1)
  assert.equal(r.tryAcquire(), true)
  const gauges = new Map(c.circuitBreakers!.gauges(r))
  assert.equal(gauges.get('rq_retry_open'), 1)
  assert.equal(gauges.get('remaining_retries'), 0)
})

test('max_requests and max_pending_requests count their overflows as upstream_rq_pending_overflow', () => {
  const c = cluster({ circuit_breakers: { thresholds: [{ max_requests: 1, max_pending_requests: 1 }] } })
  const b = c.circuitBreakers!
  assert.equal(b.tryRequest(), true)
  assert.equal(b.tryRequest(), false)
  assert.equal(b.tryPend(), true)
  assert.equal(b.tryPend(), false)
  assert.equal(c.stats.upstream_rq_pending_overflow, 2)
})

test('a priority listed twice is rejected with its path', () => {
  assert.throws(
    () => cluster({ circuit_breakers: { thresholds: [{ max_requests: 1 }, { priority: 'DEFAULT' }] } }),
    (err: unknown) =>
      err instanceof ClusterConfigError &&
      err.issues.some((i) => i.path === '.circuit_breakers.thresholds[1].priority'),
  )
})

test("Istio's thresholds for a pool that sets nothing (all 2^32-1): no breaker object, no per-host limit", () => {
  const none = 4294967295
  const c = cluster({
    circuit_breakers: {
      thresholds: [{ max_connections: none, max_pending_requests: none, max_requests: none, max_retries: none }],
    },
  })
  assert.equal(c.circuitBreakers, null)
  assert.equal(c.hostConnectionLimit, Number.POSITIVE_INFINITY)
  assert.equal(c.retryBudget.max, none)
  assert.equal(cluster().hostConnectionLimit, 1024)
})

test('retry budget: max(min_retry_concurrency, budget_percent × requests in flight), max_retries ignored', () => {
  const c = cluster({
    circuit_breakers: {
      thresholds: [{ max_retries: 1, retry_budget: { budget_percent: { value: 25 }, min_retry_concurrency: 2 } }],
    },
  })
  const b = c.circuitBreakers!
  const r = c.retryBudget
  // no requests in flight: the floor
  assert.equal(r.max, 2)
  for (let i = 0; i < 11; i++) assert.equal(b.tryRequest(), true)
  // 25% of 11 is 2.75, truncated as Envoy does: still the floor
  assert.equal(r.max, 2)
  b.tryRequest()
  assert.equal(r.max, 3)
  for (let i = 0; i < 28; i++) b.tryRequest()
  // 40 in flight: 10 retries, whatever max_retries says
  assert.equal(r.max, 10)
  for (let i = 0; i < 10; i++) assert.equal(r.tryAcquire(), true)
  assert.equal(r.tryAcquire(), false)
  assert.equal(c.stats.upstream_rq_retry_overflow, 1)
  assert.equal(new Map(b.gauges(r)).get('rq_retry_open'), 1)
  // fewer requests in flight shrink the budget: no new retry until the active ones are under it
  b.requests = 20
  assert.equal(r.max, 5)
  assert.equal(r.remaining, 0)
  for (let i = 0; i < 5; i++) r.release()
  assert.equal(r.tryAcquire(), false)
  r.release()
  assert.equal(r.tryAcquire(), true)
  assert.equal(c.stats.upstream_rq_retry_overflow, 2)
})

test("retry budget defaults (20%, 3); it keeps a breaker object even when Istio's thresholds are unlimited", () => {
  const none = 4294967295
  const c = cluster({
    circuit_breakers: {
      thresholds: [
        {
          max_connections: none,
          max_pending_requests: none,
          max_requests: none,
          max_retries: none,
          retry_budget: {},
        },
      ],
    },
  })
  const b = c.circuitBreakers!
  assert.notEqual(b, null)
  assert.equal(c.retryBudget.max, 3)
  b.requests = 100
  assert.equal(c.retryBudget.max, 20)
})
