/**
 * networking.istio.io resources, with Istio's own field names (camelCase, as in Istio's YAML): VirtualService,
 * DestinationRule, Gateway, ServiceEntry, WorkloadEntry, Sidecar. The same spec serves v1, v1beta1 and v1alpha3.
 *
 * Each kind has a schema (shape, types, enums, ranges, one-ofs, regexes that must compile) and a semantic check
 * (rules that span fields, as Istio's admission webhook applies them). Unknown fields are errors.
 */
import { oneOf, v } from '../config/schema.js'
import type { ConfigIssue } from '../core/errors.js'
import { compileRewrite } from '../proxy/route/regex.js'
import {
  bool,
  enumOf,
  checkExportTo,
  destinationHostError,
  duration,
  durationOrZero,
  field,
  fqdnError,
  gatewayNameError,
  HTTP_METHODS,
  headerNameError,
  headerValueError,
  Issues,
  intRange,
  ipOrCidrError,
  isDns1123Label,
  isHttpProtocol,
  isIpAddress,
  isIstioLabel,
  isTlsProtocol,
  Labels,
  MatchLabelsSelector,
  nonEmpty,
  nonNegInt32,
  opt,
  parseDurationNs,
  Percent,
  percentInt,
  port,
  protocolError,
  regex,
  rule,
  StringMatch,
  str,
  uint32,
  WorkloadSelector,
  wildcardDomainError,
} from './common.js'

/** What a semantic check knows besides the spec. */
export interface SpecContext {
  name: string
  namespace: string
  /** metadata.annotations, for the kinds that read one */
  annotations?: Readonly<Record<string, unknown>>
}

/**
 * A DestinationRule annotation that picks one of Loom's load balancers beyond Istio's for every cluster the rule
 * makes (unless its traffic policy uses consistentHash). Values: `peak-ewma`.
 */
export const LOOM_LOAD_BALANCER_ANNOTATION = 'loom.dev/load-balancer'
export const LOOM_LOAD_BALANCERS = ['peak-ewma'] as const

const strings = v.array(str)
const subsetName = rule((s) =>
  s === ''
    ? 'subset name cannot be empty'
    : isIstioLabel(s)
      ? null
      : `subset name is invalid: ${s} (must be a DNS label)`,
)
const portName = rule((s) => (isIstioLabel(s) ? null : `invalid port name: ${s} (must be a DNS label)`))
const headerName = rule(headerNameError)
const headerValue = rule(headerValueError)

// === shared networking messages ===

export const PortSelector = v.strictObject({ number: port })

export const Destination = v.strictObject({
  host: rule(destinationHostError),
  subset: opt(subsetName),
  port: opt(PortSelector),
})
export type Destination = v.InferOutput<typeof Destination>

/** A port as Gateways, ServiceEntries and Sidecars declare it. */
const portFields = {
  number: port,
  protocol: rule(protocolError),
  name: portName,
  targetPort: opt(port),
}

export const HeaderOperations = v.strictObject({
  set: opt(v.record(headerName, headerValue)),
  add: opt(v.record(headerName, headerValue)),
  remove: opt(v.array(headerName)),
})
export const Headers = v.strictObject({ request: opt(HeaderOperations), response: opt(HeaderOperations) })
export type Headers = v.InferOutput<typeof Headers>

// === VirtualService ===

const stringMatchMap = v.record(headerName, StringMatch)

export const HTTPMatchRequest = v.strictObject({
  name: opt(str),
  uri: opt(StringMatch),
  scheme: opt(StringMatch),
  method: opt(StringMatch),
  authority: opt(StringMatch),
  headers: opt(stringMatchMap),
  port: opt(port),
  sourceLabels: opt(Labels),
  gateways: opt(v.array(rule(gatewayNameError))),
  queryParams: opt(v.record(str, StringMatch)),
  ignoreUriCase: opt(bool),
  withoutHeaders: opt(stringMatchMap),
  sourceNamespace: opt(rule((s) => (isDns1123Label(s) ? null : `sourceNamespace match ${s} is invalid`))),
  statPrefix: opt(str),
})
export type HTTPMatchRequest = v.InferOutput<typeof HTTPMatchRequest>

export const HTTPRouteDestination = v.strictObject({
  destination: Destination,
  weight: opt(intRange(0, 100, 'weight')),
  headers: opt(Headers),
})

export const RouteDestination = v.strictObject({
  destination: Destination,
  weight: opt(intRange(0, 100, 'weight')),
})

export const HTTPRedirect = v.pipe(
  v.strictObject({
    uri: opt(str),
    authority: opt(str),
    port: opt(port),
    derivePort: opt(enumOf(['FROM_PROTOCOL_DEFAULT', 'FROM_REQUEST_PORT'])),
    scheme: opt(str),
    redirectCode: opt(intRange(300, 399, 'redirectCode')),
  }),
  oneOf(['port', 'derivePort'], false),
)

const base64 = rule((s) =>
  /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(s) ? null : 'must be base64-encoded bytes',
)

export const HTTPDirectResponse = v.strictObject({
  status: intRange(200, 599, 'status'),
  body: opt(v.pipe(v.strictObject({ string: opt(str), bytes: opt(base64) }), oneOf(['string', 'bytes'], false))),
})

export const Delegate = v.strictObject({
  name: opt(str),
  namespace: opt(rule((s) => (s === '' || isDns1123Label(s) ? null : `invalid namespace ${JSON.stringify(s)}`))),
})

export const RegexRewrite = v.strictObject({ match: opt(regex), rewrite: opt(str) })

export const HTTPRewrite = v.strictObject({
  uri: opt(str),
  authority: opt(str),
  uriRegexRewrite: opt(RegexRewrite),
})

export const HTTPRetry = v.strictObject({
  attempts: opt(nonNegInt32),
  perTryTimeout: opt(duration),
  retryOn: opt(str),
  retryRemoteLocalities: opt(bool),
  retryIgnorePreviousHosts: opt(bool),
  backoff: opt(duration),
})

/** gRPC status codes by name, in code order (index = code). */
export const GRPC_CODES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
]

export const HTTPFaultInjection = v.strictObject({
  delay: opt(
    v.pipe(
      v.strictObject({
        fixedDelay: opt(duration),
        exponentialDelay: opt(duration),
        percentage: opt(Percent),
        percent: opt(percentInt),
      }),
      oneOf(['fixedDelay', 'exponentialDelay']),
    ),
  ),
  abort: opt(
    v.pipe(
      v.strictObject({
        httpStatus: opt(intRange(200, 599, 'httpStatus')),
        grpcStatus: opt(
          rule((s) =>
            GRPC_CODES.includes(s) || /^(?:[0-9]|1[0-6])$/.test(s)
              ? null
              : `${JSON.stringify(s)} is not a gRPC status code (UNAVAILABLE, DEADLINE_EXCEEDED, ... or 0..16)`,
          ),
        ),
        http2Error: opt(str),
        percentage: opt(Percent),
      }),
      oneOf(['httpStatus', 'grpcStatus', 'http2Error']),
    ),
  ),
})

