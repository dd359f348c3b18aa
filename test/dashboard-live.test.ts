/**
 * The dashboard's Proxies and Live requests pages in a real browser against the Bookinfo demo (`loom up` of
 * examples/bookinfo/mesh): every proxy SYNCED on every xDS type, with the versions the API reports and a config dump
 * that is the proxy's own; a tap of productpage-v1 that shows the product pages sent through the gateway, a click
 * that explains one as `loom explain` does, and an explanation by hand that finds a fault VirtualService.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { Page } from 'playwright-core'
import { readState, type UpState } from '../src/runtime/up.js'
import { type Browser, launchBrowser } from './helpers/browser.js'
import { eventually } from './helpers/control.js'
import { ROOT, runLoom } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')

const WORKLOADS = [
  'details-v1',
  'ingressgateway',
  'productpage-v1',
  'ratings-v1',
  'reviews-v1',
  'reviews-v2',
  'reviews-v3',
]
const TYPES = ['CDS', 'EDS', 'SDS', 'LDS', 'RDS']

/** Every call to ratings answered 503 by the caller's sidecar. */
const RATINGS_ABORT = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings, namespace: default }
spec:
  hosts: [ratings]
  http:
    - fault:
        abort:
          percentage: { value: 100 }
          httpStatus: 503
      route:
        - destination: { host: ratings }
