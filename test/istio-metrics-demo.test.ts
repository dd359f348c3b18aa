/**
 * Istio's standard metrics through `loom demo`: known traffic to the product page (through the ingress gateway,
 * productpage, details, reviews v1/v2/v3, ratings, all over mTLS), then each proxy's admin `/stats/prometheus`
 * checked against it: counts by reporter and response code, workloads learned through the metadata exchange,
 * principals from certificates, histogram counts and byte sums; exchange headers never reach the client, and a
 * client's forged metadata never reaches the mesh.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { LOOM } from './helpers/proxy.js'

interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

/** Prometheus text exposition lines as samples (what this test needs: `name{k="v",...} value`). */
function parseProm(text: string): { samples: Sample[]; types: Map<string, string> } {
  const samples: Sample[] = []
  const types = new Map<string, string>()
  for (const line of text.split('\n')) {
    if (line.startsWith('# TYPE ')) {
      const [, , name, type] = line.split(' ')
      types.set(name!, type!)
      continue
    }
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line)
    if (m === null) continue
    const labels: Record<string, string> = {}
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!
    samples.push({ name: m[1]!, labels, value: Number(m[3]) })
  }
  return { samples, types }
}

const LABELS = [
  'reporter',
  'source_workload',
  'source_canonical_service',
  'source_canonical_revision',
  'source_workload_namespace',
  'source_principal',
  'source_app',
  'source_version',
  'source_cluster',
  'destination_workload',
  'destination_workload_namespace',
  'destination_principal',
  'destination_app',
  'destination_version',
  'destination_service',
  'destination_service_name',
  'destination_service_namespace',
  'destination_canonical_service',
  'destination_canonical_revision',
  'destination_cluster',
  'request_protocol',
  'response_code',
  'grpc_response_status',
  'response_flags',
  'connection_security_policy',
]

const SA = (ns: string, sa: string) => `spiffe://cluster.local/ns/${ns}/sa/${sa}`
const PRODUCTPAGE_SA = SA('default', 'bookinfo-productpage')
const REVIEWS_SA = SA('default', 'bookinfo-reviews')

type Metrics = Sample[]

/** The sum of `name` over the samples whose labels include `match`. */
function sum(m: Metrics, name: string, match: Record<string, string>): number {
  let n = 0
  for (const s of m) if (s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v)) n += s.value
  return n
}

function series(m: Metrics, name: string, match: Record<string, string>): Sample[] {
  return m.filter((s) => s.name === name && Object.entries(match).every(([k, v]) => s.labels[k] === v))
}