export const CorsPolicy = v.strictObject({
  allowOrigin: opt(strings),
  allowOrigins: opt(v.array(StringMatch)),
  allowMethods: opt(
    v.array(rule((m) => (HTTP_METHODS.has(m) ? null : `${JSON.stringify(m)} is not a supported HTTP method`))),
  ),
  allowHeaders: opt(v.array(rule((h) => (h === '*' ? null : headerNameError(h))))),
  exposeHeaders: opt(v.array(rule((h) => (h === '*' ? null : headerNameError(h))))),
  maxAge: opt(duration),
  allowCredentials: opt(bool),
  unmatchedPreflights: opt(enumOf(['UNSPECIFIED', 'FORWARD', 'IGNORE'])),
})

export const HTTPMirrorPolicy = v.strictObject({ destination: Destination, percentage: opt(Percent) })

export const HTTPRoute = v.strictObject({
  name: opt(str),
  match: opt(v.array(HTTPMatchRequest)),
  route: opt(v.array(HTTPRouteDestination)),
  redirect: opt(HTTPRedirect),
  directResponse: opt(HTTPDirectResponse),
  delegate: opt(Delegate),
  rewrite: opt(HTTPRewrite),
  timeout: opt(duration),
  retries: opt(HTTPRetry),
  fault: opt(HTTPFaultInjection),
  mirror: opt(Destination),
  mirrorPercent: opt(uint32),
  mirror_percent: opt(uint32),
  mirrorPercentage: opt(Percent),
  mirrors: opt(v.array(HTTPMirrorPolicy)),
  corsPolicy: opt(CorsPolicy),
  headers: opt(Headers),
})
export type HTTPRoute = v.InferOutput<typeof HTTPRoute>

const subnets = v.array(rule(ipOrCidrError))

export const TLSMatchAttributes = v.strictObject({
  sniHosts: v.array(str),
  destinationSubnets: opt(subnets),
  port: opt(port),
  sourceLabels: opt(Labels),
  gateways: opt(v.array(rule(gatewayNameError))),
  sourceNamespace: opt(rule((s) => (isDns1123Label(s) ? null : `sourceNamespace match ${s} is invalid`))),
})

export const L4MatchAttributes = v.strictObject({
  destinationSubnets: opt(subnets),
  port: opt(port),
  sourceSubnet: opt(rule(ipOrCidrError)),
  sourceLabels: opt(Labels),
  gateways: opt(v.array(rule(gatewayNameError))),
  sourceNamespace: opt(rule((s) => (isDns1123Label(s) ? null : `sourceNamespace match ${s} is invalid`))),
})

export const TLSRoute = v.strictObject({ match: v.array(TLSMatchAttributes), route: opt(v.array(RouteDestination)) })
export type TLSRoute = v.InferOutput<typeof TLSRoute>
export const TCPRoute = v.strictObject({
  match: opt(v.array(L4MatchAttributes)),
  route: opt(v.array(RouteDestination)),
})
export type TCPRoute = v.InferOutput<typeof TCPRoute>

export const VirtualServiceSpec = v.strictObject({
  hosts: opt(strings),
  gateways: opt(v.array(rule((g) => (g === 'mesh' ? null : gatewayNameError(g))))),
  http: opt(v.array(HTTPRoute)),
  tls: opt(v.array(TLSRoute)),
  tcp: opt(v.array(TCPRoute)),
  exportTo: opt(strings),
})
export type VirtualServiceSpec = v.InferOutput<typeof VirtualServiceSpec>

const RETRY_ON = new Set([
  '5xx',
  'gateway-error',
  'reset',
  'reset-before-request',
  'connect-failure',
  'envoy-ratelimited',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'retriable-headers',
  'http3-post-connect-failure',
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
])

function checkHeaderOps(issues: Issues, path: string, h: Headers | undefined): void {
  const req = h?.request
  const res = h?.response
  const internal = (n: string) => n.startsWith(':') || n.toLowerCase() === 'host'
  const authority = (n: string) => [':authority', 'host', 'authority'].includes(n.toLowerCase())
  for (const op of ['set', 'add'] as const) {
    for (const n of Object.keys(req?.[op] ?? {})) {
      if (internal(n) && !authority(n)) issues.add(field(field(field(path, 'request'), op), n), `cannot modify ${n}`)
    }
    for (const n of Object.keys(res?.[op] ?? {})) {
      if (internal(n)) issues.add(field(field(field(path, 'response'), op), n), `cannot modify ${n}`)
    }
  }
  req?.remove?.forEach((n, i) => {
    if (internal(n)) issues.add(field(`${path}.request.remove`, i), `cannot remove ${n}`)
  })
  res?.remove?.forEach((n, i) => {
    if (internal(n)) issues.add(field(`${path}.response.remove`, i), `cannot remove ${n}`)
  })
}

function checkWeights(issues: Issues, path: string, routes: readonly { weight?: number | undefined }[]): void {
  if (routes.length <= 1) return
  const total = routes.reduce((sum, r) => sum + (r.weight ?? 0), 0)
  if (total !== 100) issues.add(path, `total destination weight ${total} != 100`)
}

function hasRegex(m: { regex?: string | undefined } | undefined): boolean {
  return m?.regex !== undefined
}

type RouteType = 'independent' | 'root' | 'delegate'

