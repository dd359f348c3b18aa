/**
 * The dashboard's service graph (`#/graph`) in a real browser against the running Bookinfo demo: product pages sent
 * through the gateway show as Bookinfo's services and call edges with the counts the control plane gathered, a
 * click on the reviews node (on cytoscape's canvas, where the node is drawn) opens its three versions, and a DENY
 * AuthorizationPolicy on ratings turns the edge into it red while traffic goes on.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { Graph } from '../src/control/telemetry/graph.js'
import { readState, type UpState } from '../src/runtime/up.js'
import { type Browser, launchBrowser } from './helpers/browser.js'
import { eventually } from './helpers/control.js'
import { ROOT, runLoom, writeTemp } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')

/** ratings refuses reviews' identity: reviews' calls get 403 from ratings' sidecar. */
const DENY_REVIEWS = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: ratings-deny-reviews, namespace: default }
spec:
  selector: { matchLabels: { app: ratings } }
  action: DENY
  rules:
    - from: [{ source: { principals: [cluster.local/ns/default/sa/bookinfo-reviews] } }]
`

/** Which reviews version served a product page: v1 shows no stars, v2 black ones, v3 red ones. */
const reviewsVersion = (html: string) => {
  const stars = /class="star text-(black|red)-500"/.exec(html)?.[1]
  return stars === 'red' ? 'v3' : stars === 'black' ? 'v2' : 'v1'
}

interface EdgeItem {
  source: string
  target: string
  rps: number
  requests: number
  health: string
  mtls: string
}

describe('the service graph page on the Bookinfo demo', { timeout: 240_000 }, () => {
  let up: RunningUp
  let state: UpState
  let browser: Browser
  let productPage: string

  const telemetryRounds = async () =>
    ((await (await fetch(`http://${state.api}/api/v1/telemetry`)).json()) as { rounds: number }).rounds
  /** Two more readings of every proxy: what was sent before now is in the control plane's history. */
  const settle = async () => {
    const r0 = await telemetryRounds()
    await eventually(async () => (await telemetryRounds()) >= r0 + 2, 30_000, 'two more readings')
  }
  const apiGraph = async (window: string) =>
    (await (await fetch(`http://${state.api}/api/v1/graph?window=${window}`)).json()) as Graph
  const serviceEdge = (g: Graph, from: string, to: string) => g.serviceEdges.find((e) => e.from === from && e.to === to)
  /** The edges the page draws, from its machine-readable list. */
  const drawnEdges = async (): Promise<EdgeItem[]> =>
    browser.page.$$eval('[data-testid="graph-edges"] li', (lis) =>
      lis.map((li) => ({
        source: li.getAttribute('data-source') ?? '',
        target: li.getAttribute('data-target') ?? '',
        rps: Number(li.getAttribute('data-rps')),
        requests: Number(li.getAttribute('data-requests')),
        health: li.getAttribute('data-health') ?? '',
        mtls: li.getAttribute('data-mtls') ?? '',
      })),
    )
  const drawn = async (source: string, target: string) =>
    (await drawnEdges()).find((e) => e.source === source && e.target === target)
  /** Clicks a node where cytoscape drew it on the canvas. */
  const clickNode = async (id: string) => {
    const { page } = browser
    const li = page.locator(`[data-testid="graph-nodes"] li[data-id="${id}"]`)
    const x = Number(await li.getAttribute('data-x'))
    const y = Number(await li.getAttribute('data-y'))
    const box = (await page.getByTestId('graph').boundingBox())!
    assert.ok(x > 0 && y > 0 && x < box.width && y < box.height, `${id} at ${x},${y} in ${box.width}x${box.height}`)
    await page.mouse.click(box.x + x, box.y + y)
  }

  before(async () => {
    up = await startUp(BOOKINFO, 120_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    productPage = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
    browser = await launchBrowser()
  })
  after(async () => {
    await browser?.close()
    await up?.stop()
  })

  test('product pages through the gateway: the Bookinfo services and their edges, with the gathered counts', async () => {
    // every reviews version has answered a page (the last to start can be missing from productpage's endpoints
    // for a moment after loom up is up): v1 no stars, v2 black, v3 red
    const seen = new Set<string>()
    await eventually(
      async () => {
        const r = await fetch(productPage)
        const html = await r.text()
        if (r.status === 200 && html.includes('Book Details')) seen.add(reviewsVersion(html))
        return seen.size === 3
      },
      60_000,
      'the product page from every reviews version',
    )
    await settle()
    const before = await apiGraph('10m')
    const N = 12
    let starred = 0 // pages from reviews v2 or v3, each of which called ratings once
    for (let i = 0; i < N; i++) {
      const r = await fetch(productPage)
      assert.equal(r.status, 200)
      if (reviewsVersion(await r.text()) !== 'v1') starred++
    }
    await settle()
    const g = await apiGraph('10m')
    const delta = (from: string, to: string) =>
      (serviceEdge(g, from, to)?.requests ?? 0) - (serviceEdge(before, from, to)?.requests ?? 0)
    const gateway = g.nodes.find((n) => n.kind === 'gateway')!
    assert.ok(gateway !== undefined, JSON.stringify(g.nodes))
    // each page: the gateway calls productpage, which calls details and reviews once each
    assert.equal(delta(gateway.id, 'default/productpage'), N)
    assert.equal(delta('default/productpage', 'default/details'), N)
    assert.equal(delta('default/productpage', 'default/reviews'), N)
    // reviews v2 and v3 call ratings, v1 does not (which versions served the pages is up to the balancer)
    assert.equal(delta('default/reviews', 'default/ratings'), starred, `reviews → ratings of ${N} pages`)

    const { page } = browser
    await page.goto(`http://${state.api}/dashboard/#/graph?window=10m`)
    await page.locator('[data-testid="graph-edges"] li').first().waitFor({ state: 'attached' })
    const names = await page.$$eval('[data-testid="graph-nodes"] li', (lis) =>
      lis.map((li) => `${li.getAttribute('data-kind')} ${li.getAttribute('data-name')}`),
    )
    for (const s of ['productpage', 'details', 'reviews', 'ratings'])
      assert.ok(names.includes(`service default/${s}`), names.join(', '))
    assert.ok(names.includes(`gateway ${gateway.id}`), names.join(', '))
    // the page draws what the API answers (no traffic since: the counts stand still)
    for (const [from, to] of [
      [gateway.id, 'default/productpage'],
      ['default/productpage', 'default/details'],
      ['default/productpage', 'default/reviews'],
      ['default/reviews', 'default/ratings'],
    ] as const) {
      const e = await drawn(from, to)
      assert.ok(e !== undefined, `${from} → ${to} in ${JSON.stringify(await drawnEdges())}`)
      assert.equal(e.requests, serviceEdge(g, from, to)!.requests, `${from} → ${to}`)
      assert.ok(e.rps > 0, `${from} → ${to}: ${e.rps} rps`)
      assert.equal(e.health, 'ok', `${from} → ${to}`)
      if (from !== gateway.id) assert.equal(e.mtls, '1', `${from} → ${to}`)
    }
    // no edge Bookinfo does not have
    assert.equal((await drawnEdges()).filter((e) => e.requests > 0).length, 4, JSON.stringify(await drawnEdges()))
    assert.deepEqual(browser.errors, [])
  })

  test('a click on the reviews node shows its three versions, and an edge its numbers and identities', async () => {
    const { page } = browser
    await clickNode('s:default/reviews')
    const detail = page.getByTestId('node-detail')
    await detail.and(page.locator('[data-name="default/reviews"]')).waitFor()
    const rows = detail.getByTestId('version-row')
    assert.deepEqual(await rows.evaluateAll((trs) => trs.map((tr) => tr.getAttribute('data-version'))), [
      'v1',
      'v2',
      'v3',
    ])
    // each version served some of the pages: a rate, 100% success
    for (const tr of await rows.all()) {
      const cells = await tr.locator('td').allTextContents()
      assert.match(cells[2]!, /^\d+\.\d+$/, cells.join(' | '))
      assert.equal(cells[3], '100%', cells.join(' | '))
    }
    assert.equal(await detail.getByTestId('service-link').getAttribute('href'), '#/services/default/reviews')
    // called by productpage; a click on that row opens the edge
    await detail.getByTestId('inbound').locator('tr.clickable', { hasText: 'default/productpage' }).click()
    const edge = page.getByTestId('edge-detail')
    await edge.waitFor()
    assert.equal(await edge.getAttribute('data-source'), 'default/productpage')
    assert.equal(await edge.getAttribute('data-target'), 'default/reviews')
    const text = await edge.textContent()
    assert.match(text!, /spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-productpage/)
    assert.match(text!, /spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-reviews/)
    assert.match(text!, /mTLS share100%/)
    assert.match(text!, /P50 \/ P95 \/ P99[\d.]+m?s \/ [\d.]+m?s \/ [\d.]+m?s/)
    // back to the service, for the picture
    await clickNode('s:default/reviews')
    await detail.waitFor()
    await browser.screenshot('dashboard-graph')
    // the workloads view: each service around its versions
    await page.getByTestId('graph-view-workloads').click()
    await page.locator('[data-testid="graph-nodes"] li[data-id="w:default/reviews-v3"]').waitFor({ state: 'attached' })
    assert.ok(await drawn('default/reviews-v2', 'default/ratings-v1'))
    await page.getByTestId('graph-view-services').click()
    await page.locator('[data-testid="graph-nodes"] li[data-id="s:default/reviews"]').waitFor({ state: 'attached' })
    assert.deepEqual(browser.errors, [])
  })

  test('a DENY policy on ratings for reviews turns the edge into ratings red while traffic goes on', async () => {
    const { page } = browser
    const applied = await runLoom(['apply', '-f', writeTemp('deny.yaml', DENY_REVIEWS), '--server', state.api])
    assert.equal(applied.code, 0, applied.stderr)
    let sending = true
    const traffic = (async () => {
      while (sending) await (await fetch(productPage)).text()
    })()
    try {
      await page.waitForFunction(
        () =>
          document
            .querySelector(
              '[data-testid="graph-edges"] li[data-source="default/reviews"][data-target="default/ratings"]',
            )
            ?.getAttribute('data-health') === 'bad',
        null,
        { timeout: 60_000, polling: 500 },
      )
    } finally {
      sending = false
      await traffic
    }
    // refused by the policy (403 from ratings' sidecar), not failed: productpage's calls stay healthy
    const g = await apiGraph('10m')
    const denied = serviceEdge(g, 'default/reviews', 'default/ratings')!
    assert.ok(denied.deniedShare! > 0.05, JSON.stringify(denied))
    assert.equal(denied.successRate, 1)
    assert.equal((await drawn('default/productpage', 'default/details'))?.health, 'ok')
    assert.equal((await drawn('default/productpage', 'default/reviews'))?.health, 'ok')
    await clickNode('s:default/ratings')
    await page.getByTestId('inbound').locator('tr.clickable', { hasText: 'default/reviews' }).click()
    const edge = page.getByTestId('edge-detail')
    await edge.and(page.locator('[data-health="bad"]')).waitFor()
    assert.match((await edge.textContent())!, /Denied by policy\d+(\.\d)?%/)
    await browser.screenshot('dashboard-graph-denied')
    assert.deepEqual(browser.errors, [])
  })

  test('names and labels from the mesh are shown as text, never as markup', async () => {
    const { page } = browser
    const markup = '<img src=x onerror="window.__injected=1">'
    // a workload registered with markup in a label: the label is its version, drawn and listed by the page
    const r = await fetch(`http://${state.api}/api/v1/workloads`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'markup-v1',
        address: '127.0.0.1',
        ports: { http: 9 },
        labels: { app: 'markup', version: markup },
        ttlSeconds: 300,
      }),
    })
    assert.ok(r.ok, await r.text())
    await page.getByTestId('graph-view-workloads').click()
    const li = page.locator('[data-testid="graph-nodes"] li[data-id="w:default/markup-v1"]')
    await li.waitFor({ state: 'attached' })
    assert.equal(await li.textContent(), markup)
    await clickNode('w:default/markup-v1')
    const workload = page.getByTestId('node-detail').and(page.locator('[data-name="default/markup-v1"]'))
    await workload.waitFor()
    assert.equal(await workload.locator('p.muted').first().textContent(), `workload ${markup} · namespace default`)
    await page.getByTestId('graph-view-services').click()
    await page.locator('[data-testid="graph-nodes"] li[data-id="s:default/markup"]').waitFor({ state: 'attached' })
    await clickNode('s:default/markup')
    const service = page.getByTestId('node-detail').and(page.locator('[data-name="default/markup"]'))
    await service.waitFor()
    assert.equal(await service.getByTestId('version-row').locator('td').first().textContent(), markup)
    assert.equal(await page.locator('main img').count(), 0)
    assert.equal(await page.evaluate(() => (window as { __injected?: number }).__injected), undefined)
    assert.deepEqual(browser.errors, [])
  })
})
