/**
 * The subset of Envoy's v3 API that Loom supports, with Envoy's field names (snake_case, as in Envoy's YAML).
 * These are the proxy's configuration types, whether they come from a static bootstrap or from xDS.
 * Anything not declared here is rejected with its path: Loom never silently ignores a field.
 */
import { duration, port, requireOneOf, uint32, z } from './schema.js'

const T = 'type.googleapis.com/'
export const TypeUrls = {
  hcm: `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`,
  tcpProxy: `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`,
  router: `${T}envoy.extensions.filters.http.router.v3.Router`,
  downstreamTls: `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`,
  upstreamTls: `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
  httpProtocolOptions: `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
  stdoutLog: `${T}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`,
  stderrLog: `${T}envoy.extensions.access_loggers.stream.v3.StderrAccessLog`,
  fileLog: `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`,
  tlsInspector: `${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`,
  httpInspector: `${T}envoy.extensions.filters.listener.http_inspector.v3.HttpInspector`,
} as const

// === core ===

export const SocketAddress = z.strictObject({
  address: z.string().min(1),
  port_value: port,
  protocol: z.enum(['TCP']).optional(),
  ipv4_compat: z.boolean().optional(),
})
export const Address = z.strictObject({ socket_address: SocketAddress })
export type Address = z.infer<typeof Address>

export const DataSource = z
  .strictObject({
    filename: z.string().min(1).optional(),
    inline_string: z.string().optional(),
    inline_bytes: z.string().optional(),
  })
  .superRefine(requireOneOf(['filename', 'inline_string', 'inline_bytes']))
export type DataSource = z.infer<typeof DataSource>

