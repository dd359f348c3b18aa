import assert from 'node:assert/strict'
import { test } from 'node:test'
import type { Cluster, OutlierDetection } from '../../config/envoy.js'
import { UpstreamCluster } from './cluster.js'
import type { Host } from './host.js'

function cluster(
  n: number,
  od: OutlierDetection,
): { c: UpstreamCluster; hosts: readonly Host[]; clock: { t: number } } {
  const config: Cluster = {
    name: 'c',
    load_assignment: {
      cluster_name: 'c',
      endpoints: [
        {
          lb_endpoints: Array.from({ length: n }, (_, i) => ({
            endpoint: { address: { socket_address: { address: `10.0.0.${i + 1}`, port_value: 80 } } },
          })),
        },
      ],
    },
    outlier_detection: od,
  }
  const c = new UpstreamCluster(config)
  const clock = { t: 0 }
  c.outlierDetector!.now = () => clock.t
  return { c, hosts: c.hosts(), clock }
}

const picks = (c: UpstreamCluster, n = 200) => {
  const seen = new Set<string>()
  for (let i = 0; i < n; i++) seen.add(c.chooseHost(undefined)!.key)
  return seen
}

test("Envoy's defaults", () => {
  const s = cluster(1, {}).c.outlierDetector!.settings
  assert.equal(s.consecutive5xx, 5)
  assert.equal(s.intervalMs, 10_000)
  assert.equal(s.baseEjectionMs, 30_000)
  assert.equal(s.maxEjectionMs, 300_000)
  assert.equal(s.maxEjectionPercent, 10)
  assert.equal(s.enforcing.consecutive_5xx, 100)
  assert.equal(s.enforcing.consecutive_gateway_failure, 0)
  assert.equal(s.enforcing.failure_percentage, 0)
  assert.equal(s.successRateStdevFactor, 1900)
})

test('consecutive_5xx ejects; a success in between starts the count again; the LB skips the host', () => {
  const { c, hosts } = cluster(3, { consecutive_5xx: 3, max_ejection_percent: 100 })
  const od = c.outlierDetector!
  const h = hosts[0]!
  od.putHttpStatus(h, 500)
  od.putHttpStatus(h, 500)
  od.putHttpStatus(h, 200)
  od.putHttpStatus(h, 500)
  od.putHttpStatus(h, 500)
  assert.equal(h.ejected, false)
  od.putHttpStatus(h, 500)
  assert.equal(h.ejected, true)
  assert.equal(od.ejectionsActive, 1)
  assert.equal(c.stats.outlier.enforced.get('consecutive_5xx'), 1)
  assert.equal(c.stats.outlier.ejections_enforced_total, 1)
  assert.equal(picks(c).has(h.key), false)
  assert.equal(picks(c).size, 2)
})

test('the ejection lasts base_ejection_time times the ejection count, capped by max_ejection_time', () => {
  const { c, hosts, clock } = cluster(2, {
    consecutive_5xx: 1,
    base_ejection_time: '1s',
    max_ejection_time: '2.5s',
    interval: '0.1s',
    max_ejection_percent: 100,
  })
  const od = c.outlierDetector!
  const h = hosts[0]!
  const ejectedFor = () => {
    od.putHttpStatus(h, 503)
    assert.equal(h.ejected, true)
    const start = clock.t
    while (h.ejected) {
      clock.t += 100
      od.runInterval()
    }
    return clock.t - start
  }
  assert.equal(ejectedFor(), 1000)
  assert.equal(ejectedFor(), 2000)
  assert.equal(ejectedFor(), 2500)
  assert.equal(picks(c).has(h.key), true)
})

test('the ejection count goes down while the host stays in', () => {
  const { c, hosts, clock } = cluster(2, {
    consecutive_5xx: 1,
    base_ejection_time: '1s',
    interval: '1s',
    max_ejection_percent: 100,
  })
  const od = c.outlierDetector!
  const h = hosts[0]!
  od.putHttpStatus(h, 500)
  clock.t = 1000
  od.runInterval()
  assert.equal(h.ejected, false)
  assert.equal(h.outlier!.ejections, 1)
  clock.t = 2000
  od.runInterval()
  assert.equal(h.outlier!.ejections, 0)
})

test('max_ejection_percent: no ejection past the share, but one host can always go', () => {
  const { c, hosts } = cluster(4, { consecutive_5xx: 1, max_ejection_percent: 50 })
  const od = c.outlierDetector!
  for (const h of hosts) od.putHttpStatus(h, 500)
  assert.equal(od.ejectionsActive, 2)
  assert.equal(c.stats.outlier.ejections_overflow, 2)
  const one = cluster(3, { consecutive_5xx: 1, max_ejection_percent: 10 })
  for (const h of one.hosts) one.c.outlierDetector!.putHttpStatus(h, 500)
  assert.equal(one.c.outlierDetector!.ejectionsActive, 1)
})

