/**
 * Scoping end to end: `loom control` with 20 services and a `loom proxy --on-demand` sidecar. The proxy starts with
 * no outbound cluster, load assignment or virtual host for them; after requests to two hosts it holds exactly those
 * two; a service added later does not reach it; both hosts still route.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const RDS = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration'

function get(port: number, host: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

interface Held {
  clusters: string[]
  endpoints: string[]
  vhosts: string[]
}

describe('scoping (loom proxy --on-demand)', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  let out: number
  const backends: Backend[] = []

  async function api(method: string, path: string, body?: string): Promise<unknown> {
    const res = await fetch(`http://${cp.api}${path}`, { method, ...(body === undefined ? {} : { body }) })
    const text = await res.text()
    assert.equal(res.status, 200, `${method} ${path}: ${text}`)
    return JSON.parse(text)
  }
  async function register(app: string, port: number): Promise<void> {
    await api(
      'POST',
      '/api/v1/workloads',
      JSON.stringify({
        name: `${app}-v1`,
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: port, servicePort: 9080 }],
        labels: { app, version: 'v1' },
        ttlSeconds: 600,
      }),
    )
  }
  /** the outbound clusters, load assignments and virtual hosts the proxy holds, for the test's services */
  async function held(): Promise<Held> {
    const res = await fetch(`http://${sidecar.admin}/config_dump`)
    const dump = (await res.json()) as {
      configs: {
        dynamic_active_clusters?: { cluster: { name: string } }[]
        dynamic_endpoint_configs?: { endpoint_config: { cluster_name: string } }[]
        dynamic_route_configs?: { route_config: { name: string; virtual_hosts?: { name: string }[] } }[]
      }[]
    }
    const ours = (n: string) => n.includes('.default.svc.cluster.local') && n.startsWith('outbound|')
    const clusters = dump.configs.flatMap((c) => c.dynamic_active_clusters ?? []).map((c) => c.cluster.name)
    const endpoints = dump.configs
      .flatMap((c) => c.dynamic_endpoint_configs ?? [])
      .map((e) => e.endpoint_config.cluster_name)
    const outbound = dump.configs
      .flatMap((c) => c.dynamic_route_configs ?? [])
      .find((r) => r.route_config.name === 'outbound')
    return {
      clusters: clusters.filter(ours).sort(),
      endpoints: endpoints.filter(ours).sort(),
      vhosts: (outbound?.route_config.virtual_hosts ?? []).map((v) => v.name).sort(),
    }
  }

  before(async () => {
    cp = await startControl()
    for (const app of ['svc0', 'svc1']) {
      const b = await startBackend((_q, r) => r.end(app))
      backends.push(b)
      await register(app, b.port)
    }
    // the other 18 have an endpoint nothing listens on: the proxy never calls them
    const idle = await freePort()
    for (let i = 2; i < 20; i++) await register(`svc${i}`, idle)
    out = await freePort()
    // the sidecar's own address serves nothing: a new workload changes no inbound part of it
    sidecar = await startSidecar(cp.xds, { app: 'client', version: 'v1' }, out, ['--on-demand', '--ip', '127.0.0.9'])
    await eventually(
      async () => {
        const s = ((await api('GET', '/api/v1/proxy-status')) as { perType: { typeUrl: string; state: string }[] }[])[0]
        return s?.perType.some((t) => t.typeUrl === RDS && t.state === 'SYNCED') ?? false
      },
      10_000,
      'the sidecar synced',
    )
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await Promise.all(backends.map((b) => b.close()))
  })

  test('nothing outbound before a request; exactly the hosts used after; a new service does not reach it', async () => {
    assert.deepEqual(await held(), { clusters: [], endpoints: [], vhosts: [] }, 'nothing before a request')
    assert.equal((await get(out, 'svc0:9080')).body, 'svc0')
    assert.equal((await get(out, 'svc1.default:9080')).body, 'svc1')
    const two: Held = {
      clusters: ['outbound|9080||svc0.default.svc.cluster.local', 'outbound|9080||svc1.default.svc.cluster.local'],
      endpoints: ['outbound|9080||svc0.default.svc.cluster.local', 'outbound|9080||svc1.default.svc.cluster.local'],
      vhosts: ['svc0.default.svc.cluster.local:9080', 'svc1.default.svc.cluster.local:9080'],
    }
    await eventually(async () => JSON.stringify(await held()) === JSON.stringify(two), 10_000, 'the two hosts')
    assert.deepEqual(await held(), two)
    // a service applied later: the control plane's rebuild for it changes no proxy's snapshot
    const rebuild = async () => (await api('GET', '/debug/rebuild')) as { at: string; changed: number } | null
    const last = (await rebuild())?.at
    const extra = await startBackend((_q, r) => r.end('late'))
    backends.push(extra)
    await register('late', extra.port)
    await eventually(async () => (await rebuild())?.at !== last, 10_000, 'the rebuild for the new service')
    assert.equal((await rebuild())!.changed, 0, 'no snapshot changed')
    assert.deepEqual(await held(), two, 'the new service is not in the proxy')
    assert.equal((await get(out, 'svc0:9080')).body, 'svc0')
    assert.equal((await get(out, 'svc1:9080')).body, 'svc1')
    assert.equal((await get(out, 'late:9080')).body, 'late', 'and it is reached on demand')
    const after = await held()
    assert.ok(after.clusters.includes('outbound|9080||late.default.svc.cluster.local'))
    assert.equal(after.vhosts.length, 3)
  })
})