const headerName = z
  .string()
  .min(1)
  .regex(/^:?[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, 'must be a valid HTTP header name')
const headerValue = z.string().regex(/^[^\r\n\0]*$/, 'must not contain CR, LF or NUL')

export const HeaderValueOption = z.strictObject({
  header: z.strictObject({ key: headerName, value: headerValue }),
  append: z.boolean().optional(),
  append_action: z
    .enum(['APPEND_IF_EXISTS_OR_ADD', 'ADD_IF_ABSENT', 'OVERWRITE_IF_EXISTS_OR_ADD', 'OVERWRITE_IF_EXISTS'])
    .optional(),
  keep_empty_value: z.boolean().optional(),
})
export type HeaderValueOption = z.infer<typeof HeaderValueOption>

const headerMutations = {
  request_headers_to_add: z.array(HeaderValueOption).optional(),
  request_headers_to_remove: z.array(headerName).optional(),
  response_headers_to_add: z.array(HeaderValueOption).optional(),
  response_headers_to_remove: z.array(headerName).optional(),
}

// === matchers ===

export const RegexMatcher = z.strictObject({
  regex: z.string(),
  google_re2: z.strictObject({ max_program_size: uint32.optional() }).optional(),
})
export type RegexMatcher = z.infer<typeof RegexMatcher>

export const StringMatcher = z
  .strictObject({
    exact: z.string().optional(),
    prefix: z.string().min(1).optional(),
    suffix: z.string().min(1).optional(),
    contains: z.string().min(1).optional(),
    safe_regex: RegexMatcher.optional(),
    ignore_case: z.boolean().optional(),
  })
  .superRefine(requireOneOf(['exact', 'prefix', 'suffix', 'contains', 'safe_regex']))
export type StringMatcher = z.infer<typeof StringMatcher>

const int64 = z.union([z.number().int(), z.string().regex(/^-?\d+$/).transform(Number)])

export const HeaderMatcher = z
  .strictObject({
    name: headerName,
    exact_match: z.string().optional(),
    safe_regex_match: RegexMatcher.optional(),
    range_match: z.strictObject({ start: int64, end: int64 }).optional(),
    present_match: z.boolean().optional(),
    prefix_match: z.string().min(1).optional(),
    suffix_match: z.string().min(1).optional(),
    contains_match: z.string().min(1).optional(),
    string_match: StringMatcher.optional(),
    invert_match: z.boolean().optional(),
    treat_missing_header_as_empty: z.boolean().optional(),
  })
  .superRefine(
    requireOneOf(
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
export type HeaderMatcher = z.infer<typeof HeaderMatcher>

export const QueryParameterMatcher = z
  .strictObject({
    name: z.string().min(1),
    string_match: StringMatcher.optional(),
    present_match: z.boolean().optional(),
  })
  .superRefine(requireOneOf(['string_match', 'present_match'], false))
export type QueryParameterMatcher = z.infer<typeof QueryParameterMatcher>

// === routes ===

export const RouteMatch = z
  .strictObject({
    prefix: z.string().optional(),
    path: z.string().optional(),
    safe_regex: RegexMatcher.optional(),
    path_separated_prefix: z.string().optional(),
    case_sensitive: z.boolean().optional(),
    headers: z.array(HeaderMatcher).optional(),
    query_parameters: z.array(QueryParameterMatcher).optional(),
    grpc: z.strictObject({}).optional(),
  })
  .superRefine(requireOneOf(['prefix', 'path', 'safe_regex', 'path_separated_prefix']))
export type RouteMatch = z.infer<typeof RouteMatch>

export const HashPolicy = z
  .strictObject({
    header: z.strictObject({ header_name: headerName }).optional(),
    cookie: z.strictObject({ name: z.string().min(1), ttl: duration.optional(), path: z.string().optional() }).optional(),
    connection_properties: z.strictObject({ source_ip: z.boolean() }).optional(),
    query_parameter: z.strictObject({ name: z.string().min(1) }).optional(),
    terminal: z.boolean().optional(),
  })
  .superRefine(requireOneOf(['header', 'cookie', 'connection_properties', 'query_parameter']))
export type HashPolicy = z.infer<typeof HashPolicy>

export const WeightedCluster = z.strictObject({
  name: z.string().min(1),
  weight: uint32,
  ...headerMutations,
})

export const RouteAction = z
  .strictObject({
    cluster: z.string().min(1).optional(),
    weighted_clusters: z
      .strictObject({ clusters: z.array(WeightedCluster).min(1), total_weight: uint32.optional() })
      .optional(),
    prefix_rewrite: z.string().optional(),
    regex_rewrite: z.strictObject({ pattern: RegexMatcher, substitution: z.string() }).optional(),
    host_rewrite_literal: z.string().min(1).optional(),
    auto_host_rewrite: z.boolean().optional(),
    timeout: duration.optional(),
    idle_timeout: duration.optional(),
    hash_policy: z.array(HashPolicy).optional(),
  })
  .superRefine(requireOneOf(['cluster', 'weighted_clusters']))
  .superRefine((v, ctx) => {
    if (v.prefix_rewrite !== undefined && v.regex_rewrite !== undefined) {
      ctx.addIssue({ code: 'custom', message: 'only one of prefix_rewrite, regex_rewrite may be set' })
    }
  })
export type RouteAction = z.infer<typeof RouteAction>

export const RedirectAction = z.strictObject({
  https_redirect: z.boolean().optional(),
  scheme_redirect: z.string().optional(),
  host_redirect: z.string().optional(),
  port_redirect: port.optional(),
  path_redirect: z.string().optional(),
  prefix_rewrite: z.string().optional(),
  response_code: z.enum(['MOVED_PERMANENTLY', 'FOUND', 'SEE_OTHER', 'TEMPORARY_REDIRECT', 'PERMANENT_REDIRECT']).optional(),
  strip_query: z.boolean().optional(),
})
export type RedirectAction = z.infer<typeof RedirectAction>

export const DirectResponseAction = z.strictObject({
  status: z.number().int().min(100).max(599),
  body: DataSource.optional(),
})
export type DirectResponseAction = z.infer<typeof DirectResponseAction>

export const Route = z
  .strictObject({
    name: z.string().optional(),
    match: RouteMatch,
    route: RouteAction.optional(),
    redirect: RedirectAction.optional(),
    direct_response: DirectResponseAction.optional(),
    ...headerMutations,
  })
  .superRefine(requireOneOf(['route', 'redirect', 'direct_response']))
export type Route = z.infer<typeof Route>

export const VirtualHost = z.strictObject({
  name: z.string().min(1),
  domains: z.array(z.string().min(1)).min(1),
  routes: z.array(Route).optional(),
  ...headerMutations,
})
export type VirtualHost = z.infer<typeof VirtualHost>

export const RouteConfiguration = z.strictObject({
  name: z.string().optional(),
  virtual_hosts: z.array(VirtualHost).optional(),
  ...headerMutations,
  validate_clusters: z.boolean().optional(),
})
export type RouteConfiguration = z.infer<typeof RouteConfiguration>

// === TLS ===

export const TlsCertificate = z.strictObject({ certificate_chain: DataSource, private_key: DataSource })
export const CertificateValidationContext = z.strictObject({
  trusted_ca: DataSource.optional(),
  match_typed_subject_alt_names: z
    .array(z.strictObject({ san_type: z.enum(['DNS', 'URI', 'EMAIL', 'IP_ADDRESS']), matcher: StringMatcher }))
    .optional(),
})
export const CommonTlsContext = z.strictObject({
  tls_certificates: z.array(TlsCertificate).max(1).optional(),
  validation_context: CertificateValidationContext.optional(),
  alpn_protocols: z.array(z.string().min(1)).optional(),
  tls_params: z
    .strictObject({
      tls_minimum_protocol_version: z.enum(['TLS_AUTO', 'TLSv1_2', 'TLSv1_3']).optional(),
      tls_maximum_protocol_version: z.enum(['TLS_AUTO', 'TLSv1_2', 'TLSv1_3']).optional(),
    })
    .optional(),
})
export type CommonTlsContext = z.infer<typeof CommonTlsContext>

export const UpstreamTlsContext = z.strictObject({
  '@type': z.literal(TypeUrls.upstreamTls),
  common_tls_context: CommonTlsContext.optional(),
  sni: z.string().optional(),
  allow_renegotiation: z.boolean().optional(),
})
export type UpstreamTlsContext = z.infer<typeof UpstreamTlsContext>

export const DownstreamTlsContext = z.strictObject({
  '@type': z.literal(TypeUrls.downstreamTls),
  common_tls_context: CommonTlsContext,
  require_client_certificate: z.boolean().optional(),
})
export type DownstreamTlsContext = z.infer<typeof DownstreamTlsContext>

// === access logs ===

export const AccessLog = z.strictObject({
  name: z.string().min(1),
  typed_config: z.discriminatedUnion('@type', [
    z.strictObject({ '@type': z.literal(TypeUrls.stdoutLog) }),
    z.strictObject({ '@type': z.literal(TypeUrls.stderrLog) }),
    z.strictObject({ '@type': z.literal(TypeUrls.fileLog), path: z.string().min(1) }),
  ]),
})
export type AccessLog = z.infer<typeof AccessLog>

// === network filters ===

export const HttpFilter = z.strictObject({
  name: z.string().min(1),
  typed_config: z.discriminatedUnion('@type', [z.strictObject({ '@type': z.literal(TypeUrls.router) })]),
})

export const Http2ProtocolOptions = z.strictObject({
  max_concurrent_streams: z.number().int().min(1).max(2147483647).optional(),
  initial_stream_window_size: z.number().int().min(65535).max(2147483647).optional(),
  initial_connection_window_size: z.number().int().min(65535).max(2147483647).optional(),
})

export const HttpConnectionManager = z.strictObject({
  '@type': z.literal(TypeUrls.hcm),
  stat_prefix: z.string().min(1),
  codec_type: z.enum(['AUTO', 'HTTP1', 'HTTP2']).optional(),
  route_config: RouteConfiguration,
  http_filters: z.array(HttpFilter).optional(),
  access_log: z.array(AccessLog).optional(),
  common_http_protocol_options: z
    .strictObject({
      idle_timeout: duration.optional(),
      max_headers_count: z.number().int().min(1).optional(),
      headers_with_underscores_action: z.enum(['ALLOW', 'REJECT_REQUEST', 'DROP_HEADER']).optional(),
    })
    .optional(),
  http2_protocol_options: Http2ProtocolOptions.optional(),
  stream_idle_timeout: duration.optional(),
  request_timeout: duration.optional(),
  max_request_headers_kb: z.number().int().min(1).max(8192).optional(),
  use_remote_address: z.boolean().optional(),
  xff_num_trusted_hops: uint32.optional(),
  generate_request_id: z.boolean().optional(),
  server_name: z.string().optional(),
  upgrade_configs: z
    .array(z.strictObject({ upgrade_type: z.string().min(1), enabled: z.boolean().optional() }))
    .optional(),
  drain_timeout: duration.optional(),
})
export type HttpConnectionManager = z.infer<typeof HttpConnectionManager>

export const TcpProxy = z
  .strictObject({
    '@type': z.literal(TypeUrls.tcpProxy),
    stat_prefix: z.string().min(1),
    cluster: z.string().min(1).optional(),
    weighted_clusters: z
      .strictObject({ clusters: z.array(z.strictObject({ name: z.string().min(1), weight: uint32 })).min(1) })
      .optional(),
    idle_timeout: duration.optional(),
    access_log: z.array(AccessLog).optional(),
  })
  .superRefine(requireOneOf(['cluster', 'weighted_clusters']))
export type TcpProxy = z.infer<typeof TcpProxy>

export const NetworkFilter = z.strictObject({
  name: z.string().min(1),
  typed_config: z.discriminatedUnion('@type', [HttpConnectionManager, TcpProxy]),
})
export type NetworkFilter = z.infer<typeof NetworkFilter>

// === listeners ===

export const FilterChain = z.strictObject({
  name: z.string().optional(),
  filter_chain_match: z
    .strictObject({
      server_names: z.array(z.string().min(1)).optional(),
      transport_protocol: z.enum(['raw_buffer', 'tls']).optional(),
      application_protocols: z.array(z.string().min(1)).optional(),
    })
    .optional(),
  filters: z.array(NetworkFilter).length(1, 'exactly one network filter (http_connection_manager or tcp_proxy)'),
  transport_socket: z
    .strictObject({ name: z.string().min(1), typed_config: DownstreamTlsContext })
    .optional(),
})
export type FilterChain = z.infer<typeof FilterChain>

export const Listener = z.strictObject({
  '@type': z.string().optional(),
  name: z.string().min(1),
  address: Address,
  filter_chains: z.array(FilterChain).min(1),
  listener_filters: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        typed_config: z.discriminatedUnion('@type', [
          z.strictObject({ '@type': z.literal(TypeUrls.tlsInspector) }),
          z.strictObject({ '@type': z.literal(TypeUrls.httpInspector) }),
        ]),
      }),
    )
    .optional(),
  per_connection_buffer_limit_bytes: uint32.optional(),
})
export type Listener = z.infer<typeof Listener>

