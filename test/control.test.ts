/**
 * The control plane end to end: `loom control` and `loom proxy --xds` as real processes, real backends registered
 * as workloads, Bookinfo's VirtualServices and DestinationRules (test/fixtures/istio/) applied with `loom apply`, and
 * traffic that follows them live.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

/** The project's Istio-format fixtures (Bookinfo's routing rules as Istio users write them). */
const SAMPLES = new URL('../../test/fixtures/istio', import.meta.url).pathname

function get(
  port: number,
  host: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/reviews/0', headers: { host, ...headers }, agent: false }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      .on('error', reject)
  })
}

function request(
  port: number,
  method: string,
  host: string,
  headers: Record<string, string>,
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .request(
        { host: '127.0.0.1', port, path: '/reviews/0', method, headers: { host, ...headers }, agent: false },
        (res) => {
          let body = ''
          res.on('data', (c) => (body += c))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
        },
      )
      .on('error', reject)
      .end()
  })
}

async function versions(port: number, n: number, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const r = await get(port, 'reviews:9080', headers)
    out.set(r.body, (out.get(r.body) ?? 0) + 1)
  }
  return out
}

async function register(cp: Control, name: string, version: string, port: number): Promise<void> {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
    method: 'POST',
    body: JSON.stringify({
      name,
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: port, servicePort: 9080 }],
      labels: { app: 'reviews', version },
      ttlSeconds: 600,
    }),
  })
  assert.equal(res.status, 200, await res.text())
}

