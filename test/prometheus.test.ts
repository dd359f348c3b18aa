/**
 * A real Prometheus (Debian's `prometheus`) scrapes `loom demo`: configured by `loom prometheus-config`, its targets
 * from the file `loom up` keeps. Product page loads sent through the gateway come back out of PromQL as exact
 * counts (each load: gateway → productpage → details and reviews; reviews v2 and v3 → ratings); a restarted gateway
 * is followed (its counter starts again, increase() counts across the reset); `loom down` empties the file and
 * Prometheus drops every target.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { prometheusTargetsPath, readState, type UpState } from '../src/runtime/up.js'
import { eventually } from './helpers/control.js'
import { prometheusBinary, type RunningPrometheus, startPrometheus } from './helpers/prometheus.js'
import { ROOT, runLoom } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const PROMETHEUS = prometheusBinary()

/** product page loads in the first round, and after the gateway's restart (fewer: a counter reset shows as a drop) */
const N = 30
const M = 10

/**
 * The counters the checks read, summed over the demo's proxies: requests answered 2xx by the gateway's
 * productpage cluster, and by each app's sidecar inbound cluster (the target labels `kind`, `app` and `version`
 * are the ones `loom up` gives each proxy).
 */
const GATEWAY_TO_PRODUCTPAGE =
  'envoy_cluster_upstream_rq_xx{kind="gateway",envoy_cluster_name="outbound|9080||productpage.default.svc.cluster.local",envoy_response_code_class="2"}'
const inbound = (app: string, version = '.*') =>
  `envoy_cluster_upstream_rq_xx{kind="sidecar",app="${app}",version=~"${version}",envoy_cluster_name=~"inbound[|].*",envoy_response_code_class="2"}`