// === clusters ===

export const LbEndpoint = z.strictObject({
  endpoint: z.strictObject({ address: Address, hostname: z.string().optional() }),
  health_status: z.enum(['UNKNOWN', 'HEALTHY', 'UNHEALTHY', 'DRAINING', 'TIMEOUT', 'DEGRADED']).optional(),
  load_balancing_weight: z.number().int().min(1).optional(),
})
export type LbEndpoint = z.infer<typeof LbEndpoint>

export const LocalityLbEndpoints = z.strictObject({
  locality: z
    .strictObject({ region: z.string().optional(), zone: z.string().optional(), sub_zone: z.string().optional() })
    .optional(),
  lb_endpoints: z.array(LbEndpoint),
  load_balancing_weight: z.number().int().min(1).optional(),
  priority: z.number().int().min(0).max(127).optional(),
})
export type LocalityLbEndpoints = z.infer<typeof LocalityLbEndpoints>

export const ClusterLoadAssignment = z.strictObject({
  '@type': z.string().optional(),
  cluster_name: z.string().min(1),
  endpoints: z.array(LocalityLbEndpoints).optional(),
})
export type ClusterLoadAssignment = z.infer<typeof ClusterLoadAssignment>

const HttpProtocolOptionsExt = z
  .strictObject({
    '@type': z.literal(TypeUrls.httpProtocolOptions),
    explicit_http_config: z
      .strictObject({
        http_protocol_options: z.strictObject({}).optional(),
        http2_protocol_options: Http2ProtocolOptions.optional(),
      })
      .superRefine(requireOneOf(['http_protocol_options', 'http2_protocol_options']))
      .optional(),
    common_http_protocol_options: z
      .strictObject({ idle_timeout: duration.optional(), max_requests_per_connection: uint32.optional() })
      .optional(),
  })

