import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import * as http from 'node:http'
import * as https from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as http2 from 'node:http2'
import type { AddressInfo } from 'node:net'
import * as net from 'node:net'
import { after, afterEach, before, describe, test } from 'node:test'
import { type Cluster, Cluster as ClusterSchema, type HealthCheck } from '../../../config/envoy.js'
import { toConfigIssues, v } from '../../../config/schema.js'
import { UpstreamCluster } from '../cluster.js'
import { ClusterConfigError } from '../errors.js'
import { ClusterManager } from '../manager.js'
import { HealthChecker, HealthCheckStats } from './checker.js'
import { containsInOrder, grpcRequest, grpcServingStatus } from './probes.js'
import { healthCheckSettings } from './settings.js'

const base = { timeout: '1s', interval: '0.02s', unhealthy_threshold: 2, healthy_threshold: 3 }

function clusterConfig(ports: number[], hc: Record<string, unknown>, extra: Record<string, unknown> = {}): Cluster {
  return {
    name: 'c',
    load_assignment: {
      cluster_name: 'c',
      endpoints: [
        {
          lb_endpoints: ports.map((p) => ({
            endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: p } } },
          })),
        },
      ],
    },
    health_checks: [{ ...base, no_traffic_interval: '0.02s', ...hc } as HealthCheck],
    ...extra,
  }
}

function schemaIssues(config: unknown): string[] {
  const r = v.safeParse(ClusterSchema, config)
  return r.success ? [] : toConfigIssues(r.issues).map((i) => `${i.path}: ${i.message}`)
}

