/**
 * On-demand virtual hosts end to end: `loom control`, a `loom proxy --on-demand` sidecar and two backends. The
 * proxy starts with no outbound virtual host; its first request to a host waits for the control plane's answer and
 * succeeds; it then holds only the hosts it used (its config dump); a host nothing serves answers 404 NR after the
 * answer (not after the bound); a VirtualService change reaches it as a VirtualHost resource (its route
 * configuration's version stays).
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const VHDS = 'type.googleapis.com/envoy.config.route.v3.VirtualHost'
const RDS = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration'

function get(port: number, host: string): Promise<{ status: number; body: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', headers: { host }, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

async function apiOf(cp: Control, method: string, path: string, body?: string): Promise<unknown> {
  const res = await fetch(`http://${cp.api}${path}`, { method, ...(body === undefined ? {} : { body }) })
  const text = await res.text()
  assert.equal(res.status, 200, `${method} ${path}: ${text}`)
  return JSON.parse(text)
}

/** Registers `<host>-v1` at 127.0.0.1:`port` as the service `<host>` (port 9080). */
async function register(cp: Control, host: string, port: number): Promise<void> {
  await apiOf(
    cp,
    'POST',
    '/api/v1/workloads',
    JSON.stringify({
      name: `${host}-v1`,
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: port, servicePort: 9080 }],
      labels: { app: host, version: 'v1' },
      ttlSeconds: 600,
    }),
  )
}

