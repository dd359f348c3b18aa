/**
 * The service graph (`/api/v1/graph`: `loom graph` and the dashboard's front page), from the gatherer's histories
 * over a window and the workloads the control plane knows:
 *
 *   nodes          every workload known (registered, or a connected proxy) and every end of an edge: a gateway,
 *                  the "unknown" source (a client without a sidecar), each with the service it serves
 *   edges          workload → workload, as `loom edges` has them, plus latency and the identities
 *   services       each service with its workloads (its versions), traffic or not
 *   serviceEdges   the same traffic per service: from the caller's service (or the caller itself when it serves
 *                  none: a gateway, an unknown client) to the service called; its latency is the quantile of the
 *                  merged histograms, not a mix of the workloads' quantiles
 *
 * An edge whose series the proxies still report but that had no request in the window stays, with no request and
 * null rates, so that a graph keeps its shape (and shows the edge idle) between bursts of traffic.
 */
import type { Gatherer } from './gatherer.js'
import {
  DURATION,
  type EdgeRow,
  edgeEnds,
  edgeRows,
  type InventoryWorkload,
  REQUESTS,
  Reported,
  reporterOf,
  shares,
  spans,
} from './views.js'

export type NodeKind = 'workload' | 'gateway' | 'unknown'

export interface GraphNode {
  /** `<namespace>/<workload>` */
  id: string
  workload: string
  namespace: string
  kind: NodeKind
  /** the service it serves, `<namespace>/<name>` (the first by name when it serves several); null when none */
  service: string | null
  /** its `version` label, '' when it has none */
  version: string
}

export interface GraphService {
  /** `<namespace>/<name>` */
  id: string
  namespace: string
  name: string
  /** the ids of the nodes that serve it */
  workloads: string[]
}

export interface GraphEdge
  extends Pick<EdgeRow, 'requests' | 'rps' | 'successRate' | 'deniedShare' | 'mtlsShare' | 'latencyMs'> {
  /** a node's id, or a service's when `fromKind` is 'service' */
  from: string
  fromKind: 'service' | 'workload'
  to: string
  toKind: 'service' | 'workload'
  /** the destination service's short name */
  service: string
  /** the SPIFFE ids the requests carried, each side */
  principals: { source: string[]; destination: string[] }
}

export interface Graph {
  nodes: GraphNode[]
  edges: GraphEdge[]
  services: GraphService[]
  serviceEdges: GraphEdge[]
}

export interface GraphQuery {
  /** the traffic from or to this namespace, and the workloads in it; every namespace when absent */
  namespace?: string
  windowMs: number
  nowMs: number
}

const byId = (a: { id: string }, b: { id: string }) => a.id.localeCompare(b.id)

export function graphOf(g: Gatherer, q: GraphQuery, inventory: InventoryWorkload[]): Graph {
  const gateways = new Set<string>()
  for (const r of g.proxies())
    if (r.target.kind === 'gateway') gateways.add(`${r.target.namespace}/${r.target.workload}`)
  const nodes = new Map<string, GraphNode>()
  const node = (workload: string, namespace: string, service: string | null, version = ''): GraphNode => {
    const id = `${namespace}/${workload}`
    let n = nodes.get(id)
    if (n === undefined) {
      const kind: NodeKind = gateways.has(id) ? 'gateway' : workload === 'unknown' ? 'unknown' : 'workload'
      n = { id, workload, namespace, kind, service: kind === 'workload' ? service : null, version }
      nodes.set(id, n)
    }
    return n
  }
  for (const w of inventory) {
    if (q.namespace !== undefined && w.namespace !== q.namespace) continue
    const svc = [...w.services].sort()[0]
    node(w.name, w.namespace, svc === undefined ? null : `${w.namespace}/${svc}`, w.version)
  }

  const edges: GraphEdge[] = edgeRows(g, { ...q, idle: true }).map((e) => {
    const from = node(e.source.workload, e.source.namespace, null)
    const svc = e.destination.service
    const to = node(
      e.destination.workload,
      e.destination.namespace,
      svc === 'unknown' ? null : `${e.destination.namespace}/${svc}`,
    )
    const { source, destination, reporter, ...numbers } = e
    const known = (p: string) => (p === 'unknown' ? [] : [p])
    return {
      from: from.id,
      fromKind: 'workload',
      to: to.id,
      toKind: 'workload',
      service: svc,
      ...numbers,
      principals: { source: known(source.principal), destination: known(destination.principal) },
    }
  })

  const serviceEdges = serviceEdgesOf(g, q, nodes)
  for (const e of serviceEdges)
    for (const [id, kind] of [
      [e.from, e.fromKind],
      [e.to, e.toKind],
    ] as const)
      if (kind === 'workload' && !nodes.has(id)) node(id.slice(id.indexOf('/') + 1), id.slice(0, id.indexOf('/')), null)

  const services = new Map<string, GraphService>()
  const service = (id: string) => {
    let s = services.get(id)
    if (s === undefined) {
      const slash = id.indexOf('/')
      services.set(id, (s = { id, namespace: id.slice(0, slash), name: id.slice(slash + 1), workloads: [] }))
    }
    return s
  }
  for (const n of [...nodes.values()].sort(byId)) if (n.service !== null) service(n.service).workloads.push(n.id)
  for (const e of serviceEdges) {
    if (e.fromKind === 'service') service(e.from)
    if (e.toKind === 'service') service(e.to)
  }
  return {
    nodes: [...nodes.values()].sort(byId),
    edges,
    services: [...services.values()].sort(byId),
    serviceEdges,
  }
}

