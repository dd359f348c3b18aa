/**
 * Services and workloads: the list (`#/services`), a service's page and a workload's page. Every number comes from
 * the control plane's API, refreshed every 5 s: the registry (`/api/v1/services`, `/api/v1/workloads`), the gathered
 * metrics (`/api/v1/stats`, `/series`, `/edges`), what applies to a service (`/api/v1/describe/service`, the same
 * answer `loom describe service` prints) and a workload's identity and security (`/identity`, `/security`).
 */
import { ApiError, getJson } from '../api.js'
import { goldenCharts } from '../components/golden.js'
import { type Child, h, replace } from '../dom.js'
import { health, ms, percent, rps } from '../format.js'
import { link, type Page } from '../router.js'

// === the API's answers (the fields the pages read) ===

interface Endpoint {
  address: string
  port: number
  servicePort: number
  labels: Record<string, string>
  healthy: boolean
  source: string
}

interface Service {
  hostname: string
  namespace: string
  ports: { number: number; name: string; protocol: string }[]
  endpoints: Endpoint[]
  source: string
}

interface StatRow {
  namespace: string
  name: string
  version: string
  meshed: { meshed: number; total: number } | null
  requests: number
  rps: number
  successRate: number | null
  latencyMs: { p50: number; p95: number; p99: number } | null
  tcpConnections: number | null
  mtlsShare: number | null
}

interface EdgeRow {
  source: { workload: string; namespace: string; principal: string }
  destination: { workload: string; namespace: string; principal: string; service: string }
  requests: number
  rps: number
  successRate: number | null
  mtlsShare: number | null
}

interface Workload {
  id: string
  name: string
  namespace: string
  address: string
  labels: Record<string, string>
  serviceAccount: string
  healthy: boolean
}

interface Observation {
  proxy: string
  cluster: string
  edsHealthStatus: string
  ejected: boolean
  failedActiveHealthCheck: boolean
  activeRequests: number
}

interface Description {
  service: Service
  routes: {
    namespace: string
    name: string
    hosts: string[]
    gateways: string[]
    http: {
      index: number
      name: string | null
      match: unknown[] | null
      destinations: { host: string; subset: string; port: number | null; weight: number }[]
      notes: string[]
    }[]
  }[]
  subsets: {
    rule: string
    name: string
    labels: Record<string, string>
    endpoints: string[]
    healthy: number
    trafficPolicy: unknown
  }[]
  destinationRules: { metadata: { namespace: string; name: string }; spec: { trafficPolicy?: unknown } }[]
  endpoints: (Endpoint & { workload: string | null; state: string; observations: Observation[] })[]
  policies: { kind: string; namespace: string; name: string; detail: string; dryRun?: boolean; workloads: string[] }[]
  live: { proxies: string[]; errors: string[] }
}

interface Security {
  workload: { name: string; namespace: string; address: string; labels: Record<string, string>; serviceAccount: string }
  ports: {
    servicePort: number
    workloadPort: number
    protocol: string
    mode: string
    level: string
    policy: string | null
  }[]
  outboundTls: { host: string; subset: string; port: number; mode: string; rule: string }[]
  authorizationPolicies: { name: string; namespace: string; action?: string; dryRun?: boolean }[]
  requestAuthentications: { name: string; namespace: string }[]
}

interface Identity {
  serviceAccount: string | null
  spiffeId: string | null
  proxies: {
    proxy: string
    admin: string
    certificate: {
      spiffeId: string
      serialNumber: string
      issuer: string | null
      notBefore: string
      notAfter: string
      nextRenewal: string | null
      lastRenewalError: string | null
    } | null
    error: string | null
  }[]
}

// === helpers ===

/** A table whose rows carry attributes (`data-*` for tests and styling); `empty` shown in place of no rows. */
function grid(
  head: string[],
  rows: { attrs?: Record<string, string>; cells: Child[] }[],
  testId: string,
  empty: string,
): HTMLElement {
  if (rows.length === 0) return h('p', { class: 'muted', 'data-testid': testId, 'data-rows': 0 }, empty)
  return h(
    'table',
    { 'data-testid': testId, 'data-rows': rows.length },
    h('thead', null, h('tr', null, ...head.map((c) => h('th', null, c)))),
    h('tbody', null, ...rows.map((r) => h('tr', r.attrs ?? null, ...r.cells.map((c) => h('td', null, c))))),
  )
}