export const Cluster = z.strictObject({
  '@type': z.string().optional(),
  name: z.string().min(1),
  type: z.enum(['STATIC', 'STRICT_DNS']).optional(),
  connect_timeout: duration.optional(),
  lb_policy: z.enum(['ROUND_ROBIN', 'LEAST_REQUEST', 'RANDOM', 'RING_HASH', 'MAGLEV']).optional(),
  load_assignment: ClusterLoadAssignment.optional(),
  http2_protocol_options: Http2ProtocolOptions.optional(),
  typed_extension_protocol_options: z
    .strictObject({ 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': HttpProtocolOptionsExt })
    .optional(),
  transport_socket: z.strictObject({ name: z.string().min(1), typed_config: UpstreamTlsContext }).optional(),
  dns_refresh_rate: duration.optional(),
  dns_lookup_family: z.enum(['AUTO', 'V4_ONLY', 'V6_ONLY', 'V4_PREFERRED', 'ALL']).optional(),
  respect_dns_ttl: z.boolean().optional(),
  least_request_lb_config: z.strictObject({ choice_count: z.number().int().min(2).optional() }).optional(),
  ring_hash_lb_config: z
    .strictObject({
      minimum_ring_size: z.number().int().min(1).max(8388608).optional(),
      maximum_ring_size: z.number().int().min(1).max(8388608).optional(),
      hash_function: z.enum(['XX_HASH']).optional(),
    })
    .optional(),
  maglev_lb_config: z.strictObject({ table_size: z.number().int().min(1).optional() }).optional(),
  per_connection_buffer_limit_bytes: uint32.optional(),
  max_requests_per_connection: uint32.optional(),
})
export type Cluster = z.infer<typeof Cluster>

// === bootstrap ===

export const Bootstrap = z.strictObject({
  node: z
    .strictObject({ id: z.string().optional(), cluster: z.string().optional(), metadata: z.record(z.string(), z.unknown()).optional() })
    .optional(),
  admin: z
    .strictObject({
      address: Address,
      access_log: z.array(AccessLog).optional(),
    })
    .optional(),
  static_resources: z
    .strictObject({
      listeners: z.array(Listener).optional(),
      clusters: z.array(Cluster).optional(),
    })
    .optional(),
})
export type Bootstrap = z.infer<typeof Bootstrap>
