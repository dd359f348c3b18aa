/**
 * The translator goldens read on their own: each golden file must say what its inputs mean, whoever recorded it.
 * `UPDATE_GOLDEN=1` rewrites the goldens from the translator; these checks read the files as stored, so a
 * re-recorded golden that routes somewhere its inputs do not, names a cluster that is not there, or loses an
 * endpoint set fails here by name. A golden change in a commit comes with a named test of the behaviour that changed.
 */
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'

type Json = Record<string, unknown>
const T = 'type.googleapis.com/envoy.config.'
const LDS = `${T}listener.v3.Listener`
const RDS = `${T}route.v3.RouteConfiguration`
const CDS = `${T}cluster.v3.Cluster`
const EDS = `${T}endpoint.v3.ClusterLoadAssignment`

function load(name: string): Map<string, Map<string, Json>> {
  const raw = JSON.parse(
    readFileSync(new URL(`../../../../src/control/translate/testdata/${name}`, import.meta.url), 'utf8'),
  )
  const out = new Map<string, Map<string, Json>>()
  for (const [type, v] of Object.entries(raw as Record<string, { version: string; items: Record<string, Json> }>)) {
    assert.match(v.version, /^[0-9a-f]{16}$/, `${type}: a content version`)
    out.set(type, new Map(Object.entries(v.items)))
  }
  return out
}

/** Every route configuration: inline in a listener's HTTP connection manager, or by name in RDS. */
function routeConfigs(g: Map<string, Map<string, Json>>): Json[] {
  const out = [...(g.get(RDS)?.values() ?? [])]
  for (const l of g.get(LDS)?.values() ?? []) {
    for (const fc of (l.filter_chains as Json[]) ?? []) {
      for (const f of (fc.filters as Json[]) ?? []) {
        const tc = f.typed_config as Json
        if (tc.route_config) out.push(tc.route_config as Json)
        const rds = tc.rds as Json | undefined
        if (rds) assert.ok(g.get(RDS)?.has(rds.route_config_name as string), `RDS ${rds.route_config_name} is sent`)
      }
    }
  }
  return out
}

/** `domain → ["match → cluster@weight ..."]` for every virtual host. */
function routeTable(g: Map<string, Map<string, Json>>): Map<string, string[]> {
  const table = new Map<string, string[]>()
  for (const rc of routeConfigs(g)) {
    for (const vh of rc.virtual_hosts as Json[]) {
      const lines = (vh.routes as Json[]).map((r) => {
        const m = r.match as Json
        const path = m.prefix !== undefined ? `prefix ${m.prefix}` : `path ${m.path}`
        const headers = ((m.headers as Json[]) ?? []).map((h) => ` ${h.name}=${JSON.stringify(h.string_match)}`)
        const a = r.route as Json
        const to = a.cluster
          ? String(a.cluster)
          : ((a.weighted_clusters as Json).clusters as Json[]).map((c) => `${c.name}@${c.weight}`).join(' ')
        return `${path}${headers.join('')} → ${to}`
      })
      table.set((vh.domains as string[])[0]!, lines)
    }
  }
  return table
}

/** Every connection manager's http_filters, by name: Istio's order, the fault and CORS filters, istio.stats, the router. */
function checkChains(g: Map<string, Map<string, Json>>): void {
  for (const [name, l] of g.get(LDS) ?? []) {
    for (const fc of (l.filter_chains as Json[]) ?? []) {
      for (const f of (fc.filters as Json[]) ?? []) {
        const chain = ((f.typed_config as Json).http_filters as Json[] | undefined)?.map((x) => x.name)
        if (chain !== undefined)
          assert.deepEqual(
            chain,
            [
              'loom.filters.http.explain',
              'envoy.filters.http.fault',
              'envoy.filters.http.cors',
              'istio.stats',
              'envoy.filters.http.router',
            ],
            name,
          )
      }
    }
  }
}

function checkReferences(g: Map<string, Map<string, Json>>): void {
  checkChains(g)
  const clusters = g.get(CDS)!
  for (const lines of routeTable(g).values()) {
    for (const line of lines) {
      for (const c of line.split(' → ')[1]!.split(' ')) {
        assert.ok(clusters.has(c.split('@')[0]!), `route ${line}: cluster is sent`)
      }
    }
  }
  for (const [name, c] of clusters) {
    if (c.type !== 'EDS') continue
    const cla = g.get(EDS)?.get(name)
    assert.ok(cla, `EDS cluster ${name} has its ClusterLoadAssignment`)
  }
}

const svc = (s: string) => `outbound|9080|${s}.default.svc.cluster.local`

/** Istio's retry policy for a route whose rule has no `retries` (none of these inputs sets any, none hashes). */
const ISTIO_DEFAULT_RETRY = {
  retry_on: 'connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes',
  num_retries: 2,
  retry_host_predicate: [
    {
      name: 'envoy.retry_host_predicates.previous_hosts',
      typed_config: {
        '@type': 'type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate',
      },
    },
  ],
  host_selection_retry_max_attempts: 5,
}

/** Outbound and gateway routes carry Istio's default retry policy; inbound routes (to the application) none. */
function checkRetries(g: Map<string, Map<string, Json>>): number {
  let n = 0
  for (const rc of routeConfigs(g)) {
    for (const vh of rc.virtual_hosts as Json[]) {
      for (const r of vh.routes as Json[]) {
        const a = r.route as Json | undefined
        if (a === undefined) continue
        const inbound = String(a.cluster ?? '').startsWith('inbound|')
        assert.deepEqual(
          a.retry_policy,
          inbound ? undefined : ISTIO_DEFAULT_RETRY,
          `${vh.name} ${JSON.stringify(r.match)}`,
        )
        if (!inbound) n++
      }
    }
  }
  return n
}

