/**
 * What `loom stat`, `loom edges`, `loom graph` and `loom top` show, computed from the gatherer's histories over a
 * window, as Prometheus would from the same samples:
 *
 *   requests   Σ increase(istio_requests_total[w])                     (counter resets handled)
 *   rps        Σ per proxy of its increase / the window (less when the gatherer started within it)
 *   success    1 − requests with response_code 5xx or 0 (no response) / requests
 *   latency    histogram_quantile(q, Σ by le increase(istio_request_duration_milliseconds_bucket[w]))
 *   mTLS       requests with connection_security_policy="mutual_tls" / requests, as the servers' sidecars
 *              report them (the clients' say "unknown")
 *   denied     requests refused by an authorization policy (response_flags RBAC, or UAEX: ext_authz) / requests;
 *              they are answered 403, so they count as successes in the success rate
 *   TCP_CONN   istio_tcp_connections_opened_total − …_closed_total at the newest sample (open now)
 *
 * Istio reports each request twice: by the client's sidecar (reporter="source") and by the server's
 * (reporter="destination"). A workload's and a namespace's numbers, and an edge's, come from the server's sidecar
 * when it reported any (what it served), else from the clients' (a workload without a sidecar). A service's come
 * from its clients' sidecars when they reported any (what the callers got: a fault a client's sidecar injected, a
 * request it could not send, count too), else from the server's (clients without sidecars).
 */
import type { Gatherer, ProxyRecord } from './gatherer.js'
import { PATH_DURATION_SUM, PATH_FAILURES, PATH_REQUESTS } from './gatherer.js'
import { histogramQuantile, type Series, type Span, type TargetHistory } from './history.js'

export const REQUESTS = 'istio_requests_total'
export const DURATION = 'istio_request_duration_milliseconds'
const TCP_OPENED = 'istio_tcp_connections_opened_total'
const TCP_CLOSED = 'istio_tcp_connections_closed_total'

export type ResourceKind = 'deployment' | 'service' | 'namespace'

/** A workload the control plane knows of (registered, or a connected proxy), for the MESHED column. */
export interface InventoryWorkload {
  name: string
  namespace: string
  /** the services it serves (short names) */
  services: string[]
  version: string
  /** instances known, and of those with a connected sidecar or gateway */
  instances: number
  meshed: number
}

export interface Latency {
  p50: number
  p95: number
  p99: number
}

export interface StatRow {
  namespace: string
  name: string
  /** a service's version row ('' for the service as a whole, and for other resources) */
  version: string
  meshed: { meshed: number; total: number } | null
  requests: number
  rps: number
  /** null with no request */
  successRate: number | null
  latencyMs: Latency | null
  /** open TCP connections (TCP services), null when none were reported */
  tcpConnections: number | null
  /** share of requests over mutual TLS, null with no request */
  mtlsShare: number | null
}

export interface EdgeRow {
  source: { workload: string; namespace: string; principal: string }
  destination: { workload: string; namespace: string; principal: string; service: string }
  requests: number
  rps: number
  successRate: number | null
  /** share of requests refused by an authorization policy, null with no request */
  deniedShare: number | null
  mtlsShare: number | null
  /** null with no request */
  latencyMs: Latency | null
  /** which proxy's reports the numbers are */
  reporter: 'source' | 'destination'
}

export interface PathRow {
  source: { workload: string; namespace: string }
  destination: { service: string; namespace: string; subset: string; cluster: string }
  method: string
  path: string
  requests: number
  rps: number
  successRate: number | null
  /** mean duration, ms */
  latencyMsAvg: number | null
}

/** What one group of series adds up to. */
export class Tally {
  requests = 0
  failures = 0
  denied = 0
  mtls = 0
  rps = 0
  seen = false
  les: Float64Array | null = null
  buckets: Float64Array | null = null
  tcpOpen = 0
  tcpSeen = false

