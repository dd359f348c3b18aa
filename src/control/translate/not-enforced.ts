/**
 * What Loom accepts and stores but does not enforce yet: one row per kind or field. `loom analyze`, and `loom apply`
 * for what it writes, warn about every resource that sets one of them, with the field path. When the translator
 * (or the proxy) starts enforcing a field, delete its row; nothing else lists them.
 *
 * Paths are field paths from the resource root: `[]` stands for every element of a list, and `<trafficPolicy>` for
 * every traffic policy of a DestinationRule (the top-level one, per subset, and their `portLevelSettings`). A
 * validated resource always has a `spec` (an empty one when the document has none), so a row for `spec` whose `when` always
 * passes covers a whole kind.
 */
import type { ClientTLSSettings, Resource } from '../../api/index.js'
import { unsupportedClientTls } from './mtls.js'

export interface NotEnforced {
  kind: string
  path: string
  message: string
  /** warn only for values that pass (default: any value except an empty list) */
  when?: (value: unknown) => boolean
}

/** retryOn conditions Istio accepts that Loom's proxy does not evaluate (the translator leaves them out) */
const UNEVALUATED_RETRY_ON = new Set([
  'reset-before-request',
  'envoy-ratelimited',
  'retriable-headers',
  'http3-post-connect-failure',
])
/** warmup set where Istio ignores it: RANDOM, PASSTHROUGH, consistentHash */
const warmupIgnored = (lb: unknown) => {
  const l = lb as { simple?: string; consistentHash?: unknown; warmup?: unknown; warmupDurationSecs?: unknown }
  if (l.warmup === undefined && l.warmupDurationSecs === undefined) return false
  return l.consistentHash !== undefined || l.simple === 'RANDOM' || l.simple === 'PASSTHROUGH'
}
const jwtClaims = (headers: unknown) =>
  Object.keys((headers ?? {}) as object).some((name) => name.startsWith('@request.auth.claims'))

/**
 * Istio applies a policy attached by targetRef(s) (to a Gateway, a Service, a ServiceEntry) only on waypoint proxies
 * and Gateway API gateways, never on sidecars; Loom has neither.
 */
const TARGET_REF_MESSAGE =
  'this policy is not applied: targetRef attaches it to a Gateway or Service, which Istio enforces only on waypoint ' +
  'proxies and Gateway API gateways (Loom has neither); use a selector to apply it to workloads'