function checkHttpRoute(issues: Issues, p: string, r: HTTPRoute, type: RouteType): void {
  const has = (x: unknown) => x !== undefined
  if (type === 'root') {
    if (has(r.redirect)) issues.add(`${p}.redirect`, 'a root HTTP route (with delegate) must not specify redirect')
    if (has(r.route)) issues.add(`${p}.route`, 'a root HTTP route (with delegate) must not specify route')
    if (has(r.directResponse)) {
      issues.add(`${p}.directResponse`, 'a root HTTP route (with delegate) must not specify directResponse')
    }
  } else {
    if (type === 'delegate' && has(r.delegate))
      issues.add(`${p}.delegate`, 'delegate HTTP route cannot contain delegate')
    const actions = (['route', 'redirect', 'directResponse'] as const).filter((k) =>
      k === 'route' ? (r.route ?? []).length > 0 : has(r[k]),
    )
    if (actions.length > 1) {
      issues.add(p, `an HTTP route may have only one of route, redirect, directResponse (found ${actions.join(', ')})`)
    }
    if (actions.length === 0) issues.add(p, 'one of route, redirect or directResponse is required')
    if (has(r.redirect) || has(r.directResponse)) {
      const what = has(r.redirect) ? 'redirect' : 'directResponse'
      if (has(r.fault)) issues.add(`${p}.fault`, `HTTP route cannot contain both fault and ${what}`)
      if (has(r.rewrite)) issues.add(`${p}.rewrite`, `HTTP route cannot contain both rewrite and ${what}`)
    }
  }

  r.match?.forEach((m, i) => {
    const mp = field(`${p}.match`, i)
    if (type !== 'independent') {
      for (const k of ['uri', 'scheme', 'method', 'authority'] as const) {
        if (hasRegex(m[k])) issues.add(`${mp}.${k}.regex`, `${k} match does not support regex match for delegating`)
      }
      for (const k of ['headers', 'queryParams', 'withoutHeaders'] as const) {
        for (const [n, sm] of Object.entries(m[k] ?? {})) {
          if (hasRegex(sm))
            issues.add(`${field(`${mp}.${k}`, n)}.regex`, `${k} match does not support regex match for delegating`)
        }
      }
    }
  })

  checkHeaderOps(issues, `${p}.headers`, r.headers)
  const authority: string[] = []
  if (r.rewrite?.authority !== undefined) authority.push('rewrite.authority')
  for (const op of ['set', 'add'] as const) {
    for (const k of Object.keys(r.headers?.request?.[op] ?? {})) {
      if ([':authority', 'host'].includes(k.toLowerCase())) authority.push(`headers.request.${op}.${k}`)
    }
  }
  if (authority.length > 1) {
    issues.add(`${p}.headers.request`, `authority header cannot be set multiple times (${authority.join(', ')})`)
  }

  r.route?.forEach((d, i) => {
    checkHeaderOps(issues, `${field(`${p}.route`, i)}.headers`, d.headers)
  })
  if (r.route !== undefined) checkWeights(issues, `${p}.route`, r.route)

  if (r.redirect !== undefined) {
    const rd = r.redirect
    if (
      rd.uri === undefined &&
      rd.authority === undefined &&
      rd.scheme === undefined &&
      rd.port === undefined &&
      rd.derivePort === undefined
    ) {
      issues.add(`${p}.redirect`, 'redirect must specify uri, authority, scheme, port or derivePort')
    }
  }
  if (r.rewrite !== undefined) {
    const rw = r.rewrite
    if (rw.uri === undefined && rw.authority === undefined && rw.uriRegexRewrite === undefined) {
      issues.add(`${p}.rewrite`, 'rewrite must specify at least one of uri, uriRegexRewrite or authority')
    }
    if (rw.uri !== undefined && rw.uriRegexRewrite !== undefined) {
      issues.add(`${p}.rewrite`, 'only one of uri or uriRegexRewrite may be specified')
    }
    const rr = rw.uriRegexRewrite
    if (rr !== undefined) {
      if (rr.match === undefined || rr.rewrite === undefined) {
        issues.add(`${p}.rewrite.uriRegexRewrite`, 'uriRegexRewrite requires both match and rewrite')
      } else {
        const c = compileRewrite(rr.match, rr.rewrite)
        if (!c.ok && c.field === 'substitution') issues.add(`${p}.rewrite.uriRegexRewrite.rewrite`, c.error)
      }
    }
  }
  if (r.retries !== undefined) {
    const rt = r.retries
    if (
      rt.attempts === 0 &&
      (rt.perTryTimeout !== undefined || rt.retryOn !== undefined || rt.retryRemoteLocalities !== undefined)
    ) {
      issues.add(`${p}.retries`, 'http retry policy configured when attempts are set to 0 (disabled)')
    }
    if (rt.retryOn !== undefined && rt.retryOn !== '') {
      for (const policy of rt.retryOn.split(',').map((s) => s.trim())) {
        const code = /^\d{3}$/.test(policy) ? Number(policy) : 0
        if (!RETRY_ON.has(policy) && !(code >= 100 && code <= 599)) {
          issues.add(`${p}.retries.retryOn`, `${JSON.stringify(policy)} is not a valid retryOn policy`)
        }
      }
    }
  }
  if (r.fault !== undefined) {
    const f = r.fault
    if (f.abort === undefined && f.delay === undefined)
      issues.add(`${p}.fault`, 'HTTP fault injection must have an abort and/or a delay')
    if (f.abort?.http2Error !== undefined)
      issues.add(`${p}.fault.abort.http2Error`, 'HTTP/2 abort fault injection not supported yet')
    if (f.delay?.exponentialDelay !== undefined)
      issues.add(`${p}.fault.delay.exponentialDelay`, 'exponentialDelay not supported yet')
  }
  if (r.mirror !== undefined && r.mirrors !== undefined)
    issues.add(`${p}.mirrors`, 'mirror and mirrors cannot be used together')
  for (const k of ['mirrorPercent', 'mirror_percent'] as const) {
    const val = r[k]
    if (val !== undefined && val > 100) issues.add(`${p}.${k}`, `${k} must have a max value of 100 (it has ${val})`)
  }
  if (r.corsPolicy !== undefined) {
    r.corsPolicy.allowOrigins?.forEach((o, i) => {
      if ((o.exact ?? o.prefix ?? o.regex ?? '') === '') {
        issues.add(
          field(`${p}.corsPolicy.allowOrigins`, i),
          'an allowed origin must be a non-empty exact, prefix or regex',
        )
      }
    })
    const maxAge = r.corsPolicy.maxAge
    const ns = maxAge === undefined ? null : parseDurationNs(maxAge)
    if (ns !== null && ns % 1_000_000_000n !== 0n) {
      issues.add(`${p}.corsPolicy.maxAge`, 'maxAge is accurate only to seconds precision')
    }
  }
}

function checkL4Routes(
  issues: Issues,
  p: string,
  routes: readonly { weight?: number | undefined }[] | undefined,
  what: string,
): void {
  if (routes === undefined || routes.length === 0) issues.add(`${p}.route`, `${what} route is required`)
  else checkWeights(issues, `${p}.route`, routes)
}

/** Whether host `a` is within `b` (`foo.example.com` within `*.example.com`; `*` contains everything). */
function hostSubsetOf(a: string, b: string): boolean {
  if (b === '*') return true
  if (b.startsWith('*')) {
    const suffix = b.slice(1)
    return a.startsWith('*') ? a.slice(1).endsWith(suffix) : a.endsWith(suffix)
  }
  return a === b
}

/** Whether hosts `a` and `b` can name the same service (one matches the other). */
function hostsOverlap(a: string, b: string): boolean {
  return hostSubsetOf(a, b) || hostSubsetOf(b, a)
}

