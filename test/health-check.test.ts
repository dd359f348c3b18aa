/**
 * Active health checks through a real `loom proxy` and real backends: HTTP checks against /healthz, TCP checks
 * against a backend that stops listening, gRPC checks against @grpc/grpc-js servers implementing grpc.health.v1,
 * a host added over EDS that takes no traffic before its first check passes, and a removed cluster that stops
 * checking.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import type { AddressInfo } from 'node:net'
import type * as net from 'node:net'
import { join } from 'node:path'
import { after, describe, test } from 'node:test'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { makeSnapshot } from '../src/xds/cache.js'
import { XdsServer } from '../src/xds/server.js'
import { TYPE_URL } from '../src/xds/snapshot.js'
import {
  adminAddress,
  hcm,
  listener,
  ROOT,
  type RunningProxy,
  simpleBootstrap,
  startProxy,
  stat,
  staticCluster,
} from './helpers/proxy.js'

/** An HTTP backend that names itself in every answer; /healthz answers `health` (or is held while 'hold'). */
interface HcBackend {
  name: string
  port: number
  health: number | 'hold'
  checks: http.IncomingMessage[]
  /** answers the held /healthz requests with `health` */
  release(): void
  listen(): Promise<void>
  close(): Promise<void>
}

async function hcBackend(name: string): Promise<HcBackend> {
  const held: http.ServerResponse[] = []
  const sockets = new Set<net.Socket>()
  let server: http.Server | null = null
  const b: HcBackend = {
    name,
    port: 0,
    health: 200,
    checks: [],
    release() {
      for (const res of held.splice(0)) {
        res.statusCode = b.health === 'hold' ? 200 : b.health
        res.end()
      }
    },
    async listen() {
      const s = http.createServer((req, res) => {
        if (req.url === '/healthz') {
          b.checks.push(req)
          if (b.health === 'hold') held.push(res)
          else {
            res.statusCode = b.health
            res.end()
          }
          return
        }
        res.end(name)
      })
      s.on('connection', (c) => {
        sockets.add(c)
        c.on('close', () => sockets.delete(c))
      })
      await new Promise<void>((r) => s.listen(b.port, '127.0.0.1', r))
      b.port = (s.address() as AddressInfo).port
      server = s
    },
    close() {
      const s = server
      server = null
      if (s === null) return Promise.resolve()
      for (const c of sockets) c.destroy()
      return new Promise((r) => s.close(() => r()))
    },
  }
  await b.listen()
  return b
}

function get(port: number, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      .on('error', reject)
  })
}

/** Who answered `n` sequential requests, as `name → count` (503s count under `503`). */
async function spread(port: number, n = 20): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (let i = 0; i < n; i++) {
    const r = await get(port)
    const k = r.status === 200 ? r.body : String(r.status)
    out[k] = (out[k] ?? 0) + 1
  }
  return out
}

async function clustersText(admin: string): Promise<string> {
  return (await fetch(`http://${admin}/clusters`)).text()
}

/** Waits until `/clusters` shows `flags` for the host on `port` of `cluster`. */
async function waitFlags(admin: string, cluster: string, port: number, flags: string, ms = 10_000): Promise<void> {
  const line = `${cluster}::127.0.0.1:${port}::health_flags::${flags}`
  const end = Date.now() + ms
  let text = ''
  while (Date.now() < end) {
    text = await clustersText(admin)
    if (text.split('\n').includes(line)) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`timed out waiting for ${line}; /clusters:\n${text}`)
}

const fast = {
  timeout: '1s',
  interval: '0.1s',
  no_traffic_interval: '0.1s',
  unhealthy_threshold: 2,
  healthy_threshold: 2,
}

const proxies: RunningProxy[] = []
const closers: (() => unknown)[] = []
after(async () => {
  for (const p of proxies) await p.stop('SIGKILL')
  for (const c of closers) await c()
})