  addRequests(h: TargetHistory, s: Series, span: Span, spanS: number): void {
    this.seen = true
    const inc = h.increase(s, span)
    if (inc === 0) return
    this.requests += inc
    this.rps += inc / spanS
    const code = s.labels.response_code ?? ''
    if (code === '0' || code.startsWith('5')) this.failures += inc
    else if (code === '403' && isDenial(s.labels.response_flags)) this.denied += inc
    if (s.labels.connection_security_policy === 'mutual_tls') this.mtls += inc
  }

  addDuration(h: TargetHistory, s: Series, span: Span): void {
    const les = s.les!
    if (this.les === null || this.les.length !== les.length || !this.les.every((v, i) => v === les[i])) {
      if (this.les !== null) return this.mergeDifferent(h, s, span)
      this.les = les
      this.buckets = new Float64Array(les.length)
    }
    for (let i = 0; i < les.length; i++) this.buckets![i]! += h.increase(s, span, i)
  }

  /** A series with other bucket bounds: its increases go into the nearest bound at or above each of its own. */
  private mergeDifferent(h: TargetHistory, s: Series, span: Span): void {
    const les = s.les!
    for (let i = 0; i < les.length; i++) {
      let j = 0
      while (j < this.les!.length - 1 && this.les![j]! < les[i]!) j++
      this.buckets![j]! += h.increase(s, span, i)
    }
  }

  addTcp(h: TargetHistory, s: Series, span: Span, sign: 1 | -1): void {
    this.tcpSeen = true
    this.tcpOpen += sign * h.valueAt(s, span)
  }

  latency(): Latency | null {
    if (this.les === null || this.buckets === null) return null
    const q = (x: number) => round(histogramQuantile(x, this.les!, this.buckets!), 3)
    const p50 = q(0.5)
    if (Number.isNaN(p50)) return null
    return { p50, p95: q(0.95), p99: q(0.99) }
  }
}

/** Response flags of a request an authorization policy refused: RBAC's, or ext_authz's (UAEX). */
function isDenial(flags: string | undefined): boolean {
  return flags !== undefined && flags !== '-' && (flags.includes('RBAC') || flags.includes('UAEX'))
}

export function round(v: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(v * f) / f
}

/**
 * Each proxy's span over the window, and the seconds its rate is over: from the window's start (or the gatherer's
 * first reading, when it started later) to the proxy's newest reading. A proxy that started within the window had
 * all of its requests in it, so every row divides by the same time. Proxies with no span are left out.
 */
export function spans(g: Gatherer, fromMs: number, toMs: number): [ProxyRecord, Span, number][] {
  const out: [ProxyRecord, Span, number][] = []
  const start = Math.max(fromMs, g.firstRoundMs)
  for (const r of g.proxies()) {
    const span = r.history.span(fromMs, toMs)
    if (span === null) continue
    const ms = span.lastMs - start
    out.push([r, span, (ms > 0 ? ms : span.lastMs - span.baseMs) / 1000])
  }
  return out
}

/** A pair of tallies, one per reporter: the preferred reporter's when it reported anything, else the other's. */
export class Reported {
  readonly destination = new Tally()
  readonly source = new Tally()
  best(prefer: 'source' | 'destination'): Tally {
    const other = prefer === 'source' ? 'destination' : 'source'
    return this[prefer].seen ? this[prefer] : this[other]
  }
}

export function tallyOf<K>(map: Map<K, Reported>, key: K): Reported {
  let t = map.get(key)
  if (t === undefined) map.set(key, (t = new Reported()))
  return t
}

export function reporterOf(s: Series): 'source' | 'destination' | null {
  const r = s.labels.reporter
  return r === 'source' || r === 'destination' ? r : null
}

export interface StatQuery {
  resource: ResourceKind
  /** a name to show alone, or every one */
  name?: string
  /** a namespace, or every one */
  namespace?: string
  windowMs: number
  nowMs: number
}