export function checkVirtualService(spec: VirtualServiceSpec, ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  const hosts = spec.hosts ?? []
  const gateways = spec.gateways ?? []
  const delegate = hosts.length === 0
  if (delegate) {
    if (gateways.length > 0)
      issues.add('spec.gateways', 'delegate virtual service (no hosts) must have no gateways specified')
    if ((spec.tls ?? []).length > 0)
      issues.add('spec.tls', 'delegate virtual service (no hosts) must have no tls route specified')
    if ((spec.tcp ?? []).length > 0)
      issues.add('spec.tcp', 'delegate virtual service (no hosts) must have no tcp route specified')
  }
  const appliesToMesh = gateways.length === 0 || gateways.includes('mesh')
  let hostsValid = true
  hosts.forEach((h, i) => {
    const err = wildcardDomainError(h)
    if (err !== null && !isIpAddress(h)) {
      issues.add(field('spec.hosts', i), err)
      hostsValid = false
    } else if (appliesToMesh && h === '*') {
      issues.add(
        field('spec.hosts', i),
        'wildcard host * is not allowed for virtual services bound to the mesh gateway',
      )
      hostsValid = false
    }
  })
  if (hostsValid) {
    for (let i = 0; i < hosts.length; i++) {
      for (let j = i + 1; j < hosts.length; j++) {
        if (hostsOverlap(hosts[i]!, hosts[j]!)) {
          issues.add(field('spec.hosts', j), `duplicate hosts in virtual service: ${hosts[i]} & ${hosts[j]}`)
        }
      }
    }
  }
  if ((spec.http ?? []).length === 0 && (spec.tcp ?? []).length === 0 && (spec.tls ?? []).length === 0) {
    issues.add('spec', 'http, tcp or tls must be provided in virtual service')
  }
  spec.http?.forEach((r, i) => {
    const type: RouteType = delegate ? 'delegate' : r.delegate !== undefined ? 'root' : 'independent'
    checkHttpRoute(issues, field('spec.http', i), r, type)
  })
  spec.tls?.forEach((r, i) => {
    const p = field('spec.tls', i)
    if (r.match.length === 0) issues.add(`${p}.match`, 'TLS route must have at least one match condition')
    r.match.forEach((m, j) => {
      const mp = field(`${p}.match`, j)
      if (m.sniHosts.length === 0) issues.add(`${mp}.sniHosts`, 'TLS match must have at least one SNI host')
      m.sniHosts.forEach((sni, k) => {
        const sp = field(`${mp}.sniHosts`, k)
        const err = wildcardDomainError(sni)
        if (err !== null && !isIpAddress(sni)) issues.add(sp, err)
        else if (!hosts.some((h) => hostSubsetOf(sni, h))) {
          issues.add(
            sp,
            `SNI host ${JSON.stringify(sni)} is not a compatible subset of any of the virtual service hosts: ` +
              `[${hosts.join(', ')}]`,
          )
        }
      })
    })
    checkL4Routes(issues, p, r.route, 'TLS')
  })
  spec.tcp?.forEach((r, i) => {
    checkL4Routes(issues, field('spec.tcp', i), r.route, 'TCP')
  })
  checkExportTo(issues, 'spec.exportTo', spec.exportTo, ctx.namespace)
  return issues.list
}

// === DestinationRule ===

const TcpSettings = v.strictObject({
  maxConnections: opt(nonNegInt32),
  connectTimeout: opt(duration),
  tcpKeepalive: opt(v.strictObject({ probes: opt(uint32), time: opt(duration), interval: opt(duration) })),
  maxConnectionDuration: opt(duration),
  idleTimeout: opt(durationOrZero),
})

const HttpSettings = v.strictObject({
  http1MaxPendingRequests: opt(nonNegInt32),
  http2MaxRequests: opt(nonNegInt32),
  maxRequestsPerConnection: opt(nonNegInt32),
  maxRetries: opt(nonNegInt32),
  idleTimeout: opt(duration),
  h2UpgradePolicy: opt(enumOf(['DEFAULT', 'DO_NOT_UPGRADE', 'UPGRADE'])),
  useClientProtocol: opt(bool),
  maxConcurrentStreams: opt(nonNegInt32),
  http2KeepAlive: opt(v.strictObject({ interval: opt(duration), timeout: opt(duration) })),
})

export const ConnectionPoolSettings = v.pipe(
  v.strictObject({ tcp: opt(TcpSettings), http: opt(HttpSettings) }),
  v.check(
    (c) => c.tcp !== undefined || c.http !== undefined,
    'connection pool must have at least one field (tcp, http)',
  ),
)

const HTTPCookie = v.strictObject({
  name: nonEmpty,
  path: opt(str),
  ttl: opt(durationOrZero),
  attributes: opt(v.array(v.strictObject({ name: nonEmpty, value: opt(str) }))),
})

const ConsistentHashLB = v.pipe(
  v.strictObject({
    httpHeaderName: opt(nonEmpty),
    httpCookie: opt(HTTPCookie),
    useSourceIp: opt(bool),
    httpQueryParameterName: opt(nonEmpty),
    ringHash: opt(v.strictObject({ minimumRingSize: opt(intRange(0, Number.MAX_SAFE_INTEGER)) })),
    maglev: opt(v.strictObject({ tableSize: opt(intRange(0, Number.MAX_SAFE_INTEGER)) })),
    minimumRingSize: opt(intRange(0, Number.MAX_SAFE_INTEGER)),
  }),
  oneOf(['httpHeaderName', 'httpCookie', 'useSourceIp', 'httpQueryParameterName'], false),
  oneOf(['ringHash', 'maglev'], false),
)

export const LocalityLoadBalancerSetting = v.strictObject({
  distribute: opt(v.array(v.strictObject({ from: opt(str), to: opt(v.record(str, uint32)) }))),
  failover: opt(v.array(v.strictObject({ from: opt(str), to: opt(str) }))),
  failoverPriority: opt(strings),
  enabled: opt(bool),
})

export const LoadBalancerSettings = v.pipe(
  v.strictObject({
    simple: opt(enumOf(['UNSPECIFIED', 'LEAST_CONN', 'RANDOM', 'PASSTHROUGH', 'ROUND_ROBIN', 'LEAST_REQUEST'])),
    consistentHash: opt(ConsistentHashLB),
    localityLbSetting: opt(LocalityLoadBalancerSetting),
    warmupDurationSecs: opt(duration),
    warmup: opt(
      v.strictObject({
        duration,
        minimumPercent: opt(v.pipe(v.number(), v.minValue(0, 'must be 0..100'), v.maxValue(100, 'must be 0..100'))),
        aggression: opt(v.pipe(v.number(), v.minValue(1, 'aggression must be at least 1'))),
      }),
    ),
  }),
  oneOf(['simple', 'consistentHash'], false),
)

export const OutlierDetection = v.strictObject({
  splitExternalLocalOriginErrors: opt(bool),
  consecutiveLocalOriginFailures: opt(uint32),
  consecutiveGatewayErrors: opt(uint32),
  consecutive5xxErrors: opt(uint32),
  interval: opt(duration),
  baseEjectionTime: opt(duration),
  maxEjectionPercent: opt(percentInt),
  minHealthPercent: opt(percentInt),
  consecutiveErrors: opt(nonNegInt32),
})

export const ClientTLSSettings = v.strictObject({
  mode: opt(enumOf(['DISABLE', 'SIMPLE', 'MUTUAL', 'ISTIO_MUTUAL'])),
  clientCertificate: opt(str),
  privateKey: opt(str),
  caCertificates: opt(str),
  credentialName: opt(str),
  subjectAltNames: opt(strings),
  sni: opt(str),
  insecureSkipVerify: opt(bool),
  caCrl: opt(str),
})
export type ClientTLSSettings = v.InferOutput<typeof ClientTLSSettings>

