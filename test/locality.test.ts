/**
 * Locality load balancing end to end: `loom control`, a `loom proxy --locality region1/zone1` sidecar and backends
 * registered as workloads in three localities. With a DestinationRule's outlierDetection and failover the caller
 * sends everything to its own zone; when that endpoint answers 5xx and is ejected, traffic fails over to the next
 * locality, and comes back once the ejection is over. `distribute` splits traffic 80/20 between two regions.
 */
import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type Control, eventually, type Proc, startControl, startSidecar } from './helpers/control.js'
import { runLoom, writeTemp } from './helpers/proxy.js'
import { type Backend, freePort, startBackend, getWithHost } from './helpers/servers.js'

const get = (port: number, host: string) => getWithHost(port, host)

async function tally(port: number, host: string, n: number): Promise<Map<string, number>> {
  const out = new Map<string, number>()
  for (let i = 0; i < n; i++) {
    const r = await get(port, host)
    const key = r.status === 200 ? r.body : `${r.status}`
    out.set(key, (out.get(key) ?? 0) + 1)
  }
  return out
}

async function register(cp: Control, app: string, name: string, port: number, locality: string): Promise<void> {
  const res = await fetch(`http://${cp.api}/api/v1/workloads`, {
    method: 'POST',
    body: JSON.stringify({
      name,
      namespace: 'default',
      address: '127.0.0.1',
      ports: [{ name: 'http', number: port, servicePort: 9080 }],
      labels: { app },
      ttlSeconds: 600,
      locality,
    }),
  })
  assert.equal(res.status, 200, await res.text())
}

const RULES = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo}
spec:
  host: echo
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
      localityLbSetting:
        failover: [{from: region1, to: region2}]
    outlierDetection: {consecutive5xxErrors: 3, interval: 0.2s, baseEjectionTime: 1s, maxEjectionPercent: 100}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: split}
spec:
  host: split
  trafficPolicy:
    loadBalancer:
      localityLbSetting:
        distribute:
        - from: region1/zone1/*
          to: {"region1/zone1/*": 80, "region2/*": 20}
`

describe('locality load balancing through loom control', () => {
  let cp: Control
  let sidecar: Proc & { admin: string }
  let out: number
  const backends: Backend[] = []
  /** what the region1/zone1 echo endpoint answers */
  let localStatus = 200

  before(async () => {
    cp = await startControl()
    const echo: [string, string][] = [
      ['local', 'region1/zone1'],
      ['zone2', 'region1/zone2'],
      ['region2', 'region2/zone1'],
    ]
    for (const [name, locality] of echo) {
      const b = await startBackend((_q, r) => {
        r.statusCode = name === 'local' ? localStatus : 200
        r.end(name)
      })
      backends.push(b)
      await register(cp, 'echo', `echo-${name}`, b.port, locality)
    }
    for (const [name, locality] of [
      ['near', 'region1/zone1/a'],
      ['far', 'region2/zone7'],
    ] as const) {
      const b = await startBackend((_q, r) => r.end(name))
      backends.push(b)
      await register(cp, 'split', `split-${name}`, b.port, locality)
    }
    const r = await cp.loom(['apply', '-f', writeTemp('locality.yaml', RULES)])
    assert.equal(r.code, 0, r.stderr)
    out = await freePort()
    sidecar = await startSidecar(cp.xds, { app: 'client' }, out, ['--locality', 'region1/zone1'])
  })
  after(async () => {
    await sidecar?.stop()
    await cp?.stop()
    await Promise.all(backends.map((b) => b.close()))
  })

  test('the caller in region1/zone1 sends all its traffic to the endpoint in its zone', async () => {
    await eventually(
      async () => (await tally(out, 'echo:9080', 10)).get('local') === 10,
      15000,
      'everything to the local endpoint',
    )
    assert.deepEqual([...(await tally(out, 'echo:9080', 50))], [['local', 50]])
    // the proxy shows the priorities the control plane computed for its locality
    const clusters = (await (await fetch(`http://${sidecar.admin}/clusters?format=json`)).json()) as {
      cluster_statuses: {
        name: string
        host_statuses: { locality: { region?: string; zone?: string }; priority: number }[]
      }[]
    }
    const echo = clusters.cluster_statuses.find((c) => c.name === 'outbound|9080||echo.default.svc.cluster.local')
    assert.ok(echo, 'no echo cluster on the sidecar')
    const priorities = Object.fromEntries(
      echo.host_statuses.map((h) => [`${h.locality.region}/${h.locality.zone}`, h.priority]),
    )
    assert.deepEqual(priorities, { 'region1/zone1': 0, 'region1/zone2': 1, 'region2/zone1': 2 })
  })

  test('when the local endpoint fails and is ejected, traffic fails over to the next locality, then comes back', async () => {
    localStatus = 500
    // three 500s eject it; from then on the same-region zone takes everything
    const failing = await tally(out, 'echo:9080', 3)
    assert.equal(failing.get('500'), 3, JSON.stringify([...failing]))
    assert.deepEqual([...(await tally(out, 'echo:9080', 30))], [['zone2', 30]])
    localStatus = 200
    // after the ejection time (1 s, checked every 0.2 s) it is back and takes everything again
    await eventually(
      async () => (await tally(out, 'echo:9080', 5)).get('local') === 5,
      10000,
      'the local endpoint back',
    )
    assert.deepEqual([...(await tally(out, 'echo:9080', 30))], [['local', 30]])
  })

  test('a sidecar whose bootstrap says node.locality region2/zone1 prefers region2', async () => {
    const port = await freePort()
    const bootstrap = writeTemp('node.yaml', 'node: {locality: {region: region2, zone: zone1}}\n')
    const far = await startSidecar(cp.xds, { app: 'client2' }, port, ['-c', bootstrap])
    try {
      await eventually(
        async () => (await tally(port, 'echo:9080', 10)).get('region2') === 10,
        15000,
        'everything to region2',
      )
      const clusters = (await (await fetch(`http://${far.admin}/clusters?format=json`)).json()) as {
        cluster_statuses: { name: string; host_statuses: { locality: { region?: string }; priority: number }[] }[]
      }
      const echo = clusters.cluster_statuses.find((c) => c.name === 'outbound|9080||echo.default.svc.cluster.local')!
      const byRegion = new Set(echo.host_statuses.map((h) => `${h.locality.region}:${h.priority}`))
      assert.deepEqual([...byRegion].sort(), ['region1:1', 'region2:0'])
    } finally {
      await far.stop()
    }
  })

  test('loom proxy refuses a malformed --locality', async () => {
    const r = await runLoom(['proxy', '--xds', cp.xds, '--locality', 'region1//x'])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /--locality must be region\[\/zone\[\/subzone\]\], not "region1\/\/x"/)
  })

  test('distribute 80/20: a few hundred requests split within tolerance', async () => {
    await eventually(async () => (await get(out, 'split:9080')).status === 200, 15000, 'the split service')
    const n = 400
    const seen = await tally(out, 'split:9080', n)
    const near = seen.get('near') ?? 0
    const far = seen.get('far') ?? 0
    assert.equal(near + far, n, JSON.stringify([...seen]))
    // locality picks are a weighted round robin: close to exact; 5 points of tolerance for a shared machine
    assert.ok(Math.abs(near / n - 0.8) <= 0.05, `near ${near} of ${n}`)
  })
})