test('consecutive_gateway_failure counts 502/503/504 only and ejects only when enforced', () => {
  const { c, hosts } = cluster(3, {
    consecutive_5xx: 100,
    consecutive_gateway_failure: 2,
    max_ejection_percent: 100,
  })
  const od = c.outlierDetector!
  od.putHttpStatus(hosts[0]!, 503)
  od.putHttpStatus(hosts[0]!, 504)
  assert.equal(hosts[0]!.ejected, false, 'enforcing_consecutive_gateway_failure defaults to 0')
  assert.equal(c.stats.outlier.detected.get('consecutive_gateway_failure'), 1)

  const e = cluster(3, {
    consecutive_5xx: 100,
    consecutive_gateway_failure: 2,
    enforcing_consecutive_gateway_failure: 100,
    max_ejection_percent: 100,
  })
  const eod = e.c.outlierDetector!
  eod.putHttpStatus(e.hosts[0]!, 502)
  eod.putHttpStatus(e.hosts[0]!, 500)
  eod.putHttpStatus(e.hosts[0]!, 502)
  assert.equal(e.hosts[0]!.ejected, false, 'a 500 breaks the run of gateway failures')
  eod.putHttpStatus(e.hosts[0]!, 503)
  assert.equal(e.hosts[0]!.ejected, true)
  assert.equal(e.c.stats.outlier.enforced.get('consecutive_gateway_failure'), 1)
})

test('local-origin failures: 5xx-equivalents without the split, their own counter with it', () => {
  const plain = cluster(3, { consecutive_5xx: 2, max_ejection_percent: 100 })
  plain.c.outlierDetector!.putLocalOriginFailure(plain.hosts[0]!, 'connect_failure')
  plain.c.outlierDetector!.putLocalOriginFailure(plain.hosts[0]!, 'reset')
  assert.equal(plain.hosts[0]!.ejected, true)

  const split = cluster(3, {
    consecutive_5xx: 2,
    split_external_local_origin_errors: true,
    consecutive_local_origin_failure: 3,
    max_ejection_percent: 100,
  })
  const od = split.c.outlierDetector!
  const h = split.hosts[0]!
  od.putLocalOriginFailure(h, 'connect_failure')
  od.putLocalOriginFailure(h, 'connect_failure')
  od.putHttpStatus(h, 200) // the connection worked: the local-origin run ends
  od.putLocalOriginFailure(h, 'connect_failure')
  od.putLocalOriginFailure(h, 'timeout')
  assert.equal(h.ejected, false)
  od.putLocalOriginFailure(h, 'reset')
  assert.equal(h.ejected, true)
  assert.equal(split.c.stats.outlier.enforced.get('consecutive_local_origin_failure'), 1)
})

test('success_rate: a host below mean - stdev * factor is ejected at the interval', () => {
  const { c, hosts } = cluster(5, {
    consecutive_5xx: 1000,
    success_rate_minimum_hosts: 5,
    success_rate_request_volume: 10,
    success_rate_stdev_factor: 1000,
    max_ejection_percent: 100,
  })
  const od = c.outlierDetector!
  for (const [i, h] of hosts.entries()) {
    for (let j = 0; j < 20; j++) od.putHttpStatus(h, i === 0 && j % 2 === 0 ? 500 : 200)
  }
  od.runInterval()
  assert.deepEqual(
    hosts.map((h) => h.ejected),
    [true, false, false, false, false],
  )
  assert.equal(c.stats.outlier.enforced.get('success_rate'), 1)
})

test('success_rate needs success_rate_minimum_hosts with enough requests', () => {
  const { c, hosts } = cluster(5, { consecutive_5xx: 1000, success_rate_request_volume: 10, max_ejection_percent: 100 })
  const od = c.outlierDetector!
  for (const [i, h] of hosts.entries()) {
    for (let j = 0; j < (i === 4 ? 5 : 20); j++) od.putHttpStatus(h, i === 0 ? 500 : 200)
  }
  od.runInterval()
  assert.equal(od.ejectionsActive, 0)
})

test('failure_percentage: hosts at or over the threshold, when enforced', () => {
  const { c, hosts } = cluster(3, {
    consecutive_5xx: 1000,
    enforcing_success_rate: 0,
    enforcing_failure_percentage: 100,
    failure_percentage_threshold: 50,
    failure_percentage_minimum_hosts: 3,
    failure_percentage_request_volume: 10,
    max_ejection_percent: 100,
  })
  const od = c.outlierDetector!
  for (const [i, h] of hosts.entries()) for (let j = 0; j < 10; j++) od.putHttpStatus(h, i === 1 && j < 6 ? 503 : 200)
  od.runInterval()
  assert.deepEqual(
    hosts.map((h) => h.ejected),
    [false, true, false],
  )
  assert.equal(c.stats.outlier.enforced.get('failure_percentage'), 1)
})

test('enforcing_consecutive_5xx 0: detected, not ejected', () => {
  const { c, hosts } = cluster(2, { consecutive_5xx: 1, enforcing_consecutive_5xx: 0, max_ejection_percent: 100 })
  c.outlierDetector!.putHttpStatus(hosts[0]!, 500)
  assert.equal(hosts[0]!.ejected, false)
  assert.equal(c.stats.outlier.detected.get('consecutive_5xx'), 1)
  assert.equal(c.stats.outlier.enforced.get('consecutive_5xx'), undefined)
})

test('a host that leaves the cluster no longer counts as ejected', () => {
  const { c, hosts } = cluster(2, { consecutive_5xx: 1, max_ejection_percent: 100 })
  c.outlierDetector!.putHttpStatus(hosts[0]!, 500)
  assert.equal(c.outlierDetector!.ejectionsActive, 1)
  c.updateHosts([{ address: '10.0.0.2', port: 80 }])
  assert.equal(c.outlierDetector!.ejectionsActive, 0)
})