const trafficPolicyFields = {
  loadBalancer: opt(LoadBalancerSettings),
  connectionPool: opt(ConnectionPoolSettings),
  outlierDetection: opt(OutlierDetection),
  tls: opt(ClientTLSSettings),
}

export const PortTrafficPolicy = v.strictObject({ port: opt(PortSelector), ...trafficPolicyFields })

export const TrafficPolicy = v.strictObject({
  ...trafficPolicyFields,
  portLevelSettings: opt(v.pipe(v.array(PortTrafficPolicy), v.maxLength(4096, 'at most 4096 port-level settings'))),
  tunnel: opt(
    v.strictObject({
      protocol: opt(enumOf(['CONNECT', 'POST'])),
      targetHost: nonEmpty,
      targetPort: port,
    }),
  ),
  proxyProtocol: opt(v.strictObject({ version: opt(enumOf(['V1', 'V2'])) })),
  retryBudget: opt(
    v.strictObject({
      percent: opt(v.pipe(v.number(), v.minValue(0, 'must be 0..100'), v.maxValue(100, 'must be 0..100'))),
      minRetryConcurrency: opt(uint32),
    }),
  ),
})
export type TrafficPolicy = v.InferOutput<typeof TrafficPolicy>

export const Subset = v.strictObject({ name: subsetName, labels: opt(Labels), trafficPolicy: opt(TrafficPolicy) })

export const DestinationRuleSpec = v.strictObject({
  host: rule(wildcardDomainError),
  trafficPolicy: opt(TrafficPolicy),
  subsets: opt(v.array(Subset)),
  exportTo: opt(strings),
  workloadSelector: opt(MatchLabelsSelector),
})
export type DestinationRuleSpec = v.InferOutput<typeof DestinationRuleSpec>

function checkClientTls(issues: Issues, p: string, t: ClientTLSSettings | undefined): void {
  if (t === undefined) return
  const certs = t.clientCertificate !== undefined || t.privateKey !== undefined || t.caCertificates !== undefined
  if ((t.mode === 'SIMPLE' || t.mode === 'MUTUAL') && t.credentialName !== undefined && t.credentialName !== '') {
    if (certs) issues.add(p, 'cannot specify client certificates or CA certificate if credentialName is set')
    return
  }
  if (t.mode === 'MUTUAL') {
    if (!t.clientCertificate) issues.add(`${p}.clientCertificate`, 'client certificate required for mutual tls')
    if (!t.privateKey) issues.add(`${p}.privateKey`, 'private key required for mutual tls')
  }
  if (t.mode === 'ISTIO_MUTUAL' && (certs || t.credentialName !== undefined)) {
    issues.add(p, 'ISTIO_MUTUAL uses the mesh certificates: do not set certificates, keys or credentialName')
  }
}

type LocalitySetting = v.InferOutput<typeof LocalityLoadBalancerSetting>

const TOPOLOGY_LABELS = ['topology.kubernetes.io/region', 'topology.kubernetes.io/zone', 'topology.istio.io/subzone']

/**
 * Istio's validateLocalities: `region[/zone[/subzone]]` with no empty part, at most one `*` and only at the end,
 * and no locality that an earlier one already covers (`r1` then `r1/z1`, or anything after `*`).
 */
function checkLocalities(issues: Issues, p: string, localities: string[]): void {
  const seen: string[][] = []
  for (const loc of localities) {
    const stars = loc.split('*').length - 1
    if (stars > 1 || (stars === 1 && !loc.endsWith('*'))) {
      issues.add(p, `locality ${loc}: wildcard '*' may appear once, at the end`)
      continue
    }
    const parts = loc.split('/', 3)
    if (parts.some((s) => s === '')) {
      issues.add(p, `locality ${loc} must not contain empty region/zone/subzone`)
      continue
    }
    // one covers the other when they agree up to the shorter one's length, or the shorter ends in '*'
    const covers = (a: string[], b: string[]) => {
      const n = Math.min(a.length, b.length)
      for (let i = 0; i < n; i++) {
        if (a[i] === '*' || b[i] === '*') return true
        if (a[i] !== b[i]) return false
      }
      return true
    }
    if (seen.some((q) => covers(q, parts))) issues.add(p, `locality ${loc} overlaps with previous ones`)
    seen.push(parts)
  }
}

/** Istio's ValidateLocalityLbSetting, every problem with its path. */
function checkLocalityLb(issues: Issues, p: string, lb: LocalitySetting | undefined): void {
  if (lb === undefined) return
  const distribute = lb.distribute ?? []
  const failover = lb.failover ?? []
  const priority = lb.failoverPriority ?? []
  if (distribute.length > 0 && failover.length > 0) {
    issues.add(p, "can not simultaneously specify 'distribute' and 'failover'")
  }
  if (failover.length > 0) {
    priority.forEach((label, i) => {
      if (TOPOLOGY_LABELS.includes(label)) {
        issues.add(
          field(`${p}.failoverPriority`, i),
          `can not simultaneously set 'failover' and topology label '${label}' in 'failoverPriority'`,
        )
      }
    })
  }
  distribute.forEach((d, i) => {
    const dp = field(`${p}.distribute`, i)
    let total = 0
    let inRange = true
    for (const [loc, w] of Object.entries(d.to ?? {})) {
      if (w < 1 || w > 100) {
        issues.add(field(`${dp}.to`, loc), 'locality weight must be in range [1, 100]')
        inRange = false
      }
      total += w
    }
    if (inRange && total !== 100) issues.add(`${dp}.to`, `total locality weight ${total} != 100`)
    checkLocalities(issues, `${dp}.to`, Object.keys(d.to ?? {}))
  })
  checkLocalities(
    issues,
    `${p}.distribute`,
    distribute.map((d) => d.from ?? ''),
  )
  failover.forEach((f, i) => {
    const fp = field(`${p}.failover`, i)
    if ((f.from ?? '') === (f.to ?? '')) issues.add(fp, 'locality lb failover settings must specify different regions')
    if (f.from?.includes('/') || f.to?.includes('/')) issues.add(fp, 'locality lb failover only specify region')
    if (f.from?.includes('*') || f.to?.includes('*')) {
      issues.add(fp, "locality lb failover region should not contain '*' wildcard")
    }
  })
}

function checkTrafficPolicy(issues: Issues, p: string, tp: TrafficPolicy | undefined): void {
  if (tp === undefined) return
  if (Object.keys(tp).length === 0) issues.add(p, 'traffic policy must have at least one field')
  checkClientTls(issues, `${p}.tls`, tp.tls)
  checkLocalityLb(issues, `${p}.loadBalancer.localityLbSetting`, tp.loadBalancer?.localityLbSetting)
  const ports = new Set<number>()
  tp.portLevelSettings?.forEach((pl, i) => {
    const pp = field(`${p}.portLevelSettings`, i)
    if (pl.port === undefined) issues.add(`${pp}.port`, 'portTrafficPolicy must have valid port')
    else if (ports.has(pl.port.number)) issues.add(`${pp}.port.number`, `duplicate port ${pl.port.number}`)
    else ports.add(pl.port.number)
    if (Object.keys(pl).filter((k) => k !== 'port').length === 0) {
      issues.add(pp, 'port traffic policy must have at least one field')
    }
    checkClientTls(issues, `${pp}.tls`, pl.tls)
    checkLocalityLb(issues, `${pp}.loadBalancer.localityLbSetting`, pl.loadBalancer?.localityLbSetting)
  })
}

