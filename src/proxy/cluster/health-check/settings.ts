/**
 * A cluster's `health_checks[0]` checked for what the schema cannot see and turned into the settings the checker
 * runs on, with Envoy's defaults. Problems go to `issues` with paths under the cluster's own path.
 */
import type { HealthCheck, HeaderValueOption } from '../../../config/envoy.js'
import { parseDurationMs } from '../../../core/duration.js'
import type { ConfigIssue } from '../../../core/errors.js'
import { compileStringMatcher, type StringTest } from '../../route/matchers.js'

/** `[start, end)` status ranges. */
export type StatusRanges = readonly (readonly [number, number])[]

export interface HttpCheckSettings {
  kind: 'http'
  /** HTTP1 or HTTP2 (codec_client_type). */
  http2: boolean
  method: string
  path: string
  /** The Host (or :authority) header: `host`, else the cluster's name. */
  host: string
  /** Extra request headers, lower-cased names, applied in order. */
  headersToAdd: readonly HeaderValueOption[]
  headersToRemove: ReadonlySet<string>
  expected: StatusRanges
  retriable: StatusRanges
  /**
   * service_name_matcher: what the answer's `x-envoy-upstream-healthchecked-cluster` header must match, or null
   * (no verification).
   */
  serviceName: StringTest | null
}

export interface TcpCheckSettings {
  kind: 'tcp'
  /** Bytes written on each check; empty with an empty `receive` is a connect-only check. */
  send: Buffer
  /** Blocks that must all appear in the response, in order, not necessarily adjacent. */
  receive: readonly Buffer[]
}

export interface GrpcCheckSettings {
  kind: 'grpc'
  serviceName: string
  /** The :authority header: `authority`, else the cluster's name. */
  authority: string
}

export type ProbeSettings = HttpCheckSettings | TcpCheckSettings | GrpcCheckSettings

export interface HealthCheckSettings {
  timeoutMs: number
  intervalMs: number
  initialJitterMs: number
  intervalJitterMs: number
  intervalJitterPercent: number
  unhealthyThreshold: number
  healthyThreshold: number
  reuseConnection: boolean
  noTrafficIntervalMs: number
  noTrafficHealthyIntervalMs: number
  unhealthyIntervalMs: number
  unhealthyEdgeIntervalMs: number
  healthyEdgeIntervalMs: number
  logFailures: boolean
  logSuccesses: boolean
  probe: ProbeSettings
}

/** Envoy's default no_traffic_interval. */
export const DEFAULT_NO_TRAFFIC_INTERVAL_MS = 60_000

const DEFAULT_EXPECTED: StatusRanges = [[200, 201]]

/**
 * Settings for `hc` (the cluster's `health_checks[0]`, at `path`). `http2` is whether the cluster's own upstream
 * protocol is HTTP/2 (a gRPC check needs it, as in Envoy). Returns null when there are issues.
 */
