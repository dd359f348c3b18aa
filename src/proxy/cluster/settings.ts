/**
 * Checks a schema-valid Cluster for what the schema cannot see and derives the settings the proxy uses, with
 * Envoy's defaults. Problems go to `issues`, with paths under `path` (the cluster's own path, e.g. `[2]`).
 */
import { isIP } from 'node:net'
import type { Cluster, ClusterLoadAssignment } from '../../config/envoy.js'
import { TypeUrls } from '../../config/type-urls.js'
import { parseDurationMs } from '../../core/duration.js'
import type { ConfigIssue } from '../../core/errors.js'
import { log } from '../../core/log.js'
import type { HostSpec } from './host.js'
import { hostKey } from './host.js'
import { type LbPolicy, lbPolicyOf } from './lb/index.js'
import { maxMaglevTableSize } from './lb/maglev.js'
import { defaultMaximumRingSize, defaultMinimumRingSize } from './lb/ring-hash.js'
import { TransportSockets, transportMatchMetadata } from './transport-socket.js'
import type { SecretStore } from '../secrets/store.js'

export type DnsLookupFamily = NonNullable<Cluster['dns_lookup_family']>

export interface Http2Options {
  maxConcurrentStreams?: number
  initialStreamWindowSize?: number
  initialConnectionWindowSize?: number
  connectionKeepalive?: { interval: string; timeout: string }
}

export interface ClusterSettings {
  type: 'STATIC' | 'STRICT_DNS' | 'EDS' | 'ORIGINAL_DST'
  lbPolicy: LbPolicy
  connectTimeoutMs: number
  http2: boolean
  http2Options: Http2Options
  /** 0 disables the idle timeout. */
  idleTimeoutMs: number
  /** 0 = unlimited. */
  maxRequestsPerConnection: number
  perConnectionBufferLimitBytes: number
  /** transport_socket and transport_socket_matches, compiled; null when one did not compile (see issues) */
  sockets: TransportSockets | null
  dnsRefreshRateMs: number
  dnsLookupFamily: DnsLookupFamily
  respectDnsTtl: boolean
}

export const defaults = {
  connectTimeoutMs: 5000,
  idleTimeoutMs: 3_600_000,
  perConnectionBufferLimitBytes: 1024 * 1024,
  dnsRefreshRateMs: 5000,
} as const

const protocolOptionsKey = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions'