/** The group a request series belongs to for a resource kind; null to leave it out. */
function groupOf(kind: ResourceKind, l: Readonly<Record<string, string>>): [string, string, string] | null {
  if (kind === 'deployment') return [l.destination_workload_namespace ?? '', l.destination_workload ?? '', '']
  if (kind === 'namespace') return [l.destination_workload_namespace ?? '', l.destination_workload_namespace ?? '', '']
  const ns = l.destination_service_namespace ?? ''
  const svc = l.destination_service_name ?? ''
  return [ns, svc, l.destination_version ?? '']
}

export function statRows(g: Gatherer, q: StatQuery, inventory: InventoryWorkload[]): StatRow[] {
  const groups = new Map<string, Reported>()
  const key = (ns: string, name: string, version: string) => `${ns}\u0000${name}\u0000${version}`
  for (const [r, span, spanS] of spans(g, q.nowMs - q.windowMs, q.nowMs)) {
    const h = r.history
    for (const s of h.series.values()) {
      const reporter = reporterOf(s)
      if (reporter === null) continue
      const grp = groupOf(q.resource, s.labels)
      if (grp === null || grp[1] === '' || grp[1] === 'unknown') continue
      const [ns, name, version] = grp
      if (q.namespace !== undefined && ns !== q.namespace) continue
      if (q.name !== undefined && name !== q.name) continue
      const keys =
        q.resource === 'service' && version !== '' ? [key(ns, name, ''), key(ns, name, version)] : [key(ns, name, '')]
      for (const k of keys) {
        const t = tallyOf(groups, k)[reporter]
        if (s.family === REQUESTS) t.addRequests(h, s, span, spanS)
        else if (s.family === DURATION) t.addDuration(h, s, span)
        else if (s.family === TCP_OPENED) t.addTcp(h, s, span, 1)
        else if (s.family === TCP_CLOSED) t.addTcp(h, s, span, -1)
      }
    }
  }
  // the resources known without traffic show too (MESHED, and "-" for the rest)
  for (const w of inventory) {
    if (q.namespace !== undefined && w.namespace !== q.namespace) continue
    if (q.resource === 'deployment' && (q.name === undefined || q.name === w.name))
      tallyOf(groups, key(w.namespace, w.name, ''))
    if (q.resource === 'namespace' && (q.name === undefined || q.name === w.namespace))
      tallyOf(groups, key(w.namespace, w.namespace, ''))
    if (q.resource === 'service')
      for (const svc of w.services)
        if (q.name === undefined || q.name === svc) tallyOf(groups, key(w.namespace, svc, ''))
  }
  const rows: StatRow[] = []
  for (const [k, rep] of groups) {
    const [namespace, name, version] = k.split('\u0000') as [string, string, string]
    // a workload's (or namespace's) numbers are what its own sidecars served; a service's, what its clients got
    // (faults injected and requests refused by the client's sidecar included)
    const prefer = q.resource === 'service' ? 'source' : 'destination'
    const t = rep.best(prefer)
    const other = rep[prefer === 'source' ? 'destination' : 'source']
    rows.push({
      namespace,
      name,
      version,
      meshed: meshedOf(q.resource, namespace, name, version, inventory),
      requests: round(t.requests, 3),
      rps: round(t.rps, 3),
      successRate: t.requests > 0 ? round(1 - t.failures / t.requests, 4) : null,
      latencyMs: t.requests > 0 ? t.latency() : null,
      tcpConnections: t.tcpSeen ? t.tcpOpen : other.tcpSeen ? other.tcpOpen : null,
      mtlsShare: mtlsShareOf(rep),
    })
  }
  // a service's versions go right under it
  return rows.sort(
    (a, b) =>
      a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name) || a.version.localeCompare(b.version),
  )
}

/**
 * The share of requests over mutual TLS: only the server's sidecar knows how its connection was secured (a client's
 * reports say `connection_security_policy="unknown"`, as Istio's do), so its reports decide when there are any.
 */
function mtlsShareOf(rep: Reported): number | null {
  const t = rep.destination.requests > 0 ? rep.destination : rep.source
  return t.requests > 0 ? round(t.mtls / t.requests, 4) : null
}

