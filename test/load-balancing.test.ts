/**
 * Slow start and peak-EWMA load balancing through a real `loom proxy`: a static listener whose routes and clusters
 * come over ADS from an xDS server in the test (so the Loom PeakEwma extension crosses the wire as protobuf), and
 * endpoints are added by EDS updates while traffic flows.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { makeSnapshot } from '../src/xds/cache.js'
import { XdsServer } from '../src/xds/server.js'
import { TYPE_URL } from '../src/xds/snapshot.js'
import { eventually } from './helpers/control.js'
import { adminAddress, hcm, listener, type RunningProxy, startProxy } from './helpers/proxy.js'
import { type Backend, startBackend } from './helpers/servers.js'

const T = 'type.googleapis.com/'
const NODE = 'lb-test'
/** the slow start window: long enough that a burst of requests on a loaded machine stays in its first part */
const WINDOW_MS = 5000

const agent = new http.Agent({ keepAlive: true, maxSockets: 8 })

function get(port: number, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`${res.statusCode} ${body}`))))
      })
      .on('error', reject)
  })
}

/** Sends `n` requests, `concurrency` at a time, and counts the answers by body. */
async function tally(port: number, path: string, n: number, concurrency = 1): Promise<Map<string, number>> {
  const counts = new Map<string, number>()
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      const body = await get(port, path)
      counts.set(body, (counts.get(body) ?? 0) + 1)
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return counts
}

const edsCluster = (name: string, extra: Record<string, unknown> = {}) => ({
  name,
  type: 'EDS',
  connect_timeout: '1s',
  eds_cluster_config: { eds_config: { ads: {} }, service_name: name },
  ...extra,
})
const cla = (name: string, ports: number[]) => ({
  cluster_name: name,
  endpoints: [
    {
      lb_endpoints: ports.map((port) => ({
        endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: port } } },
        health_status: 'HEALTHY',
      })),
    },
  ],
})
const route = (prefix: string, cluster: string) => ({ match: { prefix }, route: { cluster } })