/** A success rate colored by its health. */
function success(v: number | null): HTMLElement {
  return h('span', { class: health(v) }, percent(v))
}

function labelText(labels: Record<string, string>): string {
  return (
    Object.entries(labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(', ') || '-'
  )
}

/** The service's name as its page and its metrics name it: `reviews` for `reviews.default.svc.cluster.local`. */
function shortName(s: Service): string {
  const suffix = `.${s.namespace}.svc.cluster.local`
  return s.hostname.endsWith(suffix) ? s.hostname.slice(0, -suffix.length) : s.hostname
}

const stateClass: Record<string, string> = {
  healthy: 'ok',
  unhealthy: 'bad',
  ejected: 'bad',
  'failing health checks': 'warn',
}

/** `in 23h 59m`, `4m ago`. */
function fromNow(iso: string): string {
  const d = Date.parse(iso) - Date.now()
  const m = Math.floor(Math.abs(d) / 60_000)
  const days = Math.floor(m / 1440)
  const hours = Math.floor((m % 1440) / 60)
  const text =
    days > 0
      ? `${days}d ${hours}h`
      : hours > 0
        ? `${hours}h ${m % 60}m`
        : m > 0
          ? `${m}m`
          : `${Math.floor(Math.abs(d) / 1000)}s`
  return d >= 0 ? `in ${text}` : `${text} ago`
}

function statsKey(ns: string, name: string, version = ''): string {
  return `${ns}/${name}/${version}`
}

async function stats(resource: string, signal: AbortSignal, extra: Record<string, string> = {}): Promise<StatRow[]> {
  const q = new URLSearchParams({ resource, window: '1m', ...extra })
  try {
    return (await getJson<{ rows: StatRow[] }>(`/api/v1/stats?${q}`, signal)).rows
  } catch (err) {
    // a control plane that gathers no metrics (409) still has a registry to show
    if (err instanceof ApiError && err.status === 409) return []
    throw err
  }
}

async function edges(namespace: string, signal: AbortSignal): Promise<EdgeRow[]> {
  try {
    return (
      await getJson<{ edges: EdgeRow[] }>(`/api/v1/edges?namespace=${encodeURIComponent(namespace)}&window=1m`, signal)
    ).edges
  } catch (err) {
    if (err instanceof ApiError && err.status === 409) return []
    throw err
  }
}

/**
 * The edges of one side, one row per peer: a service's callers reach several of its workloads (one edge each), so
 * their requests add up and the success and mTLS shares are weighted by requests; `via` lists this side's workloads.
 */
function mergeEdges(rows: EdgeRow[], side: 'source' | 'destination'): (EdgeRow & { via: string[] })[] {
  const other = side === 'source' ? 'destination' : 'source'
  const merged = new Map<string, EdgeRow & { via: string[]; ok: number; mtls: number }>()
  for (const e of rows) {
    const key = `${e[side].namespace}/${e[side].workload}/${e.destination.service}`
    let m = merged.get(key)
    if (m === undefined) merged.set(key, (m = { ...e, requests: 0, rps: 0, via: [], ok: 0, mtls: 0 }))
    m.requests += e.requests
    m.rps += e.rps
    m.ok += (e.successRate ?? 0) * e.requests
    m.mtls += (e.mtlsShare ?? 0) * e.requests
    if (!m.via.includes(e[other].workload)) m.via.push(e[other].workload)
  }
  return [...merged.values()].map(({ ok, mtls, ...m }) => ({
    ...m,
    via: m.via.sort(),
    successRate: m.requests > 0 ? ok / m.requests : null,
    mtlsShare: m.requests > 0 ? mtls / m.requests : null,
  }))
}

function edgeTable(rows: EdgeRow[], side: 'source' | 'destination', testId: string, empty: string): HTMLElement {
  return grid(
    [
      side === 'source' ? 'From' : 'To',
      'Service',
      side === 'source' ? 'To' : 'From',
      'RPS',
      'Success',
      'mTLS',
      'Identity',
    ],
    mergeEdges(rows, side).map((e) => {
      const w = e[side]
      const known = w.workload !== 'unknown'
      return {
        attrs: { 'data-peer': `${w.namespace}/${w.workload}`, 'data-rps': String(e.rps) },
        cells: [
          known
            ? h('a', { href: link('workloads', w.namespace, w.workload) }, `${w.namespace}/${w.workload}`)
            : w.workload,
          e.destination.service,
          e.via.join(', '),
          rps(e.rps),
          success(e.successRate),
          percent(e.mtlsShare),
          h('code', null, w.principal),
        ],
      }
    }),
    testId,
    empty,
  )
}

// === #/services ===

export const servicesPage: Page = (el, _params, ctx) => {
  const svcBox = h('div', null, h('p', { class: 'muted' }, 'Loading…'))
  const wlBox = h('div')
  replace(
    el,
    h('h1', null, 'Services'),
    h('p', { class: 'muted' }, 'Every service in the registry, with its traffic over the last minute.'),
    svcBox,
    h('h2', null, 'Workloads'),
    wlBox,
  )
  ctx.every(5000, async () => {
    const [services, svcStats, wlStats, workloads] = await Promise.all([
      getJson<Service[]>('/api/v1/services', ctx.signal),
      stats('service', ctx.signal),
      stats('deployment', ctx.signal),
      getJson<Workload[]>('/api/v1/workloads', ctx.signal),
    ])
    const byService = new Map(svcStats.map((r) => [statsKey(r.namespace, r.name, r.version), r]))
    replace(
      svcBox,
      grid(
        ['Service', 'Namespace', 'Ports', 'Endpoints', 'RPS', 'Success', 'P99'],
        services.map((s) => {
          const name = shortName(s)
          const st = byService.get(statsKey(s.namespace, name))
          const healthy = s.endpoints.filter((e) => e.healthy).length
          return {
            attrs: { 'data-service': `${s.namespace}/${name}` },
            cells: [
              h('a', { href: link('services', s.namespace, name) }, name),
              s.namespace,
              s.ports.map((p) => `${p.number}/${p.protocol || '?'}`).join(', ') || '-',
              h(
                'span',
                { class: s.endpoints.length === 0 ? 'none' : healthy === s.endpoints.length ? 'ok' : 'warn' },
                `${healthy}/${s.endpoints.length}`,
              ),
              st === undefined || st.requests === 0 ? h('span', { class: 'muted' }, 'no traffic') : rps(st.rps),
              success(st?.successRate ?? null),
              ms(st?.latencyMs?.p99),
            ],
          }
        }),
        'services-table',
        'The registry has no service: register workloads (loom up) or apply a ServiceEntry.',
      ),
    )
    // the workloads: the registered ones and those only known by their traffic or their proxy
    const registered = new Map(workloads.map((w) => [`${w.namespace}/${w.name}`, w]))
    const names = new Set([...registered.keys(), ...wlStats.map((r) => `${r.namespace}/${r.name}`)])
    const byWorkload = new Map(wlStats.map((r) => [`${r.namespace}/${r.name}`, r]))
    replace(
      wlBox,
      grid(
        ['Workload', 'Namespace', 'Version', 'Meshed', 'Health', 'RPS', 'Success', 'P99'],
        [...names].sort().map((id) => {
          const [ns, name] = id.split('/') as [string, string]
          const w = registered.get(id)
          const st = byWorkload.get(id)
          return {
            attrs: { 'data-workload': id },
            cells: [
              h('a', { href: link('workloads', ns, name) }, name),
              ns,
              w?.labels.version ?? '-',
              st?.meshed === null || st?.meshed === undefined ? '-' : `${st.meshed.meshed}/${st.meshed.total}`,
              w === undefined
                ? h('span', { class: 'none' }, 'not registered')
                : h('span', { class: w.healthy ? 'ok' : 'bad' }, w.healthy ? 'healthy' : 'unhealthy'),
              st === undefined || st.requests === 0 ? h('span', { class: 'muted' }, 'no traffic') : rps(st.rps),
              success(st?.successRate ?? null),
              ms(st?.latencyMs?.p99),
            ],
          }
        }),
        'workloads-table',
        'No workload is registered or has sent traffic.',
      ),
    )
  })
}

// === #/services/:namespace/:name ===

function routesView(d: Description): HTMLElement {
  if (d.routes.length === 0)
    return h('p', { class: 'muted', 'data-testid': 'routes' }, 'No VirtualService: requests go to every endpoint.')
  return h(
    'div',
    { 'data-testid': 'routes' },
    ...d.routes.map((vs) =>
      h(
        'div',
        { class: 'panel vs', 'data-vs': `${vs.namespace}/${vs.name}` },
        h(
          'h3',
          null,
          `VirtualService ${vs.namespace}/${vs.name} `,
          h('span', { class: 'muted' }, `hosts ${vs.hosts.join(', ')} · gateways ${vs.gateways.join(', ')}`),
        ),
        grid(
          ['#', 'When', 'Destinations', 'Also'],
          vs.http.map((r) => ({
            attrs: { 'data-route': String(r.index) },
            cells: [
              String(r.index),
              r.match === null
                ? h('span', { class: 'muted' }, 'every request')
                : h('code', null, JSON.stringify(r.match)),
              r.destinations.length === 0
                ? h('span', { class: 'muted' }, 'none (redirect or direct response)')
                : h(
                    'ul',
                    { class: 'plain' },
                    ...r.destinations.map((x) =>
                      h(
                        'li',
                        { 'data-destination': `${x.subset}`, 'data-weight': x.weight },
                        `${x.host}${x.subset === '' ? '' : ` / ${x.subset}`}${x.port === null ? '' : `:${x.port}`} `,
                        h('span', { class: 'weight' }, `${x.weight}%`),
                      ),
                    ),
                  ),
              r.notes.join(', ') || '-',
            ],
          })),
          `routes-${vs.name}`,
          'No http route.',
        ),
      ),
    ),
  )
}

function subsetsView(d: Description): HTMLElement {
  const rules = d.destinationRules
    .filter((r) => r.spec.trafficPolicy !== undefined)
    .map((r) =>
      h(
        'p',
        null,
        `DestinationRule ${r.metadata.namespace}/${r.metadata.name} traffic policy: `,
        h('code', null, JSON.stringify(r.spec.trafficPolicy)),
      ),
    )
  if (d.destinationRules.length === 0)
    return h(
      'p',
      { class: 'muted', 'data-testid': 'subsets' },
      'No DestinationRule (no subsets; default load balancing).',
    )
  return h(
    'div',
    null,
    ...rules,
    grid(
      ['Subset', 'Labels', 'Endpoints', 'Healthy', 'Rule'],
      d.subsets.map((s) => ({
        attrs: { 'data-subset': s.name },
        cells: [
          s.name,
          labelText(s.labels),
          s.endpoints.join(', ') || h('span', { class: 'bad' }, 'none'),
          h(
            'span',
            { class: s.endpoints.length > 0 && s.healthy === s.endpoints.length ? 'ok' : 'warn' },
            `${s.healthy}/${s.endpoints.length}`,
          ),
          s.rule,
        ],
      })),
      'subsets',
      'The DestinationRule has no subsets.',
    ),
  )
}

function endpointsView(d: Description): HTMLElement {
  const t = grid(
    ['Endpoint', 'Port', 'Workload', 'State', 'Labels', 'Seen by callers'],
    d.endpoints.map((e) => ({
      attrs: { 'data-endpoint': `${e.address}:${e.port}`, 'data-state': e.state },
      cells: [
        `${e.address}:${e.port}`,
        String(e.servicePort),
        e.workload === null
          ? e.source
          : h('a', { href: link('workloads', d.service.namespace, e.workload) }, e.workload),
        h('span', { class: stateClass[e.state] ?? 'none' }, e.state),
        labelText(e.labels),
        e.observations.length === 0
          ? h('span', { class: 'muted' }, 'no caller reports it')
          : (() => {
              const ejected = e.observations.filter((o) => o.ejected).map((o) => o.proxy)
              const hc = e.observations.filter((o) => o.failedActiveHealthCheck).map((o) => o.proxy)
              const proxies = new Set(e.observations.map((o) => o.proxy))
              const active = e.observations.reduce((n, o) => n + o.activeRequests, 0)
              return [
                `${proxies.size} prox${proxies.size === 1 ? 'y' : 'ies'}, ${active} active request${active === 1 ? '' : 's'}`,
                ejected.length > 0
                  ? h('div', { class: 'bad' }, `ejected by outlier detection at ${[...new Set(ejected)].join(', ')}`)
                  : null,
                hc.length > 0
                  ? h('div', { class: 'warn' }, `failing active health checks at ${[...new Set(hc)].join(', ')}`)
                  : null,
              ]
            })(),
      ],
    })),
    'endpoints',
    'No endpoint: no workload serves this service.',
  )
  const errors =
    d.live.errors.length === 0
      ? null
      : h('p', { class: 'warn' }, `Live host states unavailable from: ${d.live.errors.join('; ')}`)
  return h('div', null, t, errors)
}

function policiesView(d: Description): HTMLElement {
  return grid(
    ['Kind', 'Policy', 'Effect', 'Selects'],
    d.policies.map((p) => ({
      attrs: { 'data-policy': `${p.kind}/${p.namespace}/${p.name}` },
      cells: [p.kind, `${p.namespace}/${p.name}`, `${p.detail}${p.dryRun ? ' (dry run)' : ''}`, p.workloads.join(', ')],
    })),
    'policies',
    'No AuthorizationPolicy, PeerAuthentication or RequestAuthentication selects its workloads (mTLS PERMISSIVE, every request allowed, no JWT checked).',
  )
}

export const servicePage: Page = async (el, p, ctx) => {
  const ns = p.namespace!
  const name = p.name!
  const charts = goldenCharts('service', ns, name)
  const head = h('p', { class: 'muted' }, 'Loading…')
  const versions = h('div')
  const inbound = h('div')
  const outbound = h('div')
  const routes = h('div')
  const subsets = h('div')
  const endpoints = h('div')
  const policies = h('div')
  replace(
    el,
    h('h1', null, h('a', { href: '#/services' }, 'Services'), ' / ', `${ns}/${name}`),
    head,
    charts.el,
    h('h2', null, 'Versions ', h('span', { class: 'muted' }, '(last minute)')),
    versions,
    h(
      'div',
      { class: 'two' },
      h('div', null, h('h2', null, 'Inbound'), inbound),
      h('div', null, h('h2', null, 'Outbound'), outbound),
    ),
    h('h2', null, 'Routes'),
    routes,
    h('h2', null, 'Subsets'),
    subsets,
    h('h2', null, 'Endpoints'),
    endpoints,
    h('h2', null, 'Policies'),
    policies,
  )
  ctx.every(5000, async () => {
    const [d, rows, es] = await Promise.all([
      getJson<Description>(
        `/api/v1/describe/service/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`,
        ctx.signal,
      ),
      stats('service', ctx.signal, { name, namespace: ns }),
      edges(ns, ctx.signal),
      charts.refresh(ctx.signal),
    ])
    const s = d.service
    const healthy = s.endpoints.filter((e) => e.healthy).length
    replace(
      head,
      h('code', null, s.hostname),
      ` · ports ${s.ports.map((x) => `${x.number}/${x.protocol || '?'} (${x.name})`).join(', ') || '-'}`,
      ` · ${healthy}/${s.endpoints.length} endpoints healthy · from ${s.source}`,
    )
    const total = rows.find((r) => r.version === '')
    const perVersion = rows.filter((r) => r.version !== '')
    replace(
      versions,
      grid(
        ['Version', 'Meshed', 'RPS', 'Success', 'P50', 'P99', 'mTLS'],
        [
          ...perVersion.map((r) => ({ r, attrs: { 'data-version': r.version, 'data-rps': String(r.rps) } })),
          ...(total === undefined ? [] : [{ r: total, attrs: { 'data-version': '', 'data-rps': String(total.rps) } }]),
        ].map(({ r, attrs }) => ({
          attrs,
          cells: [
            r.version === '' ? h('strong', null, 'all') : r.version,
            r.meshed === null ? '-' : `${r.meshed.meshed}/${r.meshed.total}`,
            r.requests === 0 ? h('span', { class: 'muted' }, 'no traffic') : rps(r.rps),
            success(r.successRate),
            ms(r.latencyMs?.p50),
            ms(r.latencyMs?.p99),
            percent(r.mtlsShare),
          ],
        })),
        'versions',
        'No traffic to this service in the last minute.',
      ),
    )
    // the service's own workloads: who it calls is what they call
    const own = new Set(d.endpoints.flatMap((e) => (e.workload === null ? [] : [`${s.namespace}/${e.workload}`])))
    replace(
      inbound,
      edgeTable(
        es.filter((e) => e.destination.service === name && e.destination.namespace === ns),
        'source',
        'edges-in',
        'No caller in the last minute.',
      ),
    )
    replace(
      outbound,
      edgeTable(
        es.filter((e) => own.has(`${e.source.namespace}/${e.source.workload}`)),
        'destination',
        'edges-out',
        'It called nothing in the last minute.',
      ),
    )
    replace(routes, routesView(d))
    replace(subsets, subsetsView(d))
    replace(endpoints, endpointsView(d))
    replace(policies, policiesView(d))
  })
}

// === #/workloads/:namespace/:name ===

export const workloadPage: Page = async (el, p, ctx) => {
  const ns = p.namespace!
  const name = p.name!
  const charts = goldenCharts('deployment', ns, name)
  const now = h('div')
  const inbound = h('div')
  const outbound = h('div')
  const identity = h('div', { class: 'panel', 'data-testid': 'identity' }, h('p', { class: 'muted' }, 'Loading…'))
  const security = h('div')
  replace(
    el,
    h('h1', null, h('a', { href: '#/services' }, 'Workloads'), ' / ', `${ns}/${name}`),
    now,
    charts.el,
    h(
      'div',
      { class: 'two' },
      h('div', null, h('h2', null, 'Inbound'), inbound),
      h('div', null, h('h2', null, 'Outbound'), outbound),
    ),
    h('h2', null, 'Identity'),
    identity,
    h('h2', null, 'Security'),
    security,
  )
  const base = `/api/v1/workloads/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`
  /** A workload the registry does not know (a gateway) has no security view: null then. */
  const optional = async <T>(path: string): Promise<T | null> => {
    try {
      return await getJson<T>(path, ctx.signal)
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null
      throw err
    }
  }
  ctx.every(5000, async () => {
    const [rows, es, id, sec] = await Promise.all([
      stats('deployment', ctx.signal, { name, namespace: ns }),
      edges(ns, ctx.signal),
      optional<Identity>(`${base}/identity`),
      optional<Security>(`${base}/security`),
      charts.refresh(ctx.signal),
    ])
    const r = rows.find((x) => x.name === name)
    replace(
      now,
      grid(
        ['Meshed', 'RPS', 'Success', 'P50', 'P95', 'P99', 'mTLS'],
        r === undefined
          ? []
          : [
              {
                cells: [
                  r.meshed === null ? '-' : `${r.meshed.meshed}/${r.meshed.total}`,
                  r.requests === 0 ? h('span', { class: 'muted' }, 'no traffic') : rps(r.rps),
                  success(r.successRate),
                  ms(r.latencyMs?.p50),
                  ms(r.latencyMs?.p95),
                  ms(r.latencyMs?.p99),
                  percent(r.mtlsShare),
                ],
              },
            ],
        'workload-now',
        'No traffic to this workload in the last minute.',
      ),
    )
    replace(
      inbound,
      edgeTable(
        es.filter((e) => e.destination.workload === name && e.destination.namespace === ns),
        'source',
        'edges-in',
        'No caller in the last minute.',
      ),
    )
    replace(
      outbound,
      edgeTable(
        es.filter((e) => e.source.workload === name && e.source.namespace === ns),
        'destination',
        'edges-out',
        'It called nothing in the last minute.',
      ),
    )
    replace(identity, ...identityView(id))
    replace(security, securityView(sec))
  })
}

function identityView(id: Identity | null): Child[] {
  if (id === null)
    return [
      h('p', { class: 'muted' }, 'The control plane knows no such workload (not registered, no proxy connected).'),
    ]
  return [
    h(
      'dl',
      { class: 'facts' },
      h('dt', null, 'SPIFFE ID'),
      h('dd', null, h('code', { 'data-testid': 'spiffe-id' }, id.spiffeId ?? '-')),
      h('dt', null, 'Service account'),
      h('dd', { 'data-testid': 'service-account' }, id.serviceAccount ?? '-'),
    ),
    grid(
      ['Proxy', 'Certificate SPIFFE ID', 'Serial', 'Not after', 'Time left', 'Next renewal'],
      id.proxies.map((x): { attrs: Record<string, string>; cells: Child[] } => {
        const c = x.certificate
        if (c === null)
          return {
            attrs: { 'data-proxy': x.proxy },
            cells: [x.proxy, h('span', { class: 'warn' }, x.error ?? 'no certificate'), '', '', '', ''],
          }
        const left = Date.parse(c.notAfter) - Date.now()
        return {
          attrs: { 'data-proxy': x.proxy, 'data-not-after': c.notAfter, 'data-serial': c.serialNumber },
          cells: [
            x.proxy,
            h('code', null, c.spiffeId),
            h('code', null, c.serialNumber),
            c.notAfter,
            h('span', { class: left <= 0 ? 'bad' : left < 3_600_000 ? 'warn' : 'ok' }, fromNow(c.notAfter)),
            c.nextRenewal === null
              ? '-'
              : [
                  `${fromNow(c.nextRenewal)}`,
                  c.lastRenewalError === null
                    ? null
                    : h('div', { class: 'bad' }, `last renewal failed: ${c.lastRenewalError}`),
                ],
          ],
        }
      }),
      'certificates',
      'No proxy of this workload is connected.',
    ),
  ]
}

function securityView(sec: Security | null): HTMLElement {
  if (sec === null)
    return h(
      'p',
      { class: 'muted', 'data-testid': 'security' },
      'Not a registered workload: no security view (a gateway, or a proxy the registry does not know).',
    )
  return h(
    'div',
    { 'data-testid': 'security' },
    h('h3', null, 'Inbound mTLS (PeerAuthentication)'),
    grid(
      ['Port', 'Workload port', 'Protocol', 'Mode', 'Decided by'],
      sec.ports.map((x) => ({
        attrs: { 'data-port': String(x.servicePort), 'data-mode': x.mode },
        cells: [
          String(x.servicePort),
          String(x.workloadPort),
          x.protocol,
          h('span', { class: x.mode === 'STRICT' ? 'ok' : x.mode === 'DISABLE' ? 'bad' : 'warn' }, x.mode),
          x.policy === null ? 'default (no PeerAuthentication)' : `${x.policy} (${x.level})`,
        ],
      })),
      'mtls-ports',
      'No inbound port (the workload serves no service).',
    ),
    h('h3', null, 'Outbound TLS (DestinationRule tls)'),
    grid(
      ['Host', 'Subset', 'Port', 'Mode', 'Rule'],
      sec.outboundTls.map((t) => ({
        cells: [t.host, t.subset || '-', t.port === 0 ? '*' : String(t.port), t.mode, t.rule],
      })),
      'outbound-tls',
      'None set: automatic mTLS to destinations with sidecars, plain text to the others.',
    ),
    h('h3', null, 'Policies'),
    grid(
      ['Kind', 'Policy', 'Effect'],
      [
        ...sec.authorizationPolicies.map((a) => ({
          attrs: { 'data-policy': `AuthorizationPolicy/${a.namespace}/${a.name}` },
          cells: [
            'AuthorizationPolicy',
            `${a.namespace}/${a.name}`,
            `${a.action ?? 'ALLOW'}${a.dryRun ? ' (dry run)' : ''}`,
          ],
        })),
        ...sec.requestAuthentications.map((a) => ({
          attrs: { 'data-policy': `RequestAuthentication/${a.namespace}/${a.name}` },
          cells: ['RequestAuthentication', `${a.namespace}/${a.name}`, 'JWT checked'],
        })),
      ],
      'workload-policies',
      'No AuthorizationPolicy (every request is allowed) and no RequestAuthentication (no JWT is checked).',
    ),
  )
}