export const NOT_ENFORCED: readonly NotEnforced[] = [
  // whole kinds: the security work has not started
  {
    kind: 'AuthorizationPolicy',
    path: 'spec.targetRef',
    when: (t) => t !== undefined,
    message: TARGET_REF_MESSAGE,
  },
  {
    kind: 'AuthorizationPolicy',
    path: 'spec.targetRefs',
    message: TARGET_REF_MESSAGE,
  },
  {
    kind: 'RequestAuthentication',
    path: 'spec.targetRef',
    message: 'policies attached by targetRef are not applied yet; use a selector',
  },
  {
    kind: 'RequestAuthentication',
    path: 'spec.targetRefs',
    message: 'policies attached by targetRefs are not applied yet; use a selector',
  },
  {
    kind: 'RequestAuthentication',
    path: 'spec.jwtRules[]',
    when: (r) => {
      const x = r as { jwks?: unknown; jwksUri?: unknown; jwks_uri?: unknown }
      return x.jwks === undefined && x.jwksUri === undefined && x.jwks_uri === undefined
    },
    message:
      "OpenID discovery of the issuer's keys is not supported: set jwks or jwksUri, else this issuer's tokens are refused",
  },
  {
    kind: 'RequestAuthentication',
    path: 'spec.jwtRules[].spaceDelimitedClaims',
    message: 'claims are not split on spaces yet: AuthorizationPolicy matches them as whole strings',
  },

  // VirtualService
  { kind: 'VirtualService', path: 'spec.tcp', message: 'TCP routes are not supported yet; ignored' },
  { kind: 'VirtualService', path: 'spec.tls', message: 'TLS routes are not supported yet; ignored' },
  {
    kind: 'VirtualService',
    path: 'spec.http[].retries.retryRemoteLocalities',
    when: (v) => v === true,
    message: 'retryRemoteLocalities is not supported yet; retries do not prefer other localities',
  },
  {
    kind: 'VirtualService',
    path: 'spec.http[].retries.retryOn',
    when: (v) => typeof v === 'string' && v.split(',').some((t) => UNEVALUATED_RETRY_ON.has(t.trim())),
    message: `retry conditions ${[...UNEVALUATED_RETRY_ON].join(', ')} are not supported yet; left out of the retry policy`,
  },
  {
    kind: 'VirtualService',
    path: 'spec.http[].delegate',
    message: 'delegation is not supported yet; the rule is dropped',
  },
  {
    kind: 'VirtualService',
    path: 'spec.http[].match[].scheme',
    message: "Loom's proxy cannot match :scheme yet",
  },
  {
    kind: 'VirtualService',
    path: 'spec.http[].match[].headers',
    when: jwtClaims,
    message: 'JWT claim matching is not supported yet; this match is dropped',
  },
  {
    kind: 'VirtualService',
    path: 'spec.http[].match[].withoutHeaders',
    when: jwtClaims,
    message: 'JWT claim matching is not supported yet; this match is dropped',
  },
  {
    kind: 'VirtualService',
    path: 'spec.http[].match[].statPrefix',
    message: 'per-match stat prefixes are not supported yet; ignored',
  },

  // DestinationRule traffic policies (loadBalancer.simple/consistentHash/warmup, connectionPool and outlierDetection
  // are applied, but for the fields below)
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.connectionPool.tcp.tcpKeepalive',
    message: "TCP keepalive is not supported by Loom's proxy yet; ignored",
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.connectionPool.tcp.maxConnectionDuration',
    message: 'maxConnectionDuration is not supported yet; ignored',
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.connectionPool.http.useClientProtocol',
    when: (use) => use === true,
    message: 'useClientProtocol is not supported; the port protocol decides',
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.connectionPool.http.http2KeepAlive',
    message: 'http2KeepAlive is not translated yet; the proxy pings idle HTTP/2 connections every 60s',
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.outlierDetection.minHealthPercent',
    when: (percent) => typeof percent === 'number' && percent > 0,
    message:
      "Loom's proxy has no panic threshold (as minHealthPercent 0): when every host is ejected, requests get 503",
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.outlierDetection.consecutiveErrors',
    message: 'consecutiveErrors is deprecated and ignored (as Istio does); use consecutiveGatewayErrors',
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.tls',
    when: (tls) => unsupportedClientTls(tls as ClientTLSSettings) !== null,
    message:
      'credentialName applies to gateways only, caCrl and insecureSkipVerify are not supported: from sidecars this TLS origination is plain text',
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.loadBalancer.simple',
    when: (simple) => simple === 'PASSTHROUGH',
    message: 'PASSTHROUGH is not supported; the mesh default applies',
  },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.loadBalancer',
    when: warmupIgnored,
    message: 'warmup applies to ROUND_ROBIN and LEAST_REQUEST (as in Istio); with this load balancer it is ignored',
  },
  { kind: 'DestinationRule', path: '<trafficPolicy>.tunnel', message: 'tunnel is not supported yet; ignored' },
  {
    kind: 'DestinationRule',
    path: '<trafficPolicy>.proxyProtocol',
    message: 'proxyProtocol is not supported yet; ignored',
  },

  // Gateway (TLS servers Loom cannot terminate are reported by the analyzer, which knows the combinations)
  {
    kind: 'Gateway',
    path: 'spec.servers[].bind',
    message: 'bind is not supported yet; the server listens on every address',
  },

  // ServiceEntry, WorkloadEntry
  { kind: 'ServiceEntry', path: 'spec.addresses', message: 'addresses are not supported yet; ignored' },
  { kind: 'ServiceEntry', path: 'spec.endpoints[].network', message: 'networks are not supported yet; ignored' },
  { kind: 'WorkloadEntry', path: 'spec.network', message: 'networks are not supported yet; ignored' },

  // Sidecar
  { kind: 'Sidecar', path: 'spec.ingress', message: 'ingress listeners are not supported yet; ignored' },
  {
    kind: 'Sidecar',
    path: 'spec.egress[].port',
    when: (port) =>
      ['HTTP', 'HTTP2', 'GRPC', 'GRPC-WEB'].includes(
        String((port as { protocol?: unknown }).protocol ?? '').toUpperCase(),
      ),
    message: 'HTTP egress ports get no listener of their own: the hosts apply to the HTTP proxy listener',
  },
  {
    kind: 'Sidecar',
    path: 'spec.egress[].bind',
    when: (bind) => typeof bind === 'string' && bind.startsWith('unix://'),
    message: 'unix domain socket listeners are not supported yet; ignored',
  },
  {
    kind: 'Sidecar',
    path: 'spec.egress[].captureMode',
    when: (mode) => mode === 'IPTABLES',
    message: 'Loom captures no traffic: the listener binds its address, as with captureMode NONE',
  },
  {
    kind: 'Sidecar',
    path: 'spec.outboundTrafficPolicy.mode',
    when: (mode) => mode === 'ALLOW_ANY',
    message: 'ALLOW_ANY is not supported yet: unknown hosts get 404',
  },
  {
    kind: 'Sidecar',
    path: 'spec.inboundConnectionPool',
    message: 'connection pools are not supported yet; ignored',
  },
  { kind: 'Telemetry', path: 'spec.targetRef', when: (t) => t !== undefined, message: TARGET_REF_MESSAGE },
  { kind: 'Telemetry', path: 'spec.targetRefs', message: TARGET_REF_MESSAGE },
  {
    kind: 'Telemetry',
    path: 'spec.accessLogging[].filter',
    message: 'access log filters are not supported yet: every request is logged',
  },
  {
    kind: 'Telemetry',
    path: 'spec.metrics',
    message: 'metrics customization (providers, overrides, reportingInterval) is not applied yet; ignored',
  },
  {
    kind: 'Telemetry',
    path: 'spec.tracing[].enableIstioTags',
    when: (v) => v === false,
    message: "Istio's span tags (canonical service, namespace, mesh id) are always added",
  },
]