function buildIssues(config: Cluster): string[] {
  try {
    new UpstreamCluster(config).stop()
    return []
  } catch (err) {
    if (err instanceof ClusterConfigError) return err.issues.map((i) => `${i.path}: ${i.message}`)
    throw err
  }
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** An HTTP server answering /healthz with `state.status`, counting the checks it gets. */
async function healthServer(): Promise<{ port: number; state: { status: number; checks: number }; close(): void }> {
  const state = { status: 200, checks: 0 }
  const server = http.createServer((req, res) => {
    state.checks++
    res.statusCode = req.url === '/healthz' ? state.status : 404
    res.end()
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  return {
    port: (server.address() as AddressInfo).port,
    state,
    close: () => {
      server.closeAllConnections()
      server.close()
    },
  }
}

const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length

describe('health_checks: config', () => {
  test('the schema rejects what Loom does not support, by path', () => {
    const cfg = (hc: Record<string, unknown>, n = 1) => ({
      name: 'c',
      health_checks: Array.from({ length: n }, () => ({ ...base, ...hc })),
    })
    assert.deepEqual(schemaIssues(cfg({ http_health_check: { path: '/h', send: { text: '00' } } })), [
      'health_checks[0].http_health_check.send: unknown field (not supported by Loom, or misspelt)',
    ])
    assert.deepEqual(schemaIssues(cfg({ custom_health_check: { name: 'x' } })), [
      'health_checks[0].custom_health_check: unknown field (not supported by Loom, or misspelt)',
    ])
    assert.deepEqual(schemaIssues(cfg({})), [
      'health_checks[0]: one of http_health_check, tcp_health_check, grpc_health_check is required',
    ])
    assert.deepEqual(schemaIssues(cfg({ tcp_health_check: {}, grpc_health_check: {} })), [
      'health_checks[0]: only one of http_health_check, tcp_health_check, grpc_health_check may be set (found tcp_health_check, grpc_health_check)',
    ])
    assert.deepEqual(schemaIssues(cfg({ tcp_health_check: {} }, 2)), [
      'health_checks: at most one health checker (as Envoy)',
    ])
    const missing = schemaIssues({ name: 'c', health_checks: [{ interval: '1s', tcp_health_check: {} }] })
    assert.deepEqual(missing, [
      'health_checks[0].timeout: required field is missing',
      'health_checks[0].unhealthy_threshold: required field is missing',
      'health_checks[0].healthy_threshold: required field is missing',
    ])
    assert.equal(schemaIssues(cfg({ tcp_health_check: { send: { text: 'abc' } } })).length, 1)
    assert.equal(schemaIssues(cfg({ http_health_check: { path: '/h', codec_client_type: 'HTTP3' } })).length, 1)
    assert.deepEqual(schemaIssues(cfg({ http_health_check: { path: '/h' }, tls_options: {} })), [
      'health_checks[0].tls_options: unknown field (not supported by Loom, or misspelt)',
    ])
  })

  test("Envoy's defaults", () => {
    const s = healthCheckSettings(
      {
        timeout: '2s',
        interval: '5s',
        unhealthy_threshold: 3,
        healthy_threshold: 2,
        http_health_check: { path: '/h' },
      },
      'svc',
      false,
      '',
      [],
    )!
    assert.equal(s.timeoutMs, 2000)
    assert.equal(s.intervalMs, 5000)
    assert.equal(s.noTrafficIntervalMs, 60_000)
    assert.equal(s.noTrafficHealthyIntervalMs, 60_000)
    assert.equal(s.unhealthyIntervalMs, 5000)
    assert.equal(s.unhealthyEdgeIntervalMs, 5000)
    assert.equal(s.healthyEdgeIntervalMs, 5000)
    assert.equal(s.reuseConnection, true)
    assert.equal(s.initialJitterMs, 0)
    assert.deepEqual(s.probe, {
      kind: 'http',
      http2: false,
      method: 'GET',
      path: '/h',
      host: 'svc',
      headersToAdd: [],
      headersToRemove: new Set(),
      expected: [[200, 201]],
      retriable: [],
      serviceName: null,
    })
    const u = healthCheckSettings(
      { ...base, unhealthy_interval: '3s', grpc_health_check: { service_name: 'x' } },
      'svc',
      true,
      '',
      [],
    )!
    assert.equal(u.unhealthyEdgeIntervalMs, 3000)
    assert.deepEqual(u.probe, { kind: 'grpc', serviceName: 'x', authority: 'svc' })
  })

  test('what the schema cannot see, by path', () => {
    const got = buildIssues(
      clusterConfig([80], {
        timeout: '0s',
        unhealthy_threshold: 0,
        unhealthy_edge_interval: '0s',
        http_health_check: {
          path: '/h',
          expected_statuses: [{ start: 200, end: 200 }],
          retriable_statuses: [{ start: 500, end: 601 }],
          request_headers_to_add: [{ header: { key: 'Host', value: 'x' } }],
        },
      }),
    )
    assert.deepEqual(got, [
      '.health_checks[0].timeout: must be greater than 0',
      '.health_checks[0].unhealthy_edge_interval: must be greater than 0',
      '.health_checks[0].unhealthy_threshold: must be at least 1',
      '.health_checks[0].http_health_check.expected_statuses[0]: must be a range [start, end) within [100, 600) with start below end (got [200, 200))',
      '.health_checks[0].http_health_check.retriable_statuses[0]: must be a range [start, end) within [100, 600) with start below end (got [500, 601))',
      '.health_checks[0].http_health_check.request_headers_to_add[0].header.key: "Host" cannot be set here (use host for the Host header)',
    ])
    assert.deepEqual(buildIssues(clusterConfig([80], { grpc_health_check: {} })), [
      '.health_checks[0].grpc_health_check: a gRPC health check needs the cluster to speak HTTP/2 (set http2_protocol_options)',
    ])
    assert.deepEqual(buildIssues(clusterConfig([80], { grpc_health_check: {} }, { http2_protocol_options: {} })), [])
  })
})

describe('health_checks: intervals', () => {
  const settings = healthCheckSettings(
    {
      ...base,
      interval: '10s',
      unhealthy_interval: '20s',
      unhealthy_edge_interval: '3s',
      healthy_edge_interval: '4s',
      no_traffic_interval: '30s',
      no_traffic_healthy_interval: '40s',
      tcp_health_check: {},
    },
    'c',
    false,
    '',
    [],
  )!
  const stats = { upstream_cx_total: 0, healthCheck: new HealthCheckStats() }
  const checker = new HealthChecker(settings, { name: 'c', tls: null, stats, hostHealthChanged() {} })
  checker.random = () => 0

  test('no traffic yet: no_traffic_interval, no_traffic_healthy_interval after a pass', () => {
    assert.equal(checker.interval(false, 'unchanged'), 30_000)
    assert.equal(checker.interval(true, 'changed'), 40_000)
  })

  test('with traffic: interval, unhealthy_interval, and the edge intervals while a change is pending', () => {
    stats.upstream_cx_total = 1
    assert.equal(checker.interval(true, 'unchanged'), 10_000)
    assert.equal(checker.interval(true, 'changed'), 10_000)
    assert.equal(checker.interval(true, 'pending'), 4000)
    assert.equal(checker.interval(false, 'unchanged'), 20_000)
    assert.equal(checker.interval(false, 'pending'), 3000)
  })

  test('interval_jitter and interval_jitter_percent add to the wait', () => {
    const s = { ...settings, intervalJitterMs: 1000, intervalJitterPercent: 10 }
    const c = new HealthChecker(s, { name: 'c', tls: null, stats, hostHealthChanged() {} })
    c.random = () => 0.5
    assert.equal(c.interval(true, 'unchanged'), 10_000 + 500 + 500)
  })
})

describe('health_checks: host state through real checks', () => {
  const servers: { close(): void }[] = []
  const live: { stop(): void }[] = []
  const running = (config: Cluster) => {
    const c = new UpstreamCluster(config)
    live.push(c)
    return c
  }
  afterEach(() => {
    for (const c of live.splice(0)) c.stop()
  })
  after(() => {
    for (const s of servers) s.close()
  })

  test('a new host starts failed and pending; one pass makes it healthy, a 503 fails it at once', async () => {
    const srv = await healthServer()
    servers.push(srv)
    const c = running(clusterConfig([srv.port], { http_health_check: { path: '/healthz' } }))
    const host = c.hosts()[0]!
    assert.equal(host.failedActiveHc, true)
    assert.equal(host.activeHc!.pending, true)
    assert.equal(c.chooseHost(undefined), null)
    await c.start()
    assert.equal(host.activeHc!.pending, false)
    assert.equal(host.failedActiveHc, false, 'the first pass is enough, whatever healthy_threshold')
    assert.equal(c.chooseHost(undefined), host)
    srv.state.status = 503
    await until(() => host.failedActiveHc, 'the host to fail')
    assert.equal(c.chooseHost(undefined), null)
    assert.equal(c.stats.healthCheck.network_failure, 0)
    const failures = c.stats.healthCheck.failure
    assert.ok(failures >= 1)
    // back after healthy_threshold (3) passes in a row
    srv.state.status = 200
    const successes = c.stats.healthCheck.success
    await until(() => !host.failedActiveHc, 'the host to come back')
    assert.equal(c.stats.healthCheck.success - successes, 3)
    c.stop()
  })

  test('EDS health, active checks and outlier ejection combine', async () => {
    const srvs = [await healthServer(), await healthServer(), await healthServer()]
    servers.push(...srvs)
    const config = clusterConfig(
      srvs.map((x) => x.port),
      { http_health_check: { path: '/healthz' } },
      { outlier_detection: {} },
    )
    config.load_assignment!.endpoints![0]!.lb_endpoints[0]!.health_status = 'UNHEALTHY'
    const c = running(config)
    await c.start()
    const [eds, ejected, ok] = c.hosts()
    assert.deepEqual(
      c.hosts().map((h) => h.failedActiveHc),
      [false, false, false],
      'every host passes its checks',
    )
    for (let i = 0; i < 5; i++) c.outlierDetector!.putHttpStatus(ejected!, 500)
    assert.equal(ejected!.ejected, true)
    const picked = new Set(Array.from({ length: 50 }, () => c.chooseHost(undefined)!.key))
    assert.deepEqual([...picked], [ok!.key])
    assert.equal(eds!.healthy, false)
  })

  test('initial_jitter delays the first check of a host', async () => {
    const srv = await healthServer()
    servers.push(srv)
    const c = running(clusterConfig([srv.port], { initial_jitter: '0.2s', http_health_check: { path: '/healthz' } }))
    c.healthChecker!.random = () => 0.5
    const started = performance.now()
    await c.start()
    assert.ok(performance.now() - started >= 95, 'the first check waits half of initial_jitter')
    assert.equal(c.hosts()[0]!.failedActiveHc, false)
    c.stop()
  })

  test('network failures count towards unhealthy_threshold; retriable statuses too', async () => {
    const srv = await healthServer()
    servers.push(srv)
    const c = running(
      clusterConfig([srv.port], {
        unhealthy_threshold: 3,
        http_health_check: { path: '/healthz', retriable_statuses: [{ start: 500, end: 600 }] },
      }),
    )
    const host = c.hosts()[0]!
    await c.start()
    assert.equal(host.failedActiveHc, false)
    const st = c.stats.healthCheck
    const before = st.failure
    srv.state.status = 500
    await until(() => host.failedActiveHc, 'the host to fail')
    assert.equal(st.failure - before, 3, 'three retriable failures in a row')
    assert.equal(st.network_failure, 0)
    c.stop()

    // a closed port: connection refused, counted as network failures
    const closed = await healthServer()
    closed.close()
    const d = running(clusterConfig([closed.port], { tcp_health_check: {} }))
    await d.start()
    assert.equal(d.hosts()[0]!.failedActiveHc, true)
    assert.ok(d.stats.healthCheck.network_failure >= 1)
    d.stop()
  })

  test('a timeout is a network failure and sets ACTIVE_HC_TIMEOUT', async () => {
    const silent = net.createServer(() => {})
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r))
    servers.push({ close: () => silent.close() })
    const port = (silent.address() as AddressInfo).port
    const c = running(clusterConfig([port], { timeout: '0.05s', http_health_check: { path: '/healthz' } }))
    await c.start()
    const host = c.hosts()[0]!
    assert.equal(host.failedActiveHc, true)
    assert.equal(host.activeHc!.timedOut, true)
    assert.equal(c.stats.healthCheck.network_failure, 1)
    c.stop()
  })

  test('HTTP/2 checks (codec_client_type HTTP2) on one session, with method, host and headers', async () => {
    const seen: http2.IncomingHttpHeaders[] = []
    let status = 204
    const sessions = new Set<http2.ServerHttp2Session>()
    const srv = http2.createServer()
    srv.on('session', (s) => sessions.add(s))
    srv.on('stream', (stream, headers) => {
      seen.push(headers)
      stream.respond({ ':status': status })
      stream.end()
    })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    servers.push({ close: () => srv.close() })
    const port = (srv.address() as AddressInfo).port
    const c = running(
      clusterConfig([port], {
        http_health_check: {
          path: '/ready',
          host: 'svc.local',
          method: 'HEAD',
          codec_client_type: 'HTTP2',
          expected_statuses: [{ start: 200, end: 300 }],
          request_headers_to_add: [{ header: { key: 'x-a', value: '1' } }],
          request_headers_to_remove: ['user-agent'],
        },
      }),
    )
    await c.start()
    const host = c.hosts()[0]!
    assert.equal(host.failedActiveHc, false)
    const h = seen[0]!
    assert.equal(h[':method'], 'HEAD')
    assert.equal(h[':path'], '/ready')
    assert.equal(h[':authority'], 'svc.local')
    assert.equal(h['x-a'], '1')
    assert.equal(h['user-agent'], undefined)
    status = 500
    await until(() => host.failedActiveHc, 'the host to fail')
    assert.equal(sessions.size, 1, 'reuse_connection keeps one session')
    c.stop()
    for (const s of sessions) s.destroy()
  })

  test('service_name_matcher verifies x-envoy-upstream-healthchecked-cluster (verify_cluster)', async () => {
    let name = 'backend'
    const srv = http.createServer((_req, res) => {
      res.setHeader('x-envoy-upstream-healthchecked-cluster', name)
      res.end()
    })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    servers.push({
      close: () => {
        srv.closeAllConnections()
        srv.close()
      },
    })
    const port = (srv.address() as AddressInfo).port
    const c = running(
      clusterConfig([port], { http_health_check: { path: '/h', service_name_matcher: { prefix: 'back' } } }),
    )
    await c.start()
    const host = c.hosts()[0]!
    assert.equal(host.failedActiveHc, false)
    assert.equal(c.stats.healthCheck.verify_cluster, 1)
    name = 'other'
    await until(() => host.failedActiveHc, 'the host to fail verification')
    assert.equal(c.stats.healthCheck.network_failure, 0)
    c.stop()
  })

  test('TCP send and receive: hex payloads matched in order', async () => {
    let reply = 'PONG ok'
    const srv = net.createServer((s) => {
      s.on('data', (d) => {
        if (d.toString() === 'PING') s.write(reply)
      })
      s.on('error', () => {})
    })
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))
    servers.push({ close: () => srv.close() })
    const port = (srv.address() as AddressInfo).port
    const c = running(
      clusterConfig([port], {
        timeout: '0.2s',
        reuse_connection: false,
        tcp_health_check: {
          send: { text: Buffer.from('PING').toString('hex') },
          receive: [{ text: Buffer.from('PONG').toString('hex') }, { binary: Buffer.from('ok').toString('base64') }],
        },
      }),
    )
    await c.start()
    const host = c.hosts()[0]!
    assert.equal(host.failedActiveHc, false)
    reply = 'NOPE'
    await until(() => host.failedActiveHc, 'the host to fail on a reply that does not match')
    c.stop()
    srv.close()
  })

  test('hosts that leave stop being checked; stop() leaves no timers', async () => {
    const srv = await healthServer()
    servers.push(srv)
    const idle = timers()
    const c = running(clusterConfig([srv.port], { http_health_check: { path: '/healthz' } }))
    await c.start()
    assert.ok(timers() > idle)
    c.updateHosts([])
    assert.equal(c.healthChecker!.size, 0)
    assert.equal(timers(), idle)
    const checks = srv.state.checks
    await new Promise((r) => setTimeout(r, 100))
    assert.equal(srv.state.checks, checks)
    c.updateHosts([{ address: '127.0.0.1', port: srv.port }])
    const added = c.hosts()[0]!
    assert.equal(added.failedActiveHc, true, 'a host added later starts failed')
    await until(() => !added.failedActiveHc, 'the new host to pass')
    c.stop()
    assert.equal(timers(), idle)
  })

  test('a cluster that replaces another keeps the active health of the hosts that stayed', async () => {
    const a = await healthServer()
    const b = await healthServer()
    servers.push(a, b)
    b.state.status = 503
    const m = new ClusterManager([])
    live.push(m)
    const hc = { http_health_check: { path: '/healthz' } }
    const old = running(clusterConfig([a.port, b.port], hc))
    m.upsert(old)
    await old.start()
    assert.deepEqual(
      old.hosts().map((h) => h.failedActiveHc),
      [false, true],
    )
    const c = running(clusterConfig([a.port, b.port, 1], { ...hc, interval: '0.03s' }))
    m.upsert(c)
    assert.deepEqual(
      c.hosts().map((h) => [h.failedActiveHc, h.activeHc!.pending]),
      [
        [false, false],
        [true, false],
        [true, true],
      ],
    )
    assert.equal(c.chooseHost(undefined)!.port, a.port)
    m.stop()
  })
})