function meshedOf(
  kind: ResourceKind,
  namespace: string,
  name: string,
  version: string,
  inventory: InventoryWorkload[],
): { meshed: number; total: number } | null {
  const of = inventory.filter(
    (w) =>
      w.namespace === namespace &&
      (kind === 'deployment'
        ? w.name === name
        : kind === 'namespace'
          ? true
          : w.services.includes(name) && (version === '' || w.version === version)),
  )
  if (of.length === 0) return null
  return { meshed: of.reduce((n, w) => n + w.meshed, 0), total: of.reduce((n, w) => n + w.instances, 0) }
}

export interface EdgeQuery {
  namespace?: string
  windowMs: number
  nowMs: number
  /**
   * keep the edges whose series the proxies still report but that had no request in the window (requests 0,
   * rates null): the graph shows them grey, where `loom edges` lists only traffic
   */
  idle?: boolean
}

/**
 * The two ends of a request series as an edge names them. A destination without a sidecar has no workload name:
 * its service names it.
 */
export function edgeEnds(l: Readonly<Record<string, string>>): {
  srcName: string
  srcNs: string
  dstName: string
  dstNs: string
  service: string
  serviceNs: string
} {
  const service = l.destination_service_name ?? 'unknown'
  const serviceNs = l.destination_service_namespace ?? 'unknown'
  const noWorkload = (l.destination_workload ?? 'unknown') === 'unknown'
  return {
    srcName: l.source_workload ?? 'unknown',
    srcNs: l.source_workload_namespace ?? 'unknown',
    dstName: noWorkload ? service : l.destination_workload!,
    dstNs:
      (l.destination_workload_namespace ?? 'unknown') === 'unknown' ? serviceNs : l.destination_workload_namespace!,
    service,
    serviceNs,
  }
}

/** Who called whom over the window, with the identities their connection carried. */
export function edgeRows(g: Gatherer, q: EdgeQuery): EdgeRow[] {
  interface Edge {
    rep: Reported
    service: string
    /** per reporter: the principals of its series with the most requests */
    principals: Partial<Record<'source' | 'destination', { ids: [string, string]; requests: number }>>
  }
  const edges = new Map<string, Edge>()
  for (const [r, span, spanS] of spans(g, q.nowMs - q.windowMs, q.nowMs)) {
    const h = r.history
    for (const s of h.series.values()) {
      if (s.family !== REQUESTS && s.family !== DURATION) continue
      const reporter = reporterOf(s)
      if (reporter === null) continue
      const l = s.labels
      const { srcName, srcNs, dstName, dstNs, service } = edgeEnds(l)
      if (q.namespace !== undefined && srcNs !== q.namespace && dstNs !== q.namespace) continue
      const k = [srcName, srcNs, dstName, dstNs].join('\u0000')
      let e = edges.get(k)
      if (e === undefined) edges.set(k, (e = { rep: new Reported(), service, principals: {} }))
      const t = e.rep[reporter]
      if (s.family === DURATION) {
        t.addDuration(h, s, span)
        continue
      }
      const before = t.requests
      t.addRequests(h, s, span, spanS)
      const inc = t.requests - before
      const known = e.principals[reporter]
      if (known === undefined || inc > known.requests)
        e.principals[reporter] = {
          ids: [l.source_principal ?? 'unknown', l.destination_principal ?? 'unknown'],
          requests: inc,
        }
    }
  }
  const rows: EdgeRow[] = []
  for (const [k, e] of edges) {
    const [sw, sns, dw, dns] = k.split('\u0000') as [string, string, string, string]
    const reporter = e.rep.destination.seen ? 'destination' : 'source'
    const t = e.rep[reporter]
    if (t.requests === 0 && q.idle !== true) continue
    const [sp, dp] = e.principals[reporter]?.ids ?? ['unknown', 'unknown']
    rows.push({
      source: { workload: sw, namespace: sns, principal: sp },
      destination: { workload: dw, namespace: dns, principal: dp, service: e.service },
      ...shares(t),
      reporter,
    })
  }
  return rows.sort(
    (a, b) =>
      a.source.namespace.localeCompare(b.source.namespace) ||
      a.source.workload.localeCompare(b.source.workload) ||
      a.destination.namespace.localeCompare(b.destination.namespace) ||
      a.destination.workload.localeCompare(b.destination.workload),
  )
}