describe('loom control with loom proxy sidecars', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  const backends: Backend[] = []
  let out: number

  before(async () => {
    cp = await startControl()
    for (const v of ['v1', 'v2', 'v3']) {
      const b = await startBackend((_q, r) => r.end(v))
      backends.push(b)
      await register(cp, `reviews-${v}`, v, b.port)
    }
    out = await freePort()
    sidecar = await startSidecar(cp.xds, { app: 'productpage', version: 'v1' }, out)
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await Promise.all(backends.map((b) => b.close()))
  })

  test('with no routing rules, every version of reviews answers', async () => {
    await eventually(async () => (await get(out, 'reviews:9080')).status === 200, 15000, 'the sidecar to route reviews')
    const seen = await versions(out, 30)
    assert.deepEqual([...seen.keys()].sort(), ['v1', 'v2', 'v3'])
  })

  test('the short name, the namespaced name and the FQDN all route', async () => {
    for (const host of [
      'reviews:9080',
      'reviews.default:9080',
      'reviews.default.svc.cluster.local:9080',
      'REVIEWS:9080',
    ]) {
      assert.equal((await get(out, host)).status, 200, host)
    }
  })

  test('proxy-status shows the sidecar SYNCED on every type', async () => {
    await eventually(
      async () => {
        const r = await cp.loom(['proxy-status', '-o', 'json'])
        const nodes = JSON.parse(r.stdout) as { perType: { state: string }[] }[]
        return (
          nodes.length === 1 && nodes[0]!.perType.length >= 4 && nodes[0]!.perType.every((t) => t.state === 'SYNCED')
        )
      },
      5000,
      'SYNCED',
    )
    const table = await cp.loom(['proxy-status'])
    assert.match(table.stdout, /sidecar~127\.0\.0\.1~productpage.*SYNCED\s+SYNCED\s+SYNCED\s+SYNCED/)
    // the proxy tells the control plane where its admin endpoint is (where its metrics are read)
    const nodes = (await (await fetch(`http://${cp.api}/api/v1/proxy-status`)).json()) as { adminAddress: unknown }[]
    assert.equal(nodes[0]!.adminAddress, sidecar.admin)
  })

  test('a VirtualService pinning reviews to v3 takes effect', async () => {
    const r = await cp.loom([
      'apply',
      '-f',
      `${SAMPLES}/destination-rule-reviews.yaml`,
      '-f',
      `${SAMPLES}/virtual-service-reviews-v3.yaml`,
    ])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /virtualservices\/reviews created/)
    await eventually(async () => [...(await versions(out, 6)).keys()].join() === 'v3', 15000, 'v3 only')
    assert.deepEqual([...(await versions(out, 20)).keys()], ['v3'])
  })

  test('a header match sends one user to v2 and everyone else to v3', async () => {
    const r = await cp.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-jason-v2-v3.yaml`])
    assert.equal(r.code, 0, r.stderr)
    await eventually(
      async () => (await get(out, 'reviews:9080', { 'end-user': 'jason' })).body === 'v2',
      5000,
      'jason → v2',
    )
    assert.deepEqual([...(await versions(out, 10, { 'end-user': 'jason' })).keys()], ['v2'])
    assert.deepEqual([...(await versions(out, 10, { 'end-user': 'someone' })).keys()], ['v3'])
  })

  test("Istio's fault injection: jason's calls are aborted by the caller's sidecar, everyone else's go on", async () => {
    const r = await cp.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-test-abort.yaml`])
    assert.equal(r.code, 0, r.stderr)
    assert.doesNotMatch(r.stderr, /fault/, 'fault is enforced: no not-enforced warning')
    await eventually(
      async () => (await get(out, 'reviews:9080', { 'end-user': 'jason' })).status === 500,
      15000,
      'abort',
    )
    const jason = await get(out, 'reviews:9080', { 'end-user': 'jason' })
    assert.equal(jason.body, 'fault filter abort')
    assert.deepEqual([...(await versions(out, 10, { 'end-user': 'someone' })).keys()], ['v3'])
  })

  test("Istio's corsPolicy: the caller's sidecar answers allowed preflights and adds CORS headers", async () => {
    const r = await cp.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-cors.yaml`])
    assert.equal(r.code, 0, r.stderr)
    assert.doesNotMatch(r.stderr, /CORS/, 'corsPolicy is enforced: no not-enforced warning')
    const preflight = (origin: string) =>
      request(out, 'OPTIONS', 'reviews:9080', { origin, 'access-control-request-method': 'POST' })
    await eventually(
      async () => (await preflight('https://shop.example.com')).headers['access-control-max-age'] === '86400',
      15000,
      'CORS policy',
    )
    const seen = backends.reduce((n, b) => n + b.requests.length, 0)
    const ok = await preflight('https://eu.shop.example.com')
    assert.equal(ok.status, 200)
    assert.equal(ok.headers['access-control-allow-origin'], 'https://eu.shop.example.com')
    assert.equal(ok.headers['access-control-allow-methods'], 'POST,GET')
    assert.equal(ok.headers['access-control-allow-headers'], 'X-Foo-Bar')
    assert.equal(ok.headers['access-control-allow-credentials'], 'true')
    assert.equal(
      backends.reduce((n, b) => n + b.requests.length, 0),
      seen,
      'no backend saw the preflight',
    )
    const other = await preflight('https://elsewhere.example')
    assert.equal(other.body, 'v3', 'an origin not allowed is forwarded')
    assert.equal(other.headers['access-control-allow-origin'], undefined)
    const actual = await request(out, 'GET', 'reviews:9080', { origin: 'https://shop.example.com' })
    assert.equal(actual.body, 'v3')
    assert.equal(actual.headers['access-control-allow-origin'], 'https://shop.example.com')
    assert.equal(actual.headers['access-control-expose-headers'], 'X-Request-Id')
  })

  test('an 80/20 split is within tolerance over 400 requests', async () => {
    const r = await cp.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-80-20.yaml`])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => (await get(out, 'reviews:9080')).body !== 'v3', 15000, 'the split')
    const seen = await versions(out, 400)
    assert.deepEqual([...seen.keys()].sort(), ['v1', 'v2'])
    const v1 = seen.get('v1')! / 400
    assert.ok(v1 > 0.72 && v1 < 0.88, `v1 share ${v1}`)
  })

  test('an invalid manifest is rejected with its path and changes nothing', async () => {
    const bad = `${SAMPLES}/virtual-service-reviews-v3.yaml`
    const r = await cp.loom(['apply', '-f', bad, '--dry-run'])
    assert.equal(r.code, 0)
    const invalid = await cp.loom([
      'apply',
      '-f',
      new URL('../../test/fixtures/invalid-vs.yaml', import.meta.url).pathname,
    ])
    assert.equal(invalid.code, 1)
    assert.match(
      invalid.stderr,
      /document 0 \(VirtualService reviews\).*spec\.http\[0\]\.route\[0\]\.destination\.subset/,
    )
    const seen = await versions(out, 20)
    assert.deepEqual([...seen.keys()].sort(), ['v1', 'v2'], 'still the 80/20 rule')
  })

  test('loom analyze finds a missing subset against the live config and registry', async () => {
    const r = await cp.loom([
      'analyze',
      '-f',
      new URL('../../test/fixtures/vs-missing-subset.yaml', import.meta.url).pathname,
    ])
    assert.equal(r.code, 1)
    assert.match(
      r.stdout,
      /Error \[VirtualService\/default\/reviews-canary\] spec\.http\[0\]\.route\[0\]\.destination\.subset: .*v9/,
    )
    const ok = await cp.loom(['analyze', '-f', `${SAMPLES}/virtual-service-reviews-v3.yaml`])
    assert.equal(ok.code, 0, ok.stdout)
  })

  test('deleting the rules restores every version', async () => {
    const r = await cp.loom(['delete', 'vs', 'reviews'])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => (await versions(out, 12)).size === 3, 15000, 'round robin again')
    assert.equal((await cp.loom(['delete', 'vs', 'reviews'])).code, 1, 'deleting twice is an error')
  })

  test('config survives a control plane restart; proxies keep serving meanwhile and resync', async () => {
    const r = await cp.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-v3.yaml`])
    assert.equal(r.code, 0, r.stderr)
    await eventually(async () => [...(await versions(out, 6)).keys()].join() === 'v3', 15000, 'v3 only')
    const xdsPort = Number(cp.xds.split(':').at(-1))
    await cp.stop()
    // the control plane is down: the sidecar serves its last config
    assert.deepEqual([...(await versions(out, 10)).keys()], ['v3'])
    cp = await startControl(cp.dataDir, xdsPort)
    const list = await cp.loom(['get', 'vs', '-o', 'json'])
    assert.match(list.stdout, /"name": "reviews"/)
    for (const [i, v] of ['v1', 'v2', 'v3'].entries()) await register(cp, `reviews-${v}`, v, backends[i]!.port)
    await eventually(
      async () => {
        const s = await cp.loom(['proxy-status', '-o', 'json'])
        const nodes = JSON.parse(s.stdout) as { perType: { state: string }[] }[]
        return (
          nodes.length === 1 && nodes[0]!.perType.length >= 4 && nodes[0]!.perType.every((t) => t.state === 'SYNCED')
        )
      },
      10000,
      'the sidecar to reconnect and resync',
    )
    assert.deepEqual([...(await versions(out, 10)).keys()], ['v3'])
  })
})
