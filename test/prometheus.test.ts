/**
 * A real Prometheus (Debian's `prometheus`) scrapes `loom demo`: configured by `loom prometheus-config`, its targets
 * from the file `loom up` keeps. Product page loads sent through the gateway come back out of PromQL on Istio's
 * `istio_requests_total` as exact counts, by both reporters (each load: gateway → productpage → details and reviews;
 * reviews v2 and v3 → ratings); a restarted gateway is followed (its counter starts again, increase() counts across
 * the reset); `loom down` empties the file and Prometheus drops every target.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, type TestContext, test } from 'node:test'
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

/** Istio's request counter, `reporter` and the other labels as given, answered 200. */
const requests = (labels: string) => `istio_requests_total{${labels},response_code="200"}`
/** requests the gateway sent to productpage (the target label `kind` is the one `loom up` gives each proxy) */
const GATEWAY_TO_PRODUCTPAGE = requests('kind="gateway",reporter="source",destination_service_name="productpage"')
/** requests an app's sidecars took in, all versions or those `version` matches */
const inbound = (app: string, version = '.*') =>
  requests(`reporter="destination",destination_service_name="${app}",destination_version=~"${version}"`)

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

  /**
   * One product page load, which must show the details and the reviews (with stars from v2 and v3); returns which
   * version of reviews answered (v1: no stars, v2: black, v3: red).
   */
  const load = async (): Promise<string> => {
    const r = await fetch(page, { signal: AbortSignal.timeout(20_000) })
    const body = await r.text()
    assert.equal(r.status, 200, body.slice(0, 500))
    assert.ok(body.includes('<h4>Book Details</h4>'), `no details: ${body.slice(0, 500)}`)
    assert.ok(body.includes('<h4>Book Reviews</h4>'), `no reviews: ${body.slice(0, 500)}`)
    assert.ok(!body.includes('Ratings service is currently unavailable'), 'ratings unavailable')
    const stars = /class="star text-(black|red)-500"/.exec(body)?.[1]
    return stars === 'red' ? 'v3' : stars === 'black' ? 'v2' : 'v1'
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

  /**
   * increase(`selector`) since Prometheus started, against `sent`: the counters' rise between each series' first and
   * last sample in the window is exactly `sent` (flat before and after the traffic, resets counted), and
   * increase() extrapolates each series towards the window's ends by at most the distance to the end and 1.1 times
   * the series' average interval (Prometheus' rule): so at least `sent`, at most `sent` × the largest such factor.
   */
  const checkIncrease = async (t: TestContext, selector: string, sent: number) => {
    const atS = Date.now() / 1000
    const windowS = Math.ceil(atS - start / 1000)
    const increase = await prom!.scalar(`sum(increase(${selector}[${windowS}s]))`, atS)
    const factors = (await prom!.samples(selector, windowS, atS))
      .filter((s) => s.values.length >= 2)
      .map((s) => {
        const first = s.values[0]![0]
        const last = s.values.at(-1)![0]
        const span = last - first
        const most = (1.1 * span) / (s.values.length - 1)
        return (span + Math.min(first - (atS - windowS), most) + Math.min(atS - last, most)) / span
      })
    assert.ok(increase !== null && factors.length > 0, `increase(${selector}[${windowS}s]): no samples`)
    const most = sent * Math.max(...factors)
    t.diagnostic(`increase over ${windowS}s: ${increase.toFixed(2)} (sent ${sent}, at most ${most.toFixed(2)})`)
    assert.ok(
      increase >= sent - 0.01 && increase <= most + 0.01,
      `increase over ${windowS}s: ${increase}, sent ${sent} (expected from ${sent} to ${most.toFixed(2)})`,
    )
  }

  before(async () => {
    // the gateway on a port of its own: counts are exact only if no other mesh's traffic can reach it
    up = await startUp(BOOKINFO, 180_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    proxies = state.gateways.length + state.workloads.filter((w) => w.sidecar !== false).length
    // the mesh serves the page (every proxy has its config), and each reviews version has answered (so every
    // series the checks read exists), before anything is counted
    await eventually(
      () =>
        load().then(
          () => true,
          () => false,
        ),
      60_000,
      'the product page',
    )
    // (the last workload to be ready reaches productpage's sidecar a moment after loom up says up)
    const versions = new Set<string>()
    const deadline = Date.now() + 90_000
    let last = ''
    while (versions.size < 3 && Date.now() < deadline)
      // a page without ratings (reviews' sidecar still waiting for ratings' endpoint) is a warm-up page, not counted
      await load().then(
        (v) => versions.add(v),
        (e: Error) => {
          last = e.message
        },
      )
    assert.equal(versions.size, 3, `reviews versions seen in 90 s: ${[...versions]}; last failure: ${last}`)
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

  test('the counters Prometheus holds equal the traffic sent', async (t) => {
    await prom!.scrapedSince(Date.now())
    const queries = {
      gateway: GATEWAY_TO_PRODUCTPAGE,
      productpage: inbound('productpage'),
      details: inbound('details'),
      reviews: inbound('reviews'),
      reviewsWithRatings: inbound('reviews', 'v2|v3'),
      ratings: inbound('ratings'),
      // the same calls as their callers' sidecars report them
      productpageToReviews: requests(
        'reporter="source",source_workload="productpage-v1",destination_service_name="reviews"',
      ),
      reviewsToRatings: requests('reporter="source",source_app="reviews",destination_service_name="ratings"'),
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
    assert.equal(delta.productpageToReviews, N, seen)
    // reviews v2 and v3 call ratings once per request, v1 never; all three answer
    assert.equal(delta.ratings, delta.reviewsWithRatings, seen)
    assert.equal(delta.reviewsToRatings, delta.ratings, seen)
    assert.ok(delta.ratings! > 0 && delta.ratings! < N, seen)
    // per version, the three add up
    const perVersion = await prom!.query(`sum by (destination_version) (${inbound('reviews')})`)
    assert.deepEqual(perVersion.map((s) => s.metric.destination_version).sort(), ['v1', 'v2', 'v3'])
    // increase() since Prometheus started (every series was there: the warm-up reached each version)
    await checkIncrease(t, inbound('reviews'), N)
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
    const windowS = Math.ceil((Date.now() - start) / 1000)
    assert.ok((await sum(`resets(${GATEWAY_TO_PRODUCTPAGE}[${windowS}s])`)) >= 1, 'no counter reset seen')
    // the raw difference would be M - (N + the warm-up's loads), negative
    await checkIncrease(t, GATEWAY_TO_PRODUCTPAGE, N + M)
  })

  test('loom down empties the targets file, and Prometheus drops every target', async () => {
    upStopped = true
    await up!.stop()
    assert.deepEqual(JSON.parse(readFileSync(prometheusTargetsPath(up!.dataDir), 'utf8')), [])
    // Prometheus applies discovery changes every 5 s
    await eventually(async () => (await prom!.targets()).length === 0, 60_000, 'Prometheus to drop the targets')
  })
})
