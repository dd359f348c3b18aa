/**
 * The dashboard's services, service and workload pages in a real browser against the Bookinfo demo (`loom up` of
 * examples/bookinfo/mesh) with the subsets of examples/bookinfo/networking/destination-rule-all.yaml and a reviews
 * VirtualService (jason to v2, everyone else split over v1, v2 and v3): after a known number of product pages, the
 * reviews page charts them, shows each version's traffic, the routes, subsets and endpoints `loom describe service`
 * prints from the same endpoint, and reviews-v2's page its SPIFFE identity, certificate and security.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { ServiceDescription } from '../src/control/describe.js'
import type { SeriesPoint } from '../src/control/telemetry/series.js'
import type { StatRow } from '../src/control/telemetry/views.js'
import { readState, type UpState } from '../src/runtime/up.js'
import { type Browser, launchBrowser } from './helpers/browser.js'
import { eventually } from './helpers/control.js'
import { ROOT, runLoom, writeTemp } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const SUBSETS = join(ROOT, 'examples', 'bookinfo', 'networking', 'destination-rule-all.yaml')
const REVIEWS_ROUTES = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http:
    - match:
        - headers:
            end-user: { exact: jason }
      route:
        - destination: { host: reviews, subset: v2 }
    - route:
        - destination: { host: reviews, subset: v1 }
          weight: 34
        - destination: { host: reviews, subset: v2 }
          weight: 33
        - destination: { host: reviews, subset: v3 }
          weight: 33
`
const N = 45

describe('dashboard: services, a service, a workload', { timeout: 240_000 }, () => {
  let up: RunningUp
  let state: UpState
  let browser: Browser
  let productpage: string
  let dashboard: string
  const api = async <T>(path: string): Promise<T> => {
    const r = await fetch(`http://${state.api}${path}`)
    assert.equal(r.status, 200, `${path}: ${r.status}`)
    return (await r.json()) as T
  }
  const rounds = async () => (await api<{ rounds: number }>('/api/v1/telemetry')).rounds
  const reviewsRequests = async () =>
    (
      await api<{ rows: StatRow[] }>('/api/v1/stats?resource=service&name=reviews&namespace=default&window=10m')
    ).rows.find((r) => r.version === '')?.requests ?? 0

  before(async () => {
    ;[up, browser] = await Promise.all([startUp(BOOKINFO, 120_000, ['--gateway-port', '0']), launchBrowser()])
    state = readState(up.dataDir)!
    productpage = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    dashboard = `http://${state.api}/dashboard/`
    const applied = await runLoom(
      ['apply', '-f', SUBSETS, '-f', writeTemp('reviews.yaml', REVIEWS_ROUTES), '--server', state.api],
      30_000,
    )
    assert.equal(applied.code, 0, applied.stderr)
  })
  after(async () => {
    await browser?.close()
    await up?.stop()
  })

  test('N product pages: the reviews page charts them, with each version, its routes, subsets and endpoints', async () => {
    // every reviews version answers through the split (v1 no stars, v2 black, v3 red)
    const seen = new Set<string>()
    await eventually(
      async () => {
        const r = await fetch(productpage)
        const html = await r.text()
        if (r.status === 200 && html.includes('Book Reviews')) {
          const stars = /class="star text-(black|red)-500"/.exec(html)?.[1]
          seen.add(stars === 'red' ? 'v3' : stars === 'black' ? 'v2' : 'v1')
        }
        return seen.size === 3
      },
      60_000,
      'the product page from every reviews version',
    )
    // what was counted so far, once two more readings of every proxy took it in
    const settle = async () => {
      const r0 = await rounds()
      await eventually(async () => (await rounds()) >= r0 + 2, 30_000, 'two more readings')
    }
    await settle()
    const before = await reviewsRequests()
    for (let i = 0; i < N; i++) assert.equal((await fetch(productpage)).status, 200)
    await settle()
    assert.equal((await reviewsRequests()) - before, N)
    // the series the charts draw: the steps of the last minute carried the pages, all answered. A point is a whole
    // step, so pages sent in the step under way show once it ends (within 15 s)
    const seriesOf = () =>
      api<{ points: SeriesPoint[] }>(
        '/api/v1/series?resource=service&name=reviews&namespace=default&window=10m&step=15s',
      )
    let series = await seriesOf()
    await eventually(
      async () => (series = await seriesOf()).points.some((p) => (p.rps ?? 0) > 0),
      30_000,
      'a finished step with the pages',
    )
    assert.equal(series.points.length, 40)
    const busy = series.points.filter((p) => (p.rps ?? 0) > 0)
    assert.ok(busy.length > 0 && busy.every((p) => p.successRate === 1 && p.p99! >= p.p50!), JSON.stringify(busy))

    const { page } = browser
    await page.goto(`${dashboard}#/services`)
    const row = page.locator('[data-testid="services-table"] tr[data-service="default/reviews"]')
    await row.waitFor()
    assert.equal(await row.locator('td').nth(3).textContent(), '3/3')
    // the pages are the service's traffic of the last minute: a rate, all answered
    assert.match((await row.locator('td').nth(4).textContent()) ?? '', /^\d+\.\d+$/)
    assert.equal(await row.locator('td').nth(5).textContent(), '100%')
    await page.locator('[data-testid="workloads-table"] tr[data-workload="default/reviews-v2"]').waitFor()
    await browser.screenshot('dashboard-services')
    await row.getByRole('link', { name: 'reviews' }).click()
    assert.match(page.url(), /#\/services\/default\/reviews$/)

    // three versions, each with traffic in the last minute
    await page.waitForFunction(() =>
      ['v1', 'v2', 'v3'].every(
        (v) =>
          Number(document.querySelector(`[data-testid="versions"] tr[data-version="${v}"]`)?.getAttribute('data-rps')) >
          0,
      ),
    )
    // the charts hold the steps with the pages
    for (const chart of ['chart-rps', 'chart-success', 'chart-latency']) {
      await page.waitForFunction(
        (id) => Number(document.querySelector(`[data-testid="${id}"]`)?.getAttribute('data-points')) > 0,
        chart,
      )
      assert.equal(await page.locator(`[data-testid="${chart}"] canvas`).count(), 1, chart)
    }
    // success and latency have a value only in steps with requests: as many as the series has busy steps, or
    // one more or less when a reading came in between
    const latencyPoints = Number(await page.getByTestId('chart-latency').getAttribute('data-points'))
    assert.ok(Math.abs(latencyPoints - busy.length) <= 1, `${latencyPoints} drawn, ${busy.length} busy`)

    // the routes of the VirtualService
    const routes = page.getByTestId('routes-reviews')
    await routes.waitFor()
    assert.equal(await routes.locator('tbody tr').count(), 2)
    assert.match((await routes.locator('tr[data-route="1"]').textContent()) ?? '', /jason/)
    assert.deepEqual(
      await routes
        .locator('tr[data-route="1"] li')
        .evaluateAll((ls) => ls.map((l) => [l.getAttribute('data-destination'), l.getAttribute('data-weight')])),
      [['v2', '100']],
    )
    assert.deepEqual(
      await routes
        .locator('tr[data-route="2"] li')
        .evaluateAll((ls) => ls.map((l) => [l.getAttribute('data-destination'), l.getAttribute('data-weight')])),
      [
        ['v1', '34'],
        ['v2', '33'],
        ['v3', '33'],
      ],
    )
    // the subsets, each with its one healthy endpoint; the endpoints, all healthy
    const subsets = page.getByTestId('subsets')
    assert.deepEqual(
      await subsets
        .locator('tbody tr')
        .evaluateAll((rs) => rs.map((r) => [r.getAttribute('data-subset'), r.querySelectorAll('td')[3]?.textContent])),
      [
        ['v1', '1/1'],
        ['v2', '1/1'],
        ['v3', '1/1'],
      ],
    )
    const states = await page
      .getByTestId('endpoints')
      .locator('tbody tr')
      .evaluateAll((rs) => rs.map((r) => r.getAttribute('data-state')))
    assert.deepEqual(states, ['healthy', 'healthy', 'healthy'])
    // callers: the product page; reviews v2 and v3 call ratings
    await page.locator('[data-testid="edges-in"] tr[data-peer="default/productpage-v1"]').waitFor()
    await page.locator('[data-testid="edges-out"] tr[data-peer="default/ratings-v1"]').waitFor()
    await browser.screenshot('dashboard-service')

    // loom describe service prints from the same endpoint the page read
    const d = await api<ServiceDescription>('/api/v1/describe/service/default/reviews')
    assert.deepEqual(
      d.subsets.map((s) => [s.name, s.endpoints.length, s.healthy]),
      [
        ['v1', 1, 1],
        ['v2', 1, 1],
        ['v3', 1, 1],
      ],
    )
    // each endpoint is seen by its callers' proxies (productpage's, at least), none ejected
    assert.ok(d.endpoints.every((e) => e.observations.some((o) => o.proxy === 'productpage-v1.default')))
    const cli = await runLoom(['describe', 'service', 'reviews', '--server', state.api])
    assert.equal(cli.code, 0, cli.stderr)
    assert.equal((cli.stdout.match(/ HEALTHY /g) ?? []).length, 3)
    assert.match(cli.stdout, /subset v2 \(version=v2\): 1 endpoint\(s\), 1 healthy/)
    assert.match(cli.stdout, /1\. \[\{"headers":\{"end-user":\{"exact":"jason"\}\}\}\] → reviews\/v2\n/)
    assert.match(cli.stdout, /2\. every request → reviews\/v1 34%, reviews\/v2 33%, reviews\/v3 33%\n/)
    assert.deepEqual(browser.errors, [])
  })

  test("reviews-v2's page: its identity and certificate, its callers, its security", async () => {
    const { page } = browser
    await page.goto(`${dashboard}#/workloads/default/reviews-v2`)
    const id = page.getByTestId('spiffe-id')
    await id.waitFor()
    assert.equal(await id.textContent(), 'spiffe://cluster.local/ns/default/sa/bookinfo-reviews')
    assert.equal(await page.getByTestId('service-account').textContent(), 'bookinfo-reviews')
    const cert = page.locator('[data-testid="certificates"] tr[data-not-after]')
    await cert.waitFor()
    const notAfter = Date.parse((await cert.getAttribute('data-not-after'))!)
    assert.ok(notAfter > Date.now(), `certificate valid until ${new Date(notAfter).toISOString()}`)
    assert.match((await cert.textContent()) ?? '', /spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-reviews/)
    assert.match((await cert.locator('td').nth(4).textContent()) ?? '', /^in \d+/)
    // what the proxy itself holds: the same serial
    const own = (await (
      await fetch(`http://127.0.0.1:${state.workloads.find((w) => w.name === 'reviews-v2')!.adminPort}/certs`)
    ).json()) as { identity: { serial_number: string } }
    assert.equal(await cert.getAttribute('data-serial'), own.identity.serial_number)
    // the charts and edges of its own traffic: productpage calls it, it calls ratings
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid="chart-rps"]')?.getAttribute('data-points')) > 0,
    )
    await page.locator('[data-testid="edges-in"] tr[data-peer="default/productpage-v1"]').waitFor()
    await page.locator('[data-testid="edges-out"] tr[data-peer="default/ratings-v1"]').waitFor()
    // mTLS on its port (PERMISSIVE by default: no PeerAuthentication), no policy
    const port = page.locator('[data-testid="mtls-ports"] tr[data-port="9080"]')
    await port.waitFor()
    assert.equal(await port.getAttribute('data-mode'), 'PERMISSIVE')
    assert.match((await page.getByTestId('workload-policies').textContent()) ?? '', /No AuthorizationPolicy/)
    await browser.screenshot('dashboard-workload')
    assert.deepEqual(browser.errors, [])
  })
})
