/** `GET /api/v1/proxy-status` as the Proxies and Live pages read it (see src/control/proxy-status.ts). */
import { getJson } from '../api.js'

export type SyncState = 'SYNCED' | 'STALE' | 'NACKED' | 'NOT_SENT'

export interface TypeStatus {
  typeUrl: string
  sentVersion?: string
  ackedVersion?: string
  state: SyncState
  nackError?: string
}

export interface ProxyStatus {
  nodeId: string
  connectedAt: string
  streams: number
  protocol: 'sotw' | 'delta'
  userAgent: string | null
  perType: TypeStatus[]
  adminAddress: string | null
  workload: string
  namespace: string | null
  kind: 'sidecar' | 'gateway' | null
  serviceAccount: string | null
  uptimeSeconds: number
  synced: boolean
}

export function proxyStatus(signal?: AbortSignal): Promise<ProxyStatus[]> {
  return getJson<ProxyStatus[]>('/api/v1/proxy-status', signal)
}

/** The xDS types in push order, by their short names (what `loom proxy-status` calls them). */
export const XDS_TYPES: [string, string, string][] = [
  ['type.googleapis.com/envoy.config.cluster.v3.Cluster', 'CDS', 'Clusters'],
  ['type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment', 'EDS', 'Endpoints'],
  ['type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret', 'SDS', 'Secrets'],
  ['type.googleapis.com/envoy.config.listener.v3.Listener', 'LDS', 'Listeners'],
  ['type.googleapis.com/envoy.config.route.v3.RouteConfiguration', 'RDS', 'Routes'],
  ['type.googleapis.com/envoy.config.route.v3.VirtualHost', 'VHDS', 'Virtual hosts'],
]

/** `CDS` for Envoy's cluster type URL; the last part of the URL for a type without a short name. */
export function shortType(typeUrl: string): string {
  return XDS_TYPES.find(([u]) => u === typeUrl)?.[1] ?? typeUrl.slice(typeUrl.lastIndexOf('.') + 1)
}

/** A state's color class: synced ok, on its way warn, refused bad, nothing sent grey. */
export function stateClass(s: SyncState): 'ok' | 'warn' | 'bad' | 'none' {
  return s === 'SYNCED' ? 'ok' : s === 'STALE' ? 'warn' : s === 'NACKED' ? 'bad' : 'none'
}

/** `3d 4h`, `2h 5m`, `4m 10s`, `12s`. */
export function uptime(seconds: number): string {
  const d = Math.floor(seconds / 86400)
  const hr = Math.floor((seconds % 86400) / 3600)
  const m = Math.floor((seconds % 3600) / 60)
  const s = seconds % 60
  return d > 0 ? `${d}d ${hr}h` : hr > 0 ? `${hr}h ${m}m` : m > 0 ? `${m}m ${s}s` : `${s}s`
}