describe('Istio metrics through loom demo', { timeout: 240_000 }, () => {
  let demo: ChildProcess
  let stderr = ''
  let gateway = ''
  let dataDir = ''
  const admin = new Map<string, number>()

  const scrape = async (name: string): Promise<Metrics> => {
    const r = await fetch(`http://127.0.0.1:${admin.get(name)}/stats/prometheus`)
    assert.equal(r.status, 200)
    return parseProm(await r.text()).samples
  }
  const scrapeAll = async (): Promise<Map<string, Metrics>> => {
    const out = new Map<string, Metrics>()
    for (const name of admin.keys()) out.set(name, await scrape(name))
    return out
  }

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'loom-metrics-demo-'))
    demo = spawn(process.execPath, [LOOM, 'demo', '--data-dir', dataDir, '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const reap = () => demo.kill('SIGKILL')
    process.once('exit', reap)
    demo.stderr!.on('data', (d) => (stderr += d))
    const line = await new Promise<string>((resolve, reject) => {
      let out = ''
      const t = setTimeout(() => reject(new Error(`no demo line:\n${stderr}`)), 120_000)
      demo.stdout!.on('data', (d: Buffer) => {
        out += d
        const m = /\{"msg":"demo".*\}/.exec(out)
        if (m !== null) {
          clearTimeout(t)
          resolve(m[0])
        }
      })
      demo.once('exit', (code) => reject(new Error(`loom demo exited with ${code}:\n${stderr}`)))
    })
    gateway = (JSON.parse(line) as { productpage: string }).productpage.replace(/\/productpage$/, '')
    const up = JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as {
      workloads: { name: string; adminPort: number }[]
      gateways: { name: string; adminPort: number }[]
    }
    for (const w of up.workloads) admin.set(w.name, w.adminPort)
    for (const g of up.gateways) admin.set(g.name, g.adminPort)
    // the whole page renders (details and reviews answer) before the counting starts
    await eventually(
      async () => {
        const r = await fetch(`${gateway}/productpage`)
        const html = await r.text()
        return r.status === 200 && /Reviews served by: reviews-v\d/.test(html) && !html.includes('Error fetching')
      },
      60_000,
      'the product page',
    )
  })
  after(async () => {
    if (demo.exitCode !== null) return
    const exited = new Promise((r) => demo.once('exit', r))
    demo.kill('SIGINT')
    await exited
  })

  const PAGES = 12
  const MISSES = 3
  let before0: Map<string, Metrics>
  let after0: Map<string, Metrics>
  let pageBytes = 0
  let missBytes = 0

  test('known traffic: product pages, 404s from the application, a forged peer header', async () => {
    before0 = await scrapeAll()
    for (let i = 0; i < PAGES; i++) {
      const r = await fetch(`${gateway}/productpage`, {
        // a client's own exchange headers: the gateway must not pass them on as its metadata
        headers:
          i === 0
            ? {
                'x-envoy-peer-metadata': 'ChYKCU5BTUVTUEFDRRIJGgdkZWZhdWx0ChcKDVdPUktMT0FEX05BTUUSBhoEZXZpbA==',
                'x-envoy-peer-metadata-id': 'evil',
              }
            : {},
      })
      const body = Buffer.from(await r.arrayBuffer())
      assert.equal(r.status, 200)
      assert.equal(r.headers.get('x-envoy-peer-metadata'), null, 'the exchange header reached the client')
      assert.equal(r.headers.get('x-envoy-peer-metadata-id'), null)
      pageBytes += body.length
    }
    for (let i = 0; i < MISSES; i++) {
      const r = await fetch(`${gateway}/api/v1/products/1/nope`)
      missBytes += Buffer.from(await r.arrayBuffer()).length
      assert.equal(r.status, 404)
    }
    // every proxy records at its stream's end, before its response completes: the counts are there now, but a
    // loaded machine may still be finishing the last response's bookkeeping
    await eventually(
      async () => {
        const g = await scrape('ingressgateway')
        return (
          sum(g, 'istio_requests_total', { response_code: '404' }) -
            sum(before0.get('ingressgateway')!, 'istio_requests_total', { response_code: '404' }) >=
          MISSES
        )
      },
      10_000,
      'the gateway counts the 404s',
    )
    after0 = await scrapeAll()
  })

  const delta = (proxy: string, name: string, match: Record<string, string>) =>
    sum(after0.get(proxy)!, name, match) - sum(before0.get(proxy)!, name, match)

  test('every Istio series has all the labels, in order, and the metrics their Istio types', async () => {
    const text = await (await fetch(`http://127.0.0.1:${admin.get('productpage-v1')}/stats/prometheus`)).text()
    const { samples, types } = parseProm(text)
    assert.equal(types.get('istio_requests_total'), 'counter')
    assert.equal(types.get('istio_request_duration_milliseconds'), 'histogram')
    assert.equal(types.get('istio_request_bytes'), 'histogram')
    assert.equal(types.get('istio_response_bytes'), 'histogram')
    const istio = samples.filter((s) => s.name === 'istio_requests_total')
    assert.ok(istio.length >= 2)
    for (const s of istio) assert.deepEqual(Object.keys(s.labels), LABELS)
  })

  test('the gateway reports as source: N pages and the 404s to productpage-v1, over mTLS', () => {
    const to = {
      reporter: 'source',
      source_workload: 'ingressgateway',
      source_workload_namespace: 'istio-system',
      destination_workload: 'productpage-v1',
      destination_service: 'productpage.default.svc.cluster.local',
      destination_service_name: 'productpage',
      destination_service_namespace: 'default',
      destination_version: 'v1',
      destination_principal: PRODUCTPAGE_SA,
      request_protocol: 'http',
      connection_security_policy: 'unknown',
      response_flags: '-',
    }
    assert.equal(delta('ingressgateway', 'istio_requests_total', { ...to, response_code: '200' }), PAGES)
    assert.equal(delta('ingressgateway', 'istio_requests_total', { ...to, response_code: '404' }), MISSES)
    // the histograms count every request, and the response bytes are the bodies the client read
    assert.equal(
      delta('ingressgateway', 'istio_request_duration_milliseconds_count', { ...to, response_code: '200' }),
      PAGES,
    )
    assert.equal(
      delta('ingressgateway', 'istio_request_duration_milliseconds_bucket', {
        ...to,
        response_code: '200',
        le: '+Inf',
      }),
      PAGES,
    )
    assert.equal(delta('ingressgateway', 'istio_response_bytes_sum', { ...to, response_code: '200' }), pageBytes)
    assert.equal(delta('ingressgateway', 'istio_response_bytes_sum', { ...to, response_code: '404' }), missBytes)
    assert.equal(delta('ingressgateway', 'istio_request_bytes_count', { ...to, response_code: '404' }), MISSES)
  })

  test("productpage's sidecar reports as destination: the gateway's requests, its principal from the certificate", () => {
    const from = {
      reporter: 'destination',
      source_workload: 'ingressgateway',
      source_workload_namespace: 'istio-system',
      source_principal: SA('istio-system', 'istio-ingressgateway-service-account'),
      destination_workload: 'productpage-v1',
      destination_principal: PRODUCTPAGE_SA,
      destination_service_name: 'productpage',
      connection_security_policy: 'mutual_tls',
    }
    assert.equal(delta('productpage-v1', 'istio_requests_total', { ...from, response_code: '200' }), PAGES)
    assert.equal(delta('productpage-v1', 'istio_requests_total', { ...from, response_code: '404' }), MISSES)
    // the forged header named a workload "evil": nobody reports it
    for (const [name, m] of after0) assert.equal(sum(m, 'istio_requests_total', { source_workload: 'evil' }), 0, name)
  })

  test('productpage → reviews: one call per page, by reviews version, seen alike by both sides', () => {
    const src = {
      reporter: 'source',
      source_workload: 'productpage-v1',
      source_principal: PRODUCTPAGE_SA,
      source_app: 'productpage',
      source_version: 'v1',
      source_canonical_service: 'productpage',
      source_canonical_revision: 'v1',
      destination_service: 'reviews.default.svc.cluster.local',
      destination_service_name: 'reviews',
      destination_principal: REVIEWS_SA,
      response_code: '200',
    }
    assert.equal(delta('productpage-v1', 'istio_requests_total', src), PAGES)
    assert.equal(
      delta('productpage-v1', 'istio_requests_total', {
        ...src,
        destination_service: 'details.default.svc.cluster.local',
        destination_service_name: 'details',
        destination_principal: SA('default', 'bookinfo-details'),
      }),
      PAGES,
    )
    let seen = 0
    for (const v of ['v1', 'v2', 'v3']) {
      const bySource = delta('productpage-v1', 'istio_requests_total', {
        ...src,
        destination_workload: `reviews-${v}`,
        destination_version: v,
        destination_canonical_revision: v,
      })
      const byDestination = delta(`reviews-${v}`, 'istio_requests_total', {
        reporter: 'destination',
        source_workload: 'productpage-v1',
        source_principal: PRODUCTPAGE_SA,
        destination_workload: `reviews-${v}`,
        destination_version: v,
        destination_service_name: 'reviews',
        destination_principal: REVIEWS_SA,
        connection_security_policy: 'mutual_tls',
        response_code: '200',
      })
      assert.equal(bySource, byDestination, `reviews-${v}`)
      seen += byDestination
    }
    assert.equal(seen, PAGES)
    // reviews v2 and v3 call ratings once per page they render
    const ratings = ['v2', 'v3']
      .map((v) =>
        delta(`reviews-${v}`, 'istio_requests_total', {
          reporter: 'source',
          source_workload: `reviews-${v}`,
          destination_workload: 'ratings-v1',
          destination_service_name: 'ratings',
          response_code: '200',
        }),
      )
      .reduce((a, b) => a + b, 0)
    const byRatings = delta('ratings-v1', 'istio_requests_total', {
      reporter: 'destination',
      destination_workload: 'ratings-v1',
      connection_security_policy: 'mutual_tls',
      response_code: '200',
    })
    assert.equal(ratings, byRatings)
    const v2v3 =
      delta('reviews-v2', 'istio_requests_total', { reporter: 'destination', response_code: '200' }) +
      delta('reviews-v3', 'istio_requests_total', { reporter: 'destination', response_code: '200' })
    assert.equal(ratings, v2v3)
  })

  test('a series exists once per label set (no duplicates)', () => {
    for (const [name, m] of after0) {
      const keys = series(m, 'istio_requests_total', {}).map((s) => JSON.stringify(s.labels))
      assert.equal(new Set(keys).size, keys.length, name)
    }
  })
})
