/**
 * `loom explain` and the live decision record through the Bookinfo demo (one `loom demo`): why reviews answers from
 * v1 or v2 (the route that matched and the matcher that failed), a fault, an AuthorizationPolicy's denial, a route
 * timeout, a subset with no endpoints, a request entering at the gateway; and real requests with `x-loom-explain`
 * from permitted and non-permitted callers, each checked for the proxies' records.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtempSync, readFileSync } from 'node:fs'
import * as http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { eventually } from './helpers/control.js'
import { LOOM, ROOT, runLoom, writeTemp } from './helpers/proxy.js'

const NET = join(ROOT, 'examples', 'bookinfo', 'networking')
const FIXTURES = join(ROOT, 'test', 'fixtures', 'istio')

/** Who may ask for records here: loopback at the gateway, the gateway, productpage and reviews; not ratings. */
const MESH_CONFIG = `explainFrom:
  ipBlocks: [127.0.0.1/32]
  principals:
  - cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account
  - cluster.local/ns/default/sa/bookinfo-productpage
  - cluster.local/ns/default/sa/bookinfo-reviews
`

const DENY_REVIEWS_1 = `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: no-reviews-1, namespace: default }
spec:
  selector: { matchLabels: { app: reviews } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/default/sa/bookinfo-productpage"] } }]
    to: [{ operation: { paths: ["/reviews/1"] } }]
`

const RATINGS_DELAY_2S = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: ratings }
spec:
  hosts: [ratings]
  http:
  - fault: { delay: { percentage: { value: 100 }, fixedDelay: 2s } }
    route: [{ destination: { host: ratings, subset: v1 } }]
`

const REVIEWS_V9 = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: { name: reviews }
spec:
  host: reviews
  subsets: [{ name: v9, labels: { version: v9 } }]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: { name: reviews }
spec:
  hosts: [reviews]
  http: [{ route: [{ destination: { host: reviews, subset: v9 } }] }]
`

interface Explained {
  cluster: string | null
  subset: string | null
  route: { name: string; origin: string | null } | null
  localReply: { status: number; flag: string; reason: string } | null
  faults: string[]
  timeoutMs: number | null
  endpoints: { address: string; eligible: boolean; state: string; workload: string | null }[]
  authorization: { workload: string; allowed: boolean; policy: string | null; origin: string | null }[]
  config: { type: string; version: string; acked: boolean }[]
}

/** A request through a workload's sidecar, as its application sends it (the sidecar is its HTTP proxy). */
function viaSidecar(
  outboundPort: number,
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string }> {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port: outboundPort, path: url, headers: { host: u.host, ...headers } },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (body += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      },
    )
    req.setTimeout(20_000, () => req.destroy(new Error('no answer in 20 s')))
    req.on('error', reject)
    req.end()
  })
}

/** The `x-loom-explain-record` values of a response, innermost proxy first. */
function records(h: http.IncomingHttpHeaders | Headers): string[] {
  const v = h instanceof Headers ? h.get('x-loom-explain-record') : h['x-loom-explain-record']
  if (v === undefined || v === null) return []
  return (Array.isArray(v) ? v : v.split(', ')).flatMap((x) => x.split(', '))
}

