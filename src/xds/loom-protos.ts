/**
 * Loom's own protobuf messages, parsed into the shared Root (proto.ts) beside Envoy's: the global rate limit
 * filter's config (carried in `typed_config` and `typed_per_filter_config` Anys like any Envoy extension) and the
 * rate limit share service the control plane serves on its xDS port (src/xds/ratelimit-service.ts). The text lives
 * here rather than in .proto files so the published package (dist/src) and the bundle carry it with the code.
 */
export const GLOBAL_RATELIMIT_PACKAGE = 'loom.filters.http.global_ratelimit.v1alpha1'
export const RATELIMIT_SHARES_PACKAGE = 'loom.ratelimit.v1alpha1'
export const CA_PACKAGE = 'loom.ca.v1'
export const PEAK_EWMA_PACKAGE = 'loom.config.lb.v1'
export const EXPLAIN_PACKAGE = 'loom.filters.http.explain.v1alpha1'

/** The decision record filter's config (src/proxy/http/filters/explain/explain.ts). */
export const EXPLAIN_PROTO = `
syntax = "proto3";

package ${EXPLAIN_PACKAGE};

// Who may ask for the decision record with the x-loom-explain request header; anyone else's header is removed.
message Explain {
  // the callers allowed (none: nobody); Envoy's RBAC principals: authenticated, remote_ip, any...
  repeated envoy.config.rbac.v3.Principal principals = 1;
  // which side of the proxy this is in records ("outbound", "inbound", "gateway"), after the proxy's own name
  string label = 2;
}
`

/**
 * Istio's stats filter config (package `stats`, `type.googleapis.com/stats.PluginConfig`): the fields Loom reads,
 * with Istio's field numbers, so the filter travels in a typed_config Any like any other.
 */
export const ISTIO_STATS_PROTO = `
syntax = "proto3";

package stats;

message PluginConfig {
  // no destination service from the request's authority when the cluster names none
  bool disable_host_header_fallback = 5;
  // how often open TCP connections' bytes are reported (default 15s)
  google.protobuf.Duration tcp_reporting_duration = 6;
}
`

/**
 * Istio's TCP metadata exchange config (`type.googleapis.com/envoy.tcp.metadataexchange.config.MetadataExchange`),
 * Istio's field numbers; `enable_discovery` (2, workload discovery when a peer sends no prefix) is not read.
 */
export const METADATA_EXCHANGE_PROTO = `
syntax = "proto3";

package envoy.tcp.metadataexchange.config;

message MetadataExchange {
  // the ALPN protocol the exchange runs under (Istio's istio-peer-exchange)
  string protocol = 1;
}
`

/** The peak-EWMA load balancer's config, in a cluster's load_balancing_policy (src/proxy/cluster/lb/peak-ewma.ts). */
export const PEAK_EWMA_PROTO = `
syntax = "proto3";

package ${PEAK_EWMA_PACKAGE};

message PeakEwma {
  // The time constant of the latency estimate's decay. Default 10s; must be greater than 0.
  google.protobuf.Duration decay_time = 1;

  // What a failure before any sample counts for. Default 30ms; must be greater than 0.
  google.protobuf.Duration default_rtt = 2;
}
`

export const LOOM_PROTO = `
syntax = "proto3";

package ${GLOBAL_RATELIMIT_PACKAGE};

// The filter in a connection manager's http_filters; it acts only on routes whose typed_per_filter_config (or
// whose virtual host's) carries a GlobalRateLimitPerRoute.
message GlobalRateLimit {
  string stat_prefix = 1;
}

// The limits a virtual host's or route's requests count against.
message GlobalRateLimitPerRoute {
  repeated Limit limits = 1;
}

message Limit {
  // the key shares are reported and assigned under: the GlobalRateLimit's namespace/name
  string name = 1;
  // the mesh-wide rate and burst; a proxy enforces its share of them
  double requests_per_second = 2;
  uint32 burst = 3;
  // all must match for a request to count (none: every request); :method and :path carry method and path prefix
  repeated envoy.config.route.v3.HeaderMatcher headers = 4;
  bool invert_match = 5;
  enum UnavailableMode {
    KEEP_LAST_SHARE = 0;
    ALLOW_ALL = 1;
    DENY_ALL = 2;
  }
  UnavailableMode on_control_plane_unavailable = 6;
}
`

/** The share service's messages (a second file: protobufjs takes one package per parse). */
export const SHARES_PROTO = `
syntax = "proto3";

package ${RATELIMIT_SHARES_PACKAGE};

// A proxy's usage of each limit over the last window; the first message of a stream names the node.
message ShareReport {
  string node_id = 1;
  uint32 window_ms = 2;
  repeated LimitUsage usage = 3;
}

message LimitUsage {
  string name = 1;
  uint64 admitted = 2;
  uint64 denied = 3;
}

// The proxy's current shares (every limit it reported); sent after every rebalancing.
message ShareAssignment {
  repeated Share shares = 1;
  // how long the shares hold without a newer assignment, before the limit's onControlPlaneUnavailable applies
  uint32 valid_ms = 2;
}

message Share {
  string name = 1;
  double requests_per_second = 2;
  double burst = 3;
  // proxies sharing the limit now
  uint32 proxies = 4;
}

service RateLimitShares {
  rpc StreamShares(stream ShareReport) returns (stream ShareAssignment);
}
`

/**
 * The certificate signing service (src/xds/ca-service.ts): a proxy sends a CSR for a key it made and keeps, and
 * gets its X.509-SVID. The first call is authenticated by a bootstrap token (call metadata `authorization: Bearer
 * <token>`); a renewal by the current certificate: its chain and a signature, by its key, over the new CSR.
 */
export const CA_PROTO = `
syntax = "proto3";

package ${CA_PACKAGE};

message CreateCertificateRequest {
  // PKCS#10, PEM; the identity comes from the authentication, and a CSR naming another one is refused
  string csr = 1;
  // the lifetime asked for (0: the CA's); never longer than the CA's
  uint32 validity_seconds = 2;
  // a renewal: the caller's current certificate chain (PEM, leaf first) ...
  string current_certificate_chain = 3;
  // ... and the current key's signature (ECDSA/RSA with SHA-256) over the bytes of csr
  bytes csr_signature = 4;
}

message CreateCertificateResponse {
  // PEM, one certificate each, the leaf first
  repeated string certificate_chain = 1;
  // the roots peers are verified against, PEM, one each
  repeated string trust_bundle = 2;
}

service CertificateService {
  rpc CreateCertificate(CreateCertificateRequest) returns (CreateCertificateResponse);
}
`