const TRAFFIC_POLICIES = [
  'spec.trafficPolicy',
  'spec.trafficPolicy.portLevelSettings[]',
  'spec.subsets[].trafficPolicy',
  'spec.subsets[].trafficPolicy.portLevelSettings[]',
]

type Step = { key: string; each: boolean }

function steps(path: string): Step[] {
  return path.split('.').map((s) => (s.endsWith('[]') ? { key: s.slice(0, -2), each: true } : { key: s, each: false }))
}

/** Every [concrete path, value] that `pattern` reaches in `root` (values that are not set are left out). */
function reach(root: unknown, pattern: Step[]): [string, unknown][] {
  let at: [string, unknown][] = [['', root]]
  for (const { key, each } of pattern) {
    const next: [string, unknown][] = []
    for (const [p, value] of at) {
      if (value === null || typeof value !== 'object' || Array.isArray(value)) continue
      const child = (value as Record<string, unknown>)[key]
      if (child === undefined) continue
      const cp = p === '' ? key : `${p}.${key}`
      if (!each) next.push([cp, child])
      else if (Array.isArray(child)) for (const [i, c] of child.entries()) next.push([`${cp}[${i}]`, c])
    }
    at = next
  }
  return at
}

const notEmpty = (x: unknown) => !(Array.isArray(x) && x.length === 0)

const compiled = NOT_ENFORCED.map((row) => ({
  row,
  patterns: row.path.startsWith('<trafficPolicy>')
    ? TRAFFIC_POLICIES.map((tp) => steps(tp + row.path.slice('<trafficPolicy>'.length)))
    : [steps(row.path)],
}))

/** The fields of `r` that are accepted but not enforced yet, in table order. */
export function notEnforced(r: Resource): { path: string; message: string }[] {
  const out: { path: string; message: string }[] = []
  for (const { row, patterns } of compiled) {
    if (row.kind !== r.kind) continue
    for (const pattern of patterns) {
      for (const [path, value] of reach(r, pattern)) {
        if ((row.when ?? notEmpty)(value)) out.push({ path, message: row.message })
      }
    }
  }
  return out
}