export function clusterSettings(
  config: Cluster,
  path: string,
  issues: ConfigIssue[],
  secrets?: SecretStore,
): ClusterSettings {
  const type = config.type ?? 'STATIC'
  const lbPolicy = lbPolicyOf(config)
  const name = config.name

  const connectTimeoutMs = duration(config.connect_timeout, defaults.connectTimeoutMs)
  if (connectTimeoutMs <= 0) issues.push({ path: `${path}.connect_timeout`, message: 'must be greater than 0' })

  // Protocol options: on the cluster (deprecated in Envoy) or in typed_extension_protocol_options, not both.
  const ext = config.typed_extension_protocol_options?.[protocolOptionsKey]
  const extPath = `${path}.typed_extension_protocol_options["${protocolOptionsKey}"]`
  const h2 = config.http2_protocol_options ?? ext?.explicit_http_config?.http2_protocol_options
  if (config.http2_protocol_options !== undefined && ext?.explicit_http_config !== undefined) {
    issues.push({
      path: `${path}.http2_protocol_options`,
      message: `set the protocol either here or in ${extPath}.explicit_http_config, not both`,
    })
  }
  const common = ext?.common_http_protocol_options
  if (config.max_requests_per_connection !== undefined && common?.max_requests_per_connection !== undefined) {
    issues.push({
      path: `${path}.max_requests_per_connection`,
      message: `set either this or ${extPath}.common_http_protocol_options.max_requests_per_connection, not both`,
    })
  }
  const http2 = h2 !== undefined
  const http2Options: Http2Options = {}
  if (h2?.max_concurrent_streams !== undefined) http2Options.maxConcurrentStreams = h2.max_concurrent_streams
  if (h2?.initial_stream_window_size !== undefined) http2Options.initialStreamWindowSize = h2.initial_stream_window_size
  if (h2?.initial_connection_window_size !== undefined) {
    http2Options.initialConnectionWindowSize = h2.initial_connection_window_size
  }
  if (h2?.connection_keepalive !== undefined) http2Options.connectionKeepalive = h2.connection_keepalive

  // Circuit breakers: one threshold per priority.
  const seenPriority = new Set<string>()
  config.circuit_breakers?.thresholds?.forEach((t, i) => {
    const priority = t.priority ?? 'DEFAULT'
    if (seenPriority.has(priority)) {
      issues.push({
        path: `${path}.circuit_breakers.thresholds[${i}].priority`,
        message: `${priority} is listed twice`,
      })
    }
    seenPriority.add(priority)
  })
  const od = config.outlier_detection
  if (od?.interval !== undefined && (parseDurationMs(od.interval) ?? 0) <= 0) {
    issues.push({ path: `${path}.outlier_detection.interval`, message: 'must be greater than 0' })
  }

  // LB settings.
  const lbp = config.load_balancing_policy
  if (lbp !== undefined) {
    if (config.lb_policy !== undefined) {
      issues.push({
        path: `${path}.load_balancing_policy`,
        message: 'set either lb_policy or load_balancing_policy, not both',
      })
    }
    lbp.policies.forEach((p, i) => {
      const c = p.typed_extension_config.typed_config
      if (c['@type'] !== TypeUrls.peakEwma) return
      const at = `${path}.load_balancing_policy.policies[${i}].typed_extension_config.typed_config`
      for (const field of ['decay_time', 'default_rtt'] as const) {
        if (c[field] !== undefined && (parseDurationMs(c[field]) ?? 0) <= 0) {
          issues.push({ path: `${at}.${field}`, message: 'must be greater than 0' })
        }
      }
    })
  }
  if (config.round_robin_lb_config !== undefined && (lbPolicy !== 'ROUND_ROBIN' || lbp !== undefined)) {
    warnUnused(name, 'round_robin_lb_config', lbPolicy)
  }
  const ring = config.ring_hash_lb_config
  if (ring !== undefined) {
    const min = ring.minimum_ring_size ?? defaultMinimumRingSize
    const max = ring.maximum_ring_size ?? defaultMaximumRingSize
    if (min > max) {
      issues.push({
        path: `${path}.ring_hash_lb_config.minimum_ring_size`,
        message: `minimum_ring_size (${min}) is greater than maximum_ring_size (${max})`,
      })
    }
    if (lbPolicy !== 'RING_HASH') warnUnused(name, 'ring_hash_lb_config', lbPolicy)
  }
  const tableSize = config.maglev_lb_config?.table_size
  if (tableSize !== undefined) {
    if (tableSize > maxMaglevTableSize) {
      issues.push({ path: `${path}.maglev_lb_config.table_size`, message: `must be at most ${maxMaglevTableSize}` })
    } else if (!isPrime(tableSize)) {
      issues.push({
        path: `${path}.maglev_lb_config.table_size`,
        message: `must be a prime number (${tableSize} is not)`,
      })
    }
  }
  if (config.maglev_lb_config !== undefined && lbPolicy !== 'MAGLEV') {
    warnUnused(name, 'maglev_lb_config', lbPolicy)
  }
  if (config.least_request_lb_config !== undefined && (lbPolicy !== 'LEAST_REQUEST' || lbp !== undefined)) {
    warnUnused(name, 'least_request_lb_config', lbPolicy)
  }

  // Endpoints: EDS clusters get theirs from the ADS stream (a load_assignment, if any, is the initial set).
  if (type === 'ORIGINAL_DST') {
    if (config.load_assignment !== undefined)
      issues.push({ path: `${path}.load_assignment`, message: 'an ORIGINAL_DST cluster takes no endpoints' })
  } else if (type === 'EDS') {
    if (config.load_assignment !== undefined) {
      checkEndpoints(config.load_assignment, 'STATIC', `${path}.load_assignment`, issues)
    }
  } else if (config.load_assignment === undefined) {
    issues.push({
      path: `${path}.load_assignment`,
      message: `required: a ${type} cluster takes its endpoints from load_assignment`,
    })
  } else {
    checkEndpoints(config.load_assignment, type, `${path}.load_assignment`, issues)
  }

  // DNS.
  const dnsRefreshRateMs = duration(config.dns_refresh_rate, defaults.dnsRefreshRateMs)
  if (config.dns_refresh_rate !== undefined && dnsRefreshRateMs < 1) {
    issues.push({ path: `${path}.dns_refresh_rate`, message: 'must be at least 1ms' })
  }
  if (type === 'STATIC') {
    for (const field of ['dns_refresh_rate', 'dns_lookup_family', 'respect_dns_ttl'] as const) {
      if (config[field] !== undefined) {
        log('warn', 'cluster', `${field} only applies to STRICT_DNS clusters; ignored`, { cluster: name })
      }
    }
  }

  const sockets = TransportSockets.compile(config, http2, path, issues, secrets)

  return {
    type,
    lbPolicy,
    connectTimeoutMs,
    http2,
    http2Options,
    idleTimeoutMs: duration(common?.idle_timeout, defaults.idleTimeoutMs),
    maxRequestsPerConnection: common?.max_requests_per_connection ?? config.max_requests_per_connection ?? 0,
    perConnectionBufferLimitBytes: config.per_connection_buffer_limit_bytes ?? defaults.perConnectionBufferLimitBytes,
    sockets,
    dnsRefreshRateMs,
    dnsLookupFamily: config.dns_lookup_family ?? 'AUTO',
    respectDnsTtl: config.respect_dns_ttl ?? false,
  }
}

