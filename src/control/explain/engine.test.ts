import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, test } from 'node:test'
import type { Resource } from '../../api/index.js'
import { TYPE_URL } from '../../xds/snapshot.js'
import { Registry } from '../registry/registry.js'
import { manifests, sidecar, WORKLOADS } from '../translate/testdata/bookinfo.js'
import { type TranslateNode, translate } from '../translate/translate.js'
import { type Explanation, type LiveClusters, type ProxyView, type Step, explain } from './engine.js'

const NET = new URL('../../../../examples/bookinfo/networking/', import.meta.url)
const FIXTURES = new URL('../../../../test/fixtures/istio/', import.meta.url)
const file = (base: URL, name: string) => manifests(readFileSync(new URL(name, base), 'utf8'), name)

/** Bookinfo as loom up registers it: one workload each, with a sidecar (Istio's tlsMode label), port 9080. */
function registry(): Registry {
  const r = new Registry()
  for (const [w, address] of WORKLOADS) {
    const [app, version] = w.split('-') as [string, string]
    r.register({
      name: w,
      address,
      ports: [{ name: 'http', number: 9080 }],
      labels: { app: app!, version: version!, 'security.istio.io/tlsMode': 'istio' },
      serviceAccount: `bookinfo-${app}`,
      ttlSeconds: 30,
    })
  }
  return r
}

function nodes(): TranslateNode[] {
  return WORKLOADS.map(([w, ip]) => {
    const [app, version] = w.split('-') as [string, string]
    return sidecar(app!, version!, ip)
  })
}

function views(resources: Resource[], reg = registry()): ProxyView[] {
  const services = reg.services()
  return nodes().map((n) => {
    const snap = translate({ resources, services, meshConfig: { trustDomain: 'cluster.local' } }, n)
    const items = (t: string) => [...(snap.resources.get(t as never)?.items.values() ?? [])]
    return {
      nodeId: n.id,
      kind: n.kind,
      name: n.id.split('~')[2]!,
      namespace: n.namespace,
      ip: n.ip,
      principal: `spiffe://cluster.local/ns/${n.namespace}/sa/${n.serviceAccount}`,
      listeners: items(TYPE_URL.listener),
      routes: items(TYPE_URL.route),
      clusters: items(TYPE_URL.cluster),
      endpoints: items(TYPE_URL.endpoint),
    }
  })
}

const NO_LIVE: LiveClusters = { error: 'not asked' }

function run(resources: Resource[], from: string, url: string, headers: [string, string][] = [], live = NO_LIVE) {
  const all = views(resources)
  const source = all.find((v) => v.name.startsWith(from))!
  return explain(
    source,
    { method: 'GET', url, headers },
    all.filter((v) => v !== source),
    live,
  )
}

/** Every step's text, depth first, with its mark. */
function lines(e: Explanation): string[] {
  const out: string[] = []
  const walk = (steps: Step[]) => {
    for (const s of steps) {
      out.push(`${s.ok === true ? '✓' : s.ok === false ? '✗' : '•'} ${s.text}`)
      if (s.children !== undefined) walk(s.children)
    }
  }
  walk(e.steps)
  return out
}

function has(e: Explanation, re: RegExp): void {
  assert.ok(
    lines(e).some((l) => re.test(l)),
    `no step matches ${re}:\n${lines(e).join('\n')}`,
  )
}

const DR = file(NET, 'destination-rule-all.yaml')
const JASON = file(NET, 'virtual-service-reviews-jason-v2.yaml')