export function checkDestinationRule(spec: DestinationRuleSpec, ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  checkTrafficPolicy(issues, 'spec.trafficPolicy', spec.trafficPolicy)
  const names = new Set<string>()
  spec.subsets?.forEach((s, i) => {
    const p = field('spec.subsets', i)
    if (names.has(s.name)) issues.add(`${p}.name`, `duplicate subset name ${s.name}`)
    names.add(s.name)
    checkTrafficPolicy(issues, `${p}.trafficPolicy`, s.trafficPolicy)
  })
  if (spec.workloadSelector !== undefined && (spec.exportTo ?? []).some((e) => e !== '.' && e !== ctx.namespace)) {
    issues.add(
      'spec.exportTo',
      'a DestinationRule with workloadSelector can only be exported to its own namespace (".")',
    )
  }
  checkExportTo(issues, 'spec.exportTo', spec.exportTo, ctx.namespace)
  const lb = ctx.annotations?.[LOOM_LOAD_BALANCER_ANNOTATION]
  if (lb !== undefined && !(LOOM_LOAD_BALANCERS as readonly unknown[]).includes(lb)) {
    issues.add(
      field('metadata.annotations', LOOM_LOAD_BALANCER_ANNOTATION),
      `unknown load balancer ${JSON.stringify(lb)}; known: ${LOOM_LOAD_BALANCERS.join(', ')}`,
    )
  }
  return issues.list
}

// === Gateway ===

export const ServerTLSSettings = v.strictObject({
  httpsRedirect: opt(bool),
  mode: opt(enumOf(['PASSTHROUGH', 'SIMPLE', 'MUTUAL', 'AUTO_PASSTHROUGH', 'ISTIO_MUTUAL', 'OPTIONAL_MUTUAL'])),
  serverCertificate: opt(str),
  privateKey: opt(str),
  caCertificates: opt(str),
  caCrl: opt(str),
  credentialName: opt(str),
  credentialNames: opt(v.pipe(strings, v.minLength(1, 'at least one name'), v.maxLength(2, 'at most two names'))),
  tlsCertificates: opt(
    v.pipe(
      v.array(v.strictObject({ serverCertificate: opt(str), privateKey: opt(str), caCertificates: opt(str) })),
      v.minLength(1, 'at least one certificate'),
      v.maxLength(2, 'at most two certificates'),
    ),
  ),
  subjectAltNames: opt(strings),
  verifyCertificateSpki: opt(strings),
  verifyCertificateHash: opt(strings),
  minProtocolVersion: opt(enumOf(['TLS_AUTO', 'TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'])),
  maxProtocolVersion: opt(enumOf(['TLS_AUTO', 'TLSV1_0', 'TLSV1_1', 'TLSV1_2', 'TLSV1_3'])),
  cipherSuites: opt(strings),
  caCertCredentialName: opt(str),
})
export type ServerTLSSettings = v.InferOutput<typeof ServerTLSSettings>

export const Server = v.strictObject({
  port: v.strictObject({ ...portFields, name: nonEmpty }),
  bind: opt(str),
  hosts: strings,
  tls: opt(ServerTLSSettings),
  name: opt(str),
  defaultEndpoint: opt(str),
})

export const GatewaySpec = v.strictObject({
  servers: opt(v.array(Server)),
  selector: opt(v.record(str, str)),
})
export type GatewaySpec = v.InferOutput<typeof GatewaySpec>

/** `namespace/host` as Gateways and Sidecars take hosts; a Gateway also accepts a bare host or IP. */
function nsHostError(hostname: string, gateway: boolean): string | null {
  const slash = hostname.indexOf('/')
  const hostPart = (h: string): string | null => {
    if (h !== '*' && !h.includes('.') && !isIpAddress(h)) return `short names (non FQDN) are not allowed: ${h}`
    const err = wildcardDomainError(h)
    return err !== null && !(gateway && isIpAddress(h)) ? err : null
  }
  if (slash < 0) return gateway ? hostPart(hostname) : 'host must be of form namespace/dnsName'
  const ns = hostname.slice(0, slash)
  const h = hostname.slice(slash + 1)
  if (ns === '' || h === '') return 'config namespace and dnsName in host entry cannot be empty'
  const specials = gateway ? ['*', '.'] : ['*', '.', '~']
  if (!specials.includes(ns) && !isDns1123Label(ns)) {
    return `invalid namespace value ${JSON.stringify(ns)} in ${gateway ? 'gateway' : 'sidecar'}`
  }
  return hostPart(h)
}

function checkServerTls(issues: Issues, p: string, t: ServerTLSSettings): void {
  const cred = t.credentialName !== undefined && t.credentialName !== ''
  if (t.credentialName !== undefined && t.credentialNames !== undefined) {
    issues.add(p, 'only one of credentialName or credentialNames can be set')
  }
  if ((cred || t.credentialNames !== undefined) && t.tlsCertificates !== undefined) {
    issues.add(p, 'only one of credentialName(s) or tlsCertificates can be set')
  }
  if (t.mode === 'ISTIO_MUTUAL') {
    if (t.serverCertificate)
      issues.add(`${p}.serverCertificate`, 'ISTIO_MUTUAL TLS cannot have associated server certificate')
    if (t.privateKey) issues.add(`${p}.privateKey`, 'ISTIO_MUTUAL TLS cannot have associated private key')
    if (t.caCertificates) issues.add(`${p}.caCertificates`, 'ISTIO_MUTUAL TLS cannot have associated CA bundle')
    if (cred) issues.add(`${p}.credentialName`, 'ISTIO_MUTUAL TLS cannot have associated credentialName')
    return
  }
  const simpleOrMutual = t.mode === 'SIMPLE' || t.mode === 'MUTUAL' || t.mode === 'OPTIONAL_MUTUAL'
  if (!simpleOrMutual || cred || t.credentialNames !== undefined || t.tlsCertificates !== undefined) return
  if (!t.serverCertificate) issues.add(`${p}.serverCertificate`, `${t.mode} TLS requires a server certificate`)
  if (!t.privateKey) issues.add(`${p}.privateKey`, `${t.mode} TLS requires a private key`)
  if (t.mode !== 'SIMPLE' && !t.caCertificates)
    issues.add(`${p}.caCertificates`, `${t.mode} TLS requires a client CA bundle`)
}