describe("health_checks: over the cluster's upstream TLS", () => {
  let dir = ''
  let server: https.Server
  let port = 0
  const live: { stop(): void }[] = []
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'loom-hc-tls-'))
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(dir, 'server.key'),
        '-out',
        join(dir, 'server.crt'),
        '-days',
        '1',
        '-subj',
        '/CN=upstream.test',
        '-addext',
        'subjectAltName=DNS:upstream.test',
      ],
      { stdio: 'ignore' },
    )
    server = https.createServer(
      { key: readFileSync(join(dir, 'server.key')), cert: readFileSync(join(dir, 'server.crt')) },
      (req, res) => {
        res.statusCode = req.url === '/healthz' ? 200 : 404
        res.end()
      },
    )
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    port = (server.address() as AddressInfo).port
  })
  afterEach(() => {
    for (const c of live.splice(0)) c.stop()
  })
  after(() => {
    server.closeAllConnections()
    server.close()
    rmSync(dir, { recursive: true, force: true })
  })
  const tlsCluster = (hc: Record<string, unknown>, ca = 'server.crt') => {
    const c = new UpstreamCluster(
      clusterConfig([port], hc, {
        transport_socket: {
          name: 'envoy.transport_sockets.tls',
          typed_config: {
            '@type': 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext',
            sni: 'upstream.test',
            common_tls_context: { validation_context: { trusted_ca: { filename: join(dir, ca) } } },
          },
        },
      }),
    )
    live.push(c)
    return c
  }

  test("HTTP and TCP checks speak TLS with the cluster's settings", async () => {
    const h = tlsCluster({ http_health_check: { path: '/healthz' } })
    const t = tlsCluster({ tcp_health_check: {} })
    await Promise.all([h.start(), t.start()])
    assert.equal(h.hosts()[0]!.failedActiveHc, false)
    assert.equal(t.hosts()[0]!.failedActiveHc, false)
  })

  test('a certificate the cluster does not trust fails the check', async () => {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(dir, 'other.key'),
        '-out',
        join(dir, 'other.crt'),
        '-days',
        '1',
        '-subj',
        '/CN=other.test',
      ],
      { stdio: 'ignore' },
    )
    const c = tlsCluster({ http_health_check: { path: '/healthz' } }, 'other.crt')
    await c.start()
    assert.equal(c.hosts()[0]!.failedActiveHc, true)
    assert.equal(c.stats.healthCheck.network_failure, 1)
  })
})

describe('health_checks: wire formats', () => {
  test('fuzzy in-order matching of receive blocks', () => {
    const data = Buffer.from('xxABxxCDxx')
    assert.equal(containsInOrder(data, [Buffer.from('AB'), Buffer.from('CD')]), true)
    assert.equal(containsInOrder(data, [Buffer.from('CD'), Buffer.from('AB')]), false)
    assert.equal(containsInOrder(data, []), true)
  })

  test('grpc.health.v1 request and response', () => {
    assert.deepEqual([...grpcRequest('')], [0, 0, 0, 0, 0])
    assert.deepEqual([...grpcRequest('ab')], [0, 0, 0, 0, 4, 0x0a, 2, 0x61, 0x62])
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])), 1)
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 2])), 2)
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 0])), 0)
    assert.equal(grpcServingStatus(Buffer.from([0, 0, 0, 0, 9])), -1)
  })
})