describe('loom explain engine on translated snapshots', () => {
  test('jason is routed to v2 by the first route; everyone else falls through to v1, and why', () => {
    const other = run([...DR, ...JASON], 'productpage', 'http://reviews:9080/reviews/0')
    assert.equal(other.listener, 'outbound_http')
    assert.equal(other.virtualHost, 'reviews.default.svc.cluster.local:9080')
    assert.equal(other.cluster, 'outbound|9080|v1|reviews.default.svc.cluster.local')
    assert.equal(other.subset, 'v1')
    assert.equal(other.route?.origin, 'VirtualService default/reviews')
    has(
      other,
      /^✗ route 0 \(VirtualService default\/reviews\): did not match: header end-user exact "jason" \(request: absent\)/,
    )
    has(other, /^✓ route 1 \(VirtualService default\/reviews\): matched/)
    has(
      other,
      /^✓ cluster outbound\|9080\|v1\|reviews\.default\.svc\.cluster\.local: subset v1 of DestinationRule default\/reviews/,
    )
    assert.deepEqual(
      other.endpoints.map((e) => [e.address, e.workload]),
      [['10.0.0.31:9080', 'reviews-v1-7d4b.default']],
    )
    assert.equal(other.localReply, null)

    const jason = run([...DR, ...JASON], 'productpage', 'http://reviews:9080/reviews/0', [['end-user', 'jason']])
    assert.equal(jason.cluster, 'outbound|9080|v2|reviews.default.svc.cluster.local')
    has(jason, /^✓ route 0 \(VirtualService default\/reviews\): matched/)
    has(jason, /^✓ header end-user exact "jason" \(request: "jason"\)/)
    has(jason, /^• 1 later route not evaluated/)
    // the same router decides: a case that differs is not jason
    const upper = run([...DR, ...JASON], 'productpage', 'http://reviews:9080/reviews/0', [['end-user', 'Jason']])
    assert.equal(upper.subset, 'v1')
  })

  test('no virtual host for an unknown authority: 404 NR', () => {
    const e = run(DR, 'productpage', 'http://nosuch:9080/')
    assert.deepEqual(e.localReply, { status: 404, flag: 'NR', reason: 'route_not_found' })
    has(e, /none of the \d+ virtual hosts of outbound has a domain matching "nosuch:9080"/)
  })

  test('a fault: the abort for jason names its status and share; others get none', () => {
    const abort = file(NET, 'virtual-service-ratings-test-abort.yaml')
    const j = run([...DR, ...abort], 'reviews-v2', 'http://ratings:9080/ratings/0', [['end-user', 'jason']])
    assert.deepEqual(j.faults, ['abort 500 (100%)'])
    assert.deepEqual(j.localReply, { status: 500, flag: 'FI', reason: 'fault_filter_abort' })
    has(j, /✗ fault \(envoy\.filters\.http\.fault\): abort 500 \(100%\)/)
    const o = run([...DR, ...abort], 'reviews-v2', 'http://ratings:9080/ratings/0')
    assert.deepEqual(o.faults, [])
    assert.equal(o.localReply, null)
  })

  test('a route timeout is reported with its value', () => {
    const t = file(FIXTURES, 'request-timeouts-reviews-timeout-0.5s.yaml')
    const e = run([...DR, ...t], 'productpage', 'http://reviews:9080/reviews/0')
    assert.equal(e.timeoutMs, 500)
    has(e, /^• timeout: 500ms$/)
    assert.equal(e.subset, 'v2')
    // Istio's default: no timeout, two retries on connect failures
    const d = run(DR, 'productpage', 'http://reviews:9080/reviews/0')
    assert.equal(d.timeoutMs, 0)
    assert.equal(d.retries?.numRetries, 2)
    has(d, /^• retries: 2 on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes/)
  })

  test('a denial names the AuthorizationPolicy and its rule; an allow names the rule that matched', () => {
    const deny = manifests(
      `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: { name: deny-productpage, namespace: default }
spec:
  selector: { matchLabels: { app: reviews } }
  action: DENY
  rules:
  - from: [{ source: { principals: ["cluster.local/ns/default/sa/bookinfo-productpage"] } }]
    to: [{ operation: { methods: ["GET"] } }]
`,
      'deny.yaml',
    )
    const e = run([...DR, ...JASON, ...deny], 'productpage', 'http://reviews:9080/reviews/0')
    assert.deepEqual(e.authorization, [
      {
        workload: 'reviews-v1-7d4b.default',
        allowed: false,
        policy: 'ns[default]-policy[deny-productpage]-rule[0]',
        origin: 'AuthorizationPolicy default/deny-productpage rule 0',
      },
    ])
    assert.equal(e.localReply?.status, 403)
    has(e, /RBAC .* \(DENY\): denied by ns\[default\]-policy\[deny-productpage\]-rule\[0\]/)
    has(
      e,
      /destination reviews-v1-7d4b\.default: .*mutual TLS, peer spiffe:\/\/cluster\.local\/ns\/default\/sa\/bookinfo-productpage/,
    )
    // another caller's principal does not match the rule
    const r = run([...DR, ...JASON, ...deny], 'ratings', 'http://reviews:9080/reviews/0')
    assert.equal(r.authorization[0]?.allowed, true)

    const nothing = file(FIXTURES, 'authz-allow-nothing.yaml')
    const n = run([...DR, ...JASON, ...nothing], 'productpage', 'http://reviews:9080/reviews/0')
    assert.equal(n.authorization[0]?.allowed, false)
    assert.equal(n.authorization[0]?.policy, null)
    has(n, /\(ALLOW\): denied: no ALLOW policy matches/)
  })

  test('no healthy upstream: a subset without endpoints, and every host ejected (live state)', () => {
    const v9 = manifests(
      `apiVersion: networking.istio.io/v1
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
`,
      'v9.yaml',
    )
    const e = run(v9, 'productpage', 'http://reviews:9080/reviews/0')
    assert.deepEqual(e.localReply, { status: 503, flag: 'UH', reason: 'no_healthy_upstream' })
    has(e, /✗ no endpoints: no healthy workload has subset v9's labels/)

    const live: LiveClusters = {
      cluster_statuses: [
        {
          name: 'outbound|9080|v1|reviews.default.svc.cluster.local',
          host_statuses: [
            {
              address: { socket_address: { address: '10.0.0.31', port_value: 9080 } },
              health_status: { eds_health_status: 'HEALTHY', failed_outlier_check: true },
              stats: { rq_active: 0 },
            },
          ],
        },
      ],
    }
    const ej = run([...DR, ...JASON], 'productpage', 'http://reviews:9080/reviews/0', [], live)
    assert.deepEqual(ej.localReply, { status: 503, flag: 'UH', reason: 'no_healthy_upstream' })
    assert.deepEqual(ej.endpoints, [
      {
        address: '10.0.0.31:9080',
        eligible: false,
        state: 'ejected by outlier detection',
        workload: 'reviews-v1-7d4b.default',
      },
    ])
    has(ej, /✗ 10\.0\.0\.31:9080 ejected by outlier detection, 0 active requests/)
  })
})
