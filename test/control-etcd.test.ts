/**
 * `loom control --store etcd://a,b,c` end to end, on a real 3-member etcd cluster: config applied with `loom apply`
 * is read back with `loom get` and reaches a sidecar; a second control plane on the same cluster serves the same
 * config and registry; a self-registered workload lives under an etcd lease: renewed by heartbeats on any control
 * plane, kept across a restart, gone when its heartbeats stop.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { ETCD_MISSING, type EtcdCluster, etcdBinary, startEtcdCluster } from './helpers/etcd.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const SAMPLES = new URL('../../test/fixtures/istio', import.meta.url).pathname

function reviews(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/reviews/0', headers: { host: 'reviews:9080' }, agent: false }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve(`${res.statusCode} ${body}`))
      })
      .on('error', reject)
  })
}

async function register(cp: Control, name: string, ttlSeconds: number, labels: Record<string, string>, port = 1) {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
    method: 'POST',
    body: JSON.stringify({
      name,
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: port, servicePort: 9080 }],
      labels,
      ttlSeconds,
    }),
  })
  assert.equal(res.status, 200, await res.text())
}

async function workloads(cp: Control): Promise<string[]> {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`)
  return ((await res.json()) as { id: string }[]).map((w) => w.id).sort()
}

describe('loom control on etcd', { skip: etcdBinary() === null ? ETCD_MISSING : false }, () => {
  let cluster: EtcdCluster
  let cp1: Control
  let cp2: Control | null = null
  let sidecar: Proc | null = null
  const backends: Backend[] = []
  const store = () => ['--store', cluster.url, '--etcd-prefix', '/loom-e2e', '--telemetry-interval', 'off']

  before(async () => {
    cluster = await startEtcdCluster()
    cp1 = await startControl(undefined, 0, store())
  })
  after(async () => {
    await sidecar?.stop()
    await cp2?.stop()
    await cp1?.stop()
    await Promise.all(backends.map((b) => b.close()))
    await cluster?.stop()
  })

  test('apply, get, and a sidecar routes by the config in etcd', async () => {
    assert.equal(cp1.ready.store, cluster.url)
    for (const v of ['v1', 'v3']) {
      const b = await startBackend((_q, r) => r.end(v))
      backends.push(b)
      await register(cp1, `reviews-${v}`, 600, { app: 'reviews', version: v }, b.port)
    }
    const out = await freePort()
    sidecar = await startSidecar(cp1.xds, { app: 'productpage', version: 'v1' }, out)
    const applied = await cp1.loom([
      'apply',
      '-f',
      `${SAMPLES}/destination-rule-reviews.yaml`,
      '-f',
      `${SAMPLES}/virtual-service-reviews-v3.yaml`,
    ])
    assert.equal(applied.code, 0, applied.stderr)
    assert.match(applied.stdout, /virtualservices\/reviews created/)
    const got = await cp1.loom(['get', 'vs', 'reviews', '-o', 'json'])
    assert.equal(got.code, 0, got.stderr)
    const vs = JSON.parse(got.stdout) as { metadata: { resourceVersion: string; generation: number } }
    assert.match(vs.metadata.resourceVersion, /^[1-9]\d*$/, 'the resourceVersion is an etcd revision')
    assert.equal(vs.metadata.generation, 1)
    await eventually(async () => (await reviews(out)) === '200 v3', 15000, 'the sidecar to route reviews to v3')
    for (let i = 0; i < 10; i++) assert.equal(await reviews(out), '200 v3')
  })

  test('a second control plane on the same etcd serves the same config and registry', async () => {
    cp2 = await startControl(undefined, 0, store())
    const got = await cp2.loom(['get', 'vs'])
    assert.equal(got.code, 0, got.stderr)
    assert.match(got.stdout, /^reviews\s/m)
    assert.deepEqual(await workloads(cp2), ['default/reviews-v1', 'default/reviews-v3'])
    // a write on one is seen by the other's watch
    const applied = await cp2.loom(['apply', '-f', `${SAMPLES}/virtual-service-reviews-80-20.yaml`])
    assert.equal(applied.code, 0, applied.stderr)
    const routes = async (cp: Control) => {
      const r = await fetch(`http://${cp.api}/api/v1/resources/VirtualService/default/reviews`)
      const vs = (await r.json()) as { spec: { http: { route: { weight?: number }[] }[] } }
      return vs.spec.http[0]!.route.map((d) => d.weight ?? 100).join('/')
    }
    assert.equal(await routes(cp1), '80/20', 'a linearizable read on the other control plane')
    // and the other's watch feeds its translator: its revision reaches the write's
    const revision = async (cp: Control) =>
      ((await (await fetch(`http://${cp.api}/healthz`)).json()) as { revision: number }).revision
    const written = await revision(cp2)
    await eventually(async () => (await revision(cp1)) >= written, 5000, 'cp1 to see the write')
  })

  test('a registration lives under a lease: renewed on any control plane, kept across a restart, then expires', async () => {
    const other = cp2!
    await register(other, 'leased', 2, { app: 'leased' })
    await eventually(async () => (await workloads(cp1)).includes('default/leased'), 5000, 'cp1 to see it')
    // heartbeats to the control plane it did not register with keep it past its TTL, on both
    let lastBeat = 0
    for (let i = 0; i < 6; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 500))
      const res = await fetch(`http://${cp1.api}/api/v1/workloads/default/leased/heartbeat`, { method: 'POST' })
      assert.equal(res.status, 200, await res.text())
      lastBeat = Date.now()
    }
    assert.ok((await workloads(other)).includes('default/leased'), 'kept past its 2 s TTL by heartbeats on cp1')
    // a restarted control plane has it at once, from etcd
    await other.stop()
    cp2 = await startControl(other.dataDir, 0, store())
    assert.ok((await workloads(cp2)).includes('default/leased'), 'the restarted control plane loaded it')
    // no more heartbeats: the lease runs out and every control plane drops it
    await eventually(
      async () =>
        !(await workloads(cp1)).includes('default/leased') && !(await workloads(cp2!)).includes('default/leased'),
      8000,
      'the registration to expire',
    )
    const ms = Date.now() - lastBeat
    console.log(`lease expiry: gone from both control planes ${ms} ms after the last heartbeat (TTL 2 s)`)
    assert.ok(ms >= 1500 && ms < 6000, `expired after its TTL, within etcd's lease check (${ms} ms)`)
    assert.deepEqual(await workloads(cp1), ['default/reviews-v1', 'default/reviews-v3'])
  })
})