describe('load balancing through a real proxy (clusters and endpoints over ADS)', () => {
  let fast: Backend
  let slow: Backend
  let warm: Backend
  let fresh: Backend
  let xds: XdsServer
  let proxy: RunningProxy
  let port: number
  /** when the slow-start cluster's first host joined (its own window must be over before the second joins) */
  let firstJoined = 0

  const clusters = [
    edsCluster('slow-start', {
      lb_policy: 'ROUND_ROBIN',
      round_robin_lb_config: { slow_start_config: { slow_start_window: `${WINDOW_MS / 1000}s` } },
    }),
    edsCluster('peak-ewma', {
      load_balancing_policy: {
        policies: [
          {
            typed_extension_config: {
              name: 'loom.load_balancing_policies.peak_ewma',
              // a short decay: a pause of this loaded machine that makes the fast backend look slow once is
              // forgotten within a second or two instead of the default's ten
              typed_config: { '@type': `${T}loom.config.lb.v1.PeakEwma`, decay_time: '1s', default_rtt: '0.030s' },
            },
          },
        ],
      },
    }),
    edsCluster('round-robin', { lb_policy: 'ROUND_ROBIN' }),
  ]
  const routes = {
    name: 'local',
    virtual_hosts: [
      {
        name: 'all',
        domains: ['*'],
        routes: [
          route('/slow-start', 'slow-start'),
          route('/peak-ewma', 'peak-ewma'),
          route('/round-robin', 'round-robin'),
        ],
      },
    ],
  }
  const snapshot = (slowStartPorts: number[]) =>
    makeSnapshot({
      [TYPE_URL.route]: [routes],
      [TYPE_URL.cluster]: clusters,
      [TYPE_URL.endpoint]: [
        cla('slow-start', slowStartPorts),
        cla('peak-ewma', [fast.port, slow.port]),
        cla('round-robin', [fast.port, slow.port]),
      ],
    })

  before(async () => {
    fast = await startBackend((_q, r) => r.end('fast'))
    slow = await startBackend((_q, r) => {
      setTimeout(() => r.end('slow'), 20)
    })
    warm = await startBackend((_q, r) => r.end('warm'))
    fresh = await startBackend((_q, r) => r.end('fresh'))
    xds = new XdsServer({ pushDebounceMs: 10, log: () => {} })
    const xdsPort = await xds.listen('127.0.0.1', 0)
    xds.setSnapshot(NODE, snapshot([warm.port]))
    proxy = await startProxy(
      {
        admin: { address: adminAddress() },
        static_resources: {
          listeners: [
            listener('http', hcm(undefined, { rds: { config_source: { ads: {} }, route_config_name: 'local' } })),
          ],
        },
      },
      ['--xds', `127.0.0.1:${xdsPort}`, '--node', NODE],
    )
    port = proxy.ports.http!
    await eventually(async () => (await get(port, '/slow-start')) === 'warm', 15_000, 'the slow-start cluster answers')
    firstJoined = Date.now()
    await eventually(async () => (await get(port, '/peak-ewma')) !== '', 15_000, 'the peak-EWMA cluster answers')
    await eventually(async () => (await get(port, '/round-robin')) !== '', 15_000, 'the round-robin cluster answers')
  })

  after(async () => {
    agent.destroy()
    await proxy?.stop()
    await xds?.close()
    for (const b of [fast, slow, warm, fresh]) await b?.close()
  })

  test('the PeakEwma extension arrived over xDS: the cluster runs PEAK_EWMA', async () => {
    const dump = (await (await fetch(`http://${proxy.admin}/config_dump`)).json()) as { configs: unknown[] }
    const text = JSON.stringify(dump)
    assert.ok(text.includes(`${T}loom.config.lb.v1.PeakEwma`), 'the config dump shows the Loom extension')
  })

  test('peak EWMA: of two backends, one 20 ms slower, the fast one gets most requests', async (t) => {
    const counts = await tally(port, '/peak-ewma', 200, 2)
    const share = (counts.get('fast') ?? 0) / 200
    t.diagnostic(`peak EWMA: fast backend share ${share}`)
    assert.ok(share > 0.75, `fast share ${share} (${JSON.stringify([...counts])})`)
  })

  test('round robin over the same two backends splits evenly', async (t) => {
    const counts = await tally(port, '/round-robin', 200, 1)
    const share = (counts.get('fast') ?? 0) / 200
    t.diagnostic(`round robin: fast backend share ${share}`)
    assert.ok(share >= 0.4 && share <= 0.6, `fast share ${share} (${JSON.stringify([...counts])})`)
  })

  test('slow start: a host that just joined gets a small share at first, its fair share after the window', async (t) => {
    // the first host's own window must be over, or both would be warming up together (no event says when)
    const wait = firstJoined + WINDOW_MS + 200 - Date.now()
    if (wait > 0) await new Promise((r) => setTimeout(r, wait))
    const pushed = Date.now()
    xds.setSnapshot(NODE, snapshot([warm.port, fresh.port]))
    const key = `slow-start::127.0.0.1:${fresh.port}::`
    await eventually(
      async () => (await (await fetch(`http://${proxy.admin}/clusters`)).text()).includes(key),
      10_000,
      'the new host is in the cluster',
    )
    const joined = Date.now()
    const n = 40
    const early = await tally(port, '/slow-start', n)
    // from the push, which is before the proxy stamped the host: an upper bound on how far into its window it is
    const elapsed = Date.now() - pushed
    const earlyShare = (early.get('fresh') ?? 0) / n
    t.diagnostic(`slow start: new host share ${earlyShare} in its first ${elapsed} ms`)
    // Envoy's curve: a factor f = max(10%, t / window) of its weight, so a share of f / (1 + f) against the warm host
    const f = Math.max(0.1, elapsed / WINDOW_MS)
    const bound = f / (1 + f) + 0.1
    assert.ok(bound < 0.45, `the burst took ${elapsed} ms: too long to tell a ramp from a fair share`)
    assert.ok(earlyShare <= bound, `early share ${earlyShare} after ${elapsed} ms (at most ${bound.toFixed(2)})`)

    const rest = joined + WINDOW_MS + 200 - Date.now()
    if (rest > 0) await new Promise((r) => setTimeout(r, rest))
    const later = await tally(port, '/slow-start', 200)
    const laterShare = (later.get('fresh') ?? 0) / 200
    t.diagnostic(`slow start: new host share ${laterShare} after the window`)
    assert.ok(laterShare >= 0.4 && laterShare <= 0.6, `share after the window ${laterShare}`)
  })
})