`

interface ApiProxy {
  nodeId: string
  workload: string
  kind: string
  synced: boolean
  perType: { typeUrl: string; state: string; sentVersion?: string; ackedVersion?: string }[]
}

/** The explain tree's lines as `loom explain` indents them: four spaces a level, mark, text. */
async function treeLines(page: Page): Promise<string[]> {
  return page
    .getByTestId('explain-line')
    .evaluateAll((els) => els.map((e) => `${'    '.repeat(Number(e.getAttribute('data-depth')))}${e.textContent}`))
}

describe('the Proxies and Live requests pages on the Bookinfo demo', { timeout: 180_000 }, () => {
  let up: RunningUp
  let state: UpState
  let browser: Browser
  let gateway: string
  const dashboard = (hash: string) => `http://${state.api}/dashboard/${hash}`
  const api = async <T>(path: string, init?: RequestInit): Promise<T> => {
    const r = await fetch(`http://${state.api}${path}`, init)
    assert.equal(r.status, 200, `${path}: ${r.status}`)
    return (await r.json()) as T
  }

  before(async () => {
    up = await startUp(BOOKINFO, 120_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    gateway = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}`
    browser = await launchBrowser()
    // the page is whole (details and reviews answer) before anything is counted
    await eventually(
      async () => {
        const r = await fetch(`${gateway}/productpage`)
        const html = await r.text()
        return r.status === 200 && html.includes('Book Details') && html.includes('Book Reviews')
      },
      60_000,
      'a whole product page through the gateway',
    )
  })
  after(async () => {
    await browser?.close()
    await up?.stop()
  })

  test('the Proxies page: all 7 proxies SYNCED on every type, the versions of the API, a config dump', async () => {
    const { page } = browser
    await page.goto(dashboard('#/proxies'))
    // the page refreshes every 5 s: it settles on every proxy synced
    await page.waitForFunction(
      () =>
        document.querySelectorAll('[data-testid="proxy-row"]').length === 7 &&
        document.querySelectorAll('[data-testid="proxy-row"][data-synced="false"]').length === 0,
      null,
      { timeout: 30_000 },
    )
    const summary = page.getByTestId('proxies-summary')
    assert.equal(await summary.textContent(), '7 proxies, all synced · 6 sidecars, 1 gateway')
    assert.equal(await summary.getAttribute('data-synced'), 'true')
    assert.deepEqual(await page.locator('table.proxies thead th').allTextContents(), [
      'Workload',
      'Kind',
      ...TYPES,
      'Uptime',
      'Proxy',
      'Node id',
    ])
    const apiProxies = await api<ApiProxy[]>('/api/v1/proxy-status')
    const rows = page.getByTestId('proxy-row')
    const seen: string[] = []
    for (let i = 0; i < 7; i++) {
      const row = rows.nth(i)
      const nodeId = (await row.getAttribute('data-node'))!
      const p = apiProxies.find((x) => x.nodeId === nodeId)!
      seen.push(p.workload)
      const cells = await row.locator('td').allTextContents()
      assert.match(cells[0]!, new RegExp(`^${p.workload}\\.(default|istio-system)$`))
      assert.equal(cells[1], p.workload === 'ingressgateway' ? 'gateway' : 'sidecar')
      for (const t of TYPES) {
        const cell = row.locator(`td[data-type="${t}"] .sync`)
        assert.equal(await cell.getAttribute('data-state'), 'SYNCED', `${p.workload} ${t}`)
        assert.ok(await cell.evaluate((e) => e.classList.contains('ok')))
      }
      // the version shown is the one the proxy ACKed, as the API says
      const cds = p.perType.find((x) => x.typeUrl.endsWith('.Cluster'))!
      assert.equal(await row.locator('td[data-type="CDS"] .version').textContent(), cds.ackedVersion!.slice(0, 8))
      assert.match(cells.at(-2)!, /^loom\/\d+\.\d+\.\d+(sotw|delta) xDS$/)
    }
    assert.deepEqual(seen.sort(), WORKLOADS)
    await browser.screenshot('dashboard-proxies')

    // one proxy: its types and the config it is served
    await rows.filter({ hasText: 'productpage-v1' }).getByRole('link').click()
    await page.getByTestId('dump-type').first().waitFor()
    const productpage = apiProxies.find((x) => x.workload === 'productpage-v1')!
    const dump = await api<Record<string, { version: string; resources: { name?: string }[] }>>(
      `/debug/snapshot?node=${encodeURIComponent(productpage.nodeId)}`,
    )
    const names = (suffix: string) =>
      Object.entries(dump)
        .find(([u]) => u.endsWith(suffix))![1]
        .resources.map((r) => r.name!)
        .sort()
    const listeners = page.locator('[data-testid="dump-type"][data-type="LDS"]')
    await listeners.locator('summary').first().click()
    const shown = await listeners
      .locator('[data-testid="dump-resource"]')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-name')))
    assert.deepEqual(shown, names('.Listener'))
    assert.ok(shown.includes('inbound|9080'), String(shown))
    const clusters = page.locator('[data-testid="dump-type"][data-type="CDS"]')
    await clusters.locator('summary').first().click()
    const clusterNames = await clusters
      .locator('[data-testid="dump-resource"]')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-name')))
    assert.deepEqual(clusterNames, names('.Cluster'))
    assert.ok(clusterNames.includes('outbound|9080||reviews.default.svc.cluster.local'), String(clusterNames))
    // a resource opens into its fields, built when opened
    const inbound = listeners.locator('[data-testid="dump-resource"][data-name="inbound|9080"]')
    await inbound.locator('summary').first().click()
    // the fields are built on the details' toggle event, which the browser fires after the click returns
    const fields = inbound.locator('.json-body').first()
    await fields.locator('.json-key').first().waitFor()
    assert.match((await fields.textContent())!, /traffic_direction: "INBOUND"/)
    // the versions of the dump are those proxy-status reports as sent
    const SHORT: Record<string, string> = {
      Cluster: 'CDS',
      ClusterLoadAssignment: 'EDS',
      Secret: 'SDS',
      Listener: 'LDS',
      RouteConfiguration: 'RDS',
    }
    assert.equal(productpage.perType.length, 5)
    for (const t of productpage.perType) {
      const short = SHORT[t.typeUrl.split('.').pop()!]!
      assert.equal(dump[t.typeUrl]!.version, t.sentVersion)
      assert.match(
        (await page.locator(`[data-testid="dump-type"][data-type="${short}"] summary`).first().textContent())!,
        new RegExp(`version ${t.sentVersion!.slice(0, 8)}`),
      )
      assert.equal(
        await page.locator(`[data-testid="type-row"][data-type="${short}"] .sync`).getAttribute('data-state'),
        'SYNCED',
      )
    }
    assert.deepEqual(browser.errors, [])
  })

  test('the Live page: a tap of productpage-v1 shows the product pages sent; a click explains one', async () => {
    const { page } = browser
    await page.goto(dashboard('#/live?workload=productpage-v1&namespace=default'))
    const workload = page.getByTestId('tap-workload')
    await page.waitForFunction(
      () =>
        (document.querySelector('[data-testid="tap-workload"]') as HTMLSelectElement | null)?.value ===
        'default/productpage-v1',
    )
    assert.equal(await workload.locator('option').count(), 7)
    await page.getByTestId('tap-start').click()
    await page.locator('[data-testid="tap-status"][data-state="tapping"]').waitFor()
    const N = 5
    for (let i = 0; i < N; i++) {
      const r = await fetch(`${gateway}/productpage`)
      assert.equal(r.status, 200)
      await r.text()
    }
    const inbound = page.getByTestId('tap-row').filter({ has: page.locator('td:nth-child(2)', { hasText: /^in$/ }) })
    await eventually(async () => (await inbound.count()) === N, 20_000, `${N} inbound rows`)
    // each product page: one inbound GET /productpage (200), and productpage's own calls to details and reviews
    for (let i = 0; i < N; i++) {
      const cells = await inbound.nth(i).locator('td').allTextContents()
      assert.deepEqual(cells.slice(1, 6), ['in', 'GET', new URL(gateway).host, '/productpage', '200'])
      assert.match(cells[8]!, /inbound\|9080\|\|$/)
    }
    const outbound = async (authority: string) =>
      page
        .getByTestId('tap-row')
        .filter({ has: page.locator('td:nth-child(4)', { hasText: authority }) })
        .count()
    await eventually(
      async () => (await outbound('details:9080')) === N && (await outbound('reviews:9080')) === N,
      10_000,
      'the outbound calls',
    )
    assert.equal(await page.getByTestId('tap-row').count(), 3 * N)
    assert.match(
      (await page.getByTestId('tap-status').textContent())!,
      new RegExp(`^Tapping productpage-v1 in default · ${3 * N} requests$`),
    )

    // a click explains the request from its sender, the gateway, as `loom explain --gateway` does
    await inbound.first().click()
    await page.getByTestId('explain-tree').waitFor()
    assert.match((await page.getByTestId('explain-note').textContent())!, /explained from its sender, ingressgateway/)
    const lines = await treeLines(page)
    assert.ok(lines.includes('    ✓ route 0 (VirtualService default/bookinfo): matched'), lines.join('\n'))
    assert.ok(lines.includes('✓ cluster outbound|9080||productpage.default.svc.cluster.local'), lines.join('\n'))
    const cli = await runLoom([
      'explain',
      '--gateway',
      'ingressgateway',
      `${gateway}/productpage`,
      '--server',
      state.api,
    ])
    assert.equal(cli.code, 0, cli.stderr)
    const cliLines = cli.stdout.split('\n')
    const tree = cliLines.slice(cliLines.indexOf('') + 1, cliLines.lastIndexOf('', cliLines.length - 2))
    const live = (l: string) => l.replace(/\d+ active requests/, 'N active requests')
    assert.deepEqual(lines.map(live), tree.map(live))
    assert.equal(
      await page.getByTestId('explain-outcome').textContent(),
      cliLines.find((l) => l.startsWith('outcome: ')),
    )
    await browser.screenshot('dashboard-live')

    // Stop aborts the stream (the control plane then closes the proxy's tap); so does leaving the page
    const aborted: string[] = []
    page.on('requestfailed', (r) => {
      if (r.url().includes('/api/v1/tap/')) aborted.push(r.failure()?.errorText ?? '')
    })
    await page.getByTestId('tap-stop').click()
    await page.locator('[data-testid="tap-status"][data-state="stopped"]').waitFor()
    await eventually(async () => aborted.length === 1, 5000, 'the tap request aborted')
    assert.equal(await page.getByTestId('tap-row').count(), 3 * N) // the rows stay
    await page.getByTestId('tap-start').click()
    await page.locator('[data-testid="tap-status"][data-state="tapping"]').waitFor()
    assert.equal(await page.getByTestId('tap-row').count(), 0) // a new tap starts a new table
    await page.getByRole('link', { name: 'Proxies', exact: true }).click()
    await eventually(async () => aborted.length === 2, 5000, 'the tap aborted when the page is left')
    assert.match(aborted[0]!, /ABORTED/)
    assert.deepEqual(browser.errors, [])
  })

  test('an explanation by hand: reviews-v2 to ratings with a 100% abort applied shows the fault', async () => {
    const applied = await api<{ results: { action: string }[] }>('/api/v1/apply', {
      method: 'POST',
      body: RATINGS_ABORT,
    })
    assert.equal(applied.results[0]!.action, 'created')
    const { page } = browser
    await page.goto(dashboard('#/live'))
    await page.waitForFunction(
      () => (document.querySelector('[data-testid="explain-from"]') as HTMLSelectElement | null)?.options.length === 7,
    )
    await page.getByTestId('explain-from').selectOption('default/reviews-v2')
    await page.getByTestId('explain-url').fill('http://ratings:9080/ratings/0')
    const outcome = page.getByTestId('explain-outcome')
    // the control plane pushes the VirtualService within a moment: explain until the snapshot has it
    await eventually(
      async () => {
        await page.getByTestId('explain-go').click()
        await outcome.waitFor()
        return (await outcome.textContent())!.includes('503 FI (fault_filter_abort)')
      },
      20_000,
      'the abort in the explanation',
    )
    assert.equal(await outcome.textContent(), 'outcome: 503 FI (fault_filter_abort), answered by the mesh')
    const lines = await treeLines(page)
    assert.ok(
      lines.some((l) => /✗ .*abort 503 \(100%\)/.test(l)),
      lines.join('\n'),
    )
    assert.ok(
      lines.some((l) => l.includes('(VirtualService default/ratings): matched')),
      lines.join('\n'),
    )
    assert.ok(await outcome.evaluate((e) => e.classList.contains('bad')))
    // a header line: the request and its source as the CLI prints them
    assert.match(
      (await page.locator('.explain-head').textContent())!,
      /^GET http:\/\/ratings:9080\/ratings\/0\n {2}from reviews-v2\.default \(sidecar, spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-reviews\)/,
    )
    assert.deepEqual(browser.errors, [])
  })
})