/** The window's traffic grouped by the caller's service (or the caller) and the service called. */
function serviceEdgesOf(g: Gatherer, q: GraphQuery, nodes: ReadonlyMap<string, GraphNode>): GraphEdge[] {
  interface Group {
    rep: Reported
    service: string
    /** per reporter: the principal pairs of its series with requests in the window, and of all of them */
    principals: Record<'source' | 'destination', { active: Pair; all: Pair }>
  }
  type Pair = [Set<string>, Set<string>]
  const pair = (): Pair => [new Set<string>(), new Set<string>()]
  const sets = () => ({ active: pair(), all: pair() })
  const groups = new Map<string, Group>()
  for (const [r, span, spanS] of spans(g, q.nowMs - q.windowMs, q.nowMs)) {
    const h = r.history
    for (const s of h.series.values()) {
      if (s.family !== REQUESTS && s.family !== DURATION) continue
      const reporter = reporterOf(s)
      if (reporter === null) continue
      const l = s.labels
      const { srcName, srcNs, dstName, dstNs, service, serviceNs } = edgeEnds(l)
      if (q.namespace !== undefined && srcNs !== q.namespace && dstNs !== q.namespace) continue
      const srcId = `${srcNs}/${srcName}`
      const srcService = nodes.get(srcId)?.service ?? null
      const from: [string, string] = srcService !== null ? ['service', srcService] : ['workload', srcId]
      const to: [string, string] =
        service !== 'unknown' ? ['service', `${serviceNs}/${service}`] : ['workload', `${dstNs}/${dstName}`]
      const k = [...from, ...to].join('\u0000')
      let grp = groups.get(k)
      if (grp === undefined)
        groups.set(k, (grp = { rep: new Reported(), service, principals: { source: sets(), destination: sets() } }))
      const t = grp.rep[reporter]
      if (s.family === DURATION) {
        t.addDuration(h, s, span)
        continue
      }
      const before = t.requests
      t.addRequests(h, s, span, spanS)
      const p = grp.principals[reporter]
      const ids = [l.source_principal ?? 'unknown', l.destination_principal ?? 'unknown']
      for (const [i, id] of ids.entries()) {
        if (id === 'unknown') continue
        p.all[i]!.add(id)
        if (t.requests > before) p.active[i]!.add(id)
      }
    }
  }
  const out: GraphEdge[] = []
  for (const [k, grp] of groups) {
    const [fromKind, from, toKind, to] = k.split('\u0000') as [
      'service' | 'workload',
      string,
      'service' | 'workload',
      string,
    ]
    const reporter = grp.rep.destination.seen ? 'destination' : 'source'
    const t = grp.rep[reporter]
    const p = grp.principals[reporter]
    const pick = (i: 0 | 1) => [...(p.active[i].size > 0 ? p.active[i] : p.all[i])].sort()
    out.push({
      from,
      fromKind,
      to,
      toKind,
      service: grp.service,
      ...shares(t),
      principals: { source: pick(0), destination: pick(1) },
    })
  }
  return out.sort((a, b) => a.from.localeCompare(b.from) || a.to.localeCompare(b.to))
}
