/**
 * `loom stat`, `loom edges`, `loom graph` and `loom top` on the Bookinfo demo (`loom up` of examples/bookinfo/mesh,
 * as `loom demo` runs it), end to end: the control plane reads every sidecar's and the gateway's metrics from their
 * admin endpoints, and the views show the product pages sent through the gateway with Bookinfo's call graph
 * (productpage → details, productpage → reviews v1/v2/v3, reviews v2/v3 → ratings), mutual TLS between sidecars,
 * and a fault a client's sidecar injects.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import type { EdgeRow, PathRow, StatRow } from '../src/control/telemetry/views.js'
import { readState, type UpState } from '../src/runtime/up.js'
import { eventually } from './helpers/control.js'
import { ROOT, runLoom, writeTemp } from './helpers/proxy.js'
import { type RunningUp, startUp } from './helpers/up.js'

const BOOKINFO = join(ROOT, 'examples', 'bookinfo', 'mesh')
const WINDOW = '10m'

/** Every call to ratings answered 503 by the caller's sidecar (Istio's fault injection). */
const RATINGS_ABORT = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
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

const sa = (name: string) => `spiffe://cluster.local/ns/default/sa/bookinfo-${name}`

describe('loom stat, edges, graph and top on the Bookinfo demo', { timeout: 300_000 }, () => {
  let up: RunningUp
  let state: UpState
  let page: string
  const loom = async (args: string[]) => {
    const r = await runLoom([...args, '--server', state.api], 30_000)
    assert.equal(r.code, 0, `loom ${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const json = async <T>(args: string[]): Promise<T> => JSON.parse(await loom([...args, '-o', 'json'])) as T
  const deployments = async () =>
    new Map(
      (await json<{ rows: StatRow[] }>(['stat', 'deploy', '-n', 'default', '--window', WINDOW])).rows.map((r) => [
        r.name,
        r,
      ]),
    )
  const requestsOf = (rows: Map<string, StatRow>, name: string) => rows.get(name)?.requests ?? 0
  const topPaths = async (window = WINDOW) =>
    (await json<{ paths: PathRow[] }>(['top', '--once', '--window', window, '--limit', '100'])).paths
  /** Which reviews version rendered a page: v1 shows no stars, v2 black ones, v3 red ones. */
  const load = async (): Promise<{ status: number; html: string }> => {
    const r = await fetch(page)
    return { status: r.status, html: await r.text() }
  }
  const telemetry = async () =>
    (await (await fetch(`http://${state.api}/api/v1/telemetry`)).json()) as {
      rounds: number
      proxies: { lastError: string | null }[]
    }
  /** The gatherer has read every proxy (six sidecars and the gateway) at least once. */
  const gathered = async () => {
    const g = await telemetry()
    return g.rounds >= 1 && g.proxies.length === 7 && g.proxies.every((p) => p.lastError === null)
  }
  /** Waits for a whole reading of every proxy that started after now: what was sent before is in the history. */
  const settle = async () => {
    const r0 = (await telemetry()).rounds
    await eventually(async () => (await telemetry()).rounds >= r0 + 2, 30_000, 'two more readings')
  }

  before(async () => {
    up = await startUp(BOOKINFO, 120_000, ['--gateway-port', '0'])
    state = readState(up.dataDir)!
    page = `http://127.0.0.1:${Object.values(state.gateways[0]!.ports)[0]}/productpage`
  })
  after(async () => {
    await up?.stop()
  })

  test('before any request: the views say there is no traffic', async () => {
    await eventually(gathered, 30_000, 'the first reading of every proxy')
    const stat = await loom(['stat', 'deploy', '-n', 'default'])
    // the workloads are known and meshed; nothing has been sent
    assert.match(stat, /^productpage-v1\s+1\/1\s+-\s+-\s+/m)
    assert.match(stat, /No traffic in the last 1m to deployments \(metrics of 7 proxies, read every 5s\)\./)
    assert.match(await loom(['top', '--once']), /^No traffic in the last 1m /)
    assert.match(await loom(['edges']), /^No traffic in the last 1m /)
    const dot = await runLoom(['graph', '-o', 'dot', '--server', state.api])
    assert.equal(dot.code, 0)
    assert.match(dot.stdout, /^digraph loom \{\n(?!.*->)/s)
    assert.match(dot.stderr, /^No traffic in the last 1m /)
  })

  test('N product pages: the counts per workload, service, edge and path, 100% success, all mTLS', async () => {
    // the page renders details and reviews, and every reviews version has answered: the last workload to start can
    // be missing from productpage's endpoints for a moment after loom up is up (v1 no stars, v2 black, v3 red)
    const seen = new Set<string>()
    await eventually(
      async () => {
        const r = await load()
        if (r.status === 200 && r.html.includes('Book Details') && r.html.includes('Book Reviews')) {
          const stars = /class="star text-(black|red)-500"/.exec(r.html)?.[1]
          seen.add(stars === 'red' ? 'v3' : stars === 'black' ? 'v2' : 'v1')
        }
        return seen.size === 3
      },
      60_000,
      'the product page from every reviews version',
    )
    // what is counted so far, once the gatherer has caught up with it
    await settle()
    const before = await deployments()
    const topBefore = await topPaths()
    // enough pages that each reviews version surely gets some: the caller's sidecar picks hosts by least request
    // (two at random), not in turn, so with 12 a version gets none about once in 40 runs; with 30, once in 60,000
    const N = 30
    for (let i = 0; i < N; i++) assert.equal((await load()).status, 200)
    await settle()
    const after = await deployments()
    const delta = (w: string) => requestsOf(after, w) - requestsOf(before, w)
    assert.equal(delta('productpage-v1'), N)
    assert.equal(delta('details-v1'), N)
    assert.equal(delta('reviews-v1') + delta('reviews-v2') + delta('reviews-v3'), N)
    // every reviews version had some of them
    for (const v of ['reviews-v1', 'reviews-v2', 'reviews-v3']) assert.ok(delta(v) > 0, `${v}: ${delta(v)}`)
    for (const w of ['productpage-v1', 'details-v1', 'reviews-v1', 'reviews-v2', 'reviews-v3', 'ratings-v1']) {
      const row = after.get(w)!
      assert.equal(row.successRate, 1, w)
      assert.equal(row.mtlsShare, 1, w)
      assert.deepEqual(row.meshed, { meshed: 1, total: 1 }, w)
      assert.ok(row.rps > 0 && row.latencyMs !== null && row.latencyMs.p50 <= row.latencyMs.p99, w)
    }
    // the table
    const table = await loom(['stat', 'deploy', '-n', 'default', '--window', WINDOW])
    assert.match(table, /^NAME\s+MESHED\s+SUCCESS\s+RPS\s+LATENCY_P50\s+LATENCY_P95\s+LATENCY_P99\s+TCP_CONN\s+MTLS$/m)
    assert.match(
      table,
      /^productpage-v1\s+1\/1\s+100\.00%\s+\d+\.\d+rps\s+[\d.]+m?s\s+[\d.]+m?s\s+[\d.]+m?s\s+-\s+100%$/m,
    )

    // the service, and a row per version, from the callers' reports
    const svc = (await json<{ rows: StatRow[] }>(['stat', 'service', 'reviews', '--window', WINDOW])).rows
    const total = svc.find((r) => r.version === '')!
    assert.equal(
      total.requests,
      requestsOf(after, 'reviews-v1') + requestsOf(after, 'reviews-v2') + requestsOf(after, 'reviews-v3'),
    )
    assert.deepEqual(
      svc.filter((r) => r.version !== '').map((r) => [r.version, r.requests]),
      ['v1', 'v2', 'v3'].map((v) => [v, requestsOf(after, `reviews-${v}`)]),
    )
    assert.deepEqual(total.meshed, { meshed: 3, total: 3 })
    assert.match(await loom(['stat', 'svc', 'reviews']), /^reviews\s+\*\s+3\/3\s+100\.00%/m)

    // who called whom, with the identities of both ends
    const edges = (await json<{ edges: EdgeRow[] }>(['edges', '--window', WINDOW])).edges
    const edge = (src: string, dst: string) =>
      edges.find((e) => e.source.workload === src && e.destination.workload === dst)
    const expected: [string, string, string][] = [
      ['productpage-v1', 'details-v1', 'details'],
      ['productpage-v1', 'reviews-v1', 'reviews'],
      ['productpage-v1', 'reviews-v2', 'reviews'],
      ['productpage-v1', 'reviews-v3', 'reviews'],
      ['reviews-v2', 'ratings-v1', 'ratings'],
      ['reviews-v3', 'ratings-v1', 'ratings'],
    ]
    for (const [src, dst, server] of expected) {
      const e = edge(src, dst)
      assert.ok(
        e !== undefined,
        `${src} → ${dst} in ${JSON.stringify(edges.map((x) => [x.source.workload, x.destination.workload]))}`,
      )
      assert.equal(e.mtlsShare, 1, `${src} → ${dst}`)
      assert.equal(e.successRate, 1)
      assert.equal(e.source.principal, sa(src.replace(/-v\d$/, '')))
      assert.equal(e.destination.principal, sa(server))
      if (src === 'productpage-v1') assert.equal(e.requests, requestsOf(after, dst))
    }
    assert.equal(edge('productpage-v1', 'details-v1')!.requests, requestsOf(after, 'details-v1'))
    const ingress = edges.find((e) => e.destination.workload === 'productpage-v1')!
    assert.match(ingress.source.workload, /ingressgateway/)
    assert.equal(ingress.source.namespace, 'istio-system')
    assert.equal(ingress.requests, requestsOf(after, 'productpage-v1'))
    // no edge that Bookinfo does not have
    assert.equal(
      edges.length,
      expected.length + 1,
      JSON.stringify(edges.map((x) => [x.source.workload, x.destination.workload])),
    )
    const text = await loom(['edges'])
    assert.match(text, /^SRC\s+DST\s+SRC_NS\s+DST_NS\s+SECURED\s+CLIENT_ID\s+SERVER_ID\s+RPS\s+SUCCESS$/m)
    assert.match(
      text,
      /^productpage-v1\s+details-v1\s+default\s+default\s+yes\s+spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-productpage\s+spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-details\s+/m,
    )

    // the graph as Graphviz DOT
    const dot = await loom(['graph', '-o', 'dot', '--window', WINDOW])
    assert.match(dot, /^digraph loom \{/)
    for (const [src, dst, server] of expected)
      assert.match(
        dot,
        new RegExp(`"default/${src}" -> "default/${dst}" \\[label="${server}\\\\n[\\d.]+rps, 100\\.00% ok"\\];`),
      )
    assert.match(dot, /"istio-system\/[a-z-]*ingressgateway" -> "default\/productpage-v1"/)
    assert.match(await loom(['graph']), /^ {2}-> default\/details-v1\s+details\s+[\d.]+rps\s+100\.00%\s+100%$/m)

    // the busiest paths: each of the N pages added one request to each of these
    const top = await topPaths()
    const count = (rows: PathRow[], path: string, service: string) =>
      rows.filter((p) => p.path === path && p.destination.service === service).reduce((n, p) => n + p.requests, 0)
    for (const [path, service] of [
      ['/productpage', 'productpage'],
      ['/details/0', 'details'],
      ['/reviews/0', 'reviews'],
    ] as const) {
      assert.equal(count(top, path, service) - count(topBefore, path, service), N, path)
    }
    assert.equal(
      count(top, '/ratings/0', 'ratings') - count(topBefore, '/ratings/0', 'ratings'),
      delta('reviews-v2') + delta('reviews-v3'),
    )
    assert.ok(top.every((p) => p.successRate === 1))
    const topText = await loom(['top', '--once', '--window', WINDOW])
    assert.match(topText, /^SOURCE\s+DESTINATION\s+METHOD\s+PATH\s+COUNT\s+RPS\s+SUCCESS\s+LATENCY_AVG$/m)
    assert.match(topText, /^[a-z-]*ingressgateway\s+productpage\s+GET\s+\/productpage\s+\d+\s+/m)
  })

  test('a fault the callers’ sidecars inject: the paths and edges fail, the workload never saw it', async () => {
    const r = await runLoom(['apply', '-f', writeTemp('ratings-abort.yaml', RATINGS_ABORT), '--server', state.api])
    assert.equal(r.code, 0, r.stderr)
    // reviews v2 and v3 show ratings unavailable once their sidecars have the rule
    await eventually(
      async () => (await load()).html.includes('Ratings service is currently unavailable'),
      20_000,
      'the abort in force',
    )
    for (let i = 0; i < 9; i++) await load()
    await settle()
    // the callers' sidecars answered 503 (flag FI): /ratings/0 failed in the last minute
    const ratings = (await topPaths('1m')).filter((p) => p.path === '/ratings/0')
    assert.ok(
      ratings.some((p) => p.successRate !== null && p.successRate < 1),
      JSON.stringify(ratings),
    )
    assert.match(
      await loom(['top', '--once']),
      /^reviews-v[23]\s+ratings\s+GET\s+\/ratings\/0\s+\d+\s+\S+\s+(?!100\.00%)\d+\.\d+%/m,
    )
    // and the callers' edges show it
    const edges = (await json<{ edges: EdgeRow[] }>(['edges', '--window', '1m'])).edges
    assert.ok(
      edges.some((e) => /^reviews-v[23]$/.test(e.source.workload) && e.successRate !== null && e.successRate < 1),
      JSON.stringify(edges),
    )
    // and the service as its callers got it: an aborted call's report names the route's service
    const svc = (await json<{ rows: StatRow[] }>(['stat', 'service', 'ratings', '--window', '1m'])).rows
    const total = svc.find((r) => r.version === '')
    assert.ok(total !== undefined && total.successRate !== null && total.successRate < 1, JSON.stringify(svc))
    // ratings-v1's own sidecar served everything it got
    assert.equal((await deployments()).get('ratings-v1')!.successRate, 1)
  })
})