export function healthCheckSettings(
  hc: HealthCheck,
  clusterName: string,
  http2: boolean,
  path: string,
  issues: ConfigIssue[],
): HealthCheckSettings | null {
  const before = issues.length
  const positive = (field: keyof HealthCheck, fallback: number): number => {
    const text = hc[field] as string | undefined
    if (text === undefined) return fallback
    const ms = parseDurationMs(text) ?? 0
    if (ms <= 0) issues.push({ path: `${path}.${field}`, message: 'must be greater than 0' })
    return ms
  }
  const nonNegative = (field: keyof HealthCheck): number => {
    const text = hc[field] as string | undefined
    return text === undefined ? 0 : (parseDurationMs(text) ?? 0)
  }
  const timeoutMs = positive('timeout', 0)
  const intervalMs = positive('interval', 0)
  const noTrafficIntervalMs = positive('no_traffic_interval', DEFAULT_NO_TRAFFIC_INTERVAL_MS)
  const noTrafficHealthyIntervalMs = positive('no_traffic_healthy_interval', noTrafficIntervalMs)
  const unhealthyIntervalMs = positive('unhealthy_interval', intervalMs)
  const unhealthyEdgeIntervalMs = positive('unhealthy_edge_interval', unhealthyIntervalMs)
  const healthyEdgeIntervalMs = positive('healthy_edge_interval', intervalMs)
  for (const field of ['unhealthy_threshold', 'healthy_threshold'] as const) {
    if (hc[field] === 0) issues.push({ path: `${path}.${field}`, message: 'must be at least 1' })
  }

  let probe: ProbeSettings
  if (hc.http_health_check !== undefined) {
    const h = hc.http_health_check
    const hpath = `${path}.http_health_check`
    const expected = ranges(h.expected_statuses, `${hpath}.expected_statuses`, issues) ?? DEFAULT_EXPECTED
    const retriable = ranges(h.retriable_statuses, `${hpath}.retriable_statuses`, issues) ?? []
    h.request_headers_to_add?.forEach((o, i) => {
      const name = o.header.key.toLowerCase()
      if (name.startsWith(':') || name === 'host') {
        issues.push({
          path: `${hpath}.request_headers_to_add[${i}].header.key`,
          message: `"${o.header.key}" cannot be set here (use host for the Host header)`,
        })
      }
    })
    probe = {
      kind: 'http',
      http2: h.codec_client_type === 'HTTP2',
      method: h.method === undefined || h.method === 'METHOD_UNSPECIFIED' ? 'GET' : h.method,
      path: h.path,
      host: h.host || clusterName,
      headersToAdd: h.request_headers_to_add ?? [],
      headersToRemove: new Set((h.request_headers_to_remove ?? []).map((n) => n.toLowerCase())),
      expected,
      retriable,
      serviceName:
        h.service_name_matcher === undefined
          ? null
          : compileStringMatcher(h.service_name_matcher, `${hpath}.service_name_matcher`, issues),
    }
  } else if (hc.tcp_health_check !== undefined) {
    const t = hc.tcp_health_check
    const tpath = `${path}.tcp_health_check`
    probe = {
      kind: 'tcp',
      send: t.send === undefined ? Buffer.alloc(0) : payload(t.send, `${tpath}.send`, issues),
      receive: (t.receive ?? []).map((p, i) => payload(p, `${tpath}.receive[${i}]`, issues)),
    }
  } else {
    const g = hc.grpc_health_check!
    if (!http2) {
      issues.push({
        path: `${path}.grpc_health_check`,
        message: 'a gRPC health check needs the cluster to speak HTTP/2 (set http2_protocol_options)',
      })
    }
    probe = { kind: 'grpc', serviceName: g.service_name ?? '', authority: g.authority || clusterName }
  }

  if (issues.length > before) return null
  return {
    timeoutMs,
    intervalMs,
    initialJitterMs: nonNegative('initial_jitter'),
    intervalJitterMs: nonNegative('interval_jitter'),
    intervalJitterPercent: hc.interval_jitter_percent ?? 0,
    unhealthyThreshold: hc.unhealthy_threshold,
    healthyThreshold: hc.healthy_threshold,
    reuseConnection: hc.reuse_connection ?? true,
    noTrafficIntervalMs,
    noTrafficHealthyIntervalMs,
    unhealthyIntervalMs,
    unhealthyEdgeIntervalMs,
    healthyEdgeIntervalMs,
    logFailures: hc.always_log_health_check_failures ?? false,
    logSuccesses: hc.always_log_health_check_success ?? false,
    probe,
  }
}

/** Status ranges within [100, 600), start below end; undefined when the field is unset. */
function ranges(
  list: readonly { start: number; end: number }[] | undefined,
  path: string,
  issues: ConfigIssue[],
): StatusRanges | undefined {
  if (list === undefined) return undefined
  const out: [number, number][] = []
  list.forEach((r, i) => {
    if (r.start < 100 || r.end > 600 || r.start >= r.end) {
      issues.push({
        path: `${path}[${i}]`,
        message: `must be a range [start, end) within [100, 600) with start below end (got [${r.start}, ${r.end}))`,
      })
    } else out.push([r.start, r.end])
  })
  return out
}

function payload(p: { text?: string; binary?: string }, path: string, issues: ConfigIssue[]): Buffer {
  if (p.text !== undefined) return Buffer.from(p.text, 'hex')
  const b = p.binary ?? ''
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b) || b.length === 0) {
    issues.push({ path: `${path}.binary`, message: 'must be non-empty base64' })
    return Buffer.alloc(0)
  }
  return Buffer.from(b, 'base64')
}

/** Whether `status` falls in one of `ranges`. */
export function inRanges(status: number, ranges: StatusRanges): boolean {
  for (const [start, end] of ranges) if (status >= start && status < end) return true
  return false
}