describe('loom explain through the demo', { timeout: 300_000 }, () => {
  let demo: ChildProcess
  let stderr = ''
  let page: string
  let api: string
  let dataDir: string
  const outbound = new Map<string, number>()

  const loom = (args: string[]) => runLoom([...args, '--server', api], 30_000)
  const explain = async (args: string[]): Promise<Explained> => {
    const r = await loom(['explain', ...args, '-o', 'json'])
    assert.equal(r.code, 0, r.stderr)
    return JSON.parse(r.stdout) as Explained
  }
  /** Waits until the explanation satisfies `ok` (the control plane has the applied config): the last one. */
  const explainUntil = async (args: string[], ok: (e: Explained) => boolean, what: string): Promise<Explained> => {
    let last: Explained | undefined
    await eventually(async () => ok((last = await explain(args))), 30_000, what)
    return last!
  }

  before(async () => {
    dataDir = mkdtempSync(join(tmpdir(), 'loom-explain-'))
    const meshConfig = writeTemp('mesh-config.yaml', MESH_CONFIG)
    const args = ['demo', '--data-dir', dataDir, '--port', '0', '--api-port', '0', '--xds-port', '0']
    demo = spawn(process.execPath, [LOOM, ...args, '--mesh-config', meshConfig], { stdio: ['ignore', 'pipe', 'pipe'] })
    const reap = () => demo.kill('SIGKILL')
    process.once('exit', reap)
    demo.stderr!.on('data', (d) => (stderr += d))
    const line = await new Promise<string>((resolve, reject) => {
      let out = ''
      const t = setTimeout(() => reject(new Error(`no demo line:\n${stderr}`)), 150_000)
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
    const info = JSON.parse(line) as { productpage: string; api: string }
    page = info.productpage
    api = info.api
    const state = JSON.parse(readFileSync(join(dataDir, 'up.json'), 'utf8')) as {
      workloads: { name: string; outboundPort: number }[]
    }
    for (const w of state.workloads) outbound.set(w.name, w.outboundPort)
    await eventually(async () => (await fetch(page)).status === 200, 30_000, 'the product page')
    for (const f of ['destination-rule-all.yaml', 'virtual-service-reviews-jason-v2.yaml']) {
      const r = await loom(['apply', '-f', join(NET, f)])
      assert.equal(r.code, 0, r.stderr)
    }
  })
  after(async () => {
    if (demo.exitCode !== null) return
    const exited = new Promise((r) => demo.once('exit', r))
    demo.kill('SIGINT')
    await exited
  })

  test('a route match: jason goes to v2 by route 0; anyone else to v1, because the end-user header is not jason', async () => {
    const from = ['--from', 'productpage-v1', 'GET', 'http://reviews:9080/reviews/0']
    const other = await explainUntil(from, (e) => e.subset === 'v1', 'the jason-v2 rule at productpage')
    assert.equal(other.cluster, 'outbound|9080|v1|reviews.default.svc.cluster.local')
    assert.equal(other.route?.origin, 'VirtualService default/reviews')
    assert.equal(other.localReply, null)
    assert.equal(other.endpoints.length, 1)
    assert.equal(other.endpoints[0]!.workload, 'reviews-v1.default')
    assert.equal(other.endpoints[0]!.state, 'healthy')
    assert.ok(
      other.config.every((c) => c.acked),
      JSON.stringify(other.config),
    )
    // the tree says which matcher failed
    const tree = await loom(['explain', ...from])
    assert.equal(tree.code, 0, tree.stderr)
    assert.match(
      tree.stdout,
      /✗ route 0 \(VirtualService default\/reviews\): did not match: header end-user exact "jason" \(request: absent\)/,
    )
    assert.match(tree.stdout, /✓ route 1 \(VirtualService default\/reviews\): matched/)
    assert.match(tree.stdout, /✓ 127\.0\.0\.1:\d+ healthy, \d+ active requests → reviews-v1\.default/)
    assert.match(tree.stdout, /outcome: forwarded upstream/)

    const jason = await explain([...from, '-H', 'end-user: jason'])
    assert.equal(jason.cluster, 'outbound|9080|v2|reviews.default.svc.cluster.local')
    assert.equal(jason.endpoints[0]!.workload, 'reviews-v2.default')
  })

  test('the live record: a permitted caller sees each proxy decide; the real request agrees with explain', async () => {
    const r = await viaSidecar(outbound.get('productpage-v1')!, 'http://reviews:9080/reviews/0', {
      'x-loom-explain': '1',
      'end-user': 'jason',
    })
    assert.equal(r.status, 200)
    const recs = records(r.headers)
    assert.equal(recs.length, 2, recs.join('\n'))
    assert.match(recs[0]!, /^proxy=reviews-v2\.default:inbound route=default cluster=inbound\|9080\|\| /)
    assert.match(
      recs[1]!,
      /^proxy=productpage-v1\.default:outbound route=reviews\.default\.svc\.cluster\.local:9080\/0 cluster=outbound\|9080\|v2\|reviews\.default\.svc\.cluster\.local host=127\.0\.0\.1:\d+ status=200$/,
    )
    // at the gateway: loopback is permitted, and the gateway's identity at productpage
    const g = await fetch(page, { headers: { 'x-loom-explain': '1' } })
    assert.equal(g.status, 200)
    const grecs = records(g.headers)
    assert.equal(grecs.length, 2, grecs.join('\n'))
    assert.match(grecs[0]!, /^proxy=productpage-v1\.default:inbound /)
    assert.match(
      grecs[1]!,
      /^proxy=ingressgateway\.istio-system:gateway .*cluster=outbound\|9080\|\|productpage\.default\.svc\.cluster\.local /,
    )
  })

  test('a caller that is not permitted: its header is removed and nothing is recorded', async () => {
    // ratings' service account is not in explainFrom: its sidecar drops the header, so details records nothing
    const r = await viaSidecar(outbound.get('ratings-v1')!, 'http://details:9080/details/0', { 'x-loom-explain': '1' })
    assert.equal(r.status, 200)
    assert.deepEqual(records(r.headers), [])
    // without the header, nobody records
    const plain = await viaSidecar(outbound.get('productpage-v1')!, 'http://reviews:9080/reviews/0')
    assert.deepEqual(records(plain.headers), [])
  })

  test('a fault: the abort for jason, its status and share, from VirtualService default/ratings', async () => {
    const r = await loom(['apply', '-f', join(NET, 'virtual-service-ratings-test-abort.yaml')])
    assert.equal(r.code, 0, r.stderr)
    const args = ['--from', 'reviews-v2', 'http://ratings:9080/ratings/0', '-H', 'end-user: jason']
    const e = await explainUntil(args, (x) => x.faults.length > 0, 'the abort at reviews-v2')
    assert.deepEqual(e.faults, ['abort 500 (100%)'])
    assert.deepEqual(e.localReply, { status: 500, flag: 'FI', reason: 'fault_filter_abort' })
    assert.equal(e.route?.origin, 'VirtualService default/ratings')
    const other = await explain(['--from', 'reviews-v2', 'http://ratings:9080/ratings/0'])
    assert.deepEqual(other.faults, [])
    const live = await viaSidecar(outbound.get('reviews-v2')!, 'http://ratings:9080/ratings/0', {
      'x-loom-explain': '1',
      'end-user': 'jason',
    })
    assert.equal(live.status, 500)
    assert.deepEqual(records(live.headers), [
      `proxy=reviews-v2.default:outbound route=ratings.default.svc.cluster.local:9080/0 fault=abort:500 status=500 flags=FI reason=fault_filter_abort`,
    ])
  })

  test('a denial names the AuthorizationPolicy and its rule, in explain and in the record', async () => {
    const file = writeTemp('deny.yaml', DENY_REVIEWS_1)
    const a = await loom(['apply', '-f', file])
    assert.equal(a.code, 0, a.stderr)
    const args = ['--from', 'productpage-v1', 'http://reviews:9080/reviews/1']
    const e = await explainUntil(args, (x) => x.authorization.some((z) => !z.allowed), 'the DENY policy')
    assert.deepEqual(e.authorization, [
      {
        workload: 'reviews-v1.default',
        allowed: false,
        policy: 'ns[default]-policy[no-reviews-1]-rule[0]',
        origin: 'AuthorizationPolicy default/no-reviews-1 rule 0',
      },
    ])
    assert.equal(e.localReply?.status, 403)
    const tree = await loom(['explain', ...args])
    assert.match(tree.stdout, /peer spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-productpage/)
    assert.match(
      tree.stdout,
      /✗ RBAC envoy\.filters\.http\.rbac\.deny \(DENY\): denied by ns\[default\]-policy\[no-reviews-1\]-rule\[0\]/,
    )
    // another path is allowed
    const ok = await explain(['--from', 'productpage-v1', 'http://reviews:9080/reviews/0'])
    assert.equal(ok.authorization[0]?.allowed, true)
    let live: Awaited<ReturnType<typeof viaSidecar>> | undefined
    await eventually(
      async () =>
        (live = await viaSidecar(outbound.get('productpage-v1')!, 'http://reviews:9080/reviews/1', {
          'x-loom-explain': '1',
        })).status === 403,
      30_000,
      'the denial at reviews-v1',
    )
    const recs = records(live!.headers)
    assert.match(
      recs[0]!,
      /^proxy=reviews-v1\.default:inbound route=default rbac=denied:ns\[default\]-policy\[no-reviews-1\]-rule\[0\] status=403 flags=RBAC reason=rbac_access_denied_matched_policy\[ns\[default\]-policy\[no-reviews-1\]-rule\[0\]\]$/,
    )
    assert.equal((await loom(['delete', 'authorizationpolicy', 'no-reviews-1'])).code, 0)
  })

  test('a route timeout: 0.5 s on reviews, ratings held 2 s: explain shows the timeout, the record shows it fire', async () => {
    for (const [name, text] of [
      ['ratings-delay.yaml', RATINGS_DELAY_2S],
      ['reviews-timeout.yaml', readFileSync(join(FIXTURES, 'request-timeouts-reviews-timeout-0.5s.yaml'), 'utf8')],
    ] as const) {
      const r = await loom(['apply', '-f', writeTemp(name, text)])
      assert.equal(r.code, 0, r.stderr)
    }
    const e = await explainUntil(
      ['--from', 'productpage-v1', 'http://reviews:9080/reviews/0'],
      (x) => x.timeoutMs === 500,
      'the 0.5 s timeout',
    )
    assert.equal(e.subset, 'v2')
    const d = await explainUntil(
      ['--from', 'reviews-v2', 'http://ratings:9080/ratings/0'],
      (x) => x.faults.length > 0,
      'the ratings delay',
    )
    assert.deepEqual(d.faults, ['delay 2000ms (100%)'])
    let live: Awaited<ReturnType<typeof viaSidecar>> | undefined
    await eventually(
      async () =>
        (live = await viaSidecar(outbound.get('productpage-v1')!, 'http://reviews:9080/reviews/0', {
          'x-loom-explain': '1',
        })).status === 504,
      30_000,
      'the timeout firing',
    )
    const mine = records(live!.headers).find((x) => x.startsWith('proxy=productpage-v1.default:outbound'))
    assert.match(
      mine ?? '',
      /cluster=outbound\|9080\|v2\|reviews\.default\.svc\.cluster\.local .*timeout=500ms:fired status=504 flags=UT reason=upstream_timeout$/,
    )
  })

  test('no healthy upstream: a subset no workload has: 503 UH, in explain and in the record', async () => {
    const r = await loom(['apply', '-f', writeTemp('v9.yaml', REVIEWS_V9)])
    assert.equal(r.code, 0, r.stderr)
    const e = await explainUntil(
      ['--from', 'productpage-v1', 'http://reviews:9080/reviews/0'],
      (x) => x.subset === 'v9',
      'the v9 subset',
    )
    assert.deepEqual(e.localReply, { status: 503, flag: 'UH', reason: 'no_healthy_upstream' })
    assert.deepEqual(e.endpoints, [])
    const tree = await loom(['explain', '--from', 'productpage-v1', 'http://reviews:9080/reviews/0'])
    assert.match(tree.stdout, /✗ no endpoints: no healthy workload has subset v9's labels/)
    assert.match(tree.stdout, /outcome: 503 UH \(no_healthy_upstream\)/)
    let live: Awaited<ReturnType<typeof viaSidecar>> | undefined
    await eventually(
      async () =>
        (live = await viaSidecar(outbound.get('productpage-v1')!, 'http://reviews:9080/reviews/0', {
          'x-loom-explain': '1',
        })).status === 503,
      30_000,
      'no healthy upstream',
    )
    assert.match(
      records(live!.headers)[0] ?? '',
      /cluster=outbound\|9080\|v9\|reviews\.default\.svc\.cluster\.local status=503 flags=UH reason=no_healthy_upstream$/,
    )
  })

  test('a request entering at the gateway: its listener, the Bookinfo route, productpage', async () => {
    const port = new URL(page).port
    const e = await explain(['--gateway', 'ingressgateway', `http://127.0.0.1:${port}/productpage`])
    assert.equal(e.cluster, 'outbound|9080||productpage.default.svc.cluster.local')
    assert.equal(e.route?.origin, 'VirtualService default/bookinfo')
    assert.equal(e.endpoints[0]?.workload, 'productpage-v1.default')
    assert.equal(e.authorization[0]?.allowed, true)
    const miss = await explain(['--gateway', 'ingressgateway', `http://127.0.0.1:${port}/nothing-here`])
    assert.deepEqual(miss.localReply, { status: 404, flag: 'NR', reason: 'route_not_found' })
    const bad = await loom(['explain', '--from', 'nosuch', 'http://reviews:9080/'])
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /no connected proxy is "nosuch"; proxies: .*productpage-v1\.default/)
  })
})
