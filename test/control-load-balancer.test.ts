/**
 * The `loom.dev/load-balancer: peak-ewma` DestinationRule annotation end to end: `loom control`, a `loom proxy`
 * sidecar on xDS and two registered backends of one service. `loom apply` rejects an unknown value with its path;
 * with `peak-ewma` applied, the caller's sidecar gets the service's cluster with Loom's PeakEwma policy.
 */
import assert from 'node:assert/strict'
import * as http from 'node:http'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { writeTemp } from './helpers/proxy.js'
import { type Backend, freePort, startBackend } from './helpers/servers.js'

const CLUSTER = 'outbound|8080||echo.default.svc.cluster.local'

const rule = (value: string) => `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: echo
  annotations:
    loom.dev/load-balancer: ${value}
spec:
  host: echo
`

/** Every cluster in a config dump (static and dynamic), as config objects. */
function clusterConfigs(dump: unknown): { name?: string; load_balancing_policy?: unknown }[] {
  const out: { name?: string; load_balancing_policy?: unknown }[] = []
  const walk = (v: unknown) => {
    if (Array.isArray(v)) for (const x of v) walk(x)
    else if (v !== null && typeof v === 'object') {
      const o = v as Record<string, unknown>
      if (typeof o.name === 'string' && (o.type === 'EDS' || o.eds_cluster_config !== undefined)) out.push(o)
      for (const x of Object.values(o)) walk(x)
    }
  }
  walk(dump)
  return out
}

function get(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/', headers: { host: 'echo:8080' }, agent: false }, (res) => {
        let body = ''
        res.on('data', (c) => (body += c))
        res.on('end', () => resolve(res.statusCode === 200 ? body : `status ${res.statusCode}`))
      })
      .on('error', reject)
  })
}

describe('loom.dev/load-balancer through loom control', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  let fast: Backend
  let slow: Backend
  let out: number

  async function register(name: string, port: number): Promise<void> {
    const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
      method: 'POST',
      body: JSON.stringify({
        name,
        namespace: 'default',
        address: '127.0.0.1',
        ports: [{ name: 'http', number: port, servicePort: 8080 }],
        labels: { app: 'echo', version: name },
        ttlSeconds: 600,
      }),
    })
    assert.equal(res.status, 200, await res.text())
  }

  before(async () => {
    cp = await startControl()
    fast = await startBackend((_q, r) => r.end('fast'))
    slow = await startBackend((_q, r) => {
      setTimeout(() => r.end('slow'), 20)
    })
    await register('fast', fast.port)
    await register('slow', slow.port)
    out = await freePort()
    sidecar = await startSidecar(cp.xds, { app: 'caller', version: 'v1' }, out)
    await eventually(async () => (await get(out)) === 'fast', 15000, 'echo reachable')
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await fast?.close()
    await slow?.close()
  })

  test('an unknown value is rejected with its path, and nothing is stored', async () => {
    const r = await cp.loom(['apply', '-f', writeTemp('bad.yaml', rule('fastest'))])
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /metadata\.annotations\["loom\.dev\/load-balancer"\]/)
    assert.match(r.stderr, /unknown load balancer "fastest"; known: peak-ewma/)
    const list = await cp.loom(['get', 'destinationrules'])
    assert.doesNotMatch(list.stdout, /echo/)
  })

  test('peak-ewma: the sidecar runs the PeakEwma policy for the service, and its requests still reach it', async () => {
    const r = await cp.loom(['apply', '-f', writeTemp('dr.yaml', rule('peak-ewma'))])
    assert.equal(r.code, 0, r.stderr)
    assert.doesNotMatch(r.stderr, /Warning/)
    await eventually(
      async () => {
        const dump = (await (await fetch(`http://${sidecar.admin}/config_dump`)).json()) as unknown
        return clusterConfigs(dump).some(
          (c) =>
            c.name === CLUSTER &&
            JSON.stringify(c.load_balancing_policy ?? {}).includes('type.googleapis.com/loom.config.lb.v1.PeakEwma'),
        )
      },
      15000,
      'the cluster with the PeakEwma policy',
    )
    // how the policy shares traffic is test/load-balancing.test.ts's subject; here: the cluster serves
    const seen = new Set<string>()
    for (let i = 0; i < 20; i++) seen.add(await get(out))
    assert.ok(seen.has('fast'), [...seen].join(', '))
    assert.ok(
      [...seen].every((b) => b === 'fast' || b === 'slow'),
      [...seen].join(', '),
    )
  })
})
