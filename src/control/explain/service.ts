/**
 * `POST /api/v1/explain`: finds the source proxy among the connected ones, takes the snapshot the xDS server holds
 * for it (what it was sent, with the versions it ACKed), the other proxies' snapshots (the destination's inbound
 * side), reads the live host states from the source proxy's admin `/clusters` (node metadata ADMIN_ADDRESS), and
 * runs the engine (engine.ts).
 */
import { TYPE_URL } from '../../xds/snapshot.js'
import { inlineVirtualHosts } from '../translate/vhds.js'
import type { ControlPlane } from '../control.js'
import {
  type ExplainRequest,
  type Explanation,
  ExplainError,
  explain,
  type LiveClusters,
  type ProxyView,
} from './engine.js'

/** The API's request body. */
export interface ExplainBody {
  /** the source: a workload (`productpage-v1`, `deploy/productpage-v1`, `productpage-v1.default`) or a gateway */
  from: string
  namespace?: string
  method?: string
  url: string
  headers?: [string, string][]
}

export interface ExplainResponse extends Explanation {
  /** per xDS type: the version the source was sent and whether it ACKed it (the explanation reads that version) */
  config: { type: string; version: string; acked: boolean }[]
}

const SHORT: Record<string, string> = {
  [TYPE_URL.listener]: 'LDS',
  [TYPE_URL.route]: 'RDS',
  [TYPE_URL.cluster]: 'CDS',
  [TYPE_URL.endpoint]: 'EDS',
  [TYPE_URL.virtualHost]: 'VHDS',
}

/** `<pod>.<namespace>` of a node id (`sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local`). */
function podOf(nodeId: string): string {
  return nodeId.split('~')[2] ?? nodeId
}

function parseBody(raw: unknown): ExplainBody {
  const b = raw as Partial<ExplainBody> | null
  if (b === null || typeof b !== 'object') throw new ExplainError('the body must be a JSON object')
  if (typeof b.from !== 'string' || b.from === '')
    throw new ExplainError('"from" (the source workload or gateway) is required')
  if (typeof b.url !== 'string' || b.url === '') throw new ExplainError('"url" (the request URL) is required')
  const headers = b.headers ?? []
  if (
    !Array.isArray(headers) ||
    !headers.every((h) => Array.isArray(h) && h.length === 2 && h.every((x) => typeof x === 'string'))
  )
    throw new ExplainError('"headers" is a list of [name, value] pairs')
  return { ...b, headers } as ExplainBody
}

async function liveClusters(adminAddress: string | null): Promise<LiveClusters> {
  if (adminAddress === null) return { error: 'the proxy sent no ADMIN_ADDRESS' }
  try {
    const res = await fetch(`http://${adminAddress}/clusters?format=json`, { signal: AbortSignal.timeout(3000) })
    if (!res.ok) return { error: `admin ${adminAddress} answered ${res.status}` }
    return (await res.json()) as LiveClusters
  } catch (err) {
    return { error: `admin ${adminAddress}: ${(err as Error).message}` }
  }
}

export async function explainRequest(cp: ControlPlane, raw: unknown): Promise<ExplainResponse> {
  const body = parseBody(raw)
  const status = cp.xds.status()
  const known = new Map(cp.knownNodes().map((n) => [n.id, n]))
  const trustDomain = cp.ca?.trustDomain ?? null
  const views: ProxyView[] = []
  for (const s of status) {
    const node = known.get(s.nodeId)
    const snap = cp.xds.cache.getSnapshot(s.nodeId)
    if (node === undefined || snap === undefined) continue
    const items = (t: string) => [...(snap.resources.get(t as never)?.items.values() ?? [])]
    views.push({
      nodeId: s.nodeId,
      kind: node.kind,
      name: podOf(s.nodeId),
      namespace: node.namespace,
      ip: node.ip,
      principal: trustDomain === null ? null : `spiffe://${trustDomain}/ns/${node.namespace}/sa/${node.serviceAccount}`,
      listeners: items(TYPE_URL.listener),
      routes: inlineVirtualHosts(items(TYPE_URL.route), items(TYPE_URL.virtualHost)),
      clusters: items(TYPE_URL.cluster),
      endpoints: items(TYPE_URL.endpoint),
    })
  }
  const source = findSource(views, body)
  const st = status.find((s) => s.nodeId === source.nodeId)!
  const req: ExplainRequest = { method: body.method ?? 'GET', url: body.url, headers: body.headers ?? [] }
  const live = await liveClusters(st.adminAddress)
  const out = explain(
    source,
    req,
    views.filter((v) => v !== source),
    live,
  )
  const config = st.perType
    .filter((t) => SHORT[t.typeUrl] !== undefined)
    .map((t) => ({
      type: SHORT[t.typeUrl]!,
      version: t.sentVersion ?? '',
      acked: t.sentVersion !== undefined && t.ackedVersion === t.sentVersion,
    }))
  return { ...out, config }
}

/** The proxy `from` names: `<workload>`, `deploy/<workload>`, `<workload>.<namespace>`, or a unique prefix. */
function findSource(views: ProxyView[], body: ExplainBody): ProxyView {
  let name = body.from.replace(/^(deploy|deployment|pod|gateway)\//, '')
  let ns = body.namespace
  const dot = name.indexOf('.')
  if (dot > 0) {
    ns ??= name.slice(dot + 1)
    name = name.slice(0, dot)
  }
  const pods = views.filter((v) => ns === undefined || v.namespace === ns || v.name.endsWith(`.${ns}`))
  const exact = pods.filter((v) => v.name.slice(0, v.name.lastIndexOf('.')) === name)
  if (exact.length === 1) return exact[0]!
  const prefixed = pods.filter((v) => v.name.startsWith(name))
  if (exact.length === 0 && prefixed.length === 1) return prefixed[0]!
  const list = (exact.length > 1 ? exact : prefixed.length > 1 ? prefixed : views).map((v) => v.name).sort()
  throw new ExplainError(
    `${exact.length > 1 || prefixed.length > 1 ? `"${body.from}" names several proxies` : `no connected proxy is "${body.from}"${ns === undefined ? '' : ` in namespace ${ns}`}`}; proxies: ${list.join(', ') || '(none)'}`,
  )
}