describe('HTTP health checks', () => {
  test('a host whose /healthz answers 503 leaves the load balancer, and comes back after healthy_threshold passes', async () => {
    const a = await hcBackend('a')
    const b = await hcBackend('b')
    closers.push(
      () => a.close(),
      () => b.close(),
    )
    const proxy = await startProxy(
      simpleBootstrap([
        staticCluster('backend', [a.port, b.port], {
          health_checks: [
            {
              ...fast,
              http_health_check: {
                path: '/healthz',
                request_headers_to_add: [{ header: { key: 'x-check', value: 'loom' } }],
              },
            },
          ],
        }),
      ]),
    )
    proxies.push(proxy)
    const port = proxy.ports.http!
    // the proxy was ready only after the first round: both hosts passed once
    assert.ok(a.checks.length >= 1 && b.checks.length >= 1)
    const check = a.checks[0]!
    assert.equal(check.headers.host, 'backend', 'the Host header defaults to the cluster name')
    assert.equal(check.headers['user-agent'], 'Envoy/HC')
    assert.equal(check.headers['x-check'], 'loom')
    assert.deepEqual(await spread(port), { a: 10, b: 10 })

    b.health = 503
    await waitFlags(proxy.admin, 'backend', b.port, '/failed_active_hc')
    assert.deepEqual(await spread(port), { a: 20 }, 'no request reaches the failing host')
    const failing = (await (await fetch(`http://${proxy.admin}/clusters?format=json`)).json()) as {
      cluster_statuses: { host_statuses: { health_status: Record<string, unknown> }[] }[]
    }
    assert.deepEqual(
      failing.cluster_statuses[0]!.host_statuses.map((h) => h.health_status),
      [{ eds_health_status: 'UNKNOWN' }, { eds_health_status: 'UNKNOWN', failed_active_health_check: true }],
    )

    const before = b.checks.length
    b.health = 200
    await waitFlags(proxy.admin, 'backend', b.port, 'healthy')
    assert.ok(b.checks.length - before >= 2, 'healthy_threshold (2) passes before it is back')
    const back = await spread(port)
    assert.ok((back.b ?? 0) > 0 && back['503'] === undefined, JSON.stringify(back))

    assert.ok((await stat(proxy.admin, 'cluster.backend.health_check.attempt')) >= 4)
    assert.ok((await stat(proxy.admin, 'cluster.backend.health_check.success')) >= 4)
    assert.ok((await stat(proxy.admin, 'cluster.backend.health_check.failure')) >= 1)
    assert.equal(await stat(proxy.admin, 'cluster.backend.health_check.network_failure'), 0)
    assert.equal(await stat(proxy.admin, 'cluster.backend.health_check.healthy'), 2)
    const prom = await (await fetch(`http://${proxy.admin}/stats/prometheus`)).text()
    assert.match(prom, /# TYPE envoy_cluster_health_check_healthy gauge/)
    assert.match(prom, /envoy_cluster_health_check_healthy\{envoy_cluster_name="backend"\} 2/)
    assert.match(prom, /# TYPE envoy_cluster_health_check_attempt counter/)
    const json = (await (await fetch(`http://${proxy.admin}/clusters?format=json`)).json()) as {
      cluster_statuses: { name: string; host_statuses: { health_status: Record<string, unknown> }[] }[]
    }
    const hosts = json.cluster_statuses.find((c) => c.name === 'backend')!.host_statuses
    assert.deepEqual(
      hosts.map((h) => h.health_status),
      [{ eds_health_status: 'UNKNOWN' }, { eds_health_status: 'UNKNOWN' }],
    )

    const started = Date.now()
    assert.equal(await proxy.stop(), 0)
    assert.ok(Date.now() - started < 5000, 'the proxy exits promptly')
  })
})

describe('TCP health checks', () => {
  test('a backend that stops listening fails after unhealthy_threshold failures and returns when it listens again', async () => {
    const a = await hcBackend('a')
    const b = await hcBackend('b')
    closers.push(
      () => a.close(),
      () => b.close(),
    )
    const proxy = await startProxy(
      simpleBootstrap([
        staticCluster('backend', [a.port, b.port], {
          health_checks: [{ ...fast, reuse_connection: false, tcp_health_check: {} }],
        }),
      ]),
    )
    proxies.push(proxy)
    const port = proxy.ports.http!
    assert.deepEqual(await spread(port, 10), { a: 5, b: 5 })

    await b.close()
    await waitFlags(proxy.admin, 'backend', b.port, '/failed_active_hc')
    assert.ok((await stat(proxy.admin, 'cluster.backend.health_check.network_failure')) >= 2)
    assert.deepEqual(await spread(port), { a: 20 })

    await b.listen()
    await waitFlags(proxy.admin, 'backend', b.port, 'healthy')
    const back = await spread(port)
    assert.ok((back.b ?? 0) > 0 && back['503'] === undefined, JSON.stringify(back))
    await proxy.stop()
  })
})

describe('gRPC health checks', () => {
  interface EchoClient extends grpc.Client {
    Unary(req: { message: string }, cb: (err: grpc.ServiceError | null, reply?: { message: string }) => void): void
  }
  const def = protoLoader.loadSync(join(ROOT, 'test', 'fixtures', 'echo.proto'), { defaults: true, keepCase: true })
  const Echo = (
    grpc.loadPackageDefinition(def) as unknown as { loom: { test: { Echo: grpc.ServiceClientConstructor } } }
  ).loom.test.Echo

  /** grpc.health.v1.Health/Check with hand-written protobuf: status = 1 (SERVING) or 2 (NOT_SERVING). */
  const health: grpc.ServiceDefinition = {
    Check: {
      path: '/grpc.health.v1.Health/Check',
      requestStream: false,
      responseStream: false,
      requestSerialize: (b: Buffer) => b,
      requestDeserialize: (b: Buffer) => b,
      responseSerialize: (status: number) => Buffer.from([0x08, status]),
      responseDeserialize: (b: Buffer) => b[1],
    },
  }

  async function grpcServer(name: string) {
    const state = { status: 1, checks: 0, services: [] as string[] }
    const server = new grpc.Server()
    server.addService(health, {
      Check(call: grpc.ServerUnaryCall<Buffer, number>, cb: grpc.sendUnaryData<number>) {
        state.checks++
        state.services.push(call.request.subarray(2).toString())
        cb(null, state.status)
      },
    })
    server.addService(Echo.service, {
      Unary(_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<{ message: string }>) {
        cb(null, { message: name })
      },
    })
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    )
    closers.push(() => server.forceShutdown())
    return { port, state }
  }

  test('NOT_SERVING takes the host out, SERVING brings it back', async () => {
    const a = await grpcServer('a')
    const b = await grpcServer('b')
    const proxy = await startProxy({
      admin: { address: adminAddress() },
      static_resources: {
        listeners: [
          listener(
            'grpc',
            hcm({
              virtual_hosts: [
                { name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'echo' } }] },
              ],
            }),
          ),
        ],
        clusters: [
          staticCluster('echo', [a.port, b.port], {
            http2_protocol_options: {},
            health_checks: [{ ...fast, grpc_health_check: { service_name: 'loom.test.Echo' } }],
          }),
        ],
      },
    })
    proxies.push(proxy)
    assert.ok(a.state.checks >= 1 && b.state.checks >= 1)
    assert.equal(a.state.services[0], 'loom.test.Echo')
    const client = new Echo(`127.0.0.1:${proxy.ports.grpc}`, grpc.credentials.createInsecure()) as unknown as EchoClient
    closers.push(() => client.close())
    const calls = async (n: number) => {
      const out: Record<string, number> = {}
      for (let i = 0; i < n; i++) {
        const m = await new Promise<string>((resolve, reject) =>
          client.Unary({ message: 'hi' }, (err, reply) => (err ? reject(err) : resolve(reply!.message))),
        )
        out[m] = (out[m] ?? 0) + 1
      }
      return out
    }
    const both = await calls(10)
    assert.ok((both.a ?? 0) > 0 && (both.b ?? 0) > 0, JSON.stringify(both))

    b.state.status = 2
    await waitFlags(proxy.admin, 'echo', b.port, '/failed_active_hc')
    assert.deepEqual(await calls(10), { a: 10 })

    b.state.status = 1
    await waitFlags(proxy.admin, 'echo', b.port, 'healthy')
    const back = await calls(10)
    assert.ok((back.b ?? 0) > 0, JSON.stringify(back))
    await proxy.stop()
  })
})