function checkEndpoints(
  cla: ClusterLoadAssignment,
  type: 'STATIC' | 'STRICT_DNS' | 'EDS',
  path: string,
  issues: ConfigIssue[],
) {
  const seen = new Map<string, string>()
  cla.endpoints?.forEach((locality, i) => {
    locality.lb_endpoints.forEach((lbe, j) => {
      const epath = `${path}.endpoints[${i}].lb_endpoints[${j}]`
      const sa = lbe.endpoint.address.socket_address
      const apath = `${epath}.endpoint.address.socket_address`
      if (type === 'STATIC' && isIP(sa.address) === 0) {
        issues.push({
          path: `${apath}.address`,
          message: `a STATIC cluster needs an IP address, not "${sa.address}" (use type: STRICT_DNS for names)`,
        })
      } else if (type === 'STRICT_DNS' && isIP(sa.address) === 0 && !isDnsName(sa.address)) {
        issues.push({ path: `${apath}.address`, message: `"${sa.address}" is neither an IP address nor a DNS name` })
      }
      if (sa.port_value === 0) issues.push({ path: `${apath}.port_value`, message: 'an upstream port cannot be 0' })
      if (type === 'STATIC') {
        const key = hostKey(sa.address, sa.port_value)
        const first = seen.get(key)
        if (first !== undefined) {
          issues.push({ path: `${epath}.endpoint.address`, message: `duplicate endpoint ${key} (also at ${first})` })
        } else seen.set(key, epath.slice(path.length + 1))
      }
    })
  })
}

/** The hosts of a STATIC cluster's (or an EDS) load assignment. Endpoints whose address is not an IP are skipped. */
export function hostSpecsFromAssignment(cla: ClusterLoadAssignment): HostSpec[] {
  const out: HostSpec[] = []
  for (const locality of cla.endpoints ?? []) {
    for (const lbe of locality.lb_endpoints) {
      const sa = lbe.endpoint.address.socket_address
      if (isIP(sa.address) === 0) continue
      const spec: HostSpec = {
        address: sa.address,
        port: sa.port_value,
        weight: lbe.load_balancing_weight ?? 1,
        priority: locality.priority ?? 0,
        healthStatus: lbe.health_status ?? 'UNKNOWN',
      }
      if (lbe.endpoint.hostname) spec.hostname = lbe.endpoint.hostname
      if (locality.locality !== undefined) spec.locality = locality.locality
      if (locality.load_balancing_weight !== undefined) spec.localityWeight = locality.load_balancing_weight
      const match = transportMatchMetadata(lbe.metadata)
      if (match !== undefined) spec.transportMatch = match
      const localityMatch = transportMatchMetadata(locality.metadata)
      if (localityMatch !== undefined) spec.localityTransportMatch = localityMatch
      out.push(spec)
    }
  }
  return out
}

function duration(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback
  return parseDurationMs(text) ?? fallback
}

function warnUnused(cluster: string, field: string, policy: string): void {
  log('warn', 'cluster', `${field} is set but lb_policy is ${policy}; ignored`, { cluster })
}

export function isPrime(n: number): boolean {
  if (n < 2 || !Number.isInteger(n)) return false
  if (n % 2 === 0) return n === 2
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false
  return true
}

const dnsLabel = /^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$/

export function isDnsName(name: string): boolean {
  const n = name.endsWith('.') ? name.slice(0, -1) : name
  if (n.length === 0 || n.length > 253) return false
  return n.split('.').every((label) => dnsLabel.test(label))
}