export function checkGateway(spec: GatewaySpec, ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  if (!isDns1123Label(ctx.name)) {
    issues.add(
      'metadata.name',
      `invalid gateway name ${JSON.stringify(ctx.name)}: a Gateway name must be a DNS label (no dots)`,
    )
  }
  const servers = spec.servers ?? []
  if (servers.length === 0) issues.add('spec.servers', 'gateway must have at least one server')
  const portNames = new Map<string, number>()
  const serverNames = new Set<string>()
  servers.forEach((s, i) => {
    const p = field('spec.servers', i)
    if (s.hosts.length === 0) issues.add(`${p}.hosts`, 'server config must contain at least one host')
    s.hosts.forEach((h, j) => {
      issues.add(field(`${p}.hosts`, j), nsHostError(h, true))
    })
    const prev = portNames.get(s.port.name)
    if (prev !== undefined) {
      issues.add(
        `${p}.port.name`,
        `port names in servers must be unique: duplicate name ${s.port.name} (also spec.servers[${prev}])`,
      )
    } else portNames.set(s.port.name, i)
    if (s.name !== undefined && s.name !== '') {
      if (serverNames.has(s.name)) issues.add(`${p}.name`, `server names must be unique: duplicate name ${s.name}`)
      serverNames.add(s.name)
    }
    const proto = s.port.protocol
    if (isTlsProtocol(proto) && s.tls === undefined) {
      issues.add(`${p}.tls`, 'server must have TLS settings for HTTPS/TLS protocols')
    } else if (!isTlsProtocol(proto) && s.tls !== undefined) {
      const onlyRedirect = Object.keys(s.tls).every((k) => k === 'httpsRedirect')
      if (!isHttpProtocol(proto)) issues.add(`${p}.tls`, 'server cannot have TLS settings for non HTTPS/TLS ports')
      else if (!onlyRedirect)
        issues.add(`${p}.tls`, 'server cannot have TLS settings for plain text HTTP ports (only httpsRedirect)')
    }
    if (s.tls !== undefined && isTlsProtocol(proto)) checkServerTls(issues, `${p}.tls`, s.tls)
    if (s.bind !== undefined && s.bind !== '' && !s.bind.startsWith('unix://') && !isIpAddress(s.bind)) {
      issues.add(`${p}.bind`, `${JSON.stringify(s.bind)} is not an IP address or unix:// socket`)
    }
  })
  return issues.list
}

// === WorkloadEntry and ServiceEntry ===

function unixPathError(addr: string): string | null {
  const path = addr.slice('unix://'.length)
  if (path.startsWith('@')) return path.length > 1 ? null : 'unix address must not be empty'
  if (!path.startsWith('/') || path.endsWith('/')) return `${path} is not an absolute path to a file`
  return null
}

export const WorkloadEntrySpec = v.strictObject({
  address: opt(v.pipe(v.string(), v.maxLength(256, 'at most 256 characters'))),
  ports: opt(v.record(portName, port)),
  labels: opt(Labels),
  network: opt(v.pipe(v.string(), v.maxLength(2048, 'at most 2048 characters'))),
  locality: opt(v.pipe(v.string(), v.maxLength(2048, 'at most 2048 characters'))),
  weight: opt(uint32),
  serviceAccount: opt(v.pipe(v.string(), v.maxLength(253, 'at most 253 characters'))),
})
export type WorkloadEntrySpec = v.InferOutput<typeof WorkloadEntrySpec>

function checkWorkloadEntryAt(issues: Issues, p: string, we: WorkloadEntrySpec): void {
  const addr = we.address ?? ''
  if (addr === '' && (we.network ?? '') === '')
    issues.add(`${p}.address`, 'address is required (or network, for an endpoint reached through a network gateway)')
  if (addr.startsWith('unix://')) {
    issues.add(`${p}.address`, unixPathError(addr))
    if (we.ports !== undefined) issues.add(`${p}.ports`, 'UDS may not include ports')
  } else if (addr !== '' && !isIpAddress(addr) && fqdnError(addr) !== null) {
    issues.add(`${p}.address`, `endpoint address ${JSON.stringify(addr)} is not a valid FQDN or an IP address`)
  }
  const locality = we.locality ?? ''
  if (locality !== '' && (locality.split('/').length > 3 || locality.split('/').some((s) => s === ''))) {
    issues.add(`${p}.locality`, 'locality must be region[/zone[/subzone]]')
  }
}

export function checkWorkloadEntry(spec: WorkloadEntrySpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  checkWorkloadEntryAt(issues, 'spec', spec)
  return issues.list
}

export const ServicePort = v.strictObject({ ...portFields, protocol: opt(rule(protocolError)) })

export const ServiceEntrySpec = v.strictObject({
  hosts: v.pipe(strings, v.maxLength(256, 'at most 256 hosts')),
  addresses: opt(v.pipe(v.array(rule(ipOrCidrError)), v.maxLength(256, 'at most 256 addresses'))),
  ports: opt(v.pipe(v.array(ServicePort), v.maxLength(256, 'at most 256 ports'))),
  location: opt(enumOf(['MESH_EXTERNAL', 'MESH_INTERNAL'])),
  resolution: opt(enumOf(['NONE', 'STATIC', 'DNS', 'DNS_ROUND_ROBIN', 'DYNAMIC_DNS'])),
  endpoints: opt(v.pipe(v.array(WorkloadEntrySpec), v.maxLength(4096, 'at most 4096 endpoints'))),
  workloadSelector: opt(WorkloadSelector),
  exportTo: opt(strings),
  subjectAltNames: opt(strings),
})
export type ServiceEntrySpec = v.InferOutput<typeof ServiceEntrySpec>

export function checkServiceEntry(spec: ServiceEntrySpec, ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  const resolution = spec.resolution ?? 'NONE'
  if (spec.workloadSelector !== undefined && spec.endpoints !== undefined) {
    issues.add('spec', 'only one of workloadSelector or endpoints can be set')
  }
  if (spec.hosts.length === 0) issues.add('spec.hosts', 'service entry must have at least one host')
  spec.hosts.forEach((h, i) => {
    issues.add(
      field('spec.hosts', i),
      h === '*' ? 'invalid host * (hostname cannot be wildcard)' : wildcardDomainError(h),
    )
  })
  if ((spec.addresses ?? []).some((a) => a.includes('/')) && resolution !== 'NONE' && resolution !== 'STATIC') {
    issues.add('spec.addresses', 'CIDR addresses are allowed only for NONE/STATIC resolution types')
  }
  const names = new Set<string>()
  const numbers = new Set<number>()
  spec.ports?.forEach((pt, i) => {
    const p = field('spec.ports', i)
    if (names.has(pt.name))
      issues.add(`${p}.name`, `service entry port name ${JSON.stringify(pt.name)} already defined`)
    if (numbers.has(pt.number)) issues.add(`${p}.number`, `service entry port ${pt.number} already defined`)
    names.add(pt.name)
    numbers.add(pt.number)
  })
  const endpoints = spec.endpoints ?? []
  if (resolution === 'NONE' && endpoints.length > 0) {
    issues.add('spec.endpoints', 'no endpoints should be provided for resolution type NONE')
  }
  if (resolution === 'DNS_ROUND_ROBIN' && endpoints.length > 1) {
    issues.add('spec.endpoints', 'DNS_ROUND_ROBIN mode cannot have multiple endpoints')
  }
  if ((resolution === 'DNS' || resolution === 'DNS_ROUND_ROBIN') && endpoints.length === 0) {
    spec.hosts.forEach((h, i) => {
      if (h !== '*' && wildcardDomainError(h) === null && fqdnError(h) !== null) {
        issues.add(
          field('spec.hosts', i),
          `hosts must be FQDN if no endpoints are provided for resolution mode ${resolution}`,
        )
      }
    })
  }
  endpoints.forEach((ep, i) => {
    const p = field('spec.endpoints', i)
    checkWorkloadEntryAt(issues, p, ep)
    const addr = ep.address ?? ''
    if (resolution === 'STATIC' && addr !== '' && !addr.startsWith('unix://') && !isIpAddress(addr)) {
      issues.add(`${p}.address`, `${JSON.stringify(addr)} is not a valid IP address (resolution STATIC)`)
    }
    for (const name of Object.keys(ep.ports ?? {})) {
      if (!names.has(name))
        issues.add(field(`${p}.ports`, name), `endpoint port ${name} is not defined by the service entry`)
    }
  })
  if (endpoints.some((e) => e.address?.startsWith('unix://')) && (spec.ports ?? []).length !== 1) {
    issues.add('spec.ports', 'exactly 1 service port required for unix endpoints')
  }
  checkExportTo(issues, 'spec.exportTo', spec.exportTo, ctx.namespace, true)
  return issues.list
}

