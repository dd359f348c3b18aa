/**
 * The subset of Envoy's v3 API that Loom supports, with Envoy's field names (snake_case, as in Envoy's YAML).
 * These are the proxy's configuration types, whether they come from a static bootstrap or from xDS.
 * Anything not declared here is rejected with its path: Loom never silently ignores a field.
 */
import { isIP } from 'node:net'
import { duration, int, nonEmpty, oneOf, port, uint32, v } from './schema.js'
import { TypeUrls } from './type-urls.js'
import { compileLogFormat } from '../proxy/access-log-format.js'

export { TypeUrls }

const opt = v.optional
const str = v.string()
const bool = v.boolean()

// === core ===

export const SocketAddress = v.strictObject({
  address: nonEmpty,
  port_value: port,
  protocol: opt(v.picklist(['TCP'])),
  ipv4_compat: opt(bool),
})
export const Address = v.strictObject({ socket_address: SocketAddress })

/** An IP prefix: `address_prefix` an IPv4 or IPv6 address, `prefix_len` at most 32 or 128 (default 0). */
export const CidrRange = v.pipe(
  v.strictObject({ address_prefix: nonEmpty, prefix_len: opt(int(0, 128)) }),
  v.check((c) => {
    const family = isIP(c.address_prefix)
    return family !== 0 && (c.prefix_len ?? 0) <= (family === 4 ? 32 : 128)
  }, 'address_prefix must be an IP address and prefix_len at most 32 (IPv4) or 128 (IPv6)'),
)
export type CidrRange = v.InferOutput<typeof CidrRange>
export type Address = v.InferOutput<typeof Address>

export const DataSource = v.pipe(
  v.strictObject({ filename: opt(nonEmpty), inline_string: opt(str), inline_bytes: opt(str) }),
  oneOf(['filename', 'inline_string', 'inline_bytes']),
)
export type DataSource = v.InferOutput<typeof DataSource>

const headerName = v.pipe(str, v.regex(/^:?[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'must be a valid HTTP header name'))
const headerValue = v.pipe(str, v.regex(/^[^\r\n\0]*$/, 'must not contain CR, LF or NUL'))

export const HeaderValueOption = v.strictObject({
  header: v.strictObject({ key: headerName, value: headerValue }),
  append: opt(bool),
  append_action: opt(
    v.picklist(['APPEND_IF_EXISTS_OR_ADD', 'ADD_IF_ABSENT', 'OVERWRITE_IF_EXISTS_OR_ADD', 'OVERWRITE_IF_EXISTS']),
  ),
  keep_empty_value: opt(bool),
})
export type HeaderValueOption = v.InferOutput<typeof HeaderValueOption>

const headerMutations = {
  request_headers_to_add: opt(v.array(HeaderValueOption)),
  request_headers_to_remove: opt(v.array(headerName)),
  response_headers_to_add: opt(v.array(HeaderValueOption)),
  response_headers_to_remove: opt(v.array(headerName)),
}

// === matchers ===

export const RegexMatcher = v.strictObject({
  regex: str,
  google_re2: opt(v.strictObject({ max_program_size: opt(uint32) })),
})
export type RegexMatcher = v.InferOutput<typeof RegexMatcher>

export const StringMatcher = v.pipe(
  v.strictObject({
    exact: opt(str),
    prefix: opt(nonEmpty),
    suffix: opt(nonEmpty),
    contains: opt(nonEmpty),
    safe_regex: opt(RegexMatcher),
    ignore_case: opt(bool),
  }),
  oneOf(['exact', 'prefix', 'suffix', 'contains', 'safe_regex']),
)
export type StringMatcher = v.InferOutput<typeof StringMatcher>

const int64 = v.union([
  v.pipe(v.number(), v.integer()),
  v.pipe(str, v.regex(/^-?\d+$/, 'must be an integer'), v.transform(Number)),
])

export const HeaderMatcher = v.pipe(
  v.strictObject({
    name: headerName,
    exact_match: opt(str),
    safe_regex_match: opt(RegexMatcher),
    range_match: opt(v.strictObject({ start: int64, end: int64 })),
    present_match: opt(bool),
    prefix_match: opt(nonEmpty),
    suffix_match: opt(nonEmpty),
    contains_match: opt(nonEmpty),
    string_match: opt(StringMatcher),
    invert_match: opt(bool),
    treat_missing_header_as_empty: opt(bool),
  }),
  oneOf(
    [
      'exact_match',
      'safe_regex_match',
      'range_match',
      'present_match',
      'prefix_match',
      'suffix_match',
      'contains_match',
      'string_match',
    ],
    false,
  ),
)
export type HeaderMatcher = v.InferOutput<typeof HeaderMatcher>

export const QueryParameterMatcher = v.pipe(
  v.strictObject({ name: nonEmpty, string_match: opt(StringMatcher), present_match: opt(bool) }),
  oneOf(['string_match', 'present_match'], false),
)
export type QueryParameterMatcher = v.InferOutput<typeof QueryParameterMatcher>

// === HTTP filters (one schema per filter; the runtime of each is in src/proxy/http/filters/<name>/) ===

/** Envoy's FractionalPercent: numerator over a fixed denominator (HUNDRED by default). */
export const FractionalPercent = v.strictObject({
  numerator: opt(uint32),
  denominator: opt(v.picklist(['HUNDRED', 'TEN_THOUSAND', 'MILLION'])),
})
export type FractionalPercent = v.InferOutput<typeof FractionalPercent>

/** envoy.extensions.filters.http.fault.v3.HTTPFault: as the filter's config and as a per-route override. */
export const HTTPFault = v.strictObject({
  '@type': v.literal(TypeUrls.fault),
  delay: opt(
    v.pipe(
      v.strictObject({
        fixed_delay: opt(duration),
        header_delay: opt(v.strictObject({})),
        percentage: opt(FractionalPercent),
      }),
      oneOf(['fixed_delay', 'header_delay']),
    ),
  ),
  abort: opt(
    v.pipe(
      v.strictObject({
        http_status: opt(int(200, 599)),
        grpc_status: opt(uint32),
        header_abort: opt(v.strictObject({})),
        percentage: opt(FractionalPercent),
      }),
      oneOf(['http_status', 'grpc_status', 'header_abort']),
    ),
  ),
  headers: opt(v.array(HeaderMatcher)),
  max_active_faults: opt(uint32),
})
export type HTTPFault = v.InferOutput<typeof HTTPFault>

/** Envoy's RuntimeFractionalPercent: Loom has no runtime, so `runtime_key` is accepted and `default_value` applies. */
export const RuntimeFractionalPercent = v.strictObject({
  default_value: FractionalPercent,
  runtime_key: opt(str),
})
export type RuntimeFractionalPercent = v.InferOutput<typeof RuntimeFractionalPercent>

/** type.v3.HttpStatus codes 400..599 by their enum names (xDS decodes enums by name) or numbers. */
const HTTP_ERROR_STATUS: Record<string, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  PaymentRequired: 402,
  Forbidden: 403,
  NotFound: 404,
  MethodNotAllowed: 405,
  NotAcceptable: 406,
  ProxyAuthenticationRequired: 407,
  RequestTimeout: 408,
  Conflict: 409,
  Gone: 410,
  LengthRequired: 411,
  PreconditionFailed: 412,
  PayloadTooLarge: 413,
  URITooLong: 414,
  UnsupportedMediaType: 415,
  RangeNotSatisfiable: 416,
  ExpectationFailed: 417,
  MisdirectedRequest: 421,
  UnprocessableEntity: 422,
  Locked: 423,
  FailedDependency: 424,
  UpgradeRequired: 426,
  PreconditionRequired: 428,
  TooManyRequests: 429,
  RequestHeaderFieldsTooLarge: 431,
  InternalServerError: 500,
  NotImplemented: 501,
  BadGateway: 502,
  ServiceUnavailable: 503,
  GatewayTimeout: 504,
  HTTPVersionNotSupported: 505,
  VariantAlsoNegotiates: 506,
  InsufficientStorage: 507,
  LoopDetected: 508,
  NotExtended: 510,
  NetworkAuthenticationRequired: 511,
}
const httpErrorStatus = v.union([
  int(400, 599),
  v.pipe(
    v.picklist(Object.keys(HTTP_ERROR_STATUS)),
    v.transform((name) => HTTP_ERROR_STATUS[name]!),
  ),
])

/** envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit: as the filter's config and as a per-route override. */
export const LocalRateLimit = v.strictObject({
  '@type': v.literal(TypeUrls.localRateLimit),
  stat_prefix: nonEmpty,
  status: opt(v.strictObject({ code: httpErrorStatus })),
  token_bucket: opt(
    v.strictObject({
      max_tokens: v.pipe(uint32, v.minValue(1, 'must be at least 1')),
      tokens_per_fill: opt(v.pipe(uint32, v.minValue(1, 'must be at least 1'))),
      fill_interval: duration,
    }),
  ),
  filter_enabled: opt(RuntimeFractionalPercent),
  filter_enforced: opt(RuntimeFractionalPercent),
  request_headers_to_add_when_not_enforced: opt(v.pipe(v.array(HeaderValueOption), v.maxLength(10, 'at most 10'))),
  response_headers_to_add: opt(v.pipe(v.array(HeaderValueOption), v.maxLength(10, 'at most 10'))),
  enable_x_ratelimit_headers: opt(v.picklist(['OFF', 'DRAFT_VERSION_03'])),
})
export type LocalRateLimit = v.InferOutput<typeof LocalRateLimit>

/** envoy.extensions.filters.http.cors.v3.Cors: the filter itself (no fields; the policy is per route). */
export const Cors = v.strictObject({ '@type': v.literal(TypeUrls.cors) })
export type Cors = v.InferOutput<typeof Cors>

/** envoy.extensions.filters.http.cors.v3.CorsPolicy: a route's or virtual host's CORS policy. */
export const CorsPolicy = v.strictObject({
  '@type': v.literal(TypeUrls.corsPolicy),
  allow_origin_string_match: opt(v.array(StringMatcher)),
  allow_methods: opt(headerValue),
  allow_headers: opt(headerValue),
  expose_headers: opt(headerValue),
  max_age: opt(v.pipe(str, v.regex(/^\d{1,10}$/, 'must be a number of seconds'))),
  allow_credentials: opt(bool),
  allow_private_network_access: opt(bool),
  forward_not_matching_preflights: opt(bool),
  filter_enabled: opt(RuntimeFractionalPercent),
  shadow_enabled: opt(RuntimeFractionalPercent),
})
export type CorsPolicy = v.InferOutput<typeof CorsPolicy>

/** Loom's global rate limit filter (loom.filters.http.global_ratelimit.v1alpha1.GlobalRateLimit). */
export const GlobalRateLimit = v.strictObject({
  '@type': v.literal(TypeUrls.globalRateLimit),
  stat_prefix: opt(str),
})
export type GlobalRateLimit = v.InferOutput<typeof GlobalRateLimit>

/** A virtual host's or route's global limits (GlobalRateLimitPerRoute). */
export const GlobalRateLimitPerRoute = v.strictObject({
  '@type': v.literal(TypeUrls.globalRateLimitPerRoute),
  limits: opt(
    v.array(
      v.strictObject({
        name: nonEmpty,
        requests_per_second: v.pipe(
          v.number(),
          v.check((n: number) => Number.isFinite(n) && n > 0, 'must be greater than 0'),
        ),
        burst: opt(v.pipe(uint32, v.minValue(1, 'must be at least 1'))),
        headers: opt(v.array(HeaderMatcher)),
        invert_match: opt(bool),
        on_control_plane_unavailable: opt(v.picklist(['KEEP_LAST_SHARE', 'ALLOW_ALL', 'DENY_ALL'])),
      }),
    ),
  ),
})
export type GlobalRateLimitPerRoute = v.InferOutput<typeof GlobalRateLimitPerRoute>