describe('health checks with xDS', () => {
  const NODE = 'hc-node'
  const cluster = (interval = '0.1s') => ({
    name: 'svc',
    type: 'EDS',
    connect_timeout: '1s',
    eds_cluster_config: { eds_config: { ads: {} }, service_name: 'svc' },
    health_checks: [
      {
        ...fast,
        interval,
        timeout: '10s',
        http_health_check: { path: '/healthz', expected_statuses: [{ start: 200, end: 300 }] },
      },
    ],
  })
  const cla = (ports: number[]) => ({
    cluster_name: 'svc',
    endpoints: [
      {
        lb_endpoints: ports.map((p) => ({
          endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: p } } },
        })),
      },
    ],
  })
  const xdsListener = (route: Record<string, unknown>) => ({
    name: 'http',
    address: { socket_address: { address: '127.0.0.1', port_value: 0 } },
    filter_chains: [
      {
        filters: [
          hcm({
            name: 'r',
            virtual_hosts: [{ name: 'all', domains: ['*'], routes: [{ match: { prefix: '/' }, ...route }] }],
          }),
        ],
      },
    ],
  })
  const toSvc = { route: { cluster: 'svc' } }

  test('a new host takes no traffic before its first check passes; a removed cluster stops checking', async () => {
    const a = await hcBackend('a')
    const b = await hcBackend('b')
    closers.push(
      () => a.close(),
      () => b.close(),
    )
    const server = new XdsServer({ pushDebounceMs: 10, log: () => {} })
    const xdsPort = await server.listen('127.0.0.1', 0)
    closers.push(() => server.close())
    const snapshot = (clusters: unknown[], endpoints: unknown[], route: Record<string, unknown>) =>
      makeSnapshot({
        [TYPE_URL.cluster]: clusters as Record<string, unknown>[],
        [TYPE_URL.endpoint]: endpoints as Record<string, unknown>[],
        [TYPE_URL.listener]: [xdsListener(route)],
      })
    server.setSnapshot(NODE, snapshot([cluster()], [cla([a.port])], toSvc))
    const proxy = await startProxy({ admin: { address: adminAddress() } }, [
      '--xds',
      `127.0.0.1:${xdsPort}`,
      '--node',
      NODE,
    ])
    proxies.push(proxy)
    await waitFlags(proxy.admin, 'svc', a.port, 'healthy')
    let port = 0
    while (port === 0) {
      const body = (await (await fetch(`http://${proxy.admin}/listeners?format=json`)).json()) as {
        listener_statuses: { name: string; local_address: { socket_address: { port_value: number } } }[]
      }
      port = body.listener_statuses.find((l) => l.name === 'http')?.local_address.socket_address.port_value ?? 0
      if (port === 0) await new Promise((r) => setTimeout(r, 20))
    }
    assert.deepEqual(await spread(port, 5), { a: 5 })

    // b joins while its /healthz is held: failed and pending, no traffic
    b.health = 'hold'
    server.setSnapshot(NODE, snapshot([cluster()], [cla([a.port, b.port])], toSvc))
    await waitFlags(proxy.admin, 'svc', b.port, '/failed_active_hc/pending_active_hc')
    assert.deepEqual(await spread(port), { a: 20 })
    b.health = 200
    b.release()
    await waitFlags(proxy.admin, 'svc', b.port, 'healthy')
    const both = await spread(port)
    assert.ok((both.b ?? 0) > 0, JSON.stringify(both))

    // a cluster update keeps the health of the hosts that stay: a failing host stays out, with no gap for the others
    b.health = 503
    await waitFlags(proxy.admin, 'svc', b.port, '/failed_active_hc')
    server.setSnapshot(NODE, snapshot([cluster('0.15s')], [cla([a.port, b.port])], toSvc))
    const dumpEnd = Date.now() + 10_000
    while (!(await (await fetch(`http://${proxy.admin}/config_dump`)).text()).includes('0.15s')) {
      assert.ok(Date.now() < dumpEnd, 'the cluster update is applied')
      await new Promise((r) => setTimeout(r, 10))
    }
    assert.deepEqual(await spread(port, 10), { a: 10 })
    await waitFlags(proxy.admin, 'svc', b.port, '/failed_active_hc')

    // removed: no more checks
    server.setSnapshot(NODE, snapshot([], [], { direct_response: { status: 204 } }))
    const end = Date.now() + 10_000
    while ((await clustersText(proxy.admin)).includes('svc::')) {
      assert.ok(Date.now() < end, 'the cluster is removed')
      await new Promise((r) => setTimeout(r, 20))
    }
    const checks = a.checks.length + b.checks.length
    // no event says that nothing happens: watch for five check intervals
    await new Promise((r) => setTimeout(r, 500))
    assert.equal(a.checks.length + b.checks.length, checks, 'a removed cluster stops checking')
    const started = Date.now()
    assert.equal(await proxy.stop(), 0)
    assert.ok(Date.now() - started < 5000, 'the proxy exits promptly')
  })
})