describe('Prometheus scrapes loom demo', {
  timeout: 420_000,
  skip:
    PROMETHEUS === null
      ? 'the prometheus binary is not installed (Debian: apt-get install prometheus; .ci/run installs it)'
      : false,
}, () => {
  let up: RunningUp | undefined
  let upStopped = false
  let prom: RunningPrometheus | undefined
  let state: UpState
  let page: string
  let proxies: number
  /** when Prometheus was ready, before the first counted traffic: the window increase() looks back over starts here */
  let start: number

  /** One product page load, which must show the details and the reviews (with stars from v2 and v3). */
  const load = async (): Promise<void> => {
    const r = await fetch(page, { signal: AbortSignal.timeout(20_000) })
    const body = await r.text()
    assert.equal(r.status, 200, body.slice(0, 500))
    assert.ok(body.includes('<h4>Book Details</h4>'), `no details: ${body.slice(0, 500)}`)
    assert.ok(body.includes('<h4>Book Reviews</h4>'), `no reviews: ${body.slice(0, 500)}`)
    assert.ok(!body.includes('Ratings service is currently unavailable'), 'ratings unavailable')
  }
  const loads = async (n: number) => {
    for (let i = 0; i < n; i++) await load()
  }
  /** `sum(<selector>)` now; a selector that matches nothing fails, saying so. */
  const sum = async (selector: string): Promise<number> => {
    const v = await prom!.scalar(`sum(${selector})`)
    assert.notEqual(v, null, `sum(${selector}): no series (the series Prometheus has: ${await names()})`)
    return v!
  }
  const names = async () =>
    [...new Set((await prom!.query('count by (__name__) ({job="envoy-stats"})')).map((s) => s.metric.__name__))]
      .slice(0, 40)
      .join(', ')

  before(async () => {
    // the gateway on a port of its own: counts are exact only if no other mesh's traffic can reach it
    up = await startUp(BOOKINFO, 180_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    proxies = state.gateways.length + state.workloads.filter((w) => w.sidecar !== false).length
    // the mesh serves the page (every proxy has its config) before anything is counted
    await eventually(
      () =>
        load().then(
          () => true,
          () => false,
        ),
      60_000,
      'the product page',
    )
    // the config as a user gets it, with a laptop's 5 s made 1 s so the test waits less
    const cfg = await runLoom(['prometheus-config', '--data-dir', up.dataDir, '--scrape-interval', '1s'])
    assert.equal(cfg.code, 0, cfg.stderr)
    prom = await startPrometheus(PROMETHEUS!, cfg.stdout)
    start = Date.now()
  })
  after(async () => {
    if (!upStopped) await up?.stop()
    await prom?.stop()
  })

  test('Prometheus scrapes every proxy of the demo, labelled with its workload', async () => {
    assert.equal(proxies, 7, 'the demo: a gateway and six sidecars')
    await prom!.scrapedSince(0)
    const targets = await prom!.targets()
    assert.equal(targets.length, proxies, targets.map((t) => t.scrapeUrl).join(', '))
    for (const t of targets) {
      assert.equal(t.health, 'up', `${t.scrapeUrl}: ${t.lastError}`)
      assert.match(t.scrapeUrl, /^http:\/\/127\.0\.0\.1:\d+\/stats\/prometheus$/)
    }
    const upSeries = await prom!.query('up{job="envoy-stats"}')
    assert.equal(upSeries.length, proxies)
    assert.ok(
      upSeries.every((s) => s.value === 1),
      JSON.stringify(upSeries),
    )
    const byWorkload = new Map(upSeries.map((s) => [s.metric.workload, s.metric]))
    for (const w of state.workloads) {
      const m = byWorkload.get(w.name)
      assert.ok(m !== undefined, `no target for ${w.name}`)
      assert.equal(m.instance, `127.0.0.1:${w.adminPort}`)
      assert.deepEqual(
        [m.kind, m.namespace, m.app, m.version],
        ['sidecar', w.namespace, w.labels.app, w.labels.version],
      )
    }
    const g = byWorkload.get(state.gateways[0]!.name)
    assert.deepEqual([g?.kind, g?.namespace, g?.istio], ['gateway', 'istio-system', 'ingressgateway'])
    // the control plane's HTTP service discovery names the same proxies with the same labels
    const file = JSON.parse(readFileSync(prometheusTargetsPath(up!.dataDir), 'utf8'))
    const sd = await (await fetch(`http://${state.api}/api/v1/prometheus/targets`)).json()
    assert.deepEqual(sd, file)
    const httpSd = await runLoom(['prometheus-config', '--data-dir', up!.dataDir, '--http-sd'])
    assert.equal(httpSd.code, 0, httpSd.stderr)
    assert.ok(httpSd.stdout.includes(`url: "http://${state.api}/api/v1/prometheus/targets"`), httpSd.stdout)
  })

  test('the counters Prometheus holds equal the traffic sent', async () => {
    await prom!.scrapedSince(Date.now())
    const queries = {
      gateway: GATEWAY_TO_PRODUCTPAGE,
      productpage: inbound('productpage'),
      details: inbound('details'),
      reviews: inbound('reviews'),
      reviewsWithRatings: inbound('reviews', 'v2|v3'),
      ratings: inbound('ratings'),
    }
    const baseline: Record<string, number> = {}
    // (a series that has not been scraped yet, a counter no request has made, counts 0)
    for (const [k, q] of Object.entries(queries)) baseline[k] = (await prom!.scalar(`sum(${q})`)) ?? 0
    await loads(N)
    await prom!.scrapedSince(Date.now())
    const delta: Record<string, number> = {}
    for (const [k, q] of Object.entries(queries)) delta[k] = (await sum(q)) - baseline[k]!
    const seen = JSON.stringify(delta)
    assert.equal(delta.gateway, N, seen)
    assert.equal(delta.productpage, N, seen)
    assert.equal(delta.details, N, seen)
    assert.equal(delta.reviews, N, seen)
    // reviews v2 and v3 call ratings once per request, v1 never; all three answer
    assert.equal(delta.ratings, delta.reviewsWithRatings, seen)
    assert.ok(delta.ratings! > 0 && delta.ratings! < N, seen)
    // per version, the three add up
    const perVersion = await prom!.query(`sum by (version) (${inbound('reviews')})`)
    assert.deepEqual(perVersion.map((s) => s.metric.version).sort(), ['v1', 'v2', 'v3'])
  })

  test('a restarted gateway is followed: its counter starts again and increase() counts across the reset', async (t) => {
    const gw = state.gateways[0]!
    const counted = await sum(GATEWAY_TO_PRODUCTPAGE)
    assert.ok(counted >= N, String(counted))
    const killedAt = Date.now()
    process.kill(gw.pid!, 'SIGKILL')
    // loom up starts it again (same admin and gateway ports); it serves once its config is in sync
    await eventually(
      async () => {
        const pid = readState(up!.dataDir)?.gateways[0]?.pid
        if (pid === undefined || pid === null || pid === gw.pid) return false
        const ready = await fetch(`http://127.0.0.1:${gw.adminPort}/ready`, { signal: AbortSignal.timeout(2000) })
        if (ready.status !== 200) return false
        const nodes = (await (await fetch(`http://${state.api}/api/v1/proxy-status`)).json()) as {
          nodeId: string
          connectedAt: string
          perType: { state: string }[]
        }[]
        const n = nodes.find((x) => x.nodeId === gw.nodeId)
        return (
          n !== undefined &&
          Date.parse(n.connectedAt) >= killedAt &&
          n.perType.length >= 4 &&
          n.perType.every((t) => t.state === 'SYNCED')
        )
      },
      60_000,
      'the gateway to be restarted and in sync',
    )
    await loads(M)
    await prom!.scrapedSince(Date.now())
    // the new process counted only what it served
    assert.equal(await sum(GATEWAY_TO_PRODUCTPAGE), M)
    const window = `${Math.ceil((Date.now() - start) / 1000)}s`
    assert.ok((await sum(`resets(${GATEWAY_TO_PRODUCTPAGE}[${window}])`)) >= 1, 'no counter reset seen')
    // increase() extrapolates to the window's ends (a few per cent of a window this long); the raw difference
    // would be M - (N + earlier loads), negative
    const increase = await sum(`increase(${GATEWAY_TO_PRODUCTPAGE}[${window}])`)
    t.diagnostic(`increase over ${window} across the restart: ${increase.toFixed(2)} (sent ${N + M})`)
    assert.ok(Math.abs(increase - (N + M)) <= 0.15 * (N + M), `increase over ${window}: ${increase}, sent ${N + M}`)
  })

  test('loom down empties the targets file, and Prometheus drops every target', async () => {
    upStopped = true
    await up!.stop()
    assert.deepEqual(JSON.parse(readFileSync(prometheusTargetsPath(up!.dataDir), 'utf8')), [])
    // Prometheus applies discovery changes every 5 s
    await eventually(async () => (await prom!.targets()).length === 0, 60_000, 'Prometheus to drop the targets')
  })
})