/** An edge's numbers from its tally: rates null without a request. */
export function shares(
  t: Tally,
): Pick<EdgeRow, 'requests' | 'rps' | 'successRate' | 'deniedShare' | 'mtlsShare' | 'latencyMs'> {
  const any = t.requests > 0
  return {
    requests: round(t.requests, 3),
    rps: round(t.rps, 3),
    successRate: any ? round(1 - t.failures / t.requests, 4) : null,
    deniedShare: any ? round(t.denied / t.requests, 4) : null,
    mtlsShare: any ? round(t.mtls / t.requests, 4) : null,
    latencyMs: any ? t.latency() : null,
  }
}

/** `outbound|9080|v1|reviews.default.svc.cluster.local` → its service, namespace and subset. */
export function clusterTarget(cluster: string): { service: string; namespace: string; subset: string } {
  const parts = cluster.split('|')
  if (parts.length === 4) {
    const host = parts[3]!
    const labels = host.split('.')
    const local = host.endsWith('.svc.cluster.local') || labels.length === 5
    return {
      service: local ? labels[0]! : host,
      namespace: local ? (labels[1] ?? '') : '',
      subset: parts[2] ?? '',
    }
  }
  return { service: cluster === '' ? '(none)' : cluster, namespace: '', subset: '' }
}

export interface TopQuery {
  namespace?: string
  /** only paths sent to this service (short name) */
  service?: string
  windowMs: number
  nowMs: number
  limit: number
}

/** The busiest paths over the window, from each proxy's busiest-paths table. */
export function topRows(g: Gatherer, q: TopQuery): PathRow[] {
  const rows = new Map<string, PathRow & { msSum: number; failures: number }>()
  for (const [r, span, spanS] of spans(g, q.nowMs - q.windowMs, q.nowMs)) {
    const h = r.history
    const src = { workload: r.target.workload, namespace: r.target.namespace }
    for (const s of h.series.values()) {
      const f = s.family
      if (f !== PATH_REQUESTS && f !== PATH_FAILURES && f !== PATH_DURATION_SUM) continue
      const l = s.labels
      const dst = clusterTarget(l.cluster ?? '')
      if (q.namespace !== undefined && src.namespace !== q.namespace && dst.namespace !== q.namespace) continue
      if (q.service !== undefined && dst.service !== q.service) continue
      const inc = h.increase(s, span)
      const k = [src.namespace, src.workload, l.cluster, l.method, l.path].join('\u0000')
      let row = rows.get(k)
      if (row === undefined) {
        row = {
          source: src,
          destination: { ...dst, cluster: l.cluster ?? '' },
          method: l.method ?? '',
          path: l.path ?? '',
          requests: 0,
          rps: 0,
          successRate: null,
          latencyMsAvg: null,
          msSum: 0,
          failures: 0,
        }
        rows.set(k, row)
      }
      if (f === PATH_REQUESTS) {
        row.requests += inc
        row.rps += spanS > 0 ? inc / spanS : 0
      } else if (f === PATH_FAILURES) row.failures += inc
      else row.msSum += inc
    }
  }
  return [...rows.values()]
    .filter((r) => r.requests > 0)
    .sort((a, b) => b.requests - a.requests || a.path.localeCompare(b.path))
    .slice(0, q.limit)
    .map(({ msSum, failures, ...r }) => ({
      ...r,
      requests: round(r.requests, 3),
      rps: round(r.rps, 3),
      successRate: round(1 - failures / r.requests, 4),
      latencyMsAvg: round(msSum / r.requests, 3),
    }))
}