/** envoy.extensions.filters.http.jwt_authn.v3: one token issuer (JwtProvider), the subset Istio emits. */
export const JwtProvider = v.pipe(
  v.strictObject({
    issuer: opt(str),
    audiences: opt(v.array(str)),
    remote_jwks: opt(
      v.strictObject({
        http_uri: v.strictObject({
          uri: v.pipe(
            nonEmpty,
            v.check((u) => /^https?:\/\//.test(u), 'must be an http:// or https:// URL'),
          ),
          cluster: opt(str),
          timeout: opt(duration),
        }),
        cache_duration: opt(duration),
        async_fetch: opt(v.strictObject({ fast_listener: opt(bool), failed_refetch_duration: opt(duration) })),
      }),
    ),
    local_jwks: opt(DataSource),
    forward: opt(bool),
    from_headers: opt(v.array(v.strictObject({ name: headerName, value_prefix: opt(str) }))),
    from_params: opt(v.array(nonEmpty)),
    from_cookies: opt(v.array(nonEmpty)),
    forward_payload_header: opt(headerName),
    pad_forward_payload_header: opt(bool),
    payload_in_metadata: opt(str),
    claim_to_headers: opt(v.array(v.strictObject({ header_name: headerName, claim_name: nonEmpty }))),
    clock_skew_seconds: opt(uint32),
  }),
  oneOf(['remote_jwks', 'local_jwks']),
)
export type JwtProvider = v.InferOutput<typeof JwtProvider>

const JwtLeafRequirement = v.pipe(
  v.strictObject({ provider_name: opt(nonEmpty), allow_missing: opt(v.strictObject({})) }),
  oneOf(['provider_name', 'allow_missing']),
)
/** A rule's requirement: one provider, any of several (with `allow_missing`, Istio's shape), or a missing token. */
export const JwtRequirement = v.pipe(
  v.strictObject({
    provider_name: opt(nonEmpty),
    requires_any: opt(
      v.strictObject({ requirements: v.pipe(v.array(JwtLeafRequirement), v.minLength(2, 'at least 2')) }),
    ),
    allow_missing: opt(v.strictObject({})),
  }),
  oneOf(['provider_name', 'requires_any', 'allow_missing']),
)
export type JwtRequirement = v.InferOutput<typeof JwtRequirement>

/** envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication */
export const JwtAuthentication = v.strictObject({
  '@type': v.literal(TypeUrls.jwtAuthn),
  providers: opt(v.record(nonEmpty, JwtProvider)),
  rules: opt(
    v.array(
      v.pipe(
        v.strictObject({
          match: v.pipe(v.strictObject({ prefix: opt(str), path: opt(str) }), oneOf(['prefix', 'path'])),
          requires: opt(JwtRequirement),
          requirement_name: opt(nonEmpty),
        }),
        oneOf(['requires', 'requirement_name']),
      ),
    ),
  ),
  requirement_map: opt(v.record(nonEmpty, JwtRequirement)),
  bypass_cors_preflight: opt(bool),
})
export type JwtAuthentication = v.InferOutput<typeof JwtAuthentication>

/** Envoy's MetadataMatcher ValueMatcher: the subset Loom evaluates. */
export interface RbacValueMatcher {
  string_match?: StringMatcher
  bool_match?: boolean
  present_match?: boolean
  null_match?: Record<string, never>
  list_match?: { one_of: RbacValueMatcher }
  or_match?: { value_matchers: RbacValueMatcher[] }
}
export const ValueMatcher: v.GenericSchema<unknown, RbacValueMatcher> = v.pipe(
  v.strictObject({
    string_match: opt(StringMatcher),
    bool_match: opt(bool),
    present_match: opt(bool),
    null_match: opt(v.strictObject({})),
    list_match: opt(v.strictObject({ one_of: v.lazy(() => ValueMatcher) })),
    or_match: opt(
      v.strictObject({
        value_matchers: v.pipe(v.array(v.lazy(() => ValueMatcher)), v.minLength(2, 'at least two value matchers')),
      }),
    ),
  }),
  oneOf(['string_match', 'bool_match', 'present_match', 'null_match', 'list_match', 'or_match']),
) as v.GenericSchema<unknown, RbacValueMatcher>

/** envoy.type.matcher.v3.MetadataMatcher: a value in the stream's dynamic metadata, by filter namespace and path. */
export const MetadataMatcher = v.strictObject({
  filter: nonEmpty,
  path: v.pipe(v.array(v.strictObject({ key: nonEmpty })), v.minLength(1, 'at least one path segment')),
  value: ValueMatcher,
  invert: opt(bool),
})
export type MetadataMatcher = v.InferOutput<typeof MetadataMatcher>

/** envoy.type.matcher.v3.PathMatcher: the path without its query. */
const PathMatcher = v.strictObject({ path: StringMatcher })

/** envoy.config.rbac.v3.Permission: what a request asks for (exactly one rule). */
export interface RbacPermission {
  and_rules?: { rules: RbacPermission[] }
  or_rules?: { rules: RbacPermission[] }
  not_rule?: RbacPermission
  any?: boolean
  header?: HeaderMatcher
  url_path?: { path: StringMatcher }
  destination_ip?: CidrRange
  destination_port?: number
  requested_server_name?: StringMatcher
  metadata?: MetadataMatcher
}
const permissionSet = v.strictObject({
  rules: v.pipe(v.array(v.lazy(() => RbacPermission)), v.minLength(1, 'at least one rule')),
})
export const RbacPermission: v.GenericSchema<unknown, RbacPermission> = v.pipe(
  v.strictObject({
    and_rules: opt(permissionSet),
    or_rules: opt(permissionSet),
    not_rule: opt(v.lazy(() => RbacPermission)),
    any: opt(v.literal(true)),
    header: opt(HeaderMatcher),
    url_path: opt(PathMatcher),
    destination_ip: opt(CidrRange),
    destination_port: opt(port),
    requested_server_name: opt(StringMatcher),
    metadata: opt(MetadataMatcher),
  }),
  oneOf([
    'and_rules',
    'or_rules',
    'not_rule',
    'any',
    'header',
    'url_path',
    'destination_ip',
    'destination_port',
    'requested_server_name',
    'metadata',
  ]),
) as v.GenericSchema<unknown, RbacPermission>

/** envoy.config.rbac.v3.Principal: who asks (exactly one identifier). */
export interface RbacPrincipal {
  and_ids?: { ids: RbacPrincipal[] }
  or_ids?: { ids: RbacPrincipal[] }
  not_id?: RbacPrincipal
  any?: boolean
  authenticated?: { principal_name?: StringMatcher }
  source_ip?: CidrRange
  direct_remote_ip?: CidrRange
  remote_ip?: CidrRange
  header?: HeaderMatcher
  url_path?: { path: StringMatcher }
  metadata?: MetadataMatcher
}
const principalSet = v.strictObject({
  ids: v.pipe(v.array(v.lazy(() => RbacPrincipal)), v.minLength(1, 'at least one identifier')),
})
export const RbacPrincipal: v.GenericSchema<unknown, RbacPrincipal> = v.pipe(
  v.strictObject({
    and_ids: opt(principalSet),
    or_ids: opt(principalSet),
    not_id: opt(v.lazy(() => RbacPrincipal)),
    any: opt(v.literal(true)),
    authenticated: opt(v.strictObject({ principal_name: opt(StringMatcher) })),
    source_ip: opt(CidrRange),
    direct_remote_ip: opt(CidrRange),
    remote_ip: opt(CidrRange),
    header: opt(HeaderMatcher),
    url_path: opt(PathMatcher),
    metadata: opt(MetadataMatcher),
  }),
  oneOf([
    'and_ids',
    'or_ids',
    'not_id',
    'any',
    'authenticated',
    'source_ip',
    'direct_remote_ip',
    'remote_ip',
    'header',
    'url_path',
    'metadata',
  ]),
) as v.GenericSchema<unknown, RbacPrincipal>

/** envoy.config.rbac.v3.RBAC: the action and the named policies (a policy matches when a permission and a principal do). */
export const RbacRules = v.strictObject({
  action: opt(v.picklist(['ALLOW', 'DENY', 'LOG'])),
  policies: opt(
    v.record(
      nonEmpty,
      v.strictObject({
        permissions: v.pipe(v.array(RbacPermission), v.minLength(1, 'at least one permission')),
        principals: v.pipe(v.array(RbacPrincipal), v.minLength(1, 'at least one principal')),
      }),
    ),
  ),
})
export type RbacRules = v.InferOutput<typeof RbacRules>

/** envoy.extensions.filters.http.rbac.v3.RBAC: enforced rules and shadow rules (evaluated, counted, never enforced). */
export const Rbac = v.strictObject({
  '@type': v.literal(TypeUrls.rbac),
  rules: opt(RbacRules),
  shadow_rules: opt(RbacRules),
  rules_stat_prefix: opt(v.pipe(str, v.regex(/^[\w.-]*$/, 'letters, digits, _ . - only'))),
  shadow_rules_stat_prefix: opt(v.pipe(str, v.regex(/^[\w.-]*$/, 'letters, digits, _ . - only'))),
  track_per_rule_stats: opt(bool),
})
export type Rbac = v.InferOutput<typeof Rbac>

/** envoy.type.matcher.v3.ListStringMatcher: a header name matches when one pattern does. */
const ListStringMatcher = v.strictObject({ patterns: v.array(StringMatcher) })

/** envoy.extensions.filters.http.ext_authz.v3.BufferSettings */
const ExtAuthzBufferSettings = v.strictObject({
  max_request_bytes: v.pipe(uint32, v.minValue(1, 'must be at least 1')),
  allow_partial_message: opt(bool),
  pack_as_bytes: opt(bool),
})

/** envoy.config.core.v3.GrpcService: the `envoy_grpc` kind (a call on one of the proxy's clusters). */
const ExtAuthzGrpcService = v.strictObject({
  envoy_grpc: v.strictObject({ cluster_name: nonEmpty, authority: opt(str) }),
  timeout: opt(duration),
  initial_metadata: opt(v.array(v.strictObject({ key: headerName, value: headerValue }))),
})

/** envoy.extensions.filters.http.ext_authz.v3.HttpService */
const ExtAuthzHttpService = v.strictObject({
  server_uri: v.strictObject({ uri: str, cluster: nonEmpty, timeout: duration }),
  path_prefix: opt(v.pipe(str, v.regex(/^(\/.*)?$/, 'must start with /'))),
  authorization_request: opt(
    v.strictObject({
      allowed_headers: opt(ListStringMatcher),
      headers_to_add: opt(v.array(v.strictObject({ key: headerName, value: headerValue }))),
    }),
  ),
  authorization_response: opt(
    v.strictObject({
      allowed_upstream_headers: opt(ListStringMatcher),
      allowed_upstream_headers_to_append: opt(ListStringMatcher),
      allowed_client_headers: opt(ListStringMatcher),
      allowed_client_headers_on_success: opt(ListStringMatcher),
    }),
  ),
})

/** envoy.extensions.filters.http.ext_authz.v3.ExtAuthz: an external authorization service, over HTTP or gRPC. */
export const ExtAuthz = v.pipe(
  v.strictObject({
    '@type': v.literal(TypeUrls.extAuthz),
    grpc_service: opt(ExtAuthzGrpcService),
    http_service: opt(ExtAuthzHttpService),
    transport_api_version: opt(v.picklist(['V3'])),
    failure_mode_allow: opt(bool),
    failure_mode_allow_header_add: opt(bool),
    with_request_body: opt(ExtAuthzBufferSettings),
    status_on_error: opt(v.strictObject({ code: httpErrorStatus })),
    filter_enabled_metadata: opt(MetadataMatcher),
    include_peer_certificate: opt(bool),
    stat_prefix: opt(v.pipe(str, v.regex(/^[\w.-]*$/, 'letters, digits, _ . - only'))),
    allowed_headers: opt(ListStringMatcher),
    clear_route_cache: opt(bool),
  }),
  oneOf(['grpc_service', 'http_service']),
)
export type ExtAuthz = v.InferOutput<typeof ExtAuthz>

/** envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute: a route or virtual host turns the check off. */
export const ExtAuthzPerRoute = v.strictObject({
  '@type': v.literal(TypeUrls.extAuthzPerRoute),
  disabled: v.literal(true),
})
export type ExtAuthzPerRoute = v.InferOutput<typeof ExtAuthzPerRoute>

/** Per-route (and per-virtual-host) filter config, keyed by the filter's name in the HCM's http_filters. */
const typedPerFilterConfig = opt(
  v.record(
    nonEmpty,
    v.variant('@type', [HTTPFault, LocalRateLimit, CorsPolicy, GlobalRateLimitPerRoute, ExtAuthzPerRoute]),
  ),
)

// === routes ===

export const RouteMatch = v.pipe(
  v.strictObject({
    prefix: opt(str),
    path: opt(str),
    safe_regex: opt(RegexMatcher),
    path_separated_prefix: opt(str),
    case_sensitive: opt(bool),
    headers: opt(v.array(HeaderMatcher)),
    query_parameters: opt(v.array(QueryParameterMatcher)),
    grpc: opt(v.strictObject({})),
  }),
  oneOf(['prefix', 'path', 'safe_regex', 'path_separated_prefix']),
)
export type RouteMatch = v.InferOutput<typeof RouteMatch>

export const HashPolicy = v.pipe(
  v.strictObject({
    header: opt(v.strictObject({ header_name: headerName })),
    cookie: opt(v.strictObject({ name: nonEmpty, ttl: opt(duration), path: opt(str) })),
    connection_properties: opt(v.strictObject({ source_ip: bool })),
    query_parameter: opt(v.strictObject({ name: nonEmpty })),
    terminal: opt(bool),
  }),
  oneOf(['header', 'cookie', 'connection_properties', 'query_parameter']),
)
export type HashPolicy = v.InferOutput<typeof HashPolicy>

/** The retry conditions Loom evaluates (Envoy's `x-envoy-retry-on` and `x-envoy-retry-grpc-on` names). */
export const RETRY_ON = [
  '5xx',
  'gateway-error',
  'reset',
  'connect-failure',
  'retriable-4xx',
  'refused-stream',
  'retriable-status-codes',
  'cancelled',
  'deadline-exceeded',
  'internal',
  'resource-exhausted',
  'unavailable',
] as const

export const RetryPolicy = v.strictObject({
  retry_on: opt(
    v.pipe(
      str,
      v.check(
        (s) =>
          s
            .split(',')
            .map((t) => t.trim())
            .every((t) => t === '' || (RETRY_ON as readonly string[]).includes(t)),
        (issue) => {
          const bad = String(issue.input)
            .split(',')
            .map((t) => t.trim())
            .filter((t) => t !== '' && !(RETRY_ON as readonly string[]).includes(t))
          return `unsupported retry condition ${bad.map((b) => `"${b}"`).join(', ')} (supported: ${RETRY_ON.join(', ')})`
        },
      ),
    ),
  ),
  num_retries: opt(uint32),
  per_try_timeout: opt(duration),
  retry_host_predicate: opt(
    v.array(
      v.strictObject({
        name: v.literal('envoy.retry_host_predicates.previous_hosts'),
        typed_config: opt(
          v.strictObject({
            '@type': v.literal(TypeUrls.previousHostsPredicate),
          }),
        ),
      }),
    ),
  ),
  host_selection_retry_max_attempts: opt(v.union([int(0, 1000), v.pipe(str, v.regex(/^\d{1,3}$/))])),
  retriable_status_codes: opt(v.array(int(100, 599))),
  retry_back_off: opt(v.strictObject({ base_interval: duration, max_interval: opt(duration) })),
})
export type RetryPolicy = v.InferOutput<typeof RetryPolicy>

export const WeightedCluster = v.strictObject({ name: nonEmpty, weight: uint32, ...headerMutations })

/**
 * RouteAction.RequestMirrorPolicy: shadow a share of the route's requests to `cluster` (fire and forget).
 * `trace_sampled` is accepted and has no effect (Loom does not trace); `cluster_header` is not supported.
 */
export const RequestMirrorPolicy = v.strictObject({
  cluster: nonEmpty,
  runtime_fraction: opt(RuntimeFractionalPercent),
  trace_sampled: opt(bool),
  disable_shadow_host_suffix_append: opt(bool),
})
export type RequestMirrorPolicy = v.InferOutput<typeof RequestMirrorPolicy>

export const RouteAction = v.pipe(
  v.strictObject({
    cluster: opt(nonEmpty),
    weighted_clusters: opt(
      v.strictObject({
        clusters: v.pipe(v.array(WeightedCluster), v.minLength(1, 'at least one cluster')),
        total_weight: opt(uint32),
      }),
    ),
    prefix_rewrite: opt(str),
    regex_rewrite: opt(v.strictObject({ pattern: RegexMatcher, substitution: str })),
    host_rewrite_literal: opt(nonEmpty),
    auto_host_rewrite: opt(bool),
    timeout: opt(duration),
    idle_timeout: opt(duration),
    hash_policy: opt(v.array(HashPolicy)),
    retry_policy: opt(RetryPolicy),
    request_mirror_policies: opt(v.array(RequestMirrorPolicy)),
  }),
  oneOf(['cluster', 'weighted_clusters']),
  v.check(
    (r) => r.prefix_rewrite === undefined || r.regex_rewrite === undefined,
    'only one of prefix_rewrite, regex_rewrite may be set',
  ),
)
export type RouteAction = v.InferOutput<typeof RouteAction>

export const RedirectAction = v.strictObject({
  https_redirect: opt(bool),
  scheme_redirect: opt(str),
  host_redirect: opt(str),
  port_redirect: opt(port),
  path_redirect: opt(str),
  prefix_rewrite: opt(str),
  response_code: opt(
    v.picklist(['MOVED_PERMANENTLY', 'FOUND', 'SEE_OTHER', 'TEMPORARY_REDIRECT', 'PERMANENT_REDIRECT']),
  ),
  strip_query: opt(bool),
})
export type RedirectAction = v.InferOutput<typeof RedirectAction>

export const DirectResponseAction = v.strictObject({ status: int(100, 599), body: opt(DataSource) })
export type DirectResponseAction = v.InferOutput<typeof DirectResponseAction>

export const Route = v.pipe(
  v.strictObject({
    name: opt(str),
    match: RouteMatch,
    route: opt(RouteAction),
    redirect: opt(RedirectAction),
    direct_response: opt(DirectResponseAction),
    ...headerMutations,
    typed_per_filter_config: typedPerFilterConfig,
    /** the span name of requests on this route (tracing) */
    decorator: opt(v.strictObject({ operation: nonEmpty, propagate: opt(bool) })),
    /** kept, not read by the router: Istio's `istio` `config` names the VirtualService (loom explain shows it) */
    metadata: opt(v.strictObject({ filter_metadata: opt(v.record(str, v.record(str, v.unknown()))) })),
  }),
  oneOf(['route', 'redirect', 'direct_response']),
)
export type Route = v.InferOutput<typeof Route>

export const VirtualHost = v.strictObject({
  name: nonEmpty,
  domains: v.pipe(v.array(nonEmpty), v.minLength(1, 'at least one domain')),
  routes: opt(v.array(Route)),
  ...headerMutations,
  typed_per_filter_config: typedPerFilterConfig,
  retry_policy: opt(RetryPolicy),
  request_mirror_policies: opt(v.array(RequestMirrorPolicy)),
  include_request_attempt_count: opt(bool),
})
export type VirtualHost = v.InferOutput<typeof VirtualHost>

export const RouteConfiguration = v.strictObject({
  name: opt(str),
  virtual_hosts: opt(v.array(VirtualHost)),
  ...headerMutations,
  validate_clusters: opt(bool),
  /** VHDS: more virtual hosts come as VirtualHost resources over ADS (on demand, src/proxy/route/on-demand.ts) */
  vhds: opt(
    v.strictObject({
      config_source: v.strictObject({ ads: opt(v.strictObject({})), resource_api_version: opt(v.picklist(['V3'])) }),
    }),
  ),
})
export type RouteConfiguration = v.InferOutput<typeof RouteConfiguration>

// === TLS ===

export const TlsCertificate = v.strictObject({ certificate_chain: DataSource, private_key: DataSource })
const tlsVersion = v.picklist(['TLS_AUTO', 'TLSv1_2', 'TLSv1_3'])
export const CertificateValidationContext = v.strictObject({
  trusted_ca: opt(DataSource),
  match_typed_subject_alt_names: opt(
    v.array(v.strictObject({ san_type: v.picklist(['DNS', 'URI', 'EMAIL', 'IP_ADDRESS']), matcher: StringMatcher })),
  ),
})
/** SdsSecretConfig: a secret by name, from the ADS stream (`sds_config.ads`) or the bootstrap (no sds_config). */
export const SdsSecretConfig = v.strictObject({
  name: nonEmpty,
  sds_config: opt(
    v.strictObject({
      ads: opt(v.strictObject({})),
      resource_api_version: opt(v.picklist(['V3'])),
      initial_fetch_timeout: opt(duration),
    }),
  ),
})
export type SdsSecretConfig = v.InferOutput<typeof SdsSecretConfig>
export const CommonTlsContext = v.strictObject({
  tls_certificates: opt(v.pipe(v.array(TlsCertificate), v.maxLength(1, 'at most one certificate'))),
  tls_certificate_sds_secret_configs: opt(
    v.pipe(v.array(SdsSecretConfig), v.maxLength(1, 'at most one certificate secret')),
  ),
  validation_context: opt(CertificateValidationContext),
  validation_context_sds_secret_config: opt(SdsSecretConfig),
  combined_validation_context: opt(
    v.strictObject({
      default_validation_context: CertificateValidationContext,
      validation_context_sds_secret_config: SdsSecretConfig,
    }),
  ),
  alpn_protocols: opt(v.array(nonEmpty)),
  tls_params: opt(
    v.strictObject({ tls_minimum_protocol_version: opt(tlsVersion), tls_maximum_protocol_version: opt(tlsVersion) }),
  ),
})
export type CommonTlsContext = v.InferOutput<typeof CommonTlsContext>

export const UpstreamTlsContext = v.strictObject({
  '@type': v.literal(TypeUrls.upstreamTls),
  common_tls_context: opt(CommonTlsContext),
  sni: opt(str),
  allow_renegotiation: opt(bool),
})
export type UpstreamTlsContext = v.InferOutput<typeof UpstreamTlsContext>

/** A cluster's transport socket: TLS (UpstreamTlsContext) or plain text (raw_buffer). */
export const UpstreamTransportSocket = v.strictObject({
  name: nonEmpty,
  typed_config: v.variant('@type', [UpstreamTlsContext, v.strictObject({ '@type': v.literal(TypeUrls.rawBuffer) })]),
})
export type UpstreamTransportSocket = v.InferOutput<typeof UpstreamTransportSocket>

export const DownstreamTlsContext = v.strictObject({
  '@type': v.literal(TypeUrls.downstreamTls),
  common_tls_context: CommonTlsContext,
  require_client_certificate: opt(bool),
})
export type DownstreamTlsContext = v.InferOutput<typeof DownstreamTlsContext>

/** extensions.transport_sockets.tls.v3.Secret: what SDS serves (bootstrap `static_resources.secrets` or ADS). */
export const Secret = v.pipe(
  v.strictObject({
    '@type': opt(str),
    name: nonEmpty,
    tls_certificate: opt(TlsCertificate),
    validation_context: opt(
      v.strictObject({
        trusted_ca: DataSource,
        match_typed_subject_alt_names: opt(CertificateValidationContext.entries.match_typed_subject_alt_names),
      }),
    ),
  }),
  oneOf(['tls_certificate', 'validation_context']),
)
export type Secret = v.InferOutput<typeof Secret>

// === access logs ===

/**
 * An access log's `log_format` (Envoy's SubstitutionFormatString): a text format (`text_format_source.inline_string`
 * or the older `text_format`) or a `json_format` object, with the command operators access-log-format.ts knows.
 */
export const LogFormat = v.pipe(
  v.strictObject({
    text_format: opt(str),
    text_format_source: opt(v.strictObject({ inline_string: str })),
    json_format: opt(v.record(str, v.unknown())),
    omit_empty_values: opt(bool),
    content_type: opt(str),
  }),
  oneOf(['text_format', 'text_format_source', 'json_format']),
  v.rawCheck(({ dataset, addIssue }) => {
    if (!dataset.typed) return
    for (const message of compileLogFormat(dataset.value).errors) addIssue({ message })
  }),
)
export type LogFormat = v.InferOutput<typeof LogFormat>

export const AccessLog = v.strictObject({
  name: nonEmpty,
  typed_config: v.variant('@type', [
    v.strictObject({ '@type': v.literal(TypeUrls.stdoutLog), log_format: opt(LogFormat) }),
    v.strictObject({ '@type': v.literal(TypeUrls.stderrLog), log_format: opt(LogFormat) }),
    v.strictObject({ '@type': v.literal(TypeUrls.fileLog), path: nonEmpty, log_format: opt(LogFormat) }),
  ]),
})
export type AccessLog = v.InferOutput<typeof AccessLog>

// === tracing ===

/** envoy.type.v3.Percent: a double from 0 to 100; `{}` is 0 (proto3 leaves a zero value off the wire). */
const Percent100 = v.strictObject({
  value: opt(
    v.pipe(v.number(), v.minValue(0, 'must be between 0 and 100'), v.maxValue(100, 'must be between 0 and 100')),
  ),
})

/** envoy.type.tracing.v3.CustomTag: a span tag from a literal, an environment variable or a request header. */
export const CustomTag = v.pipe(
  v.strictObject({
    tag: nonEmpty,
    literal: opt(v.strictObject({ value: opt(str) })),
    environment: opt(v.strictObject({ name: nonEmpty, default_value: opt(str) })),
    request_header: opt(v.strictObject({ name: headerName, default_value: opt(str) })),
  }),
  oneOf(['literal', 'environment', 'request_header']),
)

/** envoy.config.trace.v3.OpenTelemetryConfig: OTLP/HTTP export (gRPC export is not built). */
export const OpenTelemetryConfig = v.pipe(
  v.strictObject({
    '@type': v.literal(TypeUrls.openTelemetryTracer),
    grpc_service: opt(v.custom<never>(() => false, 'OTLP over gRPC is not supported; use http_service')),
    http_service: opt(
      v.strictObject({
        http_uri: v.strictObject({
          uri: v.pipe(
            nonEmpty,
            v.check((u) => /^https?:\/\/[^/]+/.test(u), 'must be an http:// or https:// URL'),
          ),
          cluster: nonEmpty,
          timeout: opt(duration),
        }),
        request_headers_to_add: opt(
          v.array(v.strictObject({ header: v.strictObject({ key: headerName, value: headerValue }) })),
        ),
      }),
    ),
    service_name: opt(str),
    max_cache_size: opt(uint32),
  }),
  v.check((c) => c.http_service !== undefined, 'http_service is required'),
)
export type OpenTelemetryConfig = v.InferOutput<typeof OpenTelemetryConfig>

/** HttpConnectionManager.Tracing (src/proxy/tracing/). */
export const Tracing = v.strictObject({
  client_sampling: opt(Percent100),
  random_sampling: opt(Percent100),
  overall_sampling: opt(Percent100),
  verbose: opt(bool),
  max_path_tag_length: opt(int(1, 65535)),
  custom_tags: opt(v.array(CustomTag)),
  provider: opt(v.strictObject({ name: nonEmpty, typed_config: OpenTelemetryConfig })),
  spawn_upstream_span: opt(bool),
})
export type Tracing = v.InferOutput<typeof Tracing>

// === network filters ===

/**
 * Istio's stats filter config (`stats.PluginConfig`), for the HTTP filter and the network filter alike: the fields
 * Loom reads. `disable_host_header_fallback`: no destination service from the authority when the cluster does
 * not name one. `tcp_reporting_duration`: how often open TCP connections' bytes are added (default 15s).
 */
export const IstioStats = v.strictObject({
  '@type': v.literal(TypeUrls.istioStats),
  disable_host_header_fallback: opt(bool),
  tcp_reporting_duration: opt(duration),
})
export type IstioStats = v.InferOutput<typeof IstioStats>

/**
 * Istio's TCP metadata exchange config (`envoy.tcp.metadataexchange.config.MetadataExchange`), as a network filter
 * before a tcp_proxy (the downstream side) or in a cluster's `filters` (the upstream side): `protocol` is the ALPN
 * the exchange runs under (Istio's `istio-peer-exchange`). See src/proxy/telemetry/tcp-exchange.ts.
 */
export const IstioMetadataExchange = v.strictObject({
  '@type': v.literal(TypeUrls.metadataExchange),
  protocol: nonEmpty,
})
export type IstioMetadataExchange = v.InferOutput<typeof IstioMetadataExchange>

/**
 * Loom's decision record filter (loom.filters.http.explain.v1alpha1.Explain): a request with `x-loom-explain` from
 * a caller one of `principals` matches is recorded (access log `loom_decisions`, response `x-loom-explain-record`);
 * from anyone else the header is removed. No principals: nobody may ask.
 */
export const Explain = v.strictObject({
  '@type': v.literal(TypeUrls.explain),
  principals: opt(v.array(RbacPrincipal)),
  label: opt(str),
})
export type Explain = v.InferOutput<typeof Explain>

export const HttpFilter = v.strictObject({
  name: nonEmpty,
  typed_config: v.variant('@type', [
    v.strictObject({ '@type': v.literal(TypeUrls.router) }),
    HTTPFault,
    LocalRateLimit,
    Cors,
    GlobalRateLimit,
    JwtAuthentication,

    Rbac,
    ExtAuthz,
    Explain,
    IstioStats,
  ]),
})
export type HttpFilter = v.InferOutput<typeof HttpFilter>

export const Http2ProtocolOptions = v.strictObject({
  max_concurrent_streams: opt(int(1, 2147483647)),
  initial_stream_window_size: opt(int(65535, 2147483647)),
  initial_connection_window_size: opt(int(65535, 2147483647)),
  connection_keepalive: opt(v.strictObject({ interval: duration, timeout: duration })),
})

/** Where dynamic resources come from: the ADS stream (the only source Loom supports). */
export const ConfigSource = v.strictObject({
  ads: opt(v.strictObject({})),
  resource_api_version: opt(v.picklist(['V3'])),
  initial_fetch_timeout: opt(duration),
})

export const HttpConnectionManager = v.pipe(
  v.strictObject({
    '@type': v.literal(TypeUrls.hcm),
    stat_prefix: nonEmpty,
    codec_type: opt(v.picklist(['AUTO', 'HTTP1', 'HTTP2'])),
    route_config: opt(RouteConfiguration),
    rds: opt(v.strictObject({ config_source: ConfigSource, route_config_name: nonEmpty })),
    http_filters: opt(v.array(HttpFilter)),
    access_log: opt(v.array(AccessLog)),
    tracing: opt(Tracing),
    request_id_extension: opt(
      v.strictObject({
        typed_config: v.strictObject({
          '@type': v.literal(TypeUrls.uuidRequestId),
          pack_trace_reason: opt(bool),
          use_request_id_for_trace_sampling: opt(bool),
        }),
      }),
    ),
    common_http_protocol_options: opt(
      v.strictObject({
        idle_timeout: opt(duration),
        max_connection_duration: opt(duration),
        max_headers_count: opt(int(1, 10000)),
        headers_with_underscores_action: opt(v.picklist(['ALLOW', 'REJECT_REQUEST', 'DROP_HEADER'])),
      }),
    ),
    http2_protocol_options: opt(Http2ProtocolOptions),
    stream_idle_timeout: opt(duration),
    request_timeout: opt(duration),
    request_headers_timeout: opt(duration),
    max_request_headers_kb: opt(int(1, 8192)),
    use_remote_address: opt(bool),
    xff_num_trusted_hops: opt(uint32),
    skip_xff_append: opt(bool),
    internal_address_config: opt(v.strictObject({ unix_sockets: opt(bool), cidr_ranges: opt(v.array(CidrRange)) })),
    generate_request_id: opt(bool),
    preserve_external_request_id: opt(bool),
    server_name: opt(str),
    upgrade_configs: opt(v.array(v.strictObject({ upgrade_type: nonEmpty, enabled: opt(bool) }))),
    drain_timeout: opt(duration),
    normalize_path: opt(bool),
    merge_slashes: opt(bool),
    forward_client_cert_details: opt(
      v.picklist(['SANITIZE', 'FORWARD_ONLY', 'APPEND_FORWARD', 'SANITIZE_SET', 'ALWAYS_FORWARD_ONLY']),
    ),
    set_current_client_cert_details: opt(
      v.strictObject({ subject: opt(bool), cert: opt(bool), chain: opt(bool), dns: opt(bool), uri: opt(bool) }),
    ),
    path_with_escaped_slashes_action: opt(
      v.picklist([
        'IMPLEMENTATION_SPECIFIC_DEFAULT',
        'KEEP_UNCHANGED',
        'REJECT_REQUEST',
        'UNESCAPE_AND_REDIRECT',
        'UNESCAPE_AND_FORWARD',
      ]),
    ),
  }),
  oneOf(['route_config', 'rds']),
)
export type HttpConnectionManager = v.InferOutput<typeof HttpConnectionManager>

export const TcpProxy = v.pipe(
  v.strictObject({
    '@type': v.literal(TypeUrls.tcpProxy),
    stat_prefix: nonEmpty,
    cluster: opt(nonEmpty),
    weighted_clusters: opt(
      v.strictObject({
        clusters: v.pipe(
          v.array(v.strictObject({ name: nonEmpty, weight: uint32 })),
          v.minLength(1, 'at least one cluster'),
        ),
      }),
    ),
    idle_timeout: opt(duration),
    access_log: opt(v.array(AccessLog)),
  }),
  oneOf(['cluster', 'weighted_clusters']),
)
export type TcpProxy = v.InferOutput<typeof TcpProxy>

/**
 * envoy.extensions.filters.network.rbac.v3.RBAC: the RBAC engine on a connection, before the chain's terminal
 * filter. `matcher` / `shadow_matcher` (the xDS matcher API) are not supported.
 */
export const NetworkRbac = v.strictObject({
  '@type': v.literal(TypeUrls.networkRbac),
  stat_prefix: nonEmpty,
  rules: opt(RbacRules),
  shadow_rules: opt(RbacRules),
  shadow_rules_stat_prefix: opt(v.pipe(str, v.regex(/^[\w.-]*$/, 'letters, digits, _ . - only'))),
  enforcement_type: opt(v.picklist(['ONE_TIME_ON_FIRST_BYTE', 'CONTINUOUS'])),
})
export type NetworkRbac = v.InferOutput<typeof NetworkRbac>

export const NetworkFilter = v.strictObject({
  name: nonEmpty,
  typed_config: v.variant('@type', [HttpConnectionManager, TcpProxy, NetworkRbac, IstioStats, IstioMetadataExchange]),
})
export type NetworkFilter = v.InferOutput<typeof NetworkFilter>

/** The chain's last filter: the one that takes the connection (HTTP connection manager or TCP proxy). */
export type TerminalNetworkFilter = HttpConnectionManager | TcpProxy

const TERMINAL = 'the last network filter must be http_connection_manager or tcp_proxy'
/** Network RBAC filters, then exactly one terminal filter (Envoy's order: filters run first to last). */
const networkFilters = v.pipe(
  v.array(NetworkFilter),
  v.minLength(1, `at least one network filter: ${TERMINAL}`),
  v.check((list) => {
    const t = list[list.length - 1]?.typed_config['@type']
    return list.length === 0 || t === TypeUrls.hcm || t === TypeUrls.tcpProxy
  }, `${TERMINAL}`),
  v.check(
    (list) =>
      list
        .slice(0, -1)
        .every((f) => f.typed_config['@type'] !== TypeUrls.hcm && f.typed_config['@type'] !== TypeUrls.tcpProxy),
    'only network RBAC filters (envoy.filters.network.rbac), istio.stats and istio.metadata_exchange may come before the last filter',
  ),
  v.check(
    (list) =>
      list.every(
        (f) =>
          f.typed_config['@type'] !== TypeUrls.istioStats ||
          list[list.length - 1]!.typed_config['@type'] === TypeUrls.tcpProxy,
      ),
    "the istio.stats network filter needs tcp_proxy as the last filter (HTTP metrics are the HTTP filter's)",
  ),
  v.check(
    (list) =>
      list.every(
        (f) =>
          f.typed_config['@type'] !== TypeUrls.metadataExchange ||
          list[list.length - 1]!.typed_config['@type'] === TypeUrls.tcpProxy,
      ),
    'the istio.metadata_exchange network filter needs tcp_proxy as the last filter (HTTP peers exchange in headers)',
  ),
  v.check(
    (list) => list.filter((f) => f.typed_config['@type'] === TypeUrls.metadataExchange).length <= 1,
    'at most one istio.metadata_exchange network filter per chain',
  ),
)

// === listeners ===

export const FilterChain = v.strictObject({
  name: opt(str),
  filter_chain_match: opt(
    v.strictObject({
      server_names: opt(v.array(nonEmpty)),
      transport_protocol: opt(v.picklist(['raw_buffer', 'tls'])),
      application_protocols: opt(v.array(nonEmpty)),
    }),
  ),
  filters: networkFilters,
  transport_socket: opt(v.strictObject({ name: nonEmpty, typed_config: DownstreamTlsContext })),
})
export type FilterChain = v.InferOutput<typeof FilterChain>

export const Listener = v.strictObject({
  '@type': opt(str),
  name: nonEmpty,
  address: Address,
  filter_chains: v.pipe(v.array(FilterChain), v.minLength(1, 'at least one filter chain')),
  listener_filters: opt(
    v.array(
      v.strictObject({
        name: nonEmpty,
        typed_config: v.variant('@type', [
          v.strictObject({ '@type': v.literal(TypeUrls.tlsInspector) }),
          v.strictObject({ '@type': v.literal(TypeUrls.httpInspector) }),
        ]),
      }),
    ),
  ),
  per_connection_buffer_limit_bytes: opt(uint32),
  /** INBOUND / OUTBOUND: which side of its workload the listener is (Istio's stats filters and tracing read it) */
  traffic_direction: opt(v.picklist(['UNSPECIFIED', 'INBOUND', 'OUTBOUND'])),
  /**
   * A connection iptables redirected here goes to the listener with `bind_to_port: false` at its original
   * destination (SO_ORIGINAL_DST; address and port, else 0.0.0.0 and port); without one, this listener's chains
   * take it (Istio's virtualOutbound and virtualInbound listeners)
   */
  use_original_dst: opt(bool),
  /** false: the listener binds nothing and only takes connections a `use_original_dst` listener hands over */
  bind_to_port: opt(bool),
})
export type Listener = v.InferOutput<typeof Listener>

// === clusters ===

/**
 * config.core.v3.Metadata: `filter_metadata` by filter namespace (Structs). The proxy reads
 * `envoy.transport_socket_match` (the cluster's transport_socket_matches); other namespaces are kept, unused.
 */
export const Metadata = v.strictObject({
  filter_metadata: opt(v.record(str, v.record(str, v.unknown()))),
  typed_filter_metadata: opt(v.record(str, v.record(str, v.unknown()))),
})
export type Metadata = v.InferOutput<typeof Metadata>

export const LbEndpoint = v.strictObject({
  endpoint: v.strictObject({ address: Address, hostname: opt(str) }),
  health_status: opt(v.picklist(['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED'])),
  metadata: opt(Metadata),
  load_balancing_weight: opt(int(1, 0xffffffff)),
})
export type LbEndpoint = v.InferOutput<typeof LbEndpoint>

export const Locality = v.strictObject({ region: opt(str), zone: opt(str), sub_zone: opt(str) })
export type Locality = v.InferOutput<typeof Locality>

export const LocalityLbEndpoints = v.strictObject({
  locality: opt(Locality),
  lb_endpoints: v.array(LbEndpoint),
  metadata: opt(Metadata),
  load_balancing_weight: opt(int(1, 0xffffffff)),
  priority: opt(int(0, 127)),
})
export type LocalityLbEndpoints = v.InferOutput<typeof LocalityLbEndpoints>

export const ClusterLoadAssignment = v.strictObject({
  '@type': opt(str),
  cluster_name: nonEmpty,
  endpoints: opt(v.array(LocalityLbEndpoints)),
})
export type ClusterLoadAssignment = v.InferOutput<typeof ClusterLoadAssignment>

const HttpProtocolOptionsExt = v.strictObject({
  '@type': v.literal(TypeUrls.httpProtocolOptions),
  explicit_http_config: opt(
    v.pipe(
      v.strictObject({
        http_protocol_options: opt(v.strictObject({})),
        http2_protocol_options: opt(Http2ProtocolOptions),
      }),
      oneOf(['http_protocol_options', 'http2_protocol_options']),
    ),
  ),
  common_http_protocol_options: opt(
    v.strictObject({ idle_timeout: opt(duration), max_requests_per_connection: opt(uint32) }),
  ),
})

/** circuit_breakers.thresholds[]: one per routing priority (DEFAULT, HIGH), each at most once. */
export const CircuitBreakerThresholds = v.strictObject({
  priority: opt(v.picklist(['DEFAULT', 'HIGH'])),
  max_connections: opt(uint32),
  max_pending_requests: opt(uint32),
  max_requests: opt(uint32),
  max_retries: opt(uint32),
  /** Retries in flight as a share of the cluster's requests; when set, max_retries is ignored. */
  retry_budget: opt(
    v.strictObject({
      /** Envoy's type.v3.Percent (0..100); default 20. */
      budget_percent: opt(
        v.strictObject({
          value: opt(v.pipe(v.number(), v.minValue(0, 'must be 0..100'), v.maxValue(100, 'must be 0..100'))),
        }),
      ),
      /** default 3 */
      min_retry_concurrency: opt(uint32),
    }),
  ),
  track_remaining: opt(bool),
})
export type CircuitBreakerThresholds = v.InferOutput<typeof CircuitBreakerThresholds>

const percent = int(0, 100)

/** Envoy's cluster.v3.OutlierDetection (every field; defaults are applied by the proxy). */
export const OutlierDetection = v.strictObject({
  consecutive_5xx: opt(uint32),
  consecutive_gateway_failure: opt(uint32),
  consecutive_local_origin_failure: opt(uint32),
  split_external_local_origin_errors: opt(bool),
  interval: opt(duration),
  base_ejection_time: opt(duration),
  max_ejection_time: opt(duration),
  max_ejection_time_jitter: opt(duration),
  max_ejection_percent: opt(percent),
  enforcing_consecutive_5xx: opt(percent),
  enforcing_consecutive_gateway_failure: opt(percent),
  enforcing_consecutive_local_origin_failure: opt(percent),
  enforcing_success_rate: opt(percent),
  enforcing_local_origin_success_rate: opt(percent),
  success_rate_minimum_hosts: opt(uint32),
  success_rate_request_volume: opt(uint32),
  success_rate_stdev_factor: opt(uint32),
  failure_percentage_threshold: opt(percent),
  enforcing_failure_percentage: opt(percent),
  enforcing_failure_percentage_local_origin: opt(percent),
  failure_percentage_minimum_hosts: opt(uint32),
  failure_percentage_request_volume: opt(uint32),
})
export type OutlierDetection = v.InferOutput<typeof OutlierDetection>

/** cluster.v3.Cluster.CommonLbConfig: locality-weighted load balancing (the other fields are not supported). */
export const CommonLbConfig = v.strictObject({ locality_weighted_lb_config: opt(v.strictObject({})) })
export type CommonLbConfig = v.InferOutput<typeof CommonLbConfig>
/** type.v3.Int64Range: `[start, end)`, both required. */
const Int64Range = v.strictObject({ start: int64, end: int64 })

/** HealthCheck.Payload: `text` is hex (two digits per byte), `binary` base64 (proto JSON bytes). */
const HealthCheckPayload = v.pipe(
  v.strictObject({
    text: opt(v.pipe(str, v.regex(/^(?:[0-9A-Fa-f]{2})+$/, 'must be hex digits, two per byte'))),
    binary: opt(str),
  }),
  oneOf(['text', 'binary']),
)

/** config.core.v3.HealthCheck: one active health checker of a cluster (HTTP, TCP or gRPC). */
export const HealthCheck = v.pipe(
  v.strictObject({
    timeout: duration,
    interval: duration,
    initial_jitter: opt(duration),
    interval_jitter: opt(duration),
    interval_jitter_percent: opt(uint32),
    unhealthy_threshold: uint32,
    healthy_threshold: uint32,
    reuse_connection: opt(bool),
    http_health_check: opt(
      v.strictObject({
        host: opt(headerValue),
        path: v.pipe(nonEmpty, headerValue),
        request_headers_to_add: opt(v.pipe(v.array(HeaderValueOption), v.maxLength(1000, 'at most 1000'))),
        request_headers_to_remove: opt(v.array(headerName)),
        expected_statuses: opt(v.array(Int64Range)),
        retriable_statuses: opt(v.array(Int64Range)),
        codec_client_type: opt(v.picklist(['HTTP1', 'HTTP2'])),
        service_name_matcher: opt(StringMatcher),
        method: opt(
          v.picklist(['METHOD_UNSPECIFIED', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'PATCH']),
        ),
      }),
    ),
    tcp_health_check: opt(v.strictObject({ send: opt(HealthCheckPayload), receive: opt(v.array(HealthCheckPayload)) })),
    grpc_health_check: opt(v.strictObject({ service_name: opt(str), authority: opt(headerValue) })),
    no_traffic_interval: opt(duration),
    no_traffic_healthy_interval: opt(duration),
    unhealthy_interval: opt(duration),
    unhealthy_edge_interval: opt(duration),
    healthy_edge_interval: opt(duration),
    always_log_health_check_failures: opt(bool),
    always_log_health_check_success: opt(bool),
  }),
  oneOf(['http_health_check', 'tcp_health_check', 'grpc_health_check']),
)
export type HealthCheck = v.InferOutput<typeof HealthCheck>

/**
 * cluster.v3.Cluster.SlowStartConfig (and load_balancing_policies.common.v3.SlowStartConfig): a new host's weight
 * ramps up over `slow_start_window`. `aggression` is a RuntimeDouble: Loom has no runtime, so `default_value`
 * applies (a value that is not above 0 means 1.0, as in Envoy).
 */
export const SlowStartConfig = v.strictObject({
  slow_start_window: opt(duration),
  aggression: opt(v.strictObject({ default_value: opt(v.number()), runtime_key: opt(str) })),
  min_weight_percent: opt(v.strictObject({ value: opt(v.pipe(v.number(), v.minValue(0), v.maxValue(100))) })),
})
export type SlowStartConfig = v.InferOutput<typeof SlowStartConfig>

/** Loom's peak-EWMA load balancer (loom.config.lb.v1.PeakEwma). */
export const PeakEwmaConfig = v.strictObject({
  '@type': v.literal(TypeUrls.peakEwma),
  decay_time: opt(duration),
  default_rtt: opt(duration),
})
export type PeakEwmaConfig = v.InferOutput<typeof PeakEwmaConfig>

/**
 * Cluster.load_balancing_policy: policies in order of preference. Every entry must be one Loom supports (so the
 * first one is what Loom runs); later entries are there for clients that do not know the earlier ones.
 */
export const LoadBalancingPolicy = v.strictObject({
  policies: v.pipe(
    v.array(
      v.strictObject({
        typed_extension_config: v.strictObject({
          name: nonEmpty,
          typed_config: v.variant('@type', [
            PeakEwmaConfig,
            v.strictObject({ '@type': v.literal(TypeUrls.roundRobinLb), slow_start_config: opt(SlowStartConfig) }),
            v.strictObject({
              '@type': v.literal(TypeUrls.leastRequestLb),
              choice_count: opt(int(2, 100)),
              slow_start_config: opt(SlowStartConfig),
            }),
          ]),
        }),
      }),
    ),
    v.minLength(1, 'must list at least one policy'),
  ),
})
export type LoadBalancingPolicy = v.InferOutput<typeof LoadBalancingPolicy>

export const Cluster = v.strictObject({
  '@type': opt(str),
  name: nonEmpty,
  /**
   * `filter_metadata.istio.services`: the cluster's service, for Istio's metrics; `istio.config`: the
   * DestinationRule that shaped it (loom explain shows it); other namespaces kept, unused
   */
  metadata: opt(Metadata),
  /** ORIGINAL_DST: no hosts of its own; a TCP proxy connects to the downstream's original destination */
  type: opt(v.picklist(['STATIC', 'STRICT_DNS', 'EDS', 'ORIGINAL_DST'])),
  eds_cluster_config: opt(v.strictObject({ eds_config: opt(ConfigSource), service_name: opt(nonEmpty) })),
  connect_timeout: opt(duration),
  lb_policy: opt(v.picklist(['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'RING_HASH', 'MAGLEV', 'CLUSTER_PROVIDED'])),
  load_assignment: opt(ClusterLoadAssignment),
  http2_protocol_options: opt(Http2ProtocolOptions),
  typed_extension_protocol_options: opt(
    v.strictObject({ 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': HttpProtocolOptionsExt }),
  ),
  transport_socket: opt(UpstreamTransportSocket),
  /**
   * The first entry whose `match` is a subset of a host's `envoy.transport_socket_match` metadata (the endpoint's,
   * else its locality's) gives that host's transport socket; a host no entry matches gets `transport_socket`.
   */
  transport_socket_matches: opt(
    v.array(
      v.strictObject({
        name: nonEmpty,
        match: opt(v.record(str, v.unknown())),
        transport_socket: UpstreamTransportSocket,
      }),
    ),
  ),
  dns_refresh_rate: opt(duration),
  dns_lookup_family: opt(v.picklist(['AUTO', 'V4_ONLY', 'V6_ONLY', 'V4_PREFERRED', 'ALL'])),
  respect_dns_ttl: opt(bool),
  least_request_lb_config: opt(
    v.strictObject({ choice_count: opt(int(2, 100)), slow_start_config: opt(SlowStartConfig) }),
  ),
  round_robin_lb_config: opt(v.strictObject({ slow_start_config: opt(SlowStartConfig) })),
  load_balancing_policy: opt(LoadBalancingPolicy),
  ring_hash_lb_config: opt(
    v.strictObject({
      minimum_ring_size: opt(int(1, 8388608)),
      maximum_ring_size: opt(int(1, 8388608)),
      hash_function: opt(v.picklist(['XX_HASH'])),
    }),
  ),
  maglev_lb_config: opt(v.strictObject({ table_size: opt(int(1, 5000011)) })),
  per_connection_buffer_limit_bytes: opt(uint32),
  max_requests_per_connection: opt(uint32),
  circuit_breakers: opt(v.strictObject({ thresholds: opt(v.array(CircuitBreakerThresholds)) })),
  outlier_detection: opt(OutlierDetection),
  common_lb_config: opt(CommonLbConfig),
  health_checks: opt(v.pipe(v.array(HealthCheck), v.maxLength(1, 'at most one health checker (as Envoy)'))),
  /**
   * Upstream network filters: Istio's metadata exchange (at most one), which the TCP proxy runs on the connections
   * it makes to this cluster (HTTP connections exchange in headers).
   */
  filters: opt(
    v.pipe(
      v.array(v.strictObject({ name: nonEmpty, typed_config: IstioMetadataExchange })),
      v.maxLength(1, 'at most one upstream filter (istio.metadata_exchange)'),
    ),
  ),
})
export type Cluster = v.InferOutput<typeof Cluster>

// === bootstrap ===

export const Bootstrap = v.strictObject({
  node: opt(
    v.strictObject({
      id: opt(str),
      cluster: opt(str),
      metadata: opt(v.record(str, v.unknown())),
      locality: opt(Locality),
    }),
  ),
  admin: opt(v.strictObject({ address: Address, access_log: opt(v.array(AccessLog)) })),
  static_resources: opt(
    v.strictObject({
      listeners: opt(v.array(Listener)),
      clusters: opt(v.array(Cluster)),
      secrets: opt(v.array(Secret)),
    }),
  ),
})
export type Bootstrap = v.InferOutput<typeof Bootstrap>