describe('on-demand virtual hosts (loom proxy --on-demand)', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  let out: number
  const backends: Backend[] = []

  const api = (method: string, path: string, body?: string) => apiOf(cp, method, path, body)
  const status = async () =>
    (
      (await api('GET', '/api/v1/proxy-status')) as {
        perType: { typeUrl: string; state: string; ackedVersion?: string }[]
      }[]
    )[0]
  async function vhostNames(): Promise<string[]> {
    const res = await fetch(`http://${sidecar.admin}/config_dump`)
    const dump = (await res.json()) as {
      configs: { dynamic_route_configs?: { route_config: { name: string; virtual_hosts?: { name: string }[] } }[] }[]
    }
    const routes = dump.configs.flatMap((c) => c.dynamic_route_configs ?? [])
    const outbound = routes.find((r) => r.route_config.name === 'outbound')
    return (outbound?.route_config.virtual_hosts ?? []).map((v) => v.name).sort()
  }

  before(async () => {
    cp = await startControl()
    for (const host of ['reviews', 'ratings']) {
      const b = await startBackend((_q, r) => r.end(host))
      backends.push(b)
      await register(cp, host, b.port)
    }
    out = await freePort()
    sidecar = await startSidecar(cp.xds, { app: 'productpage', version: 'v1' }, out, ['--on-demand'])
    await eventually(
      async () => {
        const s = await status()
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

  test('the first request to a host waits for it, and succeeds; the proxy then holds only the hosts used', async () => {
    assert.deepEqual(await vhostNames(), [], 'no outbound virtual host before any request')
    const t0 = performance.now()
    const first = await get(out, 'reviews:9080')
    const firstMs = performance.now() - t0
    assert.equal(first.status, 200, first.body)
    assert.equal(first.body, 'reviews')
    const t1 = performance.now()
    const second = await get(out, 'reviews:9080')
    const secondMs = performance.now() - t1
    assert.equal(second.body, 'reviews')
    // concurrent first requests to another host share one wait
    const t2 = performance.now()
    const both = await Promise.all([get(out, 'ratings:9080'), get(out, 'ratings:9080'), get(out, 'ratings:9080')])
    const otherMs = performance.now() - t2
    const t3 = performance.now()
    await get(out, 'ratings:9080')
    const otherAgainMs = performance.now() - t3
    process.stderr.write(
      `# first request (the proxy's first) ${firstMs.toFixed(1)} ms, again ${secondMs.toFixed(1)} ms; ` +
        `first to a second host (3 at once) ${otherMs.toFixed(1)} ms, again ${otherAgainMs.toFixed(1)} ms\n`,
    )
    assert.deepEqual(
      both.map((r) => r.body),
      ['ratings', 'ratings', 'ratings'],
    )
    assert.deepEqual(await vhostNames(), [
      'ratings.default.svc.cluster.local:9080',
      'reviews.default.svc.cluster.local:9080',
    ])
  })

  test('a host nothing serves: 404 NR once the control plane says it does not exist', async () => {
    const t0 = performance.now()
    const r = await get(out, 'nothing.example:80')
    assert.equal(r.status, 404)
    assert.ok(r.headers['x-loom-reason'], 'a reason')
    assert.ok(performance.now() - t0 < 4000, 'answered, not timed out')
    assert.deepEqual(await vhostNames(), [
      'ratings.default.svc.cluster.local:9080',
      'reviews.default.svc.cluster.local:9080',
    ])
  })

  test('a VirtualService change reaches the proxy as a VirtualHost, the route configuration unchanged', async () => {
    const before = await status()
    const rdsBefore = before!.perType.find((t) => t.typeUrl === RDS)!.ackedVersion
    const vhdsBefore = before!.perType.find((t) => t.typeUrl === VHDS)!.ackedVersion
    const applied = (await api(
      'POST',
      '/api/v1/apply',
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - headers:
      response:
        set: {x-changed: "yes"}
    route:
    - destination: {host: reviews}
`,
    )) as unknown
    assert.ok(applied)
    await eventually(async () => (await get(out, 'reviews:9080')).headers['x-changed'] === 'yes', 10_000, 'the change')
    const now = await status()
    assert.equal(now!.perType.find((t) => t.typeUrl === RDS)!.ackedVersion, rdsBefore, 'RDS not sent again')
    assert.notEqual(now!.perType.find((t) => t.typeUrl === VHDS)!.ackedVersion, vhdsBefore)
    assert.equal((await get(out, 'ratings:9080')).headers['x-changed'], undefined)
  })
})

describe('on-demand: a subscription rebuilds only the proxy that made it', () => {
  let cp: Control
  const sidecars: (Proc & { admin: string })[] = []
  const outs: number[] = []
  let backend: Backend

  const api = (method: string, path: string, body?: string) => apiOf(cp, method, path, body)

  before(async () => {
    cp = await startControl()
    backend = await startBackend((_q, r) => r.end('reviews'))
    await register(cp, 'reviews', backend.port)
    for (const app of ['productpage', 'details']) {
      const out = await freePort()
      outs.push(out)
      sidecars.push(await startSidecar(cp.xds, { app, version: 'v1' }, out, ['--on-demand']))
    }
    await eventually(
      async () => {
        const all = (await api('GET', '/api/v1/proxy-status')) as { perType: { typeUrl: string; state: string }[] }[]
        return all.length === 2 && all.every((p) => p.perType.some((t) => t.typeUrl === RDS && t.state === 'SYNCED'))
      },
      10_000,
      'both sidecars synced',
    )
  })
  after(async () => {
    await Promise.all(sidecars.map((s) => s.stop()))
    await cp?.stop()
    await backend?.close()
  })

  test('the first request through one sidecar: one proxy rebuilt, the other untouched', async () => {
    const r = await get(outs[0]!, 'reviews:9080')
    assert.equal(r.status, 200, r.body)
    assert.equal(r.body, 'reviews')
    const rebuild = (await api('GET', '/debug/rebuild')) as { proxies: number; changed: number; scopesOnly?: boolean }
    assert.deepEqual(
      { proxies: rebuild.proxies, changed: rebuild.changed, scopesOnly: rebuild.scopesOnly },
      { proxies: 1, changed: 1, scopesOnly: true },
    )
    // a config change still looks at every proxy
    await api(
      'POST',
      '/api/v1/apply',
      `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
    timeout: 3s
`,
    )
    await eventually(
      async () => ((await api('GET', '/debug/rebuild')) as { proxies: number }).proxies === 2,
      10_000,
      'a rebuild of both proxies after the change',
    )
    assert.equal(((await api('GET', '/debug/rebuild')) as { scopesOnly?: boolean }).scopesOnly, undefined)
  })
})