// === Sidecar ===

const SidecarPort = v.strictObject({
  number: opt(intRange(0, 65535, 'port number')),
  protocol: opt(rule((p) => (p === '' ? null : protocolError(p)))),
  name: opt(str),
  targetPort: opt(port),
})

const captureMode = enumOf(['DEFAULT', 'IPTABLES', 'NONE'])

export const SidecarSpec = v.strictObject({
  workloadSelector: opt(WorkloadSelector),
  ingress: opt(
    v.array(
      v.strictObject({
        port: SidecarPort,
        bind: opt(str),
        captureMode: opt(captureMode),
        defaultEndpoint: opt(str),
        tls: opt(ServerTLSSettings),
        connectionPool: opt(ConnectionPoolSettings),
      }),
    ),
  ),
  egress: opt(
    v.array(
      v.strictObject({
        port: opt(SidecarPort),
        bind: opt(str),
        captureMode: opt(captureMode),
        hosts: strings,
      }),
    ),
  ),
  inboundConnectionPool: opt(ConnectionPoolSettings),
  outboundTrafficPolicy: opt(
    v.strictObject({
      mode: opt(enumOf(['REGISTRY_ONLY', 'ALLOW_ANY'])),
      egressProxy: opt(Destination),
    }),
  ),
})
export type SidecarSpec = v.InferOutput<typeof SidecarSpec>

export function checkSidecar(spec: SidecarSpec, _ctx: SpecContext): ConfigIssue[] {
  const issues = new Issues()
  const ingressPorts = new Set<number>()
  spec.ingress?.forEach((l, i) => {
    const p = field('spec.ingress', i)
    if (l.port.name)
      issues.add(`${p}.port.name`, isIstioLabel(l.port.name) ? null : `invalid port name: ${l.port.name}`)
    const n = l.port.number ?? 0
    if (n === 0) issues.add(`${p}.port.number`, 'port number must be between 1 and 65535')
    else if (ingressPorts.has(n)) issues.add(`${p}.port.number`, 'sidecar: ports on IP bound listeners must be unique')
    ingressPorts.add(n)
    if (l.bind !== undefined && l.bind !== '' && !isIpAddress(l.bind))
      issues.add(`${p}.bind`, `${l.bind} is not a valid IP`)
    const ep = l.defaultEndpoint
    if (ep !== undefined && ep !== '') {
      if (ep.startsWith('unix://')) issues.add(`${p}.defaultEndpoint`, unixPathError(ep))
      else {
        const m = /^(.*):(\d+)$/.exec(ep)
        const host = m?.[1] ?? ''
        const okHost = host === '' || host === '127.0.0.1' || host === '0.0.0.0' || host === '[::1]' || host === '[::]'
        const pn = Number(m?.[2])
        if (m === null || !okHost || pn < 1 || pn > 65535) {
          issues.add(
            `${p}.defaultEndpoint`,
            'sidecar: defaultEndpoint must be of form 127.0.0.1:<port>, 0.0.0.0:<port>, :<port> or unix://<path>',
          )
        }
      }
    }
  })
  const egressPorts = new Set<number>()
  const uds = new Set<string>()
  const egress = spec.egress ?? []
  let catchAll = false
  egress.forEach((l, i) => {
    const p = field('spec.egress', i)
    if (l.port === undefined) {
      if (catchAll) issues.add(p, 'sidecar: egress can have only one listener with empty port')
      else if (i !== egress.length - 1)
        issues.add(p, 'sidecar: the egress listener with empty port should be the last listener in the list')
      catchAll = true
    } else {
      if (l.port.name)
        issues.add(`${p}.port.name`, isIstioLabel(l.port.name) ? null : `invalid port name: ${l.port.name}`)
      const bind = l.bind ?? ''
      const n = l.port.number ?? 0
      if (n === 0) {
        if (!bind.startsWith('unix://'))
          issues.add(`${p}.bind`, 'sidecar: ports with 0 value must have a unix domain socket bind address')
        else issues.add(`${p}.bind`, unixPathError(bind))
        if (l.captureMode !== undefined && l.captureMode !== 'DEFAULT' && l.captureMode !== 'NONE') {
          issues.add(`${p}.captureMode`, 'sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners')
        }
        if (uds.has(bind)) issues.add(`${p}.bind`, 'sidecar: unix domain socket values for listeners must be unique')
        uds.add(bind)
      } else {
        if (bind !== '' && !isIpAddress(bind)) issues.add(`${p}.bind`, `${bind} is not a valid IP`)
        if (egressPorts.has(n)) issues.add(`${p}.port.number`, 'sidecar: ports on IP bound listeners must be unique')
        egressPorts.add(n)
      }
    }
    if (l.hosts.length === 0) issues.add(`${p}.hosts`, 'sidecar: egress listener must contain at least one host')
    l.hosts.forEach((h, j) => {
      issues.add(field(`${p}.hosts`, j), nsHostError(h, false))
    })
  })
  const otp = spec.outboundTrafficPolicy
  if (otp?.egressProxy !== undefined) {
    if (otp.mode !== 'ALLOW_ANY') {
      issues.add(
        'spec.outboundTrafficPolicy.egressProxy',
        'sidecar: egressProxy must be set only with ALLOW_ANY outboundTrafficPolicy mode',
      )
    }
    issues.add('spec.outboundTrafficPolicy.egressProxy.host', fqdnError(otp.egressProxy.host))
    if (otp.egressProxy.port === undefined)
      issues.add('spec.outboundTrafficPolicy.egressProxy.port', 'sidecar: egressProxy port must be set')
  }
  return issues.list
}
