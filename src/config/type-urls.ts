/** Envoy type URLs of the extensions Loom supports (no schema code here: the proxy's runtime imports this). */
const T = 'type.googleapis.com/'
export const TypeUrls = {
  hcm: `${T}envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager`,
  tcpProxy: `${T}envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy`,
  networkRbac: `${T}envoy.extensions.filters.network.rbac.v3.RBAC`,
  router: `${T}envoy.extensions.filters.http.router.v3.Router`,
  fault: `${T}envoy.extensions.filters.http.fault.v3.HTTPFault`,
  localRateLimit: `${T}envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit`,
  cors: `${T}envoy.extensions.filters.http.cors.v3.Cors`,
  corsPolicy: `${T}envoy.extensions.filters.http.cors.v3.CorsPolicy`,
  jwtAuthn: `${T}envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication`,
  rbac: `${T}envoy.extensions.filters.http.rbac.v3.RBAC`,
  extAuthz: `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthz`,
  extAuthzPerRoute: `${T}envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute`,
  globalRateLimit: `${T}loom.filters.http.global_ratelimit.v1alpha1.GlobalRateLimit`,
  globalRateLimitPerRoute: `${T}loom.filters.http.global_ratelimit.v1alpha1.GlobalRateLimitPerRoute`,
  /** Loom's own: who may ask for the live decision record (src/proxy/http/filters/explain/) */
  explain: `${T}loom.filters.http.explain.v1alpha1.Explain`,
  previousHostsPredicate: `${T}envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate`,
  downstreamTls: `${T}envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext`,
  upstreamTls: `${T}envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext`,
  rawBuffer: `${T}envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer`,
  httpProtocolOptions: `${T}envoy.extensions.upstreams.http.v3.HttpProtocolOptions`,
  stdoutLog: `${T}envoy.extensions.access_loggers.stream.v3.StdoutAccessLog`,
  stderrLog: `${T}envoy.extensions.access_loggers.stream.v3.StderrAccessLog`,
  fileLog: `${T}envoy.extensions.access_loggers.file.v3.FileAccessLog`,
  openTelemetryTracer: `${T}envoy.config.trace.v3.OpenTelemetryConfig`,
  uuidRequestId: `${T}envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig`,
  tlsInspector: `${T}envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector`,
  httpInspector: `${T}envoy.extensions.filters.listener.http_inspector.v3.HttpInspector`,
  roundRobinLb: `${T}envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin`,
  leastRequestLb: `${T}envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest`,
  /** Istio's stats filter (istio.stats), HTTP and network: Istio's standard metrics */
  istioStats: `${T}stats.PluginConfig`,
  /** Istio's TCP metadata exchange (istio.metadata_exchange), network and upstream (cluster) filter */
  metadataExchange: `${T}envoy.tcp.metadataexchange.config.MetadataExchange`,
  /** Loom's own extension (src/xds/loom-protos.ts) */
  peakEwma: `${T}loom.config.lb.v1.PeakEwma`,
} as const
