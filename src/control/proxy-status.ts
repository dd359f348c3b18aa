/**
 * `GET /api/v1/proxy-status`: the xDS server's view of every connected proxy (sync state per type, versions, stream
 * protocol, user agent) joined with what the control plane knows of its node (workload, namespace, kind, service
 * account), so `loom proxy-status` and the dashboard's Proxies page read one answer.
 */
import type { CacheEntry } from '../xds/cache.js'
import type { NodeStatus } from '../xds/server.js'
import type { ProxyNode, Snapshot } from '../xds/snapshot.js'
import { workloadOfNode } from './control.js'
import type { TranslateNode } from './translate/translate.js'

export interface ProxyStatusRow extends NodeStatus {
  /** the workload the proxy runs for (node metadata WORKLOAD_NAME, else the pod part of the node id) */
  workload: string
  /** null for a node the control plane has no record of (its stream opened, its snapshot not built yet) */
  namespace: string | null
  kind: ProxyNode['kind'] | null
  serviceAccount: string | null
  /** seconds since the proxy's newest stream opened */
  uptimeSeconds: number
  /** every type the proxy subscribes to is SYNCED (and it subscribes to one at least) */
  synced: boolean
  /** the control-plane replica the proxy is connected to (its --replica-id); null for a lone control plane */
  replica: string | null
}

export function proxyStatusRows(
  status: readonly NodeStatus[],
  nodes: readonly TranslateNode[],
  nowMs: number,
  replica: string | null = null,
): ProxyStatusRow[] {
  const byId = new Map(nodes.map((n) => [n.id, n]))
  return status.map((s) => {
    const node = byId.get(s.nodeId)
    return {
      ...s,
      workload: node === undefined ? s.nodeId.split('~')[2]?.split('.')[0] || s.nodeId : workloadOfNode(node),
      namespace: node?.namespace ?? null,
      kind: node?.kind ?? null,
      serviceAccount: node?.serviceAccount ?? null,
      uptimeSeconds: Math.max(0, Math.floor((nowMs - Date.parse(s.connectedAt)) / 1000)),
      synced: s.perType.length > 0 && s.perType.every((t) => t.state === 'SYNCED'),
      replica,
    }
  })
}

/** A proxy's config per type URL: the version and the resources (proto-JSON), as `/debug/snapshot` answers. */
export type ConfigDump = Record<string, { version: string; resources: Record<string, unknown>[] }>

/**
 * `/debug/snapshot?node=<id>`: what the xDS server holds for the node, with the versions proxy-status reports (the
 * cache's content hashes); a node the cache has nothing for yet gets its translation now (`build`), or null when the
 * control plane does not know it.
 */
export function configDump(entry: CacheEntry | undefined, build: () => Snapshot | null): ConfigDump | null {
  const out: ConfigDump = {}
  if (entry !== undefined) {
    for (const [type, { version, items }] of entry.types)
      out[type] = { version, resources: [...items.values()].map((r) => r.resource) }
    return out
  }
  const snap = build()
  if (snap === null) return null
  for (const [type, { version, items }] of snap.resources) out[type] = { version, resources: [...items.values()] }
  return out
}