describe('golden: productpage sidecar (all-v1, destination-rule-all, jason-v2-v3)', () => {
  const g = load('productpage-sidecar.golden.json')

  it("outbound routes retry as Istio's default; the inbound route does not", () => assert.ok(checkRetries(g) >= 5))

  it('every route names a cluster that is sent, every EDS cluster has endpoints', () => checkReferences(g))

  it('reviews: jason to v2, everyone else to v3; the other services to v1', () => {
    const t = routeTable(g)
    assert.deepEqual(t.get('reviews.default.svc.cluster.local:9080'), [
      `prefix / end-user={"exact":"jason"} → ${svc('v2|reviews')}`,
      `prefix / → ${svc('v3|reviews')}`,
    ])
    for (const s of ['details', 'productpage', 'ratings']) {
      assert.deepEqual(t.get(`${s}.default.svc.cluster.local:9080`), [`prefix / → ${svc(`v1|${s}`)}`], s)
    }
  })

  it('one cluster per service and per DestinationRule subset, plus the inbound cluster', () => {
    const subsets = { details: ['v1', 'v2'], productpage: ['v1'], ratings: ['v1', 'v2', 'v2-mysql', 'v2-mysql-vm'] }
    const want = ['inbound|9080||', ...['', 'v1', 'v2', 'v3'].map((s) => svc(`${s}|reviews`))]
    for (const [s, list] of Object.entries(subsets)) want.push(svc(`|${s}`), ...list.map((x) => svc(`${x}|${s}`)))
    assert.deepEqual([...g.get(CDS)!.keys()].sort(), want.sort())
  })

  it('listens inbound on the service port and outbound for HTTP', () => {
    assert.deepEqual([...g.get(LDS)!.keys()].sort(), ['inbound|9080', 'outbound_http'])
    const port = (n: string) => ((g.get(LDS)!.get(n)!.address as Json).socket_address as Json).port_value
    assert.equal(port('inbound|9080'), 9080)
  })
})

/** Bookinfo's DestinationRules set no connectionPool: every outbound cluster has Istio's unlimited default thresholds. */
function checkDefaultCircuitBreakers(g: Map<string, Map<string, Json>>): void {
  const none = 4294967295
  for (const [name, c] of g.get(CDS)!) {
    if (!name.startsWith('outbound|')) continue
    assert.deepEqual(
      c.circuit_breakers,
      {
        thresholds: [
          {
            max_connections: none,
            max_pending_requests: none,
            max_requests: none,
            max_retries: none,
            track_remaining: true,
          },
        ],
      },
      name,
    )
    assert.equal(c.outlier_detection, undefined, name)
  }
}

describe('golden: circuit breakers', () => {
  for (const file of ['productpage-sidecar.golden.json', 'ingress-gateway.golden.json']) {
    it(`${file}: every outbound cluster carries Istio's default thresholds (no limit) and no outlier detection`, () =>
      checkDefaultCircuitBreakers(load(file)))
  }
})

describe('golden: ingress gateway (all-v1, destination-rule-all, bookinfo-gateway)', () => {
  const g = load('ingress-gateway.golden.json')

  it("the gateway's routes retry as Istio's default", () => assert.equal(checkRetries(g), 5))

  it('every route names a cluster that is sent, every EDS cluster has endpoints', () => checkReferences(g))

  it("the gateway's five productpage paths, in the VirtualService's order, on port 8080", () => {
    assert.deepEqual([...g.get(LDS)!.keys()], ['0.0.0.0_8080'])
    const pp = svc('|productpage')
    assert.deepEqual(routeTable(g).get('*'), [
      `path /productpage → ${pp}`,
      `prefix /static → ${pp}`,
      `path /login → ${pp}`,
      `path /logout → ${pp}`,
      `prefix /api/v1/products → ${pp}`,
    ])
  })
})

describe('golden: ingress gateway traced (a mesh-wide Telemetry)', () => {
  const g = load('ingress-gateway-traced.golden.json')

  it('the same as the untraced gateway but for tracing, span names and the collector', () => {
    const plain = load('ingress-gateway.golden.json')
    const hcm = (x: Map<string, Map<string, Json>>) =>
      ((x.get(LDS)!.get('0.0.0.0_8080')!.filter_chains as Json[])[0]!.filters as Json[]).at(-1)!.typed_config as Json
    const traced = { ...hcm(g) }
    const tracing = traced.tracing as Json
    delete traced.tracing
    delete traced.request_id_extension
    assert.deepEqual(traced, hcm(plain))
    assert.deepEqual(tracing.random_sampling, { value: 100 })
    const provider = (tracing.provider as Json).typed_config as Json
    assert.equal(provider.service_name, 'istio-ingressgateway.istio-system')
    const uri = (provider.http_service as Json).http_uri as Json
    assert.equal(uri.uri, 'http://otel-collector.observability:4318/v1/traces')
    assert.ok(g.get(CDS)!.has(uri.cluster as string), 'the collector has a cluster')
    const routes = ((g.get(RDS)!.get('http.8080')!.virtual_hosts as Json[])[0]!.routes as Json[]).map(
      (r) => (r.decorator as Json).operation,
    )
    assert.deepEqual(routes, [
      'productpage.default.svc.cluster.local:9080/productpage',
      'productpage.default.svc.cluster.local:9080/static*',
      'productpage.default.svc.cluster.local:9080/login',
      'productpage.default.svc.cluster.local:9080/logout',
      'productpage.default.svc.cluster.local:9080/api/v1/products*',
    ])
  })
})
